"""The outbox's set-based statements: claim a batch, record a batch of outcomes, reclaim leases.

Claim (one statement): ``UPDATE … SET state='sending', lease_until=… WHERE id IN (SELECT id …
ORDER BY priority, next_attempt_at, id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING …``. On
PostgreSQL, SKIP LOCKED lets any number of workers in any number of processes claim disjoint
batches; on SQLite the statement runs inside ``BEGIN IMMEDIATE``, which serialises writers.

Outcomes (one statement per batch, whatever the mix of results): the per-row values travel as
one JSON document, unpacked by ``jsonb_to_recordset`` (PostgreSQL) or ``json_each`` (SQLite)
and joined to ``deliveries`` by id.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import deliveries, subscriber_channels, subscribers
from gateway.domain import DeliveryState


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    announcement_id: int | None
    subscriber_id: int | None
    language: str
    attempts: int
    phone_ciphertext: bytes | None
    telegram_chat_id: int | None
    account: str | None = None
    body: str | None = None  # a reply's own text

    def __repr__(self) -> str:
        return f"Claimed(id={self.id}, announcement_id={self.announcement_id})"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to write for one delivery after a send attempt."""

    id: int
    state: DeliveryState
    provider_message_id: str | None = None
    cost: Decimal | None = None
    error_kind: str | None = None
    error_reason: str | None = None
    next_attempt_at: datetime | None = None
    url: str | None = None


