"""``GET /api/v1/stats``: the caller's agency over a time window.

Deliveries per channel × state (by when they were queued) and the inbox's time to first
response (median and 90th percentile, over threads first answered in the window). Each figure
is one grouped or ranked statement, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

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

routes = ApiRoutes()
DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)


@routes.get(
    "/stats",
    summary="Deliveries per channel × state and inbox response times (median, p90) in a "
    "window [since, until) of ISO 8601 times with a zone (default: the last 7 days)",
    roles=[Role.AUTHOR, Role.APPROVER, Role.OPERATOR],
    query=models.StatsQuery,
    response=models.StatsOut,
    tags=("stats",),
)
async def get_stats(
    request: web.Request, principal: Principal, query: models.StatsQuery
) -> models.StatsOut:
    until = query.until or request.app[CLOCK].now()
    since = query.since or until - DEFAULT_WINDOW
    if until <= since:
        raise unprocessable("until: must be after since", "until")
    if until - since > MAX_WINDOW:
        raise unprocessable(f"since: the window is at most {MAX_WINDOW.days} days", "since")
    agency = principal.agency_id
    async with reading(request.app[ENGINE]) as conn:
        slug = await conn.scalar(sa.select(agencies.c.slug).where(agencies.c.id == agency))
        counts = await inbox.delivery_counts(conn, agency_id=agency, since=since, until=until)
        times = await inbox.response_times(conn, agency_id=agency, since=since, until=until)
        opened = await inbox.threads_opened(conn, agency_id=agency, since=since, until=until)
    by_channel: dict[str, dict[DeliveryState, int]] = {}
    for channel, state, n in counts:
        by_channel.setdefault(channel, {})[DeliveryState(state)] = n
    return models.StatsOut(
        agency=str(slug),
        since=since,
        until=until,
        deliveries=[
            models.CountsByState(channel=channel, counts=states, total=sum(states.values()))
            for channel, states in by_channel.items()
        ],
        inbox=models.InboxStats(
            threads_opened=opened,
            threads_answered=times.answered,
            response_seconds_median=times.median,
            response_seconds_p90=times.p90,
        ),
    )
