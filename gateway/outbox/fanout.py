"""Fan-out: one set-based ``INSERT … SELECT`` per channel turns an announcement into deliveries.

Every opted-in subscriber of the agency who matches the audience gets exactly one queued
delivery per channel. The unique constraint (announcement, channel, subscriber) makes a second
fan-out of the same announcement insert nothing, so a crash between start and commit, or two
processes racing, can never double a broadcast.

Audience rules:
- areas: a subscriber matches an area code when theirs is the code or below it
  (``31`` reaches ``31.71`` and ``31.71.01``); no areas means the whole agency;
- topics: a subscriber with no topics hears everything; otherwise at least one topic must match;
- language: the subscriber's own when the announcement has it, else the announcement's main one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.dialect import insert_ignoring_conflicts
from gateway.db.schema import deliveries, subscriber_channels, subscribers
from gateway.domain import PERSONAL_CHANNELS, DeliveryState, Priority, Urgency
from gateway.pricing import Tariff

log = logging.getLogger(__name__)

DELIVERY_COLUMNS = (
    "announcement_id",
    "agency_id",
    "subscriber_id",
    "channel",
    "language",
    "area_code",
    "state",
    "priority",
    "attempts",
    "next_attempt_at",
    "created_at",
    "segments",
    "cost",
)


def audience_filter(
    conn: AsyncConnection, *, agency_id: int, areas: Sequence[str], topics: Sequence[str]
) -> list[sa.ColumnElement[bool]]:
    """WHERE terms selecting the agency's reachable subscribers in the audience."""
    terms: list[sa.ColumnElement[bool]] = [
        subscribers.c.agency_id == agency_id,
        subscribers.c.erased_at.is_(None),
    ]
    if areas:
        terms.append(
            sa.or_(
                *(
                    sa.or_(
                        subscribers.c.area_code == area,
                        subscribers.c.area_code.startswith(area + ".", autoescape=True),
                    )
                    for area in areas
                )
            )
        )
    if topics:
        terms.append(_topics_match(conn, list(topics)))
    return terms


def _topics_match(conn: AsyncConnection, topics: list[str]) -> sa.ColumnElement[bool]:
    column = subscribers.c.topics
    if conn.dialect.name == "postgresql":
        as_jsonb = sa.cast(column, sa.dialects.postgresql.JSONB)
        return sa.or_(
            sa.func.jsonb_array_length(as_jsonb) == 0,
            as_jsonb.op("?|")(sa.cast(sa.literal(topics), sa.dialects.postgresql.ARRAY(sa.Text))),
        )
    each = sa.func.json_each(column).table_valued("value")
    return sa.or_(
        sa.func.json_array_length(column) == 0,
        sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value.in_(topics))),
    )


