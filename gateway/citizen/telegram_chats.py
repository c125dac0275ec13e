"""Telegram chats in storage: the bot's writes, each inside the caller's one transaction.

A Telegram subscriber has a chat id and no phone number: ``phone_index`` stays NULL, so the
(agency, phone) uniqueness does not apply, and two updates from one new chat could both create
a subscriber. ``lock_chat`` serialises them: on SQLite every write transaction already runs
alone (``BEGIN IMMEDIATE``); on PostgreSQL a transaction-scoped advisory lock on the chat
does it. Chat ids are personal: they are stored, never logged; a reply carries its own
encrypted copy (``recipient_ciphertext``), like an SMS reply's phone number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.dialect import insert_ignoring_conflicts
from gateway.db.schema import deliveries, inbound_messages, subscriber_channels, subscribers
from gateway.domain import DeliveryState
from gateway.outbox.replies import REPLY_PRIORITY
from gateway.personal import PhoneVault
from gateway.store import inbox
from gateway.store.subscribers import opt_out

CHANNEL = "telegram"
# inbound_messages.text is unbounded, but a Telegram message is at most 4096 characters.
MAX_TEXT = 4096


@dataclass(frozen=True, slots=True)
class ChatSubscriber:
    """The agency's subscriber behind a chat; ``active`` when Telegram is not opted out."""

    id: int
    language: str
    area_code: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class ChatReply:
    """A reply to queue; ``update_id`` is the update it answers (one reply per update)."""

    agency_id: int
    chat_id: int = field(repr=False)
    update_id: int
    text: str = field(repr=False)
    language: str
    subscriber_id: int | None


def update_key(update_id: int) -> str:
    """``inbound_messages.provider_message_id`` of a handled update."""
    return f"tg-update-{update_id}"


def reply_key(update_id: int) -> str:
    """``deliveries.reply_key`` of the reply to an update."""
    return f"tg-{update_id}"


