"""``/api/v1``: moving an announcement's send time, and an agency's quiet hours.

Both are the scheduler's business (``scheduler.sendat``, ``gateway.outbox.quiet``); this module
only checks who may ask, records the change in the audit log, and wakes the scheduler.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.api import models
from gateway.api.announcements import to_out
from gateway.api.errors import ApiError, not_found, unprocessable
from gateway.api.routing import ApiRoutes, path_id
from gateway.appkeys import CLOCK, ENGINE
from gateway.auth import Principal
from gateway.db.engine import reading
from gateway.domain import AnnouncementStatus, Role
from gateway.outbox.quiet import QuietHours, configured_quiet_hours, set_quiet_hours
from gateway.store import announcements as store
from gateway.store.audit import record
from scheduler import recurrence
from scheduler.sendat import NotChangeable, change_send_at
from scheduler.series import series_of
from scheduler.service import SCHEDULER_SETTINGS, SchedulerSettings, notify_scheduler
from scheduler.validation import FieldError

routes = ApiRoutes()


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


@routes.route(
    "PATCH",
    "/announcements/{id}/schedule",
    summary="Move the send time and/or expiry until sending starts",
    roles=[Role.AUTHOR, Role.APPROVER],
    body=models.ScheduleIn,
    response=models.AnnouncementOut,
    tags=("announcements",),
)
async def change_schedule(
    request: web.Request, principal: Principal, body: models.ScheduleIn
) -> models.AnnouncementOut:
    """A field left out keeps its value. Authors may move a draft's or a pending one's time;
    once approved, the approval covered the time, so only an approver (or admin) moves it.
    409 ``not_changeable`` once it started, finished or was cancelled, and for a series'
    template after approval."""
    announcement_id = path_id(request)
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        if row["status"] == AnnouncementStatus.APPROVED.value and principal.role is Role.AUTHOR:
            raise ApiError(
                403,
                "forbidden",
                "the announcement is approved: only an approver may move its send time",
            )
        given = body.model_fields_set
        send_at = body.send_at if "send_at" in given else row["send_at"]
        expires_at = body.expires_at if "expires_at" in given else row["expires_at"]
        try:
            before = await change_send_at(
                conn,
                announcement_id=announcement_id,
                agency_id=principal.agency_id,
                send_at=send_at,
                expires_at=expires_at,
                now=now,
            )
        except FieldError as exc:
            raise unprocessable(exc.message, exc.field) from None
        except LookupError:
            raise not_found(f"announcement {announcement_id}", field="id") from None
        except NotChangeable as exc:
            raise ApiError(409, "not_changeable", str(exc), "status") from None
        await record(
            conn,
            principal=principal,
            action="announcement.schedule",
            subject=("announcement", announcement_id),
            before={"send_at": _iso(before["send_at"]), "expires_at": _iso(before["expires_at"])},
            after={"send_at": _iso(send_at), "expires_at": _iso(expires_at)},
            now=now,
        )
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        series = await series_of(conn, announcement_id)
    notify_scheduler(request.app)
    return to_out(request, row, series=series)


def _default_hours(app: web.Application) -> QuietHours:
    settings = app.get(SCHEDULER_SETTINGS) or SchedulerSettings()
    return settings.quiet_hours_default


async def _quiet_hours_out(
    conn: AsyncConnection, app: web.Application, agency_id: int
) -> models.QuietHoursOut:
    own = await configured_quiet_hours(conn, agency_id)
    hours = own or _default_hours(app)
    return models.QuietHoursOut(
        quiet_hours=str(hours),
        enabled=hours.enabled,
        source="default" if own is None else "agency",
        timezone=await recurrence.agency_timezone(conn, agency_id),
    )


@routes.get(
    "/agency/quiet-hours",
    summary="The agency's quiet hours (normal announcements wait; emergencies do not)",
    response=models.QuietHoursOut,
    tags=("agency",),
)
async def get_quiet_hours(request: web.Request, principal: Principal) -> models.QuietHoursOut:
    async with reading(request.app[ENGINE]) as conn:
        return await _quiet_hours_out(conn, request.app, principal.agency_id)


@routes.route(
    "PUT",
    "/agency/quiet-hours",
    summary="Set the agency's quiet hours, read in each subscriber's local time, or 'off'",
    roles=[Role.ADMIN],
    body=models.QuietHoursIn,
    response=models.QuietHoursOut,
    tags=("agency",),
)
async def put_quiet_hours(
    request: web.Request, principal: Principal, body: models.QuietHoursIn
) -> models.QuietHoursOut:
    try:
        hours = QuietHours.parse(body.quiet_hours, field="quiet_hours")
    except FieldError as exc:
        raise unprocessable(exc.message, exc.field) from None
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        before = await configured_quiet_hours(conn, principal.agency_id)
        await set_quiet_hours(conn, principal.agency_id, hours, now=now)
        await record(
            conn,
            principal=principal,
            action="agency.quiet_hours",
            subject=("agency", principal.agency_id),
            before={"quiet_hours": None if before is None else str(before)},
            after={"quiet_hours": str(hours)},
            now=now,
        )
        answer = await _quiet_hours_out(conn, request.app, principal.agency_id)
    # Queued deliveries are deferred by the scheduler's tick: apply new hours soon.
    notify_scheduler(request.app)
    return answer