async def claim(
    conn: AsyncConnection, *, channel: str, limit: int, now: datetime, lease_until: datetime
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries of ``channel``, most urgent first."""
    due = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.state == DeliveryState.QUEUED.value,
            deliveries.c.channel == channel,
            deliveries.c.next_attempt_at <= now,
        )
        .order_by(deliveries.c.priority, deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (
        await conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id.in_(due.scalar_subquery()))
            .values(
                state=DeliveryState.SENDING.value,
                lease_until=lease_until,
                attempts=deliveries.c.attempts + 1,
            )
            .returning(
                deliveries.c.id,
                deliveries.c.announcement_id,
                deliveries.c.subscriber_id,
                deliveries.c.language,
                deliveries.c.attempts,
                deliveries.c.account,
                deliveries.c.body,
                deliveries.c.recipient_ciphertext,
            )
        )
    ).all()
    if not rows:
        return []
    people = {
        row.id: row
        for row in await conn.execute(
            sa.select(
                subscribers.c.id, subscribers.c.phone_ciphertext, subscribers.c.telegram_chat_id
            ).where(subscribers.c.id.in_({r.subscriber_id for r in rows if r.subscriber_id}))
        )
    }
    claimed = []
    for r in rows:
        person = people.get(r.subscriber_id)
        claimed.append(
            Claimed(
                id=r.id,
                announcement_id=r.announcement_id,
                subscriber_id=r.subscriber_id,
                language=r.language,
                attempts=r.attempts,
                phone_ciphertext=r.recipient_ciphertext
                or (None if person is None else person.phone_ciphertext),
                telegram_chat_id=None if person is None else person.telegram_chat_id,
                account=r.account,
                body=r.body,
            )
        )
    claimed.sort(key=lambda c: c.id)
    return claimed


def _stamp(value: datetime | None) -> str | None:
    # SQLite compares timestamps as text, so write them in the exact form SQLAlchemy uses.
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


_FINAL = (
    DeliveryState.DELIVERED,
    DeliveryState.FAILED,
    DeliveryState.EXPIRED,
    DeliveryState.CANCELLED,
)

_RECORD_PG = sa.text(
    """
    UPDATE deliveries AS d SET
        state = v.state,
        provider_message_id = COALESCE(v.pmid, d.provider_message_id),
        url = COALESCE(v.url, d.url),
        cost = COALESCE(v.cost, d.cost),
        error_kind = v.error_kind,
        error_reason = v.error_reason,
        next_attempt_at = COALESCE(v.next_attempt_at, d.next_attempt_at),
        sent_at = CASE WHEN v.state = 'sent' THEN CAST(:now AS timestamptz) ELSE d.sent_at END,
        finished_at = CASE WHEN v.final THEN CAST(:now AS timestamptz) ELSE d.finished_at END,
        lease_until = NULL
    FROM jsonb_to_recordset(CAST(:payload AS jsonb)) AS v(
        id bigint, state text, pmid text, url text, cost numeric, error_kind text,
        error_reason text, next_attempt_at timestamptz, final boolean)
    WHERE d.id = v.id AND d.state = 'sending'
    """
)

_RECORD_SQLITE = sa.text(
    """
    UPDATE deliveries SET
        state = json_extract(v.value, '$.state'),
        provider_message_id = COALESCE(json_extract(v.value, '$.pmid'), provider_message_id),
        url = COALESCE(json_extract(v.value, '$.url'), url),
        cost = COALESCE(json_extract(v.value, '$.cost'), cost),
        error_kind = json_extract(v.value, '$.error_kind'),
        error_reason = json_extract(v.value, '$.error_reason'),
        next_attempt_at = COALESCE(json_extract(v.value, '$.next_attempt_at'), next_attempt_at),
        sent_at = CASE WHEN json_extract(v.value, '$.state') = 'sent' THEN :now ELSE sent_at END,
        finished_at = CASE WHEN json_extract(v.value, '$.final') THEN :now ELSE finished_at END,
        lease_until = NULL
    FROM json_each(:payload) AS v
    WHERE deliveries.id = json_extract(v.value, '$.id') AND deliveries.state = 'sending'
    """
)


async def record_outcomes(
    conn: AsyncConnection, outcomes: Sequence[Outcome], *, now: datetime
) -> int:
    """Write every outcome of a batch in one statement; returns rows changed."""
    if not outcomes:
        return 0
    sqlite = conn.dialect.name == "sqlite"
    payload = json.dumps(
        [
            {
                "id": o.id,
                "state": o.state.value,
                "pmid": o.provider_message_id,
                "url": o.url,
                "cost": None if o.cost is None else (float(o.cost) if sqlite else str(o.cost)),
                "error_kind": o.error_kind,
                "error_reason": None if o.error_reason is None else o.error_reason[:200],
                "next_attempt_at": _stamp(o.next_attempt_at)
                if sqlite
                else (None if o.next_attempt_at is None else o.next_attempt_at.isoformat()),
                "final": o.state in _FINAL,
            }
            for o in outcomes
        ]
    )
    statement = _RECORD_SQLITE if sqlite else _RECORD_PG
    result = await conn.execute(
        statement, {"payload": payload, "now": _stamp(now) if sqlite else now}
    )
    return int(result.rowcount or 0)


async def lock_reports(conn: AsyncConnection, channels: Sequence[str]) -> None:
    """Serialise "record a send" with "store a report" per channel, on PostgreSQL.

    Under READ COMMITTED, a report stored while the send's outcome is being recorded would
    see no provider message id yet, and the outcome's look for early reports would not see
    the uncommitted report: both would miss and the delivery would stay ``sent``. A
    transaction-scoped advisory lock per channel makes one wait for the other. SQLite has a
    single writer already.
    """
    if conn.dialect.name != "postgresql":
        return
    for channel in sorted(set(channels)):
        key = 7_100_000_000 + zlib.crc32(channel.encode())
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def apply_early_reports(conn: AsyncConnection, *, channel: str, ids: Sequence[int]) -> None:
    """A delivery report can overtake the record of its send; apply the ones already stored."""
    from gateway.db.schema import delivery_reports

    if not ids:
        return
    final_report = (
        sa.select(delivery_reports.c.state)
        .where(
            delivery_reports.c.channel == channel,
            delivery_reports.c.provider_message_id == deliveries.c.provider_message_id,
            delivery_reports.c.state.in_(
                [DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]
            ),
        )
        .order_by(delivery_reports.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    await conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.id.in_(ids),
            deliveries.c.state == DeliveryState.SENT.value,
            final_report.is_not(None),
        )
        .values(
            state=final_report,
            finished_at=sa.func.coalesce(deliveries.c.finished_at, deliveries.c.sent_at),
        )
    )


async def stop_recipients(
    conn: AsyncConnection, *, channel: str, delivery_ids: Sequence[int], now: datetime
) -> None:
    """The provider says these citizens stopped us: opt them out of the channel and cancel
    whatever else is queued for them there."""
    if not delivery_ids:
        return
    who = sa.select(deliveries.c.subscriber_id).where(
        deliveries.c.id.in_(delivery_ids), deliveries.c.subscriber_id.is_not(None)
    )
    await conn.execute(
        sa.update(subscriber_channels)
        .where(
            subscriber_channels.c.channel == channel,
            subscriber_channels.c.subscriber_id.in_(who),
            subscriber_channels.c.opted_out_at.is_(None),
        )
        .values(opted_out_at=now)
    )
    await conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.channel == channel,
            deliveries.c.subscriber_id.in_(who),
            deliveries.c.state == DeliveryState.QUEUED.value,
        )
        .values(
            state=DeliveryState.CANCELLED.value,
            error_kind="stopped",
            error_reason="recipient stopped",
            finished_at=now,
        )
    )


async def reclaim_expired_leases(conn: AsyncConnection, *, now: datetime, max_attempts: int) -> int:
    """Deliveries whose worker died mid-send go back to the queue (or fail past the limit)."""
    stale = [deliveries.c.state == DeliveryState.SENDING.value, deliveries.c.lease_until < now]
    await conn.execute(
        sa.update(deliveries)
        .where(*stale, deliveries.c.attempts >= max_attempts)
        .values(
            state=DeliveryState.FAILED.value,
            error_kind="connection",
            error_reason="no result after the last attempt",
            lease_until=None,
            finished_at=now,
        )
    )
    result = await conn.execute(
        sa.update(deliveries)
        .where(*stale)
        .values(state=DeliveryState.QUEUED.value, lease_until=None)
    )
    return int(result.rowcount or 0)
