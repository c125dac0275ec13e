"""Quiet hours: personal announcement deliveries wait for the morning in the citizen's zone.

Each agency has quiet hours (default 21:00-06:00), read in each subscriber's local time. The
zone comes from the delivery's area code: its first two digits are the Indonesian province,
and every province lies in one of three zones (``PROVINCE_ZONES``): WIB (UTC+7), WITA
(UTC+8), WIT (UTC+9). A delivery without an Indonesian area code uses the agency's zone.

Deferral is set-based: for each zone where it is quiet *now*, one UPDATE moves the
``next_attempt_at`` of queued, normal-priority, personal deliveries to the end of that zone's
quiet hours. The claim only takes deliveries with ``next_attempt_at <= now``. A batch claimed
before quiet hours began (or before the dispatcher's next pass deferred its zone) meets the
``SendGate`` as each of its requests leaves: what is quiet by then goes back to the queue.
Emergencies (priority 0) are never deferred; neither are social posts (one per account, not
per person) nor replies (the citizen just wrote to us).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import agencies, announcements, deliveries
from gateway.domain import PERSONAL_CHANNELS, DeliveryState, Priority, Urgency
from scheduler.tables import agency_quiet_hours
from scheduler.validation import FieldError

WIB, WITA, WIT = "Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"

# Province code (Kemendagri) -> (name, zone). Kalimantan Barat and Tengah keep WIB (IANA's
# Asia/Pontianak, the same UTC+7 without daylight saving), so they share Asia/Jakarta here.
PROVINCES: Mapping[str, tuple[str, str]] = {
    "11": ("Aceh", WIB),
    "12": ("Sumatera Utara", WIB),
    "13": ("Sumatera Barat", WIB),
    "14": ("Riau", WIB),
    "15": ("Jambi", WIB),
    "16": ("Sumatera Selatan", WIB),
    "17": ("Bengkulu", WIB),
    "18": ("Lampung", WIB),
    "19": ("Kepulauan Bangka Belitung", WIB),
    "21": ("Kepulauan Riau", WIB),
    "31": ("DKI Jakarta", WIB),
    "32": ("Jawa Barat", WIB),
    "33": ("Jawa Tengah", WIB),
    "34": ("DI Yogyakarta", WIB),
    "35": ("Jawa Timur", WIB),
    "36": ("Banten", WIB),
    "51": ("Bali", WITA),
    "52": ("Nusa Tenggara Barat", WITA),
    "53": ("Nusa Tenggara Timur", WITA),
    "61": ("Kalimantan Barat", WIB),
    "62": ("Kalimantan Tengah", WIB),
    "63": ("Kalimantan Selatan", WITA),
    "64": ("Kalimantan Timur", WITA),
    "65": ("Kalimantan Utara", WITA),
    "71": ("Sulawesi Utara", WITA),
    "72": ("Sulawesi Tengah", WITA),
    "73": ("Sulawesi Selatan", WITA),
    "74": ("Sulawesi Tenggara", WITA),
    "75": ("Gorontalo", WITA),
    "76": ("Sulawesi Barat", WITA),
    "81": ("Maluku", WIT),
    "82": ("Maluku Utara", WIT),
    "91": ("Papua", WIT),
    "92": ("Papua Barat", WIT),
    "93": ("Papua Selatan", WIT),
    "94": ("Papua Tengah", WIT),
    "95": ("Papua Pegunungan", WIT),
    "96": ("Papua Barat Daya", WIT),
}
PROVINCE_ZONES: Mapping[str, str] = {code: zone for code, (_, zone) in PROVINCES.items()}

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times between which normal announcements wait; ``starts == ends`` means never.

    The window may wrap midnight (21:00-06:00) or not (13:00-14:00); ``ends`` is exclusive.
    """

    starts: time
    ends: time

    @property
    def enabled(self) -> bool:
        return self.starts != self.ends

    @classmethod
    def parse(cls, text: str, *, field: str = "quiet_hours") -> QuietHours:
        """``"21:00-06:00"``, or ``"off"`` for none.

        Raises:
            FieldError: naming ``field``.
        """
        cleaned = text.strip().lower()
        if cleaned in ("off", "none", ""):
            return cls(time(0), time(0))
        starts, sep, ends = cleaned.partition("-")
        first, second = _HHMM.match(starts.strip()), _HHMM.match(ends.strip())
        if not sep or first is None or second is None:
            raise FieldError(field, "expected HH:MM-HH:MM (e.g. 21:00-06:00) or 'off'")
        return cls(
            time(int(first.group(1)), int(first.group(2))),
            time(int(second.group(1)), int(second.group(2))),
        )

    def __str__(self) -> str:
        if not self.enabled:
            return "off"
        return f"{self.starts:%H:%M}-{self.ends:%H:%M}"


DEFAULT_QUIET_HOURS = QuietHours(time(21, 0), time(6, 0))


