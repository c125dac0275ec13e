"""Announcements in the dashboard: list, detail with preview, submit, approve or reject,
cancel, watch the broadcast, export its deliveries (composing and editing: ``compose_views``).

Every change goes through the API's own handler functions (``gateway.api.announcements``), so
the facts-parity and length checks at submit, the budget check and the two-person rule at
approval, the audit events and the scheduler and dispatcher wake-ups are the API's, unchanged.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.api import announcements as api
from gateway.api import deliveries as api_deliveries
from gateway.api.errors import ApiError
from gateway.api.routing import path_id
from gateway.appkeys import CLOCK, CONFIG, ENGINE
from gateway.dashboard.compose_views import compose as compose
from gateway.dashboard.compose_views import compose_form as compose_form
from gateway.dashboard.web import PREFIX, Ctx, page, redirect
from gateway.db.engine import reading
from gateway.db.schema import announcements, audit_events, deliveries, subscribers
from gateway.domain import AnnouncementStatus, DeliveryState, Role
from gateway.store import announcements as store
from gateway.store import stats as delivery_stats
from gateway.store.audit import record

REFRESH_SECONDS = 5
CSV_BATCH = 1000
REJECT_REASON_ACTION = "announcement.reject_reason"
_ACTIONS = {
    "submit": api.submit,
    "approve": api.approve,
    "reject": api.reject,
    "cancel": api.cancel,
}
_IN_FLIGHT = (
    AnnouncementStatus.APPROVED,
    AnnouncementStatus.SCHEDULED,
    AnnouncementStatus.SENDING,
)
_BEFORE_SENDING = (AnnouncementStatus.DRAFT, AnnouncementStatus.PENDING_APPROVAL)


@page()
async def list_page(ctx: Ctx) -> web.StreamResponse:
    raw_status = ctx.request.query.get("status", "")
    status = AnnouncementStatus(raw_status) if raw_status in set(AnnouncementStatus) else None
    before = ctx.request.query.get("before", "")
    before_id = int(before) if before.isascii() and before.isdigit() and len(before) < 18 else None
    async with reading(ctx.request.app[ENGINE]) as conn:
        rows = await store.list_announcements(
            conn,
            agency_id=ctx.principal.agency_id,
            limit=50,
            before_id=before_id,
            status=status,
        )
    return ctx.render(
        "announcements.html",
        rows=rows,
        statuses=list(AnnouncementStatus),
        status_filter=raw_status if status else "",
        next_before=rows[-1]["id"] if len(rows) == 50 else None,
    )


async def _reject_reason(ctx: Ctx, announcement_id: int) -> str | None:
    async with reading(ctx.request.app[ENGINE]) as conn:
        after = await conn.scalar(
            sa.select(audit_events.c.after)
            .where(
                audit_events.c.agency_id == ctx.principal.agency_id,
                audit_events.c.action == REJECT_REASON_ACTION,
                audit_events.c.subject_type == "announcement",
                audit_events.c.subject_id == str(announcement_id),
            )
            .order_by(audit_events.c.id.desc())
            .limit(1)
        )
    return None if not isinstance(after, dict) else str(after.get("reason", ""))


async def _detail(ctx: Ctx, *, status: int = 200, error: str | None = None) -> web.Response:
    announcement = await api.get_announcement(ctx.request, ctx.principal)
    preview = None
    if announcement.status in _BEFORE_SENDING:
        preview = await api_deliveries.preview(ctx.request, ctx.principal)
    reason = None
    if announcement.status is AnnouncementStatus.DRAFT and announcement.submitted_at:
        reason = await _reject_reason(ctx, announcement.id)
    editable = False
    if announcement.status is AnnouncementStatus.DRAFT and ctx.can(api.update_announcement):
        async with reading(ctx.request.app[ENGINE]) as conn:
            author = await conn.scalar(
                sa.select(announcements.c.created_by).where(announcements.c.id == announcement.id)
            )
        editable = author == ctx.principal.token_id or ctx.principal.role is Role.ADMIN
    return ctx.render(
        "announcement.html",
        status=status,
        a=announcement,
        preview=preview,
        reason=reason,
        editable=editable,
        error=error,
        done=ctx.request.query.get("done"),
    )


@page()
async def detail(ctx: Ctx) -> web.StreamResponse:
    return await _detail(ctx)


@page()
async def act(ctx: Ctx) -> web.StreamResponse:
    """Submit, approve, reject (with a reason) or cancel, by the API's handler functions."""
    action = ctx.request.match_info["action"]
    function = _ACTIONS.get(action)
    if function is None:
        raise ApiError(404, "not_found", "no such action")
    announcement_id = path_id(ctx.request)
    if not ctx.can(function):
        return await _detail(ctx, status=403, error=ctx.t("forbidden"))
    reason = ctx.field("reason")[:500]
    if action == "reject" and not reason:
        return await _detail(ctx, status=422, error=f"{ctx.t('reason')}: ?")
    try:
        result = await function(ctx.request, ctx.principal)
    except ApiError as exc:
        if exc.status == 404:
            raise
        message = ctx.t("two_person") if exc.code == "two_person_rule" else exc.message
        return await _detail(ctx, status=exc.status, error=message)
    if action == "reject":
        async with ctx.request.app[ENGINE].begin() as conn:
            await record(
                conn,
                principal=ctx.principal,
                action=REJECT_REASON_ACTION,
                subject=("announcement", announcement_id),
                after={"reason": reason},
                now=ctx.request.app[CLOCK].now(),
            )
    target = "broadcast" if action == "approve" else ""
    suffix = f"/{target}" if target else ""
    return redirect(f"{PREFIX}/announcements/{announcement_id}{suffix}?done={result.status.value}")


