"""Fallback: a citizen a channel could not reach gets the announcement on their next channel.

When a personal announcement delivery (SMS, voice, Telegram, WhatsApp) fails for good, one new
delivery of the same announcement is queued for the same subscriber, with ``fallback_of`` = the
failed delivery's id. The channel is the first, in this order, that the gateway runs, that
can address the subscriber, and on which they have no delivery of this announcement yet:

1. the channels the subscriber chose and has not opted out of, by their ``preference``;
2. SMS, if they did not choose it, have a phone number and have not opted out of it;
3. for emergencies only, a voice call, on the same terms as SMS.

Voice is never a fallback for a normal announcement, even for someone who chose it: a call is
the most expensive and the most intrusive way to reach a person.

For emergencies, a Telegram or WhatsApp delivery still ``sent`` (never confirmed delivered or
read) ``fallback_unconfirmed_s`` after it went out falls back the same way. Telegram sends no
delivery reports at all, so every emergency on Telegram is also sent on the next channel after
that time: for an emergency, a second message is cheaper than a citizen not warned.

No fallback is queued while the subscriber has another delivery of the announcement that may
still reach them (queued, in flight, delivered, or sent and not overdue for confirmation), and
a delivery gets at most one stand-in. A stand-in that fails falls back in turn, so the chain
walks down the list until a channel works or none is left.

Set-based: one ``INSERT … SELECT`` queues the stand-ins of a whole batch. The unique constraint
(announcement, channel, subscriber) with ``ON CONFLICT DO NOTHING`` makes a second copy on a
channel impossible, whatever races between processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from cachetools import LRUCache
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.dialect import Dialect, bound_ids, dialect_name, id_in, insert_ignoring_conflicts
from gateway.db.schema import When, announcements, deliveries, subscriber_channels, subscribers
from gateway.domain import PERSONAL_CHANNELS, AnnouncementStatus, DeliveryState, Urgency
from gateway.outbox.fanout import DELIVERY_COLUMNS
from gateway.pricing import Tariff

# Channels that can tell us a message arrived; an emergency there must be confirmed in time.
DATA_CHANNELS = ("telegram", "whatsapp")
# Telegram sends no delivery reports: an accepted message is as delivered as it will ever be.
UNREPORTED_CHANNELS = ("telegram",)
# Ranks after any preference a subscriber can give (preferences are list positions).
SMS_RANK = 1_000_000
VOICE_RANK = 2_000_000

_ANNOUNCEMENT = "announcement"
# The fan-out's columns, plus the failed delivery each fallback stands in for.
_FALLBACK_COLUMNS = (*DELIVERY_COLUMNS, "fallback_of")


@dataclass(frozen=True, slots=True)
class FallbackRules:
    """What the gateway can fall back to.

    Attributes:
        channels: the personal channels this gateway runs; a stand-in on any other channel
            would wait in the outbox for ever.
        unconfirmed_after: how long an emergency on a data channel may stay ``sent``.
        tariff: prices a stand-in SMS the way fan-out prices one; None leaves cost empty.
        sms_segments: announcement id -> language -> segments of its SMS rendition; a
            missing entry counts one segment.
        call_tariff: prices a stand-in voice call the way fan-out prices one.
        call_minutes: announcement id -> language -> the minutes one call of it is billed
            for; a stand-in call without an entry has no estimate.
    """

    channels: frozenset[str]
    unconfirmed_after: timedelta
    tariff: Tariff | None = None
    sms_segments: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    call_tariff: Tariff | None = None
    call_minutes: Mapping[int, Mapping[str, Decimal]] = field(default_factory=dict)

    def key(self) -> tuple[Any, ...]:
        """Everything the stand-ins' statement is built from, hashable."""
        return (
            self.channels,
            self.unconfirmed_after,
            _prices(self.tariff),
            _per_announcement(self.sms_segments),
            _prices(self.call_tariff),
            _per_announcement(self.call_minutes),
        )


def _prices(tariff: Tariff | None) -> tuple[Any, ...] | None:
    if tariff is None:
        return None
    return (
        tariff.currency,
        tariff.default,
        tuple(sorted(tariff.per_region.items())),
        tuple(sorted((c, tuple(sorted(n.items()))) for c, n in tariff.per_network.items())),
    )


def _per_announcement(values: Mapping[int, Mapping[str, Any]]) -> tuple[Any, ...]:
    return tuple(sorted((a, tuple(sorted(m.items()))) for a, m in values.items()))


failed = deliveries.alias("failed")
_other = deliveries.alias("other")
_child = deliveries.alias("child")
_taken = deliveries.alias("taken")