async def lock_chat(conn: AsyncConnection, *, agency_id: int, chat_id: int) -> None:
    """Hold the chat until the transaction ends (PostgreSQL; SQLite writers are serial)."""
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(f"warta-tg:{agency_id}:{chat_id}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def find_chat(
    conn: AsyncConnection, *, agency_id: int, chat_id: int
) -> ChatSubscriber | None:
    row = (
        await conn.execute(
            sa.select(
                subscribers.c.id,
                subscribers.c.language,
                subscribers.c.area_code,
                subscriber_channels.c.opted_in_at,
                subscriber_channels.c.opted_out_at,
            )
            .select_from(
                subscribers.outerjoin(
                    subscriber_channels,
                    sa.and_(
                        subscriber_channels.c.subscriber_id == subscribers.c.id,
                        subscriber_channels.c.channel == CHANNEL,
                    ),
                )
            )
            .where(
                subscribers.c.agency_id == agency_id,
                subscribers.c.telegram_chat_id == chat_id,
                subscribers.c.erased_at.is_(None),
            )
            .order_by(subscribers.c.id)
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    active = row.opted_in_at is not None and row.opted_out_at is None
    return ChatSubscriber(int(row.id), str(row.language), row.area_code, active)


async def record_update(
    conn: AsyncConnection,
    *,
    agency_id: int,
    update_id: int,
    subscriber_id: int | None,
    text: str,
    handled: str,
    now: datetime,
) -> int | None:
    """Keep the update in ``inbound_messages``; None when it was already handled (a replay)."""
    statement = insert_ignoring_conflicts(
        conn, inbound_messages, ["channel", "provider_message_id"]
    )
    new_id: int | None = await conn.scalar(
        statement.values(
            agency_id=agency_id,
            subscriber_id=subscriber_id,
            channel=CHANNEL,
            provider_message_id=update_key(update_id),
            text=text[:MAX_TEXT],
            received_at=now,
            handled=handled,
        ).returning(inbound_messages.c.id)
    )
    return new_id


async def link_update(conn: AsyncConnection, *, inbound_id: int, subscriber_id: int) -> None:
    """Tie a recorded update to the subscriber it created."""
    await conn.execute(
        sa.update(inbound_messages)
        .where(inbound_messages.c.id == inbound_id)
        .values(subscriber_id=subscriber_id)
    )


async def subscribe_chat(
    conn: AsyncConnection,
    *,
    agency_id: int,
    chat_id: int,
    language: str,
    area_code: str | None,
    area_given: bool,
    consent_text: str,
    now: datetime,
) -> int:
    """Create the chat's subscriber, or re-activate it; returns the subscriber id.

    A new subscriber gets ``language`` and ``area_code``; an existing one keeps its language
    (it may have chosen one with ``/bahasa``) and gets ``area_code`` only when ``area_given``.
    Either way the consent record becomes this ``/start`` on Telegram, with ``consent_text``.
    """
    consent = {"consent_at": now, "consent_channel": CHANNEL, "consent_text": consent_text}
    known = await find_chat(conn, agency_id=agency_id, chat_id=chat_id)
    if known is None:
        subscriber_id = int(
            await conn.scalar(
                sa.insert(subscribers)
                .values(
                    agency_id=agency_id,
                    telegram_chat_id=chat_id,
                    language=language,
                    area_code=area_code,
                    topics=[],
                    created_at=now,
                    **consent,
                )
                .returning(subscribers.c.id)
            )
        )
    else:
        subscriber_id = known.id
        values = dict(consent, area_code=area_code) if area_given else consent
        await conn.execute(
            sa.update(subscribers).where(subscribers.c.id == subscriber_id).values(**values)
        )
    chosen = sa.and_(
        subscriber_channels.c.subscriber_id == subscriber_id,
        subscriber_channels.c.channel == CHANNEL,
    )
    exists = await conn.scalar(sa.select(subscriber_channels.c.channel).where(chosen))
    if exists is None:
        await conn.execute(
            sa.insert(subscriber_channels).values(
                subscriber_id=subscriber_id, channel=CHANNEL, preference=0, opted_in_at=now
            )
        )
    else:
        await conn.execute(
            sa.update(subscriber_channels)
            .where(chosen, subscriber_channels.c.opted_out_at.is_not(None))
            .values(opted_out_at=None, opted_in_at=now)
        )
    return subscriber_id


async def stop_chat(conn: AsyncConnection, *, subscriber_id: int, now: datetime) -> int:
    """Opt out of Telegram at once; returns how many queued Telegram deliveries were cancelled."""
    return await opt_out(conn, subscriber_ids=[subscriber_id], channels=[CHANNEL], now=now)


async def set_chat_language(conn: AsyncConnection, *, subscriber_id: int, language: str) -> None:
    await conn.execute(
        sa.update(subscribers).where(subscribers.c.id == subscriber_id).values(language=language)
    )


async def queue_reply(
    conn: AsyncConnection, reply: ChatReply, *, vault: PhoneVault, now: datetime
) -> None:
    """Queue ``reply`` in the outbox; a second reply to the same update is not queued.

    When the update was free text for the operator inbox, it is filed in the chat's thread
    here, where the chat id is at hand: the thread keeps it (encrypted) for operator replies.
    """
    # Any conflict is the reply key's (a reply per update), whether the schema spells it as a
    # unique constraint or as a partial unique index.
    statement = insert_ignoring_conflicts(conn, deliveries)
    address = vault.encrypt(str(reply.chat_id))
    await conn.execute(
        statement.values(
            announcement_id=None,
            agency_id=reply.agency_id,
            subscriber_id=reply.subscriber_id,
            kind="reply",
            body=reply.text,
            recipient_ciphertext=address,
            reply_key=reply_key(reply.update_id),
            channel=CHANNEL,
            language=reply.language,
            state=DeliveryState.QUEUED.value,
            priority=REPLY_PRIORITY,
            next_attempt_at=now,
            created_at=now,
        )
    )
    chat_key, *older = (
        inbox.chat_key(index)
        for index in vault.blind_indexes(inbox.telegram_chat_label(reply.chat_id))
    )
    known = reply.subscriber_id
    await inbox.file_messages(
        conn,
        agency_id=reply.agency_id,
        channel=CHANNEL,
        citizen=inbox.Citizen(
            key=chat_key if known is None else inbox.subscriber_key(known),
            subscriber_id=known,
            phone_masked=None,
            reply_ciphertext=address,
            # Older blind index keys (mid-rotation): a thread opened under one is carried over.
            aliases=tuple(older) if known is None else (chat_key, *older),
        ),
        waiting=inbound_messages.c.provider_message_id == update_key(reply.update_id),
        now=now,
    )
