"""``/api/v1/announcements``: create, read, list, and move through approval.

Send times and recurrences are the scheduler's (``scheduler``): its checks decide what is
valid, a recurrence is attached in the creating transaction and activated in the approving
one, and every change the scheduler must act on soon ends with ``notify_scheduler``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.api import models
from gateway.api.errors import ApiError, unprocessable
from gateway.api.routing import ApiRoutes, path_id
from gateway.appkeys import CLOCK, CONFIG, DISPATCHER, ENGINE
from gateway.auth import Principal
from gateway.db.engine import reading
from gateway.db.schema import agencies
from gateway.domain import AnnouncementStatus, DeliveryState, Role
from gateway.outbox import fallback, holds
from gateway.store import announcements as store
from gateway.store.audit import record
from scheduler import recurrence as recurrences
from scheduler.series import SeriesOut, series_of
from scheduler.service import notify_scheduler
from scheduler.validation import FieldError, validate_recurrence, validate_send_window

routes = ApiRoutes()
TAGS = ("announcements",)


def public_url(request: web.Request, code: str) -> str:
    return f"{request.app[CONFIG].http.public_url.rstrip('/')}/a/{code}"


def to_out(
    request: web.Request,
    row: store.AnnouncementRow,
    *,
    counts: dict[str, dict[DeliveryState, int]] | None = None,
    cost: Any = None,
    series: SeriesOut | None = None,
) -> models.AnnouncementOut:
    v = row.values
    stats = None
    if counts is not None:
        stats = [
            models.CountsByState(
                channel=channel,
                counts={state: per_state.get(state, 0) for state in DeliveryState},
                total=sum(per_state.values()),
            )
            for channel, per_state in sorted(counts.items())
        ]
    return models.AnnouncementOut(
        id=v["id"],
        agency=row.agency_slug,
        status=v["status"],
        verification_code=v["verification_code"],
        title=v["title"],
        body=v["body"],
        language=v["language"],
        facts=models.Facts.model_validate(v["facts"]),
        translations={
            k: models.Translation.model_validate(t) for k, t in v["translations"].items()
        },
        areas=v["areas"],
        topics=v["topics"],
        channels=v["channels"],
        urgency=v["urgency"],
        keep_gsm7=v["keep_gsm7"],
        send_at=v["send_at"],
        expires_at=v["expires_at"],
        created_at=v["created_at"],
        submitted_at=v["submitted_at"],
        approved_at=v["approved_at"],
        started_at=v["started_at"],
        finished_at=v["finished_at"],
        cancelled_at=v["cancelled_at"],
        public_url=public_url(request, v["verification_code"]),
        estimated_cost=v["estimated_cost"],
        actual_cost=cost,
        stats=stats,
        series=series,
    )


@routes.post(
    "/announcements",
    summary="Create a draft announcement",
    roles=[Role.AUTHOR],
    body=models.AnnouncementIn,
    response=models.AnnouncementOut,
    status=201,
    tags=TAGS,
)
async def create_announcement(
    request: web.Request, principal: Principal, body: models.AnnouncementIn
) -> models.AnnouncementOut:
    now = request.app[CLOCK].now()
    try:
        validate_send_window(send_at=body.send_at, expires_at=body.expires_at, now=now)
        if body.recurrence is not None:
            validate_recurrence(
                body.recurrence, now=now, send_at=body.send_at, expires_at=body.expires_at
            )
    except FieldError as exc:
        raise unprocessable(exc.message, exc.field) from None
    values = _stored_values(body)
    values.update(agency_id=principal.agency_id, created_by=principal.token_id)
    engine = request.app[ENGINE]
    after: dict[str, Any] = {
        "title": body.title,
        "channels": body.channels,
        "urgency": body.urgency.value,
    }
    # One transaction: a recurrence that cannot be stored leaves no announcement behind.
    async with engine.begin() as conn:
        new_id = await store.insert_announcement(conn, values=values, now=now)
        if body.recurrence is not None:
            try:
                await recurrences.attach(
                    conn,
                    template_id=new_id,
                    agency_id=principal.agency_id,
                    recurrence=body.recurrence,
                    agency_timezone=await recurrences.agency_timezone(conn, principal.agency_id),
                    now=now,
                )
            except FieldError as exc:
                raise unprocessable(exc.message, exc.field) from None
            after["recurrence"] = body.recurrence.model_dump(mode="json", exclude_none=True)
        await record(
            conn,
            principal=principal,
            action="announcement.create",
            subject=("announcement", new_id),
            after=after,
            now=now,
        )
        row = await store.get_announcement(conn, new_id, agency_id=principal.agency_id)
        series = await series_of(conn, new_id) if body.recurrence is not None else None
    return to_out(request, row, series=series)


def _stored_values(body: models.AnnouncementIn) -> dict[str, Any]:
    """The columns an announcement's content is stored in, from what the author wrote."""
    values = body.model_dump(
        mode="json", exclude={"send_at", "expires_at", "urgency", "recurrence"}
    )
    values.update(urgency=body.urgency.value, send_at=body.send_at, expires_at=body.expires_at)
    return values


_EDITED = ("title", "body", "language", "facts", "translations", "areas", "topics", "channels")
_EDITED_SETTINGS = ("urgency", "send_at", "expires_at", "keep_gsm7")


@routes.route(
    "PUT",
    "/announcements/{id}",
    summary="Replace a draft's content (its author, while it is a draft: new or sent back by "
    "an approver); submit it again afterwards",
    roles=[Role.AUTHOR],
    body=models.AnnouncementIn,
    response=models.AnnouncementOut,
    tags=TAGS,
)
async def update_announcement(
    request: web.Request, principal: Principal, body: models.AnnouncementIn
) -> models.AnnouncementOut:
    """403 for anyone but its author (or an admin); 409 ``conflict`` once it is no longer a
    draft. A recurrence is set when creating and cannot be given here (422). The audit event
    ``announcement.update`` names the fields that changed."""
    announcement_id = path_id(request)
    now = request.app[CLOCK].now()
    if body.recurrence is not None:
        raise unprocessable("recurrence: set when creating; it cannot be edited", "recurrence")
    try:
        validate_send_window(send_at=body.send_at, expires_at=body.expires_at, now=now)
    except FieldError as exc:
        raise unprocessable(exc.message, exc.field) from None
    values = _stored_values(body)
    async with request.app[ENGINE].begin() as conn:
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        if row["created_by"] != principal.token_id and principal.role is not Role.ADMIN:
            raise ApiError(403, "forbidden", "only its author may edit an announcement")
        changed = [key for key in (*_EDITED, *_EDITED_SETTINGS) if row[key] != values[key]]
        await store.replace_draft(conn, announcement_id, values=values, now=now)
        await record(
            conn,
            principal=principal,
            action="announcement.update",
            subject=("announcement", announcement_id),
            before={"status": row["status"], "title": row["title"]},
            after={"status": row["status"], "title": body.title, "changed": changed},
            now=now,
        )
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        series = await series_of(conn, announcement_id)
    return to_out(request, row, series=series)


@routes.get(
    "/announcements",
    summary="List announcements, newest first",
    query=models.ListQuery,
    response=models.AnnouncementList,
    tags=TAGS,
)
async def list_announcements(
    request: web.Request, principal: Principal, query: models.ListQuery
) -> models.AnnouncementList:
    async with reading(request.app[ENGINE]) as conn:
        rows = await store.list_announcements(
            conn,
            agency_id=principal.agency_id,
            limit=query.limit,
            before_id=query.before_id,
            status=query.status,
        )
    items = [to_out(request, row) for row in rows]
    next_before = items[-1].id if len(items) == query.limit else None
    return models.AnnouncementList(items=items, next_before_id=next_before)


@routes.get(
    "/announcements/{id}",
    summary="One announcement with delivery counts per channel and state, and its series",
    response=models.AnnouncementOut,
    tags=TAGS,
)
async def get_announcement(request: web.Request, principal: Principal) -> models.AnnouncementOut:
    announcement_id = path_id(request)
    async with reading(request.app[ENGINE]) as conn:
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        counts = await store.delivery_counts(conn, [announcement_id])
        cost = await store.actual_cost(conn, announcement_id)
        series = await series_of(conn, announcement_id)
        reached_by_fallback = await fallback.reached_by_fallback(conn, announcement_id)
        held = await _held_channels(request, conn, row)
    out = to_out(request, row, counts=counts.get(announcement_id, {}), cost=cost, series=series)
    out.reached_by_fallback = reached_by_fallback
    out.held_channels = held
    return out


_STILL_SENDING = frozenset({"approved", "scheduled", "sending"})


async def _held_channels(
    request: web.Request, conn: AsyncConnection, row: store.AnnouncementRow
) -> list[models.ChannelHoldOut]:
    """The announcement's channels held for an account problem, while it may still send."""
    if str(row["status"]) not in _STILL_SENDING:
        return []
    hold = timedelta(seconds=request.app[CONFIG].dispatch.account_hold_s)
    found = await holds.current(conn, row["channels"], now=request.app[CLOCK].now(), hold=hold)
    return [
        models.ChannelHoldOut(channel=h.channel, reason=h.reason, since=h.since, next_try=h.until)
        for h in found
    ]


async def _checks_before(
    request: web.Request, principal: Principal, announcement_id: int, action: str
) -> dict[str, Any]:
    """Submit and approve first look at the preview: every rendition must exist, fit, and
    carry every given fact and the verification code (422 naming channel, language and
    fact); approval must not break the agency's monthly budget (409) unless it is an
    emergency. Returns the estimated cost to store with the transition."""
    if action not in ("submit", "approve"):
        return {}
    from gateway.api.deliveries import build_preview

    async with reading(request.app[ENGINE]) as conn:
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
    preview = await build_preview(request, row)
    for rendition in preview.renditions:
        where = f"the {rendition.channel} message in {rendition.language}"
        if rendition.text is None:
            reason = "; ".join(rendition.problems) or "it cannot be rendered"
            raise ApiError(422, "rendition", f"{where}: {reason}", "channels")
        if rendition.missing_facts:
            fact = rendition.missing_facts[0]
            field = fact if fact == "verification_code" else f"facts.{fact}"
            raise ApiError(422, "facts_missing", f"{where} lacks the fact '{fact}'", field)
        if not rendition.fits:
            reason = "; ".join(rendition.problems) or "it is too long for the channel"
            raise ApiError(422, "too_long", f"{where}: {reason}", "body")
    if action == "approve" and row["urgency"] != "emergency":
        async with reading(request.app[ENGINE]) as conn:
            limit, spent = await store.budget_state(
                conn, agency_id=principal.agency_id, now=request.app[CLOCK].now()
            )
        if limit is not None and spent + preview.estimated_cost > limit:
            raise ApiError(
                409,
                "over_budget",
                f"approving would spend {preview.currency} {spent + preview.estimated_cost} this "
                f"month, over the agency's budget of {preview.currency} {limit}",
                "budget",
            )
    return {"estimated_cost": preview.estimated_cost}


async def _act(request: web.Request, principal: Principal, action: str) -> models.AnnouncementOut:
    announcement_id = path_id(request)
    now = request.app[CLOCK].now()
    checked = await _checks_before(request, principal, announcement_id, action)
    async with request.app[ENGINE].begin() as conn:
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        single_approval = False
        if action == "approve" and row["created_by"] == principal.token_id:
            single_approval = row["urgency"] == "emergency" and bool(
                await conn.scalar(
                    sa.select(agencies.c.emergency_single_approval).where(
                        agencies.c.id == principal.agency_id
                    )
                )
            )
            if not single_approval:
                raise ApiError(
                    403,
                    "two_person_rule",
                    "an announcement must be approved by someone other than its author"
                    + (
                        " (this agency does not allow one person to approve an emergency)"
                        if row["urgency"] == "emergency"
                        else ""
                    ),
                )
        extra = {"approved_by": principal.token_id} if action == "approve" else {}
        extra.update(checked)
        before = row["status"]
        status = await store.transition(
            conn,
            announcement_id,
            agency_id=principal.agency_id,
            action=action,
            now=now,
            extra=extra,
        )
        after: dict[str, Any] = {"single_approval": True} if single_approval else {}
        if status is AnnouncementStatus.APPROVED:
            # A recurring announcement becomes its series' template here (never sent itself).
            await recurrences.activate_on_approval(conn, announcement_id=announcement_id, now=now)
        if status is AnnouncementStatus.CANCELLED:
            from gateway.outbox.fanout import cancel_pending

            await cancel_pending(conn, announcement_id=announcement_id, now=now)
            occurrences = await recurrences.cancel_series(
                conn, template_id=announcement_id, now=now
            )
            if occurrences:
                after["occurrences_cancelled"] = occurrences
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        await record(
            conn,
            principal=principal,
            action=f"announcement.{action}",
            subject=("announcement", announcement_id),
            before={"status": before},
            after={"status": row["status"], **after},
            now=now,
        )
        series = await series_of(conn, announcement_id)
    if status is AnnouncementStatus.APPROVED:
        dispatcher = request.app.get(DISPATCHER)
        if dispatcher is not None:
            dispatcher.wake_starter()
    if status in (AnnouncementStatus.APPROVED, AnnouncementStatus.CANCELLED):
        notify_scheduler(request.app)
    return to_out(request, row, series=series)


@routes.post(
    "/announcements/{id}/submit",
    summary="Submit a draft for approval",
    roles=[Role.AUTHOR],
    response=models.AnnouncementOut,
    tags=TAGS,
)
async def submit(request: web.Request, principal: Principal) -> models.AnnouncementOut:
    return await _act(request, principal, "submit")


@routes.post(
    "/announcements/{id}/approve",
    summary="Approve (a second person); sending starts at send_at or now",
    roles=[Role.APPROVER],
    response=models.AnnouncementOut,
    tags=TAGS,
)
async def approve(request: web.Request, principal: Principal) -> models.AnnouncementOut:
    return await _act(request, principal, "approve")


@routes.post(
    "/announcements/{id}/reject",
    summary="Send a pending announcement back to draft",
    roles=[Role.APPROVER],
    response=models.AnnouncementOut,
    tags=TAGS,
)
async def reject(request: web.Request, principal: Principal) -> models.AnnouncementOut:
    return await _act(request, principal, "reject")


@routes.post(
    "/announcements/{id}/cancel",
    summary="Cancel; deliveries not yet sent are cancelled at once",
    roles=[Role.AUTHOR, Role.APPROVER],
    response=models.AnnouncementOut,
    tags=TAGS,
)
async def cancel(request: web.Request, principal: Principal) -> models.AnnouncementOut:
    return await _act(request, principal, "cancel")