# The statements' times are bound at execution (``_times``), as are their sources' values, so
# each is built once (``_kept``).
_NOW = sa.bindparam("fallback_now", type_=When)
_CONFIRM_BY = sa.bindparam("fallback_confirm_by", type_=When)


def _times(now: datetime, rules: FallbackRules) -> dict[str, Any]:
    return {"fallback_now": now, "fallback_confirm_by": now - rules.unconfirmed_after}


def _emergency() -> sa.ColumnElement[bool]:
    return announcements.c.urgency == Urgency.EMERGENCY.value


SourceKind = Literal["among", "since", "unconfirmed"]


@dataclass(frozen=True, slots=True)
class Source:
    """Which deliveries need a stand-in: a kind of source (``failed_among``,
    ``failed_since``, ``unconfirmed``) and the values its terms are bound to.

    Only the values change from one batch or pass to the next, so each kind's statement is
    built once per set of rules and kept (``_kept``)."""

    kind: SourceKind
    values: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"Source({self.kind})"


_SINCE = sa.bindparam("fallback_since", type_=When)
_SENT_AFTER = sa.bindparam("fallback_sent_after", type_=When)
_SENT_BEFORE = sa.bindparam("fallback_sent_before", type_=When)


def _terms(kind: SourceKind, dialect: Dialect) -> sa.ColumnElement[bool]:
    """WHERE terms over ``failed`` of a kind of source, its values bound by name."""
    if kind == "among":
        # The batch's ids as one bound value, as in ``claims``.
        ids = id_in(failed.c.id, "failed_ids")[dialect]
        return sa.and_(ids, failed.c.state == DeliveryState.FAILED.value)
    if kind == "since":
        return sa.and_(failed.c.state == DeliveryState.FAILED.value, failed.c.finished_at > _SINCE)
    if kind == "unconfirmed":
        return sa.and_(
            failed.c.state == DeliveryState.SENT.value,
            # Rendered as literals: only then can SQLite see that ix_deliveries_unconfirmed (on
            # exactly these channels) holds every row this selects, instead of scanning them.
            failed.c.channel.in_(
                sa.bindparam(
                    "data_channels", list(DATA_CHANNELS), expanding=True, literal_execute=True
                )
            ),
            _emergency(),
            failed.c.sent_at > _SENT_AFTER,
            failed.c.sent_at <= _SENT_BEFORE,
        )
    raise ValueError(f"no such source: {kind}")


def _bound(source: Source, dialect: Dialect) -> dict[str, Any]:
    if source.kind == "among":
        return bound_ids(dialect, "failed_ids", source.values["failed_ids"])
    return dict(source.values)


def failed_among(ids: Sequence[int]) -> Source:
    """Source: these deliveries, where they are now ``failed`` (a batch just recorded)."""
    return Source("among", {"failed_ids": list(ids)})


def failed_since(since: datetime) -> Source:
    """Source: deliveries that failed after ``since`` (reports, leases that ran out)."""
    return Source("since", {"fallback_since": since})


def unconfirmed(*, sent_after: datetime, sent_before: datetime) -> Source:
    """Source: emergencies on a data channel, sent in the window and still not confirmed."""
    return Source(
        "unconfirmed", {"fallback_sent_after": sent_after, "fallback_sent_before": sent_before}
    )


def _sources(
    source: sa.ColumnElement[bool], *, rules: FallbackRules
) -> list[sa.ColumnElement[bool]]:
    """WHERE terms over ``failed`` joined to its announcement: who needs a stand-in."""
    child = sa.exists().where(_child.c.fallback_of == failed.c.id)
    overdue = sa.and_(
        _emergency(),
        _other.c.channel.in_(DATA_CHANNELS),
        _other.c.sent_at <= _CONFIRM_BY,
    )
    may_still_reach = sa.exists().where(
        _other.c.announcement_id == failed.c.announcement_id,
        # Only these carry a subscriber; naming them lets the (announcement, channel,
        # subscriber) unique index find this person's deliveries, where the announcement
        # alone would read all of its deliveries once per failure.
        _other.c.channel.in_(PERSONAL_CHANNELS),
        _other.c.subscriber_id == failed.c.subscriber_id,
        _other.c.id != failed.c.id,
        sa.or_(
            _other.c.state.in_(
                [
                    DeliveryState.QUEUED.value,
                    DeliveryState.SENDING.value,
                    DeliveryState.DELIVERED.value,
                ]
            ),
            sa.and_(_other.c.state == DeliveryState.SENT.value, ~overdue),
        ),
    )
    return [
        source,
        failed.c.kind == _ANNOUNCEMENT,
        failed.c.channel.in_(PERSONAL_CHANNELS),
        failed.c.subscriber_id.is_not(None),
        announcements.c.status.not_in(
            [AnnouncementStatus.CANCELLED.value, AnnouncementStatus.EXPIRED.value]
        ),
        sa.or_(announcements.c.expires_at.is_(None), announcements.c.expires_at > _NOW),
        ~child,
        ~may_still_reach,
    ]


