"""The outbox's set-based statements: claim a batch, record a batch of outcomes, reclaim leases.

Claim, PostgreSQL (one statement): ``UPDATE … SET state='sending', lease_until=… FROM (SELECT
id … ORDER BY priority, next_attempt_at, id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING …``; SKIP
LOCKED lets any number of workers in any number of processes claim disjoint batches. SQLite
(three statements inside ``BEGIN IMMEDIATE``, which serialises writers): the same ids as one
JSON array, the UPDATE of those ids, the claimed rows as one JSON array.

Outcomes (one statement per batch whatever the mix of results; on SQLite a second one, as
plain sends travel in a shorter form): the per-row values travel as arrays unpacked by
``unnest`` (PostgreSQL) or as one JSON document unpacked by ``json_each`` (SQLite), joined to
``deliveries`` by id.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.dialect import Dialect, bound_ids, dialect_name, id_in
from gateway.db.schema import deliveries, delivery_reports, subscriber_channels, subscribers
from gateway.domain import DeliveryState


class Claimed(NamedTuple):
    # A tuple, not a dataclass: a batch makes thousands, straight from the RETURNING rows.
    id: int
    announcement_id: int | None
    subscriber_id: int | None
    language: str
    attempts: int
    phone_ciphertext: bytes | None
    telegram_chat_id: int | None
    account: str | None = None
    body: str | None = None  # a reply's own text
    area_code: str | None = None  # its zone for quiet hours (gateway.outbox.quiet)

    def __repr__(self) -> str:
        return f"Claimed(id={self.id}, announcement_id={self.announcement_id})"


class Outcome(NamedTuple):
    """What to write for one delivery after a send attempt."""

    id: int
    state: DeliveryState
    provider_message_id: str | None = None
    cost: Decimal | None = None
    error_kind: str | None = None
    error_reason: str | None = None
    next_attempt_at: datetime | None = None
    url: str | None = None
    # Handed back without being sent (a provider's pause): the claim's attempt is given back.
    refund: bool = False


def _of_subscriber(column: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    # Named in full: SQLite's RETURNING drops table names, and the subquery must read the
    # claimed row's subscriber_id, not one of its own.
    claimed_subscriber: sa.ColumnElement[int] = sa.literal_column("deliveries.subscriber_id")
    return sa.select(column).where(subscribers.c.id == claimed_subscriber).scalar_subquery()


_CLAIM_VALUES = {
    "state": DeliveryState.SENDING.value,
    "lease_until": sa.bindparam("claim_lease_until", type_=deliveries.c.lease_until.type),
    "attempts": deliveries.c.attempts + 1,
}
_CLAIM_RETURNING = (
    deliveries.c.id,
    deliveries.c.announcement_id,
    deliveries.c.subscriber_id,
    deliveries.c.language,
    deliveries.c.attempts,
    sa.func.coalesce(
        deliveries.c.recipient_ciphertext, _of_subscriber(subscribers.c.phone_ciphertext)
    ),
    # Only Telegram reads the chat id: the others would look the subscriber up a second time.
    sa.case(
        (deliveries.c.channel == "telegram", _of_subscriber(subscribers.c.telegram_chat_id)),
        else_=sa.null(),
    ),
    deliveries.c.account,
    deliveries.c.body,
    deliveries.c.area_code,
)
# The due deliveries of a channel, most urgent first, skipping rows other workers hold.
_CLAIMABLE_IDS = (
    sa.select(deliveries.c.id)
    .where(
        deliveries.c.state == DeliveryState.QUEUED.value,
        deliveries.c.channel == sa.bindparam("claim_channel"),
        deliveries.c.next_attempt_at
        <= sa.bindparam("claim_now", type_=deliveries.c.next_attempt_at.type),
    )
    .order_by(deliveries.c.priority, deliveries.c.next_attempt_at, deliveries.c.id)
    .limit(sa.bindparam("claim_limit", type_=sa.Integer))
    .with_for_update(skip_locked=True)
)
# SQLite: three statements that each answer in one row. The sqlite3 module lets go of the GIL
# for every row it steps through; a RETURNING of 2,000 rows in the writer's thread
# (gateway.db.writer) then waited up to a switch interval for the GIL 2,000 times while the
# event loop was busy, holding the write lock all along. Here the ids, then the claimed rows,
# come back as one JSON array each (the ciphertext in hex): one wait per statement.
# The ids: the same selection as PostgreSQL claims from (its FOR UPDATE is not rendered here).
_CLAIMABLE_SQLITE = sa.select(sa.func.json_group_array(_CLAIMABLE_IDS.subquery().c.id))
_TAKE_SQLITE = sa.text(
    """
    UPDATE deliveries SET state = 'sending', attempts = attempts + 1, lease_until = :lease_until
    WHERE id IN (SELECT value FROM json_each(:ids))
    """
)
# The chat id only for Telegram: the other channels would read the subscriber row twice.
_CLAIMED_SQLITE = sa.text(
    """
    SELECT json_group_array(json_array(
        d.id, d.announcement_id, d.subscriber_id, d.language, d.attempts,
        hex(COALESCE(d.recipient_ciphertext, s.phone_ciphertext)),
        CASE WHEN d.channel = 'telegram' THEN s.telegram_chat_id END,
        d.account, d.body, d.area_code))
    FROM deliveries AS d LEFT JOIN subscribers AS s ON s.id = d.subscriber_id
    WHERE d.id IN (SELECT value FROM json_each(:ids))
    """
)


# PostgreSQL: the claimable ids are picked once, in a materialised CTE. Inside ``IN (…)`` the
# planner may run a ``LIMIT … FOR UPDATE SKIP LOCKED`` subquery more than once, locking more
# rows than it returns; with several worker processes the claims then wait on each other's
# stray locks for minutes (seen with 4 workers on 200,000 queued deliveries).
_CLAIMABLE = _CLAIMABLE_IDS.cte("claimable").prefix_with("MATERIALIZED", dialect="postgresql")
_CLAIM_PG = (
    sa.update(deliveries)
    .where(deliveries.c.id == _CLAIMABLE.c.id)
    .values(_CLAIM_VALUES)
    .returning(*_CLAIM_RETURNING)
)


def claim(
    conn: Connection, *, channel: str, limit: int, now: datetime, lease_until: datetime
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries of ``channel``, most urgent first; in id order."""
    if conn.dialect.name == "sqlite":
        return _claim_sqlite(conn, channel=channel, limit=limit, now=now, lease_until=lease_until)
    result = conn.execute(
        _CLAIM_PG,
        {
            "claim_channel": channel,
            "claim_now": now,
            "claim_limit": limit,
            "claim_lease_until": lease_until,
        },
    )
    claimed = list(map(Claimed._make, result))
    claimed.sort(key=itemgetter(0))
    return claimed


