"""Subscribers in storage: add one, import many, list masked, erase, opt out.

Phone numbers arrive here already validated (``gateway.personal``); this module stores only
ciphertext, blind index and masked form, and hands back masked numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.dialect import insert_ignoring_conflicts
from gateway.db.schema import deliveries, subscriber_channels, subscribers
from gateway.domain import DeliveryState
from gateway.personal import PhoneNumber, PhoneVault

# Rows per INSERT statement: large enough to amortise round trips, small enough to stay under
# SQLite's and asyncpg's bound-parameter limits (15 columns × 2,000 rows = 30,000 < 32,767).
INSERT_CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    phone: PhoneNumber = field(repr=False)
    language: str
    area_code: str | None
    topics: list[str]
    channels: list[str]
    telegram_chat_id: int | None
    consent_channel: str
    consent_text: str
    consent_at: datetime


async def insert_subscribers(
    conn: AsyncConnection,
    *,
    agency_id: int,
    people: Sequence[NewSubscriber],
    vault: PhoneVault,
    now: datetime,
) -> dict[str, int]:
    """Insert ``people``, skipping numbers the agency already has.

    Returns blind index -> new subscriber id for every row actually inserted; a number missing
    from the result was a duplicate. Runs a few statements per 2,000 people, never one per person.
    """
    inserted: dict[str, int] = {}
    for start in range(0, len(people), INSERT_CHUNK):
        chunk = people[start : start + INSERT_CHUNK]
        rows = []
        channels_by_index: dict[str, list[str]] = {}
        for person in chunk:
            index = vault.blind_index(person.phone)
            if index in channels_by_index:
                continue  # the same number twice in one batch: the first one wins
            channels_by_index[index] = person.channels
            rows.append(
                {
                    "agency_id": agency_id,
                    "phone_ciphertext": vault.encrypt(person.phone),
                    "phone_index": index,
                    "phone_masked": str(person.phone),
                    "country": person.phone.region,
                    "network": person.phone.network or None,
                    "telegram_chat_id": person.telegram_chat_id,
                    "language": person.language,
                    "area_code": person.area_code,
                    "topics": person.topics,
                    "consent_at": person.consent_at,
                    "consent_channel": person.consent_channel,
                    "consent_text": person.consent_text,
                    "created_at": now,
                }
            )
        statement = insert_ignoring_conflicts(conn, subscribers, ["agency_id", "phone_index"])
        result = await conn.execute(
            statement.returning(subscribers.c.id, subscribers.c.phone_index), rows
        )
        new = {index: sub_id for sub_id, index in result}
        inserted.update(new)
        channel_rows = [
            {
                "subscriber_id": sub_id,
                "channel": channel,
                "preference": position,
                "opted_in_at": now,
            }
            for index, sub_id in new.items()
            for position, channel in enumerate(channels_by_index[index])
        ]
        if channel_rows:
            await conn.execute(sa.insert(subscriber_channels), channel_rows)
    return inserted


async def find_by_phone(conn: AsyncConnection, *, agency_id: int, phone_index: str) -> int | None:
    return await conn.scalar(
        sa.select(subscribers.c.id).where(
            subscribers.c.agency_id == agency_id, subscribers.c.phone_index == phone_index
        )
    )


async def list_subscribers(
    conn: AsyncConnection,
    *,
    agency_id: int,
    limit: int,
    after_id: int | None,
    area_code: str | None = None,
    phone_index: str | None = None,
    ids: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    query = (
        sa.select(
            subscribers.c.id,
            subscribers.c.phone_masked,
            subscribers.c.language,
            subscribers.c.area_code,
            subscribers.c.topics,
            subscribers.c.created_at,
            subscribers.c.erased_at,
        )
        .where(subscribers.c.agency_id == agency_id)
        .order_by(subscribers.c.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(subscribers.c.id > after_id)
    if area_code is not None:
        query = query.where(
            sa.or_(
                subscribers.c.area_code == area_code,
                subscribers.c.area_code.startswith(area_code + ".", autoescape=True),
            )
        )
    if phone_index is not None:
        query = query.where(subscribers.c.phone_index == phone_index)
    if ids is not None:
        query = query.where(subscribers.c.id.in_(list(ids)))
    people = [dict(row) for row in (await conn.execute(query)).mappings()]
    if not people:
        return people
    channel_rows = await conn.execute(
        sa.select(
            subscriber_channels.c.subscriber_id,
            subscriber_channels.c.channel,
            subscriber_channels.c.opted_out_at,
        )
        .where(subscriber_channels.c.subscriber_id.in_([p["id"] for p in people]))
        .order_by(subscriber_channels.c.subscriber_id, subscriber_channels.c.preference)
    )
    by_id = {p["id"]: p for p in people}
    for p in people:
        p["channels"], p["opted_out"] = [], []
    for sub_id, channel, opted_out_at in channel_rows:
        by_id[sub_id]["opted_out" if opted_out_at else "channels"].append(channel)
    return people


async def opt_out(
    conn: AsyncConnection,
    *,
    subscriber_ids: Sequence[int],
    channels: Sequence[str] | None,
    now: datetime,
) -> int:
    """Opt the subscribers out of ``channels`` (all when None) and cancel what is still queued.

    Takes effect at once: deliveries not yet handed to a provider are cancelled in the same
    transaction. Returns how many queued deliveries were cancelled.
    """
    if not subscriber_ids:
        return 0
    choice = sa.update(subscriber_channels).where(
        subscriber_channels.c.subscriber_id.in_(subscriber_ids),
        subscriber_channels.c.opted_out_at.is_(None),
    )
    pending = sa.update(deliveries).where(
        deliveries.c.subscriber_id.in_(subscriber_ids),
        deliveries.c.state == DeliveryState.QUEUED.value,
    )
    if channels is not None:
        choice = choice.where(subscriber_channels.c.channel.in_(channels))
        pending = pending.where(deliveries.c.channel.in_(channels))
    await conn.execute(choice.values(opted_out_at=now))
    result = await conn.execute(
        pending.values(
            state=DeliveryState.CANCELLED.value,
            error_kind="stopped",
            error_reason="opted out",
            finished_at=now,
        )
    )
    return int(result.rowcount or 0)


async def erase(
    conn: AsyncConnection, *, agency_id: int, subscriber_id: int, now: datetime
) -> bool:
    """Erase the person: number, chat id and consent text go; area and language stay as
    anonymous counts. Queued deliveries are cancelled. Returns False for an unknown id."""
    exists = await conn.scalar(
        sa.select(subscribers.c.id).where(
            subscribers.c.id == subscriber_id, subscribers.c.agency_id == agency_id
        )
    )
    if exists is None:
        return False
    await opt_out(conn, subscriber_ids=[subscriber_id], channels=None, now=now)
    await conn.execute(
        sa.update(subscribers)
        .where(subscribers.c.id == subscriber_id)
        .values(
            phone_ciphertext=None,
            phone_index=None,
            phone_masked=None,
            telegram_chat_id=None,
            consent_text=None,
            erased_at=now,
        )
    )
    return True