def _candidate_channels(rules: FallbackRules) -> sa.Subquery | None:
    names = sorted(rules.channels & set(PERSONAL_CHANNELS))
    if not names:
        return None
    rows = [sa.select(sa.literal(name, sa.String(32)).label("channel")) for name in names]
    union = rows[0] if len(rows) == 1 else sa.union_all(*rows)
    return union.subquery("candidate")


def _per_language(values: Mapping[int, Mapping[str, Any]], otherwise: Any) -> sa.ColumnElement[Any]:
    """The failed delivery's value by its announcement and language, as a SQL CASE."""
    whens = [
        (
            sa.and_(failed.c.announcement_id == announcement_id, failed.c.language == language),
            sa.literal(value),
        )
        for announcement_id, per_language in values.items()
        for language, value in per_language.items()
    ]
    default = sa.null() if otherwise is None else sa.literal(otherwise)
    if not whens:
        return default
    return sa.case(*whens, else_=default)


async def source_announcements(
    conn: AsyncConnection, source: Source, *, now: datetime, rules: FallbackRules
) -> list[int]:
    """The announcements that ``source`` would queue stand-ins for (to render their SMS)."""
    dialect = dialect_name(conn)
    statement = _kept(
        ("announcements", dialect, source.kind, rules.key()),
        lambda: _announcements_statement(_terms(source.kind, dialect), rules),
    )
    rows = await conn.execute(statement, {**_times(now, rules), **_bound(source, dialect)})
    return [int(announcement_id) for (announcement_id,) in rows]


def _announcements_statement(
    source: sa.ColumnElement[bool], rules: FallbackRules
) -> sa.Select[Any]:
    # "id IN (the failures' announcements)", not a DISTINCT over the failures: for a DISTINCT,
    # SQLite preferred walking an index in announcement order (no sort) to the index of recent
    # failures, and so read every delivery in the outbox on every pass.
    concerned = announcements.alias("concerned")
    return sa.select(concerned.c.id).where(
        concerned.c.id.in_(
            sa.select(failed.c.announcement_id)
            .select_from(failed.join(announcements, announcements.c.id == failed.c.announcement_id))
            .where(*_sources(source, rules=rules))
        )
    )


def queue_fallbacks(
    conn: Connection, source: Source, *, now: datetime, rules: FallbackRules
) -> int:
    """Queue the stand-in for every delivery ``source`` selects, in one statement.

    Returns:
        how many stand-ins were queued.
    """
    dialect = dialect_name(conn)
    statement = _kept(
        ("stand-ins", dialect, source.kind, rules.key()),
        lambda: _statement(dialect, _terms(source.kind, dialect), rules),
    )
    if statement is None:
        return 0
    values = {**_times(now, rules), **_bound(source, dialect)}
    return int(conn.execute(statement, values).rowcount or 0)


def queue_fallbacks_among(
    conn: Connection, ids: Sequence[int], *, now: datetime, rules: FallbackRules
) -> int:
    """``queue_fallbacks`` of the deliveries ``ids`` that are now ``failed`` (a batch just
    recorded)."""
    if not ids:
        return 0
    return queue_fallbacks(conn, failed_among(ids), now=now, rules=rules)


# (what, dialect, source kind, rules.key()) -> the statement. The rules differ only by the
# announcements in flight (their SMS segments), so a few entries serve a whole broadcast.
# Building a statement and its cache key took ~6 ms of Python: once a batch, under SQLite's
# write lock, and twice a housekeeping pass, before.
_KEPT: LRUCache[tuple[Any, ...], Any] = LRUCache(64)
# Writers' threads and the event loop may both get here.
_KEPT_LOCK = threading.Lock()