async def fan_out(
    conn: AsyncConnection,
    *,
    announcement: Mapping[str, Any],
    now: datetime,
    segments_by_channel: Mapping[str, Mapping[str, int]] | None = None,
    tariff: Tariff | None = None,
    accounts: Mapping[str, Sequence[str]] | None = None,
    call_minutes: Mapping[str, Decimal] | None = None,
    call_tariff: Tariff | None = None,
) -> dict[str, int]:
    """Insert the announcement's deliveries; returns how many were added per channel.

    Args:
        announcement: the stored row (id, agency_id, channels, areas, topics, language,
            translations, urgency).
        segments_by_channel: channel -> language -> SMS segments of that rendition, so each
            delivery knows its segments and estimated cost from the start.
        tariff: the price of one SMS segment by country and network.
        accounts: social channel -> the accounts to post to (one delivery each, in the
            announcement's main language).
        call_minutes: language -> the minutes one voice call of that rendition is billed for.
        call_tariff: the price of one minute of a voice call by country.
    """
    languages = [announcement["language"], *announcement["translations"].keys()]
    language = sa.case(
        (subscribers.c.language.in_(languages), subscribers.c.language),
        else_=sa.literal(announcement["language"]),
    )
    priority = (
        Priority.EMERGENCY
        if announcement["urgency"] == Urgency.EMERGENCY.value
        else Priority.NORMAL
    )
    audience = audience_filter(
        conn,
        agency_id=announcement["agency_id"],
        areas=announcement["areas"],
        topics=announcement["topics"],
    )
    added: dict[str, int] = {}
    for channel in announcement["channels"]:
        if channel not in PERSONAL_CHANNELS:
            posts = [
                {
                    "announcement_id": announcement["id"],
                    "agency_id": announcement["agency_id"],
                    "account": account,
                    "channel": channel,
                    "language": announcement["language"],
                    "state": DeliveryState.QUEUED.value,
                    "priority": priority,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for account in (accounts or {}).get(channel, ())
            ]
            added[channel] = 0
            if posts:
                result = await conn.execute(insert_ignoring_conflicts(conn, deliveries), posts)
                added[channel] = int(result.rowcount or 0)
            continue
        per_language = (segments_by_channel or {}).get(channel, {})
        segments = (
            sa.case(
                *((language == lang, sa.literal(n)) for lang, n in per_language.items()),
                else_=sa.literal(1),
            )
            if per_language
            else sa.literal(1)
        )
        price = (
            sa.literal(Decimal(0))
            if tariff is None
            else tariff.sql_price(subscribers.c.country, subscribers.c.network)
        )
        cost: Any = sa.null()
        if channel == "sms":
            cost = segments * price
        elif channel == "voice" and call_minutes and call_tariff is not None:
            minutes = sa.case(
                *((language == lang, sa.literal(m)) for lang, m in call_minutes.items()),
                else_=sa.literal(max(call_minutes.values())),
            )
            cost = minutes * call_tariff.sql_price(subscribers.c.country, subscribers.c.network)
        source = (
            sa.select(
                sa.literal(announcement["id"]),
                subscribers.c.agency_id,
                subscribers.c.id,
                sa.literal(channel),
                language,
                subscribers.c.area_code,
                sa.literal(DeliveryState.QUEUED.value),
                sa.literal(priority),
                sa.literal(0),
                sa.literal(now, type_=deliveries.c.next_attempt_at.type),
                sa.literal(now, type_=deliveries.c.created_at.type),
                segments if channel == "sms" else sa.null(),
                sa.cast(cost, deliveries.c.cost.type),
            )
            .select_from(
                subscribers.join(
                    subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id
                )
            )
            .where(
                subscriber_channels.c.channel == channel,
                subscriber_channels.c.opted_out_at.is_(None),
                *audience,
            )
        )
        added[channel] = await _insert_new(
            conn, source, announcement_id=announcement["id"], channel=channel
        )
    return added


async def _insert_new(
    conn: AsyncConnection, source: sa.Select[Any], *, announcement_id: int, channel: str
) -> int:
    """Insert ``source``'s rows the unique (announcement, channel, subscriber) lacks.

    The first fan-out of a channel, by far the common case, is a plain ``INSERT … SELECT``:
    on PostgreSQL, ``ON CONFLICT DO NOTHING`` probes the unique index once more per row
    before inserting it (about a third more time for a million rows, ``python -m bench outbox
    --only fanout``). It runs in a savepoint; should another fan-out of the same announcement
    commit first, the unique constraint refuses the plain insert as a whole and the
    ``ON CONFLICT DO NOTHING`` form runs instead, as it does at once when the channel
    already has deliveries: either way only the missing rows are added.
    """
    columns = list(DELIVERY_COLUMNS)
    already = await conn.scalar(
        sa.select(sa.literal(1))
        .where(deliveries.c.announcement_id == announcement_id, deliveries.c.channel == channel)
        .limit(1)
    )
    if already is None:
        try:
            async with conn.begin_nested():
                result = await conn.execute(sa.insert(deliveries).from_select(columns, source))
            return int(result.rowcount or 0)
        except IntegrityError:
            log.info("another fan-out of announcement %s came first", announcement_id)
    result = await conn.execute(
        insert_ignoring_conflicts(conn, deliveries).from_select(columns, source)
    )
    return int(result.rowcount or 0)


async def count_audience(
    conn: AsyncConnection,
    *,
    agency_id: int,
    channels: Sequence[str],
    areas: Sequence[str],
    topics: Sequence[str],
) -> dict[tuple[str, str, str | None, str | None], int]:
    """Recipients per (channel, language, country, network), from one grouped query."""
    rows = await conn.execute(
        sa.select(
            subscriber_channels.c.channel,
            subscribers.c.language,
            subscribers.c.country,
            subscribers.c.network,
            sa.func.count(),
        )
        .select_from(
            subscribers.join(
                subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id
            )
        )
        .where(
            subscriber_channels.c.channel.in_(list(channels)),
            subscriber_channels.c.opted_out_at.is_(None),
            *audience_filter(conn, agency_id=agency_id, areas=areas, topics=topics),
        )
        .group_by(
            subscriber_channels.c.channel,
            subscribers.c.language,
            subscribers.c.country,
            subscribers.c.network,
        )
    )
    return {
        (channel, lang, country, network): int(n) for channel, lang, country, network, n in rows
    }


async def cancel_pending(conn: AsyncConnection, *, announcement_id: int, now: datetime) -> int:
    """Cancel every delivery of the announcement not yet handed to a provider (set-based)."""
    result = await conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.announcement_id == announcement_id,
            deliveries.c.state == DeliveryState.QUEUED.value,
        )
        .values(state=DeliveryState.CANCELLED.value, finished_at=now, error_reason="cancelled")
    )
    return int(result.rowcount or 0)


# A fan-out this large changes what the planner should expect of ``deliveries``. At 50,000
# a first broadcast of 20,000 with 5% invalid numbers went at 4,900/s instead of 7,700/s: the
# fallback checks after each failure were planned for an empty table (bench.outbox).
ANALYZE_AFTER_ROWS = 10_000


async def refresh_statistics(conn: AsyncConnection, added: int) -> None:
    """After a large fan-out on PostgreSQL, ``ANALYZE deliveries`` in the same transaction.

    Statistics taken when the table was empty or had just been cleared (reltuples 0) make the
    planner believe it is empty: claims planned that way (and asyncpg's prepared statements
    go generic after five runs) join back to ``deliveries`` by a nested loop over a sequential
    scan, and with a million queued rows two worker processes stalled for over ten minutes
    (``python -m bench scale``). Analysing after the commit was too late: other workers claim
    the moment the fan-out commits. Inside the transaction ANALYZE counts the rows it just
    inserted, and the new statistics become visible with them, which also makes every cached
    plan be made again. It samples a fixed number of rows (a fraction of a second) and blocks
    no reader or writer. SQLite's planner keeps no such statistics to go stale here.
    """
    if added < ANALYZE_AFTER_ROWS or conn.dialect.name != "postgresql":
        return
    try:
        async with conn.begin_nested():  # a failure leaves the fan-out itself intact
            await conn.execute(sa.text("ANALYZE deliveries"))
    except SQLAlchemyError as exc:
        log.warning("could not refresh the statistics of deliveries: %s", type(exc).__name__)