def _claim_sqlite(
    conn: Connection, *, channel: str, limit: int, now: datetime, lease_until: datetime
) -> list[Claimed]:
    ids = conn.execute(
        _CLAIMABLE_SQLITE, {"claim_channel": channel, "claim_now": now, "claim_limit": limit}
    ).scalar_one()
    if ids == "[]":
        return []
    conn.execute(_TAKE_SQLITE, {"lease_until": _stamp(lease_until), "ids": ids})
    rows = json.loads(conn.execute(_CLAIMED_SQLITE, {"ids": ids}).scalar_one())
    claimed = [
        Claimed(id_, announcement, subscriber, language, attempts,
                bytes.fromhex(cipher) if cipher else None, chat, account, body, area)
        for (id_, announcement, subscriber, language, attempts, cipher, chat, account, body,
             area) in rows
    ]  # fmt: skip
    claimed.sort(key=itemgetter(0))
    return claimed


def give_back(conn: Connection, batch: Sequence[Claimed]) -> None:
    """A batch claimed for a worker that stopped before sending it goes back to the queue as
    it was: no lease, the claim's attempt not counted."""
    if not batch:
        return
    conn.execute(
        sa.update(deliveries)
        .where(_among(conn), deliveries.c.state == DeliveryState.SENDING.value)
        .values(
            state=DeliveryState.QUEUED.value,
            lease_until=None,
            attempts=deliveries.c.attempts - 1,
        ),
        _ids(conn, [item.id for item in batch]),
    )


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
# state -> (its text, whether it is final): one lookup per outcome.
_STATE_COLUMNS = {state: (state.value, state in _FINAL) for state in DeliveryState}

