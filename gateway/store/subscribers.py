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
from gateway.db.schema import (
    announcements,
    deliveries,
    inbound_messages,
    inbox_replies,
    inbox_threads,
    subscriber_channels,
    subscribers,
)
from gateway.domain import CHANNELS, DeliveryState
from gateway.personal import PhoneNumber, PhoneVault
from gateway.store import inbox

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
        older = await _indexed_under_older_keys(conn, agency_id, chunk, vault)
        for person in chunk:
            index = vault.blind_index(person.phone)
            if index in channels_by_index or index in older:
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


async def _indexed_under_older_keys(
    conn: AsyncConnection, agency_id: int, people: Sequence[NewSubscriber], vault: PhoneVault
) -> set[str]:
    """Newest-key indexes of the ``people`` the agency already has under an older key (while
    the blind index key rotates): one SELECT for the chunk, none when one key is configured."""
    if vault.index_keys_in_use < 2:
        return set()
    newest_of: dict[str, str] = {}
    for person in people:
        newest, *older = vault.blind_indexes(person.phone)
        newest_of.update((old, newest) for old in older)
    found = await conn.scalars(
        sa.select(subscribers.c.phone_index).where(
            subscribers.c.agency_id == agency_id,
            subscribers.c.phone_index.in_(list(newest_of)),
        )
    )
    return {newest_of[index] for index in found}


async def find_by_phone(
    conn: AsyncConnection, *, agency_id: int, phone_indexes: Sequence[str]
) -> int | None:
    """The subscriber whose blind index is any of ``phone_indexes`` (one per configured key)."""
    return await conn.scalar(
        sa.select(subscribers.c.id)
        .where(
            subscribers.c.agency_id == agency_id,
            subscribers.c.phone_index.in_(list(phone_indexes)),
        )
        .order_by(subscribers.c.id)
        .limit(1)
    )


async def list_subscribers(
    conn: AsyncConnection,
    *,
    agency_id: int,
    limit: int,
    after_id: int | None,
    area_code: str | None = None,
    phone_indexes: Sequence[str] | None = None,
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
    if phone_indexes is not None:
        query = query.where(subscribers.c.phone_index.in_(list(phone_indexes)))
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
    keep_replies: bool = True,
) -> int:
    """Opt the subscribers out of ``channels`` (all when None) and cancel the announcements
    still queued for them; replies to what they wrote too unless ``keep_replies``.

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
    if keep_replies:
        # The confirmation of this very opt-out is a reply, and a replayed STOP must not
        # cancel it.
        pending = pending.where(deliveries.c.kind != "reply")
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


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure did, in counts only. ``first`` is False when the person was erased
    already (the call then changed nothing that was still personal)."""

    first: bool
    cancelled: int
    deliveries_unlinked: int
    messages_blanked: int
    threads_closed: int