@page(api=api.approve)
async def approvals(ctx: Ctx) -> web.StreamResponse:
    async with reading(ctx.request.app[ENGINE]) as conn:
        rows = await store.list_announcements(
            conn,
            agency_id=ctx.principal.agency_id,
            limit=20,
            before_id=None,
            status=AnnouncementStatus.PENDING_APPROVAL,
        )
    items = [(row, await api_deliveries.build_preview(ctx.request, row)) for row in rows]
    return ctx.render("approvals.html", items=items)


async def _timeline(conn: AsyncConnection, announcement_id: int) -> list[tuple[str, int]]:
    """Deliveries handed to providers per minute (UTC), the last 60 minutes with any; one
    grouped query."""
    if conn.dialect.name == "postgresql":
        minute: Any = sa.func.to_char(
            sa.func.date_trunc("minute", sa.func.timezone("UTC", deliveries.c.sent_at)),
            "YYYY-MM-DD HH24:MI",
        )
    else:
        minute = sa.func.strftime("%Y-%m-%d %H:%M", deliveries.c.sent_at)
    rows = (
        await conn.execute(
            sa.select(minute.label("minute"), sa.func.count().label("n"))
            .where(
                deliveries.c.announcement_id == announcement_id,
                deliveries.c.sent_at.is_not(None),
            )
            .group_by(minute)
            .order_by(minute.desc())
            .limit(60)
        )
    ).all()
    return [(str(row.minute), int(row.n)) for row in reversed(rows)]


async def _reach_by_area(conn: AsyncConnection, announcement_id: int) -> list[tuple[str, int]]:
    """Citizens reached per area code, the 15 largest: as in the statistics
    (``gateway.store.stats``), distinct citizens with a message delivered, or sent on a channel
    that never confirms delivery, so one reached by SMS and Telegram counts once."""
    reached = sa.func.count(sa.distinct(deliveries.c.subscriber_id))
    rows = (
        await conn.execute(
            sa.select(deliveries.c.area_code, reached.label("n"))
            .where(deliveries.c.announcement_id == announcement_id, delivery_stats.REACHED)
            .group_by(deliveries.c.area_code)
            .order_by(reached.desc())
            .limit(15)
        )
    ).all()
    return [(row.area_code or "–", int(row.n)) for row in rows]


@page()
async def broadcast(ctx: Ctx) -> web.StreamResponse:
    announcement = await api.get_announcement(ctx.request, ctx.principal)
    async with reading(ctx.request.app[ENGINE]) as conn:
        failures = (
            await conn.execute(
                sa.select(
                    deliveries.c.channel,
                    deliveries.c.error_kind,
                    deliveries.c.error_reason,
                    sa.func.count().label("n"),
                )
                .where(
                    deliveries.c.announcement_id == announcement.id,
                    deliveries.c.state == DeliveryState.FAILED.value,
                )
                .group_by(deliveries.c.channel, deliveries.c.error_kind, deliveries.c.error_reason)
                .order_by(sa.func.count().desc())
                .limit(20)
            )
        ).all()
        timeline = await _timeline(conn, announcement.id)
        areas = await _reach_by_area(conn, announcement.id)
    stats = announcement.stats or []
    pending = sum(
        s.counts.get(DeliveryState.QUEUED, 0) + s.counts.get(DeliveryState.SENDING, 0)
        for s in stats
    )
    totals = {state: sum(s.counts.get(state, 0) for s in stats) for state in DeliveryState}
    refresh = announcement.status in _IN_FLIGHT or pending > 0
    return ctx.render(
        "broadcast.html",
        a=announcement,
        stats=stats,
        totals=totals,
        states=list(DeliveryState),
        failures=failures,
        timeline=timeline,
        timeline_peak=max((n for _, n in timeline), default=0),
        areas=areas,
        areas_peak=max((n for _, n in areas), default=0),
        refresh=REFRESH_SECONDS if refresh else None,
        currency=ctx.request.app[CONFIG].pricing.currency,
        done=ctx.request.query.get("done"),
    )


_CSV_COLUMNS = (
    "delivery_id",
    "phone_masked",
    "account",
    "channel",
    "language",
    "state",
    "attempts",
    "error_kind",
    "provider_reason",
    "segments",
    "cost",
    "queued_at",
    "sent_at",
    "finished_at",
)


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(
        ["" if v is None else (v.isoformat() if isinstance(v, datetime) else v) for v in values]
    )
    return buffer.getvalue().encode()


@page(api=api_deliveries.list_deliveries)
async def export_csv(ctx: Ctx) -> web.StreamResponse:
    """Every delivery, streamed in keyset pages of ``CSV_BATCH`` rows (one query each).

    Numbers appear masked only: the export never decrypts a ciphertext.
    """
    request = ctx.request
    announcement_id = path_id(request)
    engine = request.app[ENGINE]
    async with reading(engine) as conn:
        await store.get_announcement(conn, announcement_id, agency_id=ctx.principal.agency_id)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": (
                f'attachment; filename="announcement-{announcement_id}-deliveries.csv"'
            ),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    await response.write(_csv_line(list(_CSV_COLUMNS)))
    after_id = 0
    while True:
        async with reading(engine) as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        deliveries.c.id,
                        subscribers.c.phone_masked,
                        deliveries.c.account,
                        deliveries.c.channel,
                        deliveries.c.language,
                        deliveries.c.state,
                        deliveries.c.attempts,
                        deliveries.c.error_kind,
                        deliveries.c.error_reason,
                        deliveries.c.segments,
                        deliveries.c.cost,
                        deliveries.c.created_at,
                        deliveries.c.sent_at,
                        deliveries.c.finished_at,
                    )
                    .select_from(
                        deliveries.outerjoin(
                            subscribers, subscribers.c.id == deliveries.c.subscriber_id
                        )
                    )
                    .where(
                        deliveries.c.announcement_id == announcement_id,
                        deliveries.c.agency_id == ctx.principal.agency_id,
                        deliveries.c.id > after_id,
                    )
                    .order_by(deliveries.c.id)
                    .limit(CSV_BATCH)
                )
            ).all()
        if not rows:
            break
        await response.write(b"".join(_csv_line(list(row)) for row in rows))
        after_id = rows[-1][0]
        if len(rows) < CSV_BATCH:
            break
    await response.write_eof()
    return response