def _kept(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    with _KEPT_LOCK:
        kept = _KEPT.get(key)
    if kept is not None:
        return kept
    statement = build()
    with _KEPT_LOCK:
        _KEPT[key] = statement
    return statement


def _statement(
    dialect: str, source: sa.ColumnElement[bool], rules: FallbackRules
) -> sa.Insert | None:
    """The ``INSERT … SELECT`` of the stand-ins ``source`` needs; None: no channel to fall
    back to. Its times are bound by ``_times``."""
    candidate = _candidate_channels(rules)
    if candidate is None:
        return None
    chosen = sa.and_(
        subscriber_channels.c.subscriber_id == failed.c.subscriber_id,
        subscriber_channels.c.channel == candidate.c.channel,
    )
    not_chosen = subscriber_channels.c.channel.is_(None)
    rank = sa.case(
        (
            sa.and_(
                ~not_chosen,
                subscriber_channels.c.opted_out_at.is_(None),
                sa.or_(candidate.c.channel != "voice", _emergency()),
            ),
            subscriber_channels.c.preference,
        ),
        (sa.and_(not_chosen, candidate.c.channel == "sms"), sa.literal(SMS_RANK)),
        (
            sa.and_(not_chosen, candidate.c.channel == "voice", _emergency()),
            sa.literal(VOICE_RANK),
        ),
        else_=sa.null(),
    )
    addressable = sa.case(
        (candidate.c.channel == "telegram", subscribers.c.telegram_chat_id.is_not(None)),
        else_=subscribers.c.phone_ciphertext.is_not(None),
    )
    taken = sa.exists().where(
        _taken.c.announcement_id == failed.c.announcement_id,
        _taken.c.subscriber_id == failed.c.subscriber_id,
        _taken.c.channel == candidate.c.channel,
    )
    segments = _per_language(rules.sms_segments, 1)
    is_sms = candidate.c.channel == "sms"
    price = (
        sa.null()
        if rules.tariff is None
        else segments * rules.tariff.sql_price(subscribers.c.country, subscribers.c.network)
    )
    call_price = (
        sa.null()
        if rules.call_tariff is None or not rules.call_minutes
        else _per_language(rules.call_minutes, None)
        * rules.call_tariff.sql_price(subscribers.c.country, subscribers.c.network)
    )
    ranked = (
        sa.select(
            failed.c.announcement_id,
            failed.c.agency_id,
            failed.c.subscriber_id,
            candidate.c.channel,
            failed.c.language,
            failed.c.area_code,
            failed.c.priority,
            sa.case((is_sms, segments), else_=sa.null()).label("segments"),
            sa.cast(
                sa.case((is_sms, price), (candidate.c.channel == "voice", call_price)),
                deliveries.c.cost.type,
            ).label("cost"),
            failed.c.id.label("fallback_of"),
            sa.func.row_number()
            .over(partition_by=failed.c.id, order_by=(rank, candidate.c.channel))
            .label("position"),
        )
        .select_from(
            failed.join(announcements, announcements.c.id == failed.c.announcement_id)
            .join(subscribers, subscribers.c.id == failed.c.subscriber_id)
            .join(candidate, sa.true())
            .outerjoin(subscriber_channels, chosen)
        )
        .where(
            *_sources(source, rules=rules),
            subscribers.c.erased_at.is_(None),
            rank.is_not(None),
            addressable,
            ~taken,
        )
        .subquery("ranked")
    )
    first = sa.select(
        ranked.c.announcement_id,
        ranked.c.agency_id,
        ranked.c.subscriber_id,
        ranked.c.channel,
        ranked.c.language,
        ranked.c.area_code,
        sa.literal(DeliveryState.QUEUED.value),
        ranked.c.priority,
        sa.literal(0),
        # Labelled: a SELECT lists the same element only once.
        _NOW.label("next_attempt_at"),
        _NOW.label("created_at"),
        ranked.c.segments,
        ranked.c.cost,
        ranked.c.fallback_of,
    ).where(ranked.c.position == 1)
    insert: sa.Insert = insert_ignoring_conflicts(dialect, deliveries)
    return insert.from_select(list(_FALLBACK_COLUMNS), first)


async def reached_by_fallback(conn: AsyncConnection, announcement_id: int) -> int:
    """Subscribers whose only successful delivery of the announcement was a stand-in.

    Successful: delivered, or sent on a channel that never reports delivery (Telegram).
    """
    success = sa.or_(
        deliveries.c.state == DeliveryState.DELIVERED.value,
        sa.and_(
            deliveries.c.state == DeliveryState.SENT.value,
            deliveries.c.channel.in_(UNREPORTED_CHANNELS),
        ),
    )
    per_subscriber = (
        sa.select(deliveries.c.subscriber_id)
        .where(
            deliveries.c.announcement_id == announcement_id,
            deliveries.c.subscriber_id.is_not(None),
            success,
        )
        .group_by(deliveries.c.subscriber_id)
        .having(sa.func.max(sa.case((deliveries.c.fallback_of.is_(None), 1), else_=0)) == 0)
        .subquery()
    )
    count = await conn.scalar(sa.select(sa.func.count()).select_from(per_subscriber))
    return int(count or 0)
