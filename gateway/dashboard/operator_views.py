"""Operator pages: the inbox (threads, a thread, reply, close), subscriber counts and search by
number, statistics. Reads and changes go through the API's handler functions and the store."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web
from pydantic import ValidationError

from gateway.api import inbox as api_inbox
from gateway.api import models
from gateway.api import stats as api_stats
from gateway.api import subscribers as api_subscribers
from gateway.api.errors import ApiError, from_validation_error
from gateway.api.routing import path_id
from gateway.appkeys import CLOCK, ENGINE
from gateway.dashboard.web import PREFIX, SECURITY_HEADERS, Ctx, page, redirect
from gateway.db.engine import reading
from gateway.db.schema import agencies, subscriber_channels, subscribers
from gateway.domain import DeliveryState
from gateway.store import inbox as inbox_store

WINDOWS = (1, 7, 30, 90)


@page(api=api_inbox.list_threads)
async def inbox(ctx: Ctx) -> web.StreamResponse:
    status = ctx.request.query.get("status", "open")
    async with reading(ctx.request.app[ENGINE]) as conn:
        rows = await inbox_store.list_threads(
            conn,
            agency_id=ctx.principal.agency_id,
            limit=100,
            before_id=None,
            status=status if status in ("open", "closed") else None,
            channel=None,
            assigned_token_id=None,
            unassigned=False,
        )
    return ctx.render("inbox.html", threads=rows, status_filter=status)


async def _thread_page(ctx: Ctx, *, status: int = 200, error: str | None = None) -> web.Response:
    thread = await api_inbox.get_thread(ctx.request, ctx.principal)
    return ctx.render("thread.html", status=status, thread=thread, error=error)


@page(api=api_inbox.get_thread)
async def thread(ctx: Ctx) -> web.StreamResponse:
    return await _thread_page(ctx)


@page(api=api_inbox.reply)
async def reply(ctx: Ctx) -> web.StreamResponse:
    thread_id = path_id(ctx.request, "thread_id")
    try:
        body = models.InboxReplyIn.model_validate({"text": ctx.field("text")})
    except ValidationError as exc:
        error = from_validation_error(exc)
        return await _thread_page(ctx, status=error.status, error=error.message)
    try:
        await api_inbox.reply(ctx.request, ctx.principal, body)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _thread_page(ctx, status=exc.status, error=exc.message)
    return redirect(f"{PREFIX}/inbox/{thread_id}")


@page(api=api_inbox.close)
async def close(ctx: Ctx) -> web.StreamResponse:
    thread_id = path_id(ctx.request, "thread_id")
    await api_inbox.close(ctx.request, ctx.principal)
    return redirect(f"{PREFIX}/inbox/{thread_id}")


async def _subscriber_counts(ctx: Ctx) -> dict[str, list[tuple[str | None, int]]]:
    """Live subscribers per area, per channel (not opted out) and per language: three
    grouped statements."""
    agency = ctx.principal.agency_id
    live = sa.and_(subscribers.c.agency_id == agency, subscribers.c.erased_at.is_(None))
    count = sa.func.count().label("n")
    async with reading(ctx.request.app[ENGINE]) as conn:
        per_area = (
            await conn.execute(
                sa.select(subscribers.c.area_code, count)
                .where(live)
                .group_by(subscribers.c.area_code)
                .order_by(count.desc())
                .limit(200)
            )
        ).all()
        per_channel = (
            await conn.execute(
                sa.select(subscriber_channels.c.channel, count)
                .join(subscribers, subscribers.c.id == subscriber_channels.c.subscriber_id)
                .where(live, subscriber_channels.c.opted_out_at.is_(None))
                .group_by(subscriber_channels.c.channel)
                .order_by(count.desc())
            )
        ).all()
        per_language = (
            await conn.execute(
                sa.select(subscribers.c.language, count)
                .where(live)
                .group_by(subscribers.c.language)
                .order_by(count.desc())
            )
        ).all()
    return {
        "area": [(r[0], int(r[1])) for r in per_area],
        "channel": [(r[0], int(r[1])) for r in per_channel],
        "language": [(r[0], int(r[1])) for r in per_language],
    }


@page(api=api_subscribers.list_subscribers)
async def subscribers_page(ctx: Ctx) -> web.StreamResponse:
    return ctx.render("subscribers.html", counts=await _subscriber_counts(ctx), found=None)


# The number travels in a POST body, never in a URL (access logs, history); the page never
# shows it back, not even in the search box.
@page(api=api_subscribers.search_subscribers)
async def search(ctx: Ctx) -> web.StreamResponse:
    counts = await _subscriber_counts(ctx)
    try:
        query = models.SubscriberSearch.model_validate({"phone": ctx.field("phone"), "limit": 10})
        found = await api_subscribers.search_subscribers(ctx.request, ctx.principal, query)
    except ValidationError as exc:
        error = from_validation_error(exc)
        return ctx.render(
            "subscribers.html", status=422, counts=counts, found=None, error=error.message
        )
    except ApiError as exc:
        return ctx.render(
            "subscribers.html", status=exc.status, counts=counts, found=None, error=exc.message
        )
    return ctx.render("subscribers.html", counts=counts, found=found.items)


async def _stats_query(ctx: Ctx) -> tuple[models.StatsQuery, str, str]:
    """The period asked for: ``from``/``to`` dates, or the last ``days`` whole days up to
    today (in the agency's time zone), and the dates to show in the form and the CSV link.
    Raises a 422 ``ApiError`` naming the field."""
    query = ctx.request.query
    start, end = query.get("from", "").strip(), query.get("to", "").strip()
    if not start and not end:
        raw = query.get("days", "7")
        days = int(raw) if raw.isascii() and raw.isdigit() and int(raw) in WINDOWS else 7
        async with reading(ctx.request.app[ENGINE]) as conn:
            zone = await conn.scalar(
                sa.select(agencies.c.timezone).where(agencies.c.id == ctx.principal.agency_id)
            )
        today = ctx.request.app[CLOCK].now().astimezone(api_stats.zone_of(zone)).date()
        start, end = (today - timedelta(days=days - 1)).isoformat(), today.isoformat()
    given = {"from": start or None, "to": end or None}
    try:
        return models.StatsQuery.model_validate(given), start, end
    except ValidationError as exc:
        raise from_validation_error(exc) from None


async def _stats(ctx: Ctx) -> tuple[models.StatsOut | None, str, str, ApiError | None]:
    try:
        query, start, end = await _stats_query(ctx)
        return await api_stats.get_stats(ctx.request, ctx.principal, query), start, end, None
    except ApiError as exc:
        if exc.status != 422:
            raise
        return None, ctx.request.query.get("from", ""), ctx.request.query.get("to", ""), exc


@page(api=api_stats.get_stats)
async def stats(ctx: Ctx) -> web.StreamResponse:
    result, start, end, error = await _stats(ctx)
    query = ctx.request.query
    raw = query.get("days", "7")
    days = int(raw) if raw.isascii() and raw.isdigit() and int(raw) in WINDOWS else 7
    return ctx.render(
        "stats.html",
        status=422 if error else 200,
        s=result,
        error=error,
        start=start,
        end=end,
        days=None if "from" in query or "to" in query else days,
        windows=WINDOWS,
        csv_query=urlencode({"from": start, "to": end}) if start and end else "",
        states=list(DeliveryState),
    )


_STATS_CSV_COLUMNS = (
    "since",
    "until",
    "breakdown",
    "channel",
    "state",
    "area",
    "deliveries",
    "delivered",
    "reach",
)


@page(api=api_stats.get_stats)
async def stats_csv(ctx: Ctx) -> web.StreamResponse:
    """The Stats page's figures as CSV: one row per channel × state, one per area (with
    reach), and one for the whole period's reach. Counts only: no person appears in it."""
    result, start, end, error = await _stats(ctx)
    if result is None:
        assert error is not None
        raise error
    since, until = result.since.isoformat(), result.until.isoformat()
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(_STATS_CSV_COLUMNS)
    for row in result.deliveries:
        for state, n in row.counts.items():
            out.writerow([since, until, "channel_state", row.channel, state.value, "", n, "", ""])
    for area in result.areas:
        out.writerow(
            [
                since,
                until,
                "area",
                "",
                "",
                area.area or "",
                area.deliveries,
                area.delivered,
                area.reach,
            ]
        )
    out.writerow([since, until, "total", "", "", "", "", "", result.reach])
    name = f"warta-stats-{start or since[:10]}-{end or until[:10]}.csv"
    return web.Response(
        body=buffer.getvalue().encode(),
        headers={
            **SECURITY_HEADERS,
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )
