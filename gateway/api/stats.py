"""``GET /api/v1/stats``: the caller's agency over a time window.

The window is ``[since, until)`` (times with a zone) or a period of whole days ``from``..``to``
(ISO dates, both included, in the agency's time zone). Deliveries per channel × state and per
area with reach (distinct citizens delivered), by when they were queued, and the inbox's time
to first response (median and 90th percentile, over threads first answered in the window). Each
figure is one grouped or ranked statement, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from aiohttp import web

from gateway.api import models
from gateway.api.errors import unprocessable
from gateway.api.routing import ApiRoutes
from gateway.appkeys import CLOCK, ENGINE
from gateway.auth import Principal
from gateway.db.engine import reading
from gateway.db.schema import agencies
from gateway.domain import DeliveryState, Role
from gateway.store import inbox
from gateway.store import stats as store

routes = ApiRoutes()
DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)


def _start_of(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def zone_of(name: str | None) -> ZoneInfo:
    """The agency's time zone (Asia/Jakarta when unset or unknown)."""
    try:
        return ZoneInfo(name or "Asia/Jakarta")
    except (ValueError, ZoneInfoNotFoundError):
        return ZoneInfo("Asia/Jakarta")


def window_of(
    query: models.StatsQuery, *, now: datetime, zone: ZoneInfo
) -> tuple[datetime, datetime]:
    """``[since, until)`` from the query: days in ``zone``, times as given, else the last
    seven days. Raises a 422 naming the parameter for an empty or too long window."""
    try:
        if query.to is not None:
            until = _start_of(query.to + timedelta(days=1), zone)
        else:
            until = query.until or now
        if query.from_ is not None:
            since = _start_of(query.from_, zone)
        else:
            since = query.since or until - DEFAULT_WINDOW
    except OverflowError:
        field = "to" if query.to is not None else "until"
        raise unprocessable(f"{field}: out of range", field) from None
    start_field = "from" if query.from_ is not None else "since"
    end_field = "to" if query.to is not None else "until"
    if until <= since:
        raise unprocessable(f"{end_field}: must be after {start_field}", end_field)
    if until - since > MAX_WINDOW:
        raise unprocessable(
            f"{start_field}: the window is at most {MAX_WINDOW.days} days", start_field
        )
    return since, until


@routes.get(
    "/stats",
    summary="Deliveries per channel × state and per area with reach (distinct citizens "
    "delivered), and inbox response times (median, p90), in a window: [since, until) of ISO "
    "8601 times with a zone, or the days from..to (ISO dates, in the agency's time zone); "
    "default: the last 7 days",
    roles=[Role.AUTHOR, Role.APPROVER, Role.OPERATOR],
    query=models.StatsQuery,
    response=models.StatsOut,
    tags=("stats",),
)
async def get_stats(
    request: web.Request, principal: Principal, query: models.StatsQuery
) -> models.StatsOut:
    agency = principal.agency_id
    engine = request.app[ENGINE]
    async with reading(engine) as conn:
        slug, zone_name = (
            await conn.execute(
                sa.select(agencies.c.slug, agencies.c.timezone).where(agencies.c.id == agency)
            )
        ).one()
    zone = zone_of(zone_name)
    since, until = window_of(query, now=request.app[CLOCK].now(), zone=zone)
    async with reading(engine) as conn:
        counts = await inbox.delivery_counts(conn, agency_id=agency, since=since, until=until)
        areas = await store.per_area(conn, agency_id=agency, since=since, until=until)
        reach = await store.reach(conn, agency_id=agency, since=since, until=until)
        times = await inbox.response_times(conn, agency_id=agency, since=since, until=until)
        opened = await inbox.threads_opened(conn, agency_id=agency, since=since, until=until)
    by_channel: dict[str, dict[DeliveryState, int]] = {}
    for channel, state, n in counts:
        by_channel.setdefault(channel, {})[DeliveryState(state)] = n
    return models.StatsOut(
        agency=str(slug),
        since=since,
        until=until,
        timezone=zone.key,
        deliveries=[
            models.CountsByState(channel=channel, counts=states, total=sum(states.values()))
            for channel, states in by_channel.items()
        ],
        areas=[
            models.AreaStats(
                area=a.area, deliveries=a.deliveries, delivered=a.delivered, reach=a.reach
            )
            for a in areas
        ],
        reach=reach,
        inbox=models.InboxStats(
            threads_opened=opened,
            threads_answered=times.answered,
            response_seconds_median=times.median,
            response_seconds_p90=times.p90,
        ),
    )