# The per-row values travel as columns: arrays bound by asyncpg without any JSON (PostgreSQL),
# or one JSON array of rows (SQLite), in this order.
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
        lease_until = NULL,
        attempts = d.attempts - CASE WHEN v.refund THEN 1 ELSE 0 END
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:states AS text[]), CAST(:pmids AS text[]),
        CAST(:urls AS text[]), CAST(:costs AS numeric[]), CAST(:error_kinds AS text[]),
        CAST(:error_reasons AS text[]), CAST(:next_attempts AS timestamptz[]),
        CAST(:finals AS boolean[]), CAST(:refunds AS boolean[])
    ) AS v(id, state, pmid, url, cost, error_kind, error_reason, next_attempt_at, final, refund)
    WHERE d.id = v.id AND d.state = 'sending'
    """
)
_PG_COLUMNS = (
    "ids", "states", "pmids", "urls", "costs", "error_kinds", "error_reasons", "next_attempts",
    "finals", "refunds",
)  # fmt: skip
# Plain sends in three arrays, as on SQLite below: asyncpg checks every element of every array
# it encodes (is it an array itself?), and the ten above cost the event loop ~4 us a delivery.
_RECORD_SENT_PG = sa.text(
    """
    UPDATE deliveries AS d SET
        state = 'sent',
        provider_message_id = COALESCE(v.pmid, d.provider_message_id),
        cost = COALESCE(v.cost, d.cost),
        error_kind = NULL,
        error_reason = NULL,
        sent_at = CAST(:now AS timestamptz),
        lease_until = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:pmids AS text[]), CAST(:costs AS numeric[]))
        AS v(id, pmid, cost)
    WHERE d.id = v.id AND d.state = 'sending'
    """
)

_RECORD_SQLITE = sa.text(
    """
    UPDATE deliveries SET
        state = json_extract(v.value, '$[1]'),
        provider_message_id = COALESCE(json_extract(v.value, '$[2]'), provider_message_id),
        url = COALESCE(json_extract(v.value, '$[3]'), url),
        cost = COALESCE(json_extract(v.value, '$[4]'), cost),
        error_kind = json_extract(v.value, '$[5]'),
        error_reason = json_extract(v.value, '$[6]'),
        next_attempt_at = COALESCE(json_extract(v.value, '$[7]'), next_attempt_at),
        sent_at = CASE WHEN json_extract(v.value, '$[1]') = 'sent' THEN :now ELSE sent_at END,
        finished_at = CASE WHEN json_extract(v.value, '$[8]') THEN :now ELSE finished_at END,
        lease_until = NULL,
        attempts = attempts - json_extract(v.value, '$[9]')
    FROM json_each(:payload) AS v
    WHERE deliveries.id = json_extract(v.value, '$[0]') AND deliveries.state = 'sending'
    """
)
# Nearly every outcome of a broadcast is a plain "sent" (a message id, a cost, nothing else):
# those travel as [id, message id, cost]. SQLite parses a row's JSON again for every
# json_extract, so the twelve above cost 7 us a row more than these three (2000-row batches).
_RECORD_SENT_SQLITE = sa.text(
    """
    UPDATE deliveries SET
        state = 'sent',
        provider_message_id = COALESCE(json_extract(v.value, '$[1]'), provider_message_id),
        cost = COALESCE(json_extract(v.value, '$[2]'), cost),
        error_kind = NULL,
        error_reason = NULL,
        sent_at = :now,
        lease_until = NULL
    FROM json_each(:payload) AS v
    WHERE deliveries.id = json_extract(v.value, '$[0]') AND deliveries.state = 'sending'
    """
)


# A batch's outcomes as statements and their bound values (all but ``now``), made before the
# transaction that writes them: on SQLite that transaction holds the one write lock.
PreparedOutcomes = list[tuple[sa.TextClause, dict[str, Any]]]


def prepare_outcomes(outcomes: Sequence[Outcome], *, dialect: str) -> PreparedOutcomes:
    """At most two statements for the batch: plain sends in a short form, the rest in full."""
    if not outcomes:
        return []
    if dialect == "sqlite":
        return _prepare_sqlite(outcomes)
    sent: tuple[list[int], list[str | None], list[Decimal | None]] = ([], [], [])
    rows: list[tuple[Any, ...]] = []
    sent_state = DeliveryState.SENT
    for id_, state, pmid, cost, error_kind, reason, next_attempt_at, url, refund in outcomes:
        plain = error_kind is None and reason is None and next_attempt_at is None and url is None
        if state is sent_state and plain and not refund:
            sent[0].append(id_)
            sent[1].append(pmid)
            sent[2].append(cost)
            continue
        text, final = _STATE_COLUMNS[state]
        if reason is not None:
            reason = reason[:200]
        rows.append(
            (id_, text, pmid, url, cost, error_kind, reason, next_attempt_at, final, refund)
        )
    prepared: PreparedOutcomes = []
    if sent[0]:
        prepared.append((_RECORD_SENT_PG, {"ids": sent[0], "pmids": sent[1], "costs": sent[2]}))
    if rows:
        columns = dict(zip(_PG_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
        prepared.append((_RECORD_PG, columns))
    return prepared


def _prepare_sqlite(outcomes: Sequence[Outcome]) -> PreparedOutcomes:
    sent: list[tuple[Any, ...]] = []
    rows: list[tuple[Any, ...]] = []
    sent_state = DeliveryState.SENT
    for id_, state, pmid, cost, error_kind, reason, next_attempt_at, url, refund in outcomes:
        price = None if cost is None else float(cost)
        plain = error_kind is None and reason is None and next_attempt_at is None and url is None
        if state is sent_state and plain and not refund:
            sent.append((id_, pmid, price))
            continue
        text, final = _STATE_COLUMNS[state]
        if reason is not None:
            reason = reason[:200]
        rows.append((
            id_, text, pmid, url, price, error_kind, reason, _stamp(next_attempt_at), final,
            int(refund),
        ))  # fmt: skip
    return [
        (statement, {"payload": json.dumps(payload)})
        for statement, payload in ((_RECORD_SENT_SQLITE, sent), (_RECORD_SQLITE, rows))
        if payload
    ]


def write_outcomes(conn: Connection, prepared: PreparedOutcomes, *, now: datetime) -> int:
    """Run what ``prepare_outcomes`` made; returns rows changed."""
    at: Any = _stamp(now) if conn.dialect.name == "sqlite" else now
    changed = 0
    for statement, values in prepared:
        result = conn.execute(statement, {**values, "now": at})
        changed += int(result.rowcount or 0)
    return changed


# A batch's ids travel as one bound value (gateway.db.dialect.id_in).
_AMONG = id_in(deliveries.c.id, "among_ids")


def _among(conn: Connection | AsyncConnection) -> sa.ColumnElement[bool]:
    """``deliveries.id IN ids``, the ids bound by ``_ids``."""
    return _AMONG[dialect_name(conn)]


def _ids(conn: Connection | AsyncConnection, ids: Sequence[int]) -> dict[str, Any]:
    return bound_ids(dialect_name(conn), "among_ids", ids)


def lock_reports(conn: Connection, channels: Sequence[str]) -> None:
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
        conn.execute(_LOCK_REPORTS, {"key": key})


# Text, not a select() of the function: built once, not once a batch.
_LOCK_REPORTS = sa.text("SELECT pg_advisory_xact_lock(:key)")


def _early_reports(dialect: Dialect) -> sa.Update:
    """The statement of ``apply_early_reports``: built once per dialect, channel and ids bound."""

    def final(column: sa.Column[Any]) -> Any:
        return (
            sa.select(column)
            .where(
                delivery_reports.c.channel == sa.bindparam("early_channel", type_=sa.String),
                delivery_reports.c.provider_message_id == deliveries.c.provider_message_id,
                delivery_reports.c.state.in_(
                    [DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]
                ),
            )
            .order_by(delivery_reports.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    final_state = final(delivery_reports.c.state)
    # The same values a report applied in order would have written (gateway.outbox.reports).
    return (
        sa.update(deliveries)
        .where(
            _AMONG[dialect],
            deliveries.c.state == DeliveryState.SENT.value,
            final_state.is_not(None),
        )
        .values(
            state=final_state,
            error_reason=sa.func.coalesce(
                final(delivery_reports.c.reason), deliveries.c.error_reason
            ),
            error_kind=sa.case(
                (final_state == DeliveryState.FAILED.value, "rejected"),
                else_=deliveries.c.error_kind,
            ),
            cost=sa.func.coalesce(final(delivery_reports.c.cost), deliveries.c.cost),
            finished_at=sa.func.coalesce(deliveries.c.finished_at, deliveries.c.sent_at),
        )
    )


_EARLY_REPORTS = {dialect: _early_reports(dialect) for dialect in _AMONG}


# Which of a batch's provider message ids already have a final report: looked up in the
# reports' own index, without reading the batch's deliveries.
_REPORTED = (
    sa.select(delivery_reports.c.provider_message_id)
    .where(
        delivery_reports.c.channel == sa.bindparam("early_channel", type_=sa.String),
        delivery_reports.c.state.in_([DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]),
    )
    .distinct()
)
_REPORTED_AMONG = {
    "sqlite": _REPORTED.where(
        delivery_reports.c.provider_message_id.in_(
            sa.select(sa.literal_column("value")).select_from(
                sa.func.json_each(sa.bindparam("early_pmids_json", type_=sa.String))
            )
        )
    ),
    "postgresql": _REPORTED.where(
        delivery_reports.c.provider_message_id
        == sa.any_(sa.bindparam("early_pmids", type_=ARRAY(sa.String)))
    ),
}


def apply_early_reports(
    conn: Connection, *, channel: str, sent: Sequence[tuple[int, str | None]]
) -> None:
    """A delivery report can overtake the record of its send; apply the ones already stored.

    ``sent``: each delivery just recorded as sent, with the provider message id its outcome
    carried. Those ids are looked up among the stored reports first, so a batch that nothing
    overtook (nearly every one) reads no delivery again. A delivery whose outcome carried no
    id is checked by the id its row keeps, as before.
    """
    if not sent:
        return
    dialect = dialect_name(conn)
    pmids = sorted({pmid for _, pmid in sent if pmid})
    reported: set[str] = set()
    if pmids:
        bound = (
            {"early_pmids_json": json.dumps(pmids)}
            if dialect == "sqlite"
            else {"early_pmids": pmids}
        )
        reported = set(
            conn.execute(_REPORTED_AMONG[dialect], {"early_channel": channel, **bound}).scalars()
        )
    ids = [id_ for id_, pmid in sent if not pmid or pmid in reported]
    if not ids:
        return
    conn.execute(_EARLY_REPORTS[dialect], {"early_channel": channel, **_ids(conn, ids)})


def stop_recipients(
    conn: Connection, *, channel: str, delivery_ids: Sequence[int], now: datetime
) -> None:
    """The provider says these citizens stopped us: opt them out of the channel and cancel
    whatever else is queued for them there."""
    if not delivery_ids:
        return
    who = sa.select(deliveries.c.subscriber_id).where(
        deliveries.c.id.in_(delivery_ids), deliveries.c.subscriber_id.is_not(None)
    )
    conn.execute(
        sa.update(subscriber_channels)
        .where(
            subscriber_channels.c.channel == channel,
            subscriber_channels.c.subscriber_id.in_(who),
            subscriber_channels.c.opted_out_at.is_(None),
        )
        .values(opted_out_at=now)
    )
    conn.execute(
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


async def reclaim_expired_leases(
    conn: AsyncConnection, *, now: datetime, max_attempts: int, keep: Sequence[int] = ()
) -> int:
    """Deliveries whose worker died mid-send go back to the queue (or fail past the limit),
    except those in ``keep`` (``late_stops.cancel_stale``: still in a live worker's hands, or
    a stop may be deciding them)."""
    stale = [deliveries.c.state == DeliveryState.SENDING.value, deliveries.c.lease_until < now]
    params: dict[str, Any] = {}
    if keep:
        stale.append(sa.not_(_among(conn)))
        params = _ids(conn, keep)
    await conn.execute(
        sa.update(deliveries)
        .where(*stale, deliveries.c.attempts >= max_attempts)
        .values(
            state=DeliveryState.FAILED.value,
            error_kind="connection",
            error_reason="no result after the last attempt",
            lease_until=None,
            finished_at=now,
        ),
        params,
    )
    result = await conn.execute(
        sa.update(deliveries)
        .where(*stale)
        .values(state=DeliveryState.QUEUED.value, lease_until=None),
        params,
    )
    return int(result.rowcount or 0)


def renew_leases(conn: Connection, ids: Sequence[int], *, now: datetime, until: datetime) -> int:
    """A batch still in its worker's hands keeps its lease (one statement for the batch).

    Only deliveries still ``sending`` under a lease that has not run out are renewed: one that
    maintenance already reclaimed stays with whoever has it now.
    """
    if not ids:
        return 0
    result = conn.execute(
        sa.update(deliveries)
        .where(
            _among(conn),
            deliveries.c.state == DeliveryState.SENDING.value,
            deliveries.c.lease_until >= now,
        )
        .values(lease_until=until),
        _ids(conn, ids),
    )
    return int(result.rowcount or 0)