async def erase(
    conn: AsyncConnection, *, agency_id: int, subscriber_id: int, vault: PhoneVault, now: datetime
) -> Erasure | None:
    """Erase the person; None when the agency has no such subscriber.

    Goes: the encrypted number, its blind index and masked form, the Telegram chat id, the
    network, the consent text; the texts of their inbound messages and the number kept with
    them; the encrypted address and text of replies to them; the link from their deliveries
    and inbox threads to them. Queued deliveries (announcements and replies) are cancelled
    first. Stays, for anonymous counts: the subscriber row (area, language, channels chosen),
    each delivery's channel, state and cost, each thread's times. Every step is one set-based
    statement, whatever the number of deliveries.
    """
    query = sa.select(
        subscribers.c.phone_index,
        subscribers.c.phone_ciphertext,
        subscribers.c.telegram_chat_id,
        subscribers.c.erased_at,
    ).where(subscribers.c.id == subscriber_id, subscribers.c.agency_id == agency_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    person = (await conn.execute(query)).first()
    if person is None:
        return None
    # While the blind index key rotates, what they sent may be indexed under any of the keys.
    phone_indexes: list[str] = []
    if person.phone_ciphertext is not None and vault.index_keys_in_use > 1:
        phone_indexes.extend(vault.blind_indexes(vault.decrypt(person.phone_ciphertext)))
    if person.phone_index is not None and person.phone_index not in phone_indexes:
        phone_indexes.append(person.phone_index)
    keys = [inbox.subscriber_key(subscriber_id)]
    keys.extend(inbox.phone_key(index) for index in phone_indexes)
    if person.telegram_chat_id is not None:
        label = inbox.telegram_chat_label(person.telegram_chat_id)
        keys.extend(inbox.chat_key(chat) for chat in vault.blind_indexes(label))
    threads = sa.select(inbox_threads.c.id).where(
        inbox_threads.c.agency_id == agency_id,
        sa.or_(
            inbox_threads.c.subscriber_id == subscriber_id,
            inbox_threads.c.citizen_key.in_(keys),
        ),
    )
    # Operator replies to the number from before it subscribed carry no subscriber id.
    replies = sa.select(inbox_replies.c.delivery_id).where(inbox_replies.c.thread_id.in_(threads))

    cancelled = await opt_out(
        conn, subscriber_ids=[subscriber_id], channels=None, now=now, keep_replies=False
    )
    stopped = await conn.execute(
        sa.update(deliveries)
        .where(deliveries.c.id.in_(replies), deliveries.c.state == DeliveryState.QUEUED.value)
        .values(
            state=DeliveryState.CANCELLED.value,
            error_kind="stopped",
            error_reason="erased",
            finished_at=now,
        )
    )
    # Their deliveries, each part found by index: per announcement of the agency (and for
    # those of no announcement) the (announcement, channel, subscriber) unique index, and the
    # replies by id. One "this agency's, and the subscriber's or a reply" condition read every
    # delivery of the agency, on SQLite holding the write lock every dispatch worker waits for.
    agency_announcements = sa.select(announcements.c.id).where(
        announcements.c.agency_id == agency_id
    )
    theirs = [
        sa.and_(
            deliveries.c.announcement_id.in_(agency_announcements),
            deliveries.c.channel.in_(CHANNELS),
            deliveries.c.subscriber_id == subscriber_id,
        ),
        sa.and_(
            deliveries.c.announcement_id.is_(None),
            deliveries.c.channel.in_(CHANNELS),
            deliveries.c.subscriber_id == subscriber_id,
        ),
        # Not counted twice: a reply to them was unlinked above with their deliveries.
        sa.and_(
            deliveries.c.id.in_(replies),
            sa.or_(
                deliveries.c.subscriber_id.is_not(None),
                deliveries.c.recipient_ciphertext.is_not(None),
                deliveries.c.body.is_not(None),
            ),
        ),
    ]
    unlinked_rows = 0
    for part in theirs:
        result = await conn.execute(
            # No "agency_id =" here: SQLite would read the agency's deliveries by that index.
            # The person was found in this agency, and their replies in its threads.
            sa.update(deliveries)
            .where(part)
            .values(subscriber_id=None, recipient_ciphertext=None, body=None)
        )
        unlinked_rows += int(result.rowcount or 0)
    from_them = [inbound_messages.c.subscriber_id == subscriber_id]
    if phone_indexes:
        from_them.append(inbound_messages.c.phone_index.in_(phone_indexes))
    from_them.append(inbound_messages.c.thread_id.in_(threads))
    # Automatic answers (keywords, the bot's acknowledgements) carry the reply key of the
    # message they answer, and their own encrypted copy of the address.
    answered = await conn.execute(
        sa.select(inbound_messages.c.channel, inbound_messages.c.provider_message_id).where(
            inbound_messages.c.agency_id == agency_id,
            inbound_messages.c.provider_message_id.is_not(None),
            sa.or_(*from_them),
        )
    )
    for channel, keys_chunk in _reply_keys(answered):
        automatic = sa.and_(
            deliveries.c.agency_id == agency_id,
            deliveries.c.channel == channel,
            deliveries.c.reply_key.in_(keys_chunk),
        )
        cancelled += int(
            (
                await conn.execute(
                    sa.update(deliveries)
                    .where(automatic, deliveries.c.state == DeliveryState.QUEUED.value)
                    .values(
                        state=DeliveryState.CANCELLED.value,
                        error_kind="stopped",
                        error_reason="erased",
                        finished_at=now,
                    )
                )
            ).rowcount
            or 0
        )
        await conn.execute(
            sa.update(deliveries)
            .where(automatic)
            .values(subscriber_id=None, recipient_ciphertext=None, body=None)
        )
    blanked = await conn.execute(
        sa.update(inbound_messages)
        .where(inbound_messages.c.agency_id == agency_id, sa.or_(*from_them))
        .values(text="", phone_index=None, phone_masked=None, subscriber_id=None)
    )
    closed = await conn.execute(
        sa.update(inbox_threads)
        .where(inbox_threads.c.id.in_(threads))
        .values(
            citizen_key=sa.literal("erased:") + sa.cast(inbox_threads.c.id, sa.String),
            subscriber_id=None,
            phone_masked=None,
            reply_ciphertext=None,
            status=inbox.CLOSED,
            closed_at=sa.func.coalesce(inbox_threads.c.closed_at, now),
        )
    )
    await conn.execute(
        sa.update(subscribers)
        .where(subscribers.c.id == subscriber_id)
        .values(
            phone_ciphertext=None,
            phone_index=None,
            phone_masked=None,
            telegram_chat_id=None,
            network=None,
            consent_text=None,
            erased_at=sa.func.coalesce(subscribers.c.erased_at, now),
        )
    )
    return Erasure(
        first=person.erased_at is None,
        cancelled=cancelled + int(stopped.rowcount or 0),
        deliveries_unlinked=unlinked_rows,
        messages_blanked=int(blanked.rowcount or 0),
        threads_closed=int(closed.rowcount or 0),
    )


def _reply_keys(rows: Iterable[Any]) -> list[tuple[str, list[str]]]:
    """(channel, reply keys) of the automatic replies to these inbound messages, in chunks.

    An SMS reply's key is the provider id of the message; a Telegram reply's is ``tg-<update>``
    for the message ``tg-update-<update>`` (``gateway.citizen.telegram_chats``).
    """
    by_channel: dict[str, list[str]] = {}
    for channel, provider_message_id in rows:
        key = str(provider_message_id)
        if channel == "telegram" and key.startswith("tg-update-"):
            key = "tg-" + key.removeprefix("tg-update-")
        by_channel.setdefault(str(channel), []).append(key)
    return [
        (channel, keys[start : start + INSERT_CHUNK])
        for channel, keys in by_channel.items()
        for start in range(0, len(keys), INSERT_CHUNK)
    ]
