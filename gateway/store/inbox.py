"""The operator inbox in storage: threads of a citizen's messages, operator replies, statistics.

A thread groups what one citizen wrote to one agency: a subscriber (``citizen_key`` ``s:<id>``),
or an unknown sender by the blind index of their number (``p:<index>``) or of their Telegram
chat (``t:<index>``). At most one thread per citizen is open (a partial unique index); a
message after a close opens a new thread. A thread remembers where a reply goes (the channel
of the latest message, the encrypted number or chat id) so an operator's reply takes the way
the citizen used. Nothing here holds a number in plain text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.codes import normalise_code
from gateway.db.schema import (
    announcements,
    api_tokens,
    deliveries,
    inbound_messages,
    inbox_replies,
    inbox_threads,
    subscriber_channels,
    subscribers,
)
from gateway.domain import PERSONAL_CHANNELS, DeliveryState, Role

OPEN = "open"
CLOSED = "closed"
# A message this soon after a delivery of an announcement to its sender is taken as being
# about that announcement.
LINK_WINDOW = timedelta(hours=24)
_CODE_WORD = re.compile(r"\b[A-Za-z0-9]{3}-?[A-Za-z0-9]{3}\b")
_REPLIED_STATES = (
    DeliveryState.SENDING.value,
    DeliveryState.SENT.value,
    DeliveryState.DELIVERED.value,
)


def subscriber_key(subscriber_id: int) -> str:
    return f"s:{subscriber_id}"


def phone_key(phone_index: str) -> str:
    return f"p:{phone_index}"


def chat_key(chat_index: str) -> str:
    return f"t:{chat_index}"


def telegram_chat_label(chat_id: int) -> str:
    """What the blind index is taken of for a Telegram chat (never stored in plain text)."""
    return f"telegram:{chat_id}"


@dataclass(frozen=True, slots=True)
class Citizen:
    """Who wrote, and how to answer them on ``channel``."""

    key: str
    subscriber_id: int | None
    phone_masked: str | None
    reply_ciphertext: bytes | None
    # Keys the same person had as an unknown sender: their open thread is carried over.
    aliases: tuple[str, ...] = ()


# -- filing messages ------------------------------------------------------------------------


async def file_messages(
    conn: AsyncConnection,
    *,
    agency_id: int,
    channel: str,
    citizen: Citizen,
    waiting: sa.ColumnElement[bool],
    now: datetime,
) -> int | None:
    """File the inbox messages matching ``waiting`` (not yet in a thread) in the citizen's
    open thread, opening one when there is none. Returns the thread id, or None when no such
    message waits (a replay, or a keyword)."""
    unfiled = (
        await conn.execute(
            sa.select(
                inbound_messages.c.id,
                inbound_messages.c.text,
                inbound_messages.c.received_at,
                inbound_messages.c.announcement_id,
            )
            .where(
                inbound_messages.c.agency_id == agency_id,
                inbound_messages.c.channel == channel,
                inbound_messages.c.handled == "inbox",
                inbound_messages.c.thread_id.is_(None),
                waiting,
            )
            .order_by(inbound_messages.c.id)
        )
    ).all()
    if not unfiled:
        return None
    first = min(row.received_at for row in unfiled)
    last = max(row.received_at for row in unfiled)
    thread_id = await _open_thread(
        conn, agency_id=agency_id, citizen=citizen, channel=channel, at=first
    )
    # The provider's own link (a WhatsApp reply to our message) beats any guess.
    told = [row.announcement_id for row in unfiled if row.announcement_id is not None]
    announcement_id = told[-1] if told else None
    if announcement_id is None:
        announcement_id = await linked_announcement(
            conn,
            agency_id=agency_id,
            subscriber_id=citizen.subscriber_id,
            texts=[row.text for row in unfiled],
            at=last,
        )
    ids = [row.id for row in unfiled]
    await conn.execute(
        sa.update(inbound_messages)
        .where(inbound_messages.c.id.in_(ids))
        .values(
            thread_id=thread_id,
            announcement_id=sa.func.coalesce(inbound_messages.c.announcement_id, announcement_id),
        )
    )
    values: dict[str, Any] = {
        "channel": channel,
        "last_message_at": sa.case(
            (inbox_threads.c.last_message_at < last, last), else_=inbox_threads.c.last_message_at
        ),
        "announcement_id": sa.func.coalesce(inbox_threads.c.announcement_id, announcement_id),
    }
    if citizen.reply_ciphertext is not None:
        values["reply_ciphertext"] = citizen.reply_ciphertext
    if citizen.subscriber_id is not None:
        values["subscriber_id"] = citizen.subscriber_id
    if citizen.phone_masked is not None:
        values["phone_masked"] = citizen.phone_masked
    await conn.execute(
        sa.update(inbox_threads).where(inbox_threads.c.id == thread_id).values(**values)
    )
    return thread_id


async def _open_thread(
    conn: AsyncConnection, *, agency_id: int, citizen: Citizen, channel: str, at: datetime
) -> int:
    is_ours = sa.and_(
        inbox_threads.c.agency_id == agency_id,
        inbox_threads.c.citizen_key == citizen.key,
        inbox_threads.c.status == OPEN,
    )
    found = await conn.scalar(sa.select(inbox_threads.c.id).where(is_ours))
    if found is not None:
        return int(found)
    if citizen.aliases:
        earlier = await conn.scalar(
            sa.select(inbox_threads.c.id)
            .where(
                inbox_threads.c.agency_id == agency_id,
                inbox_threads.c.citizen_key.in_(citizen.aliases),
                inbox_threads.c.status == OPEN,
            )
            .order_by(inbox_threads.c.id)
            .limit(1)
        )
        if earlier is not None:
            await conn.execute(
                sa.update(inbox_threads)
                .where(inbox_threads.c.id == earlier)
                .values(citizen_key=citizen.key)
            )
            return int(earlier)
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        inbox_threads
    )
    # Two messages of one new citizen at once: the partial unique index lets one thread win.
    # The predicate is spelt as a literal: bound as a parameter, PostgreSQL cannot match it to
    # the partial index once asyncpg's prepared statement goes generic (from the sixth run on
    # one connection), and the insert fails.
    statement = insert.on_conflict_do_nothing(
        index_elements=["agency_id", "citizen_key"], index_where=sa.text(f"status = '{OPEN}'")
    )
    created = await conn.scalar(
        statement.values(
            agency_id=agency_id,
            citizen_key=citizen.key,
            subscriber_id=citizen.subscriber_id,
            phone_masked=citizen.phone_masked,
            reply_ciphertext=citizen.reply_ciphertext,
            channel=channel,
            status=OPEN,
            opened_at=at,
            last_message_at=at,
        ).returning(inbox_threads.c.id)
    )
    if created is None:
        created = await conn.scalar(sa.select(inbox_threads.c.id).where(is_ours))
    assert created is not None
    return int(created)


def codes_in(texts: Iterable[str]) -> set[str]:
    """Verification codes a citizen may have quoted ("is ABC-234 real?")."""
    return {
        code
        for text in texts
        for word in _CODE_WORD.findall(text or "")
        if (code := normalise_code(word)) is not None
    }


async def linked_announcement(
    conn: AsyncConnection,
    *,
    agency_id: int,
    subscriber_id: int | None,
    texts: Sequence[str],
    at: datetime,
) -> int | None:
    """The announcement the messages are about: one whose code they quote, else the latest
    one delivered to the subscriber within ``LINK_WINDOW`` before ``at``; None if neither."""
    codes = codes_in(texts)
    if codes:
        quoted = await conn.scalar(
            sa.select(announcements.c.id)
            .where(
                announcements.c.agency_id == agency_id,
                announcements.c.verification_code.in_(sorted(codes)),
            )
            .order_by(announcements.c.id.desc())
            .limit(1)
        )
        if quoted is not None:
            return int(quoted)
    if subscriber_id is None:
        return None
    # Recent announcements of the agency first, then the (announcement, channel, subscriber)
    # unique index answers "did it go to this person" without scanning the outbox.
    reached = sa.exists().where(
        deliveries.c.announcement_id == announcements.c.id,
        deliveries.c.channel.in_(PERSONAL_CHANNELS),
        deliveries.c.subscriber_id == subscriber_id,
        deliveries.c.state.in_(_REPLIED_STATES),
    )
    found = await conn.scalar(
        sa.select(announcements.c.id)
        .where(
            announcements.c.agency_id == agency_id,
            announcements.c.started_at.is_not(None),
            announcements.c.started_at >= at - LINK_WINDOW,
            announcements.c.started_at <= at,
            reached,
        )
        .order_by(announcements.c.started_at.desc(), announcements.c.id.desc())
        .limit(1)
    )
    return None if found is None else int(found)


# -- reading --------------------------------------------------------------------------------


def _thread_columns() -> list[Any]:
    counts = (
        sa.select(sa.func.count())
        .where(inbound_messages.c.thread_id == inbox_threads.c.id)
        .scalar_subquery()
    )
    replies = (
        sa.select(sa.func.count())
        .where(inbox_replies.c.thread_id == inbox_threads.c.id)
        .scalar_subquery()
    )
    return [
        inbox_threads.c.id,
        inbox_threads.c.agency_id,
        inbox_threads.c.status,
        inbox_threads.c.channel,
        inbox_threads.c.subscriber_id,
        sa.func.coalesce(subscribers.c.phone_masked, inbox_threads.c.phone_masked).label(
            "phone_masked"
        ),
        inbox_threads.c.assigned_token_id,
        inbox_threads.c.announcement_id,
        inbox_threads.c.opened_at,
        inbox_threads.c.last_message_at,
        inbox_threads.c.first_response_at,
        inbox_threads.c.response_seconds,
        inbox_threads.c.closed_at,
        counts.label("messages_in"),
        replies.label("replies_out"),
    ]


def _threads_from() -> Any:
    return inbox_threads.outerjoin(subscribers, subscribers.c.id == inbox_threads.c.subscriber_id)


async def list_threads(
    conn: AsyncConnection,
    *,
    agency_id: int,
    limit: int,
    before_id: int | None,
    status: str | None,
    channel: str | None,
    assigned_token_id: int | None,
    unassigned: bool,
) -> list[dict[str, Any]]:
    query = (
        sa.select(*_thread_columns())
        .select_from(_threads_from())
        .where(inbox_threads.c.agency_id == agency_id)
        .order_by(inbox_threads.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(inbox_threads.c.id < before_id)
    if status is not None:
        query = query.where(inbox_threads.c.status == status)
    if channel is not None:
        query = query.where(inbox_threads.c.channel == channel)
    if unassigned:
        query = query.where(inbox_threads.c.assigned_token_id.is_(None))
    elif assigned_token_id is not None:
        query = query.where(inbox_threads.c.assigned_token_id == assigned_token_id)
    return [dict(row) for row in (await conn.execute(query)).mappings()]


async def get_thread(
    conn: AsyncConnection, *, agency_id: int, thread_id: int, for_update: bool = False
) -> dict[str, Any] | None:
    query = (
        sa.select(*_thread_columns(), inbox_threads.c.reply_ciphertext, subscribers.c.language)
        .select_from(_threads_from())
        .where(inbox_threads.c.id == thread_id, inbox_threads.c.agency_id == agency_id)
    )
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=inbox_threads)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else dict(row)


async def thread_messages(conn: AsyncConnection, *, thread_id: int) -> list[dict[str, Any]]:
    """Messages in and operator replies out, oldest first, replies with their delivery state."""
    incoming = await conn.execute(
        sa.select(
            inbound_messages.c.id,
            inbound_messages.c.channel,
            inbound_messages.c.text,
            inbound_messages.c.received_at,
            inbound_messages.c.announcement_id,
        ).where(inbound_messages.c.thread_id == thread_id)
    )
    outgoing = await conn.execute(
        sa.select(
            inbox_replies.c.id,
            inbox_replies.c.token_id,
            inbox_replies.c.created_at,
            deliveries.c.id.label("delivery_id"),
            deliveries.c.channel,
            deliveries.c.body,
            deliveries.c.state,
            deliveries.c.error_kind,
            deliveries.c.error_reason,
            deliveries.c.sent_at,
            deliveries.c.finished_at,
        )
        .join(deliveries, deliveries.c.id == inbox_replies.c.delivery_id)
        .where(inbox_replies.c.thread_id == thread_id)
    )
    items: list[dict[str, Any]] = [
        {"direction": "in", "at": row["received_at"], **row} for row in incoming.mappings()
    ]
    items.extend(
        {"direction": "out", "at": row["created_at"], **row} for row in outgoing.mappings()
    )
    items.sort(key=lambda item: (item["at"], item["direction"] == "out", item["id"]))
    return items


# -- acting ---------------------------------------------------------------------------------


async def opted_out(conn: AsyncConnection, *, subscriber_id: int, channel: str) -> bool:
    """Whether the subscriber has opted out of ``channel`` (or was erased)."""
    row = (
        await conn.execute(
            sa.select(subscribers.c.erased_at, subscriber_channels.c.opted_out_at)
            .select_from(
                subscribers.outerjoin(
                    subscriber_channels,
                    sa.and_(
                        subscriber_channels.c.subscriber_id == subscribers.c.id,
                        subscriber_channels.c.channel == channel,
                    ),
                )
            )
            .where(subscribers.c.id == subscriber_id)
        )
    ).first()
    if row is None:
        return False
    return row.erased_at is not None or row.opted_out_at is not None


async def last_inbound_at(
    conn: AsyncConnection, *, thread_id: int, subscriber_id: int | None, channel: str
) -> datetime | None:
    """When the thread's citizen last wrote on ``channel`` (None: never): a message of the
    thread or, for a subscriber, any of theirs (a keyword is not filed in a thread)."""
    theirs = inbound_messages.c.thread_id == thread_id
    if subscriber_id is not None:
        theirs = sa.or_(theirs, inbound_messages.c.subscriber_id == subscriber_id)
    found: datetime | None = await conn.scalar(
        sa.select(sa.func.max(inbound_messages.c.received_at)).where(
            theirs, inbound_messages.c.channel == channel
        )
    )
    return found


async def record_reply(
    conn: AsyncConnection,
    *,
    thread: dict[str, Any],
    token_id: int,
    text: str,
    language: str,
    priority: int,
    now: datetime,
) -> int:
    """Queue the operator's reply on the thread's channel; returns the delivery id.

    The first reply stamps the thread's time to first response.
    """
    delivery_id = await conn.scalar(
        sa.insert(deliveries)
        .values(
            announcement_id=None,
            agency_id=thread["agency_id"],
            subscriber_id=thread["subscriber_id"],
            kind="reply",
            body=text,
            recipient_ciphertext=thread["reply_ciphertext"],
            channel=thread["channel"],
            language=language,
            state=DeliveryState.QUEUED.value,
            priority=priority,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(deliveries.c.id)
    )
    assert delivery_id is not None
    await conn.execute(
        sa.insert(inbox_replies).values(
            thread_id=thread["id"], delivery_id=delivery_id, token_id=token_id, created_at=now
        )
    )
    if thread["first_response_at"] is None:
        waited = max(0, math.floor((now - thread["opened_at"]).total_seconds()))
        await conn.execute(
            sa.update(inbox_threads)
            .where(inbox_threads.c.id == thread["id"], inbox_threads.c.first_response_at.is_(None))
            .values(first_response_at=now, response_seconds=waited)
        )
    return int(delivery_id)


async def operator_token(conn: AsyncConnection, *, agency_id: int, token_id: int) -> bool:
    """Whether ``token_id`` is a live operator (or admin) token of the agency."""
    found = await conn.scalar(
        sa.select(api_tokens.c.id).where(
            api_tokens.c.id == token_id,
            api_tokens.c.agency_id == agency_id,
            api_tokens.c.revoked_at.is_(None),
            api_tokens.c.role.in_([Role.OPERATOR.value, Role.ADMIN.value]),
        )
    )
    return found is not None


async def assign(conn: AsyncConnection, *, thread_id: int, token_id: int | None) -> None:
    await conn.execute(
        sa.update(inbox_threads)
        .where(inbox_threads.c.id == thread_id)
        .values(assigned_token_id=token_id)
    )


async def close(conn: AsyncConnection, *, thread_id: int, now: datetime) -> bool:
    """Close an open thread; False when it was closed already."""
    result = await conn.execute(
        sa.update(inbox_threads)
        .where(inbox_threads.c.id == thread_id, inbox_threads.c.status == OPEN)
        .values(status=CLOSED, closed_at=now)
    )
    return bool(result.rowcount)


# -- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    answered: int
    median: float | None
    p90: float | None


def _rank_positions(count: int, fraction: float) -> tuple[int, int, float]:
    """1-based ranks around ``fraction`` and the weight of the upper one (linear, like
    PostgreSQL's ``percentile_cont``)."""
    position = fraction * (count - 1)
    lower = math.floor(position)
    return lower + 1, min(lower + 2, count), position - lower


async def response_times(
    conn: AsyncConnection, *, agency_id: int, since: datetime, until: datetime
) -> ResponseTimes:
    """Median and 90th percentile of the time to first response, over threads first answered
    in [since, until). Two set-based statements on both databases: count, then the few ranked
    values the percentiles need (a window function instead of ``percentile_cont``, which
    SQLite lacks)."""
    answered = sa.and_(
        inbox_threads.c.agency_id == agency_id,
        inbox_threads.c.first_response_at >= since,
        inbox_threads.c.first_response_at < until,
        inbox_threads.c.response_seconds.is_not(None),
    )
    count = int(await conn.scalar(sa.select(sa.func.count()).where(answered)) or 0)
    if count == 0:
        return ResponseTimes(0, None, None)
    wanted = {0.5: _rank_positions(count, 0.5), 0.9: _rank_positions(count, 0.9)}
    ranks = sorted({r for lower, upper, _ in wanted.values() for r in (lower, upper)})
    ranked = (
        sa.select(
            inbox_threads.c.response_seconds.label("seconds"),
            sa.func.row_number()
            .over(order_by=(inbox_threads.c.response_seconds, inbox_threads.c.id))
            .label("rank"),
        )
        .where(answered)
        .subquery()
    )
    values = {
        int(rank): float(seconds)
        for rank, seconds in await conn.execute(
            sa.select(ranked.c.rank, ranked.c.seconds).where(ranked.c.rank.in_(ranks))
        )
    }

    def at(fraction: float) -> float:
        lower, upper, weight = wanted[fraction]
        return values[lower] + (values[upper] - values[lower]) * weight

    return ResponseTimes(count, at(0.5), at(0.9))


async def delivery_counts(
    conn: AsyncConnection, *, agency_id: int, since: datetime, until: datetime
) -> list[tuple[str, str, int]]:
    """(channel, state, count) of the agency's deliveries created in [since, until)."""
    rows = await conn.execute(
        sa.select(deliveries.c.channel, deliveries.c.state, sa.func.count())
        .where(
            deliveries.c.agency_id == agency_id,
            deliveries.c.created_at >= since,
            deliveries.c.created_at < until,
        )
        .group_by(deliveries.c.channel, deliveries.c.state)
        .order_by(deliveries.c.channel, deliveries.c.state)
    )
    return [(str(channel), str(state), int(n)) for channel, state, n in rows]


async def threads_opened(
    conn: AsyncConnection, *, agency_id: int, since: datetime, until: datetime
) -> int:
    return int(
        await conn.scalar(
            sa.select(sa.func.count()).where(
                inbox_threads.c.agency_id == agency_id,
                inbox_threads.c.opened_at >= since,
                inbox_threads.c.opened_at < until,
            )
        )
        or 0
    )