def quiet_until(hours: QuietHours, now: datetime, zone: ZoneInfo) -> datetime | None:
    """When quiet hours end (aware, UTC) if ``now`` falls inside them in ``zone``, else None."""
    if not hours.enabled:
        return None
    local = now.astimezone(zone)
    clock_time = local.time().replace(tzinfo=None)
    today = local.date()
    if hours.starts < hours.ends:
        inside = hours.starts <= clock_time < hours.ends
        end_day = today
    elif clock_time >= hours.starts:
        inside, end_day = True, today + timedelta(days=1)
    else:
        inside, end_day = clock_time < hours.ends, today
    if not inside:
        return None
    return datetime.combine(end_day, hours.ends, tzinfo=zone).astimezone(UTC)


def zone_for_area(area_code: str | None, fallback: str) -> str:
    """The IANA zone of an Indonesian area code (by its province), else ``fallback``."""
    if area_code is None:
        return fallback
    return PROVINCE_ZONES.get(area_code[:2], fallback)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(WIB)


async def configured_quiet_hours(conn: AsyncConnection, agency_id: int) -> QuietHours | None:
    """The agency's own quiet hours, or None while it follows the configured default."""
    row = (
        await conn.execute(
            sa.select(agency_quiet_hours.c.starts_minute, agency_quiet_hours.c.ends_minute).where(
                agency_quiet_hours.c.agency_id == agency_id
            )
        )
    ).first()
    if row is None:
        return None
    return QuietHours(time(*divmod(row.starts_minute, 60)), time(*divmod(row.ends_minute, 60)))


async def quiet_hours_of(
    conn: AsyncConnection, agency_id: int, *, default: QuietHours = DEFAULT_QUIET_HOURS
) -> QuietHours:
    own = await configured_quiet_hours(conn, agency_id)
    return default if own is None else own


async def set_quiet_hours(
    conn: AsyncConnection, agency_id: int, hours: QuietHours, *, now: datetime
) -> None:
    """Store the agency's quiet hours (``QuietHours.parse("off")`` turns them off)."""
    values = {
        "starts_minute": hours.starts.hour * 60 + hours.starts.minute,
        "ends_minute": hours.ends.hour * 60 + hours.ends.minute,
        "updated_at": now,
    }
    updated = await conn.execute(
        sa.update(agency_quiet_hours)
        .where(agency_quiet_hours.c.agency_id == agency_id)
        .values(**values)
    )
    if not updated.rowcount:
        await conn.execute(sa.insert(agency_quiet_hours).values(agency_id=agency_id, **values))


def _zone_terms(agency_zone: str) -> dict[str, sa.ColumnElement[bool]]:
    """Zone -> WHERE term selecting deliveries whose area code lies in it."""
    province = sa.func.substr(deliveries.c.area_code, 1, 2)
    by_zone: dict[str, list[str]] = {}
    for code, zone in PROVINCE_ZONES.items():
        by_zone.setdefault(zone, []).append(code)
    terms: dict[str, sa.ColumnElement[bool]] = {
        zone: province.in_(codes) for zone, codes in by_zone.items()
    }
    elsewhere = sa.or_(deliveries.c.area_code.is_(None), province.not_in(list(PROVINCE_ZONES)))
    terms[agency_zone] = (
        sa.or_(terms[agency_zone], elsewhere) if agency_zone in terms else elsewhere
    )
    return terms


async def _defer(
    conn: AsyncConnection,
    *,
    hours: QuietHours,
    agency_zone: str,
    now: datetime,
    scope: Sequence[sa.ColumnElement[bool]],
    began_after: datetime | None = None,
) -> int:
    moved = 0
    for zone, in_zone in _zone_terms(agency_zone).items():
        resume = quiet_until(hours, now, _zone(zone))
        if resume is None:
            continue
        if began_after is not None and quiet_until(hours, began_after, _zone(zone)) is not None:
            continue  # already quiet then: deferred by whoever ran at that time
        result = await conn.execute(
            sa.update(deliveries)
            .where(
                *scope,
                in_zone,
                deliveries.c.state == DeliveryState.QUEUED.value,
                deliveries.c.priority > Priority.EMERGENCY,
                deliveries.c.kind == "announcement",
                deliveries.c.channel.in_(PERSONAL_CHANNELS),
                deliveries.c.next_attempt_at < resume,
            )
            .values(next_attempt_at=resume)
        )
        moved += int(result.rowcount or 0)
    return moved


async def defer_announcement(
    conn: AsyncConnection,
    *,
    announcement_id: int,
    now: datetime,
    default: QuietHours = DEFAULT_QUIET_HOURS,
) -> int:
    """Move the announcement's queued personal deliveries out of quiet hours; returns how many.

    Call it in the fan-out's transaction, right after ``fan_out``: at most one UPDATE per zone
    where it is quiet now, none for an emergency.
    """
    row = (
        await conn.execute(
            sa.select(announcements.c.urgency, announcements.c.agency_id, agencies.c.timezone)
            .join(agencies, agencies.c.id == announcements.c.agency_id)
            .where(announcements.c.id == announcement_id)
        )
    ).first()
    if row is None or row.urgency == Urgency.EMERGENCY.value:
        return 0
    hours = await quiet_hours_of(conn, row.agency_id, default=default)
    return await _defer(
        conn,
        hours=hours,
        agency_zone=row.timezone,
        now=now,
        scope=[deliveries.c.announcement_id == announcement_id],
    )


async def defer_queued(
    conn: AsyncConnection,
    *,
    now: datetime,
    default: QuietHours = DEFAULT_QUIET_HOURS,
    max_agencies: int = 10_000,
    began_after: datetime | None = None,
) -> int:
    """The same for every agency's queued deliveries: a long broadcast (or a retry) that runs
    into the evening stops at quiet hours instead of going on all night. Returns rows moved.

    One SELECT for the agencies and their quiet hours, then at most one UPDATE per agency and
    zone where it is quiet now (none at all in the daytime). With ``began_after``, only where
    the quiet hours began after that moment: the dispatcher's frequent passes move what a
    broadcast still running (or a retry falling due) at the start of quiet hours left queued,
    without scanning a night's deferred deliveries again every second."""
    rows: list[Any] = list(
        await conn.execute(
            sa.select(
                agencies.c.id,
                agencies.c.timezone,
                agency_quiet_hours.c.starts_minute,
                agency_quiet_hours.c.ends_minute,
            )
            .select_from(agencies.outerjoin(agency_quiet_hours))
            .order_by(agencies.c.id)
            .limit(max_agencies)
        )
    )
    moved = 0
    for agency in rows:
        hours = default
        if agency.starts_minute is not None:
            hours = QuietHours(
                time(*divmod(agency.starts_minute, 60)), time(*divmod(agency.ends_minute, 60))
            )
        if not hours.enabled:
            continue
        moved += await _defer(
            conn,
            hours=hours,
            agency_zone=agency.timezone,
            now=now,
            scope=[deliveries.c.agency_id == agency.id],
            began_after=began_after,
        )
    return moved


class Addressed(Protocol):
    """What the gate reads of a claimed delivery (``gateway.outbox.claims.Claimed``)."""

    @property
    def id(self) -> int: ...
    @property
    def announcement_id(self) -> int | None: ...
    @property
    def area_code(self) -> str | None: ...


_ZONE_NAMES = frozenset(PROVINCE_ZONES.values())


class SendGate:
    """Quiet hours checked once more as each request leaves, for the deliveries of one batch.

    Deferral in the database (``defer_queued``) runs on the dispatcher's housekeeping pass,
    about once a second, and a batch claimed before quiet hours began may take longer than
    that to go out (a paced channel, a slow provider). Each request asks the gate just before
    it is sent; what it holds goes back to the queue for the morning, never sent at night.

    By day a request costs a reading per zone the batch's agencies could be quiet in (a
    few), and nothing per delivery: only when one of them is quiet are deliveries looked at.
    """

    __slots__ = ("_batch", "_by_id", "_rules", "_zones")

    def __init__(self, batch: Sequence[Addressed]) -> None:
        self._batch = batch
        self._by_id: dict[int, Addressed] | None = None
        # announcement id -> (its agency's quiet hours, the agency's zone)
        self._rules: dict[int, tuple[QuietHours, str]] = {}
        # (hours, zone) -> the zone: every pair a delivery of the batch may keep to
        self._zones: dict[tuple[QuietHours, str], ZoneInfo] = {}

    def watch(self, announcement_id: int, hours: QuietHours, agency_zone: str) -> None:
        """The batch's deliveries of ``announcement_id`` keep to ``hours``, in the zone of
        their area code, else ``agency_zone``."""
        if not hours.enabled:
            return
        self._rules[announcement_id] = (hours, agency_zone)
        for name in (*_ZONE_NAMES, agency_zone):
            if (hours, name) not in self._zones:
                self._zones[(hours, name)] = _zone(name)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def held(self, delivery_ids: Sequence[int], now: datetime) -> dict[int, datetime]:
        """Of ``delivery_ids``, those in quiet hours at ``now``, with when they end (UTC)."""
        if not self._rules:
            return {}
        quiet = {key: quiet_until(key[0], now, zone) for key, zone in self._zones.items()}
        if not any(quiet.values()):
            return {}
        if self._by_id is None:
            self._by_id = {item.id: item for item in self._batch}
        held: dict[int, datetime] = {}
        for delivery_id in delivery_ids:
            item = self._by_id.get(delivery_id)
            if item is None or item.announcement_id is None:
                continue
            rule = self._rules.get(item.announcement_id)
            if rule is None:
                continue
            hours, agency_zone = rule
            resume = quiet[(hours, zone_for_area(item.area_code, agency_zone))]
            if resume is not None:
                held[delivery_id] = resume
        return held
