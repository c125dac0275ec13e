"""``POST /api/v1/cap``: a CAP 1.2 alert from an alerting authority becomes an announcement.

An Alert creates an announcement waiting for approval (the two-person rule stands: whoever
approves must not be the token that posted the CAP). An Update rewrites the announcement its
``<references>`` name, as long as sending has not started, and sends it back for approval. A
Cancel cancels it and its queued deliveries. All in one transaction, with the CAP message
remembered in ``cap_alerts``; a document that cannot be used is a 422 naming the element and
line, and nothing is stored. The mapping is in docs/cap.md.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web
from pydantic import ValidationError

from gateway.api import models
from gateway.api.announcements import to_out
from gateway.api.deliveries import Preview, build_preview
from gateway.api.errors import ApiError, read_body
from gateway.api.routing import ApiRoutes
from gateway.appkeys import CLOCK, CONFIG, ENGINE, running_channels
from gateway.auth import Principal
from gateway.cap import CAP_MEDIA_TYPE, CapProblem
from gateway.cap import store as cap_store
from gateway.cap.document import MAX_CAP_BYTES, parse_cap
from gateway.cap.reader import CapMessage, Draft, read_message, to_draft
from gateway.db.engine import reading
from gateway.db.schema import agencies
from gateway.domain import AnnouncementStatus, Role
from gateway.store import announcements as store
from gateway.store.announcements import AnnouncementRow
from gateway.store.audit import record
from scheduler import recurrence as recurrences
from scheduler.service import notify_scheduler
from scheduler.validation import FieldError, validate_send_window

routes = ApiRoutes()
TAGS = ("cap",)
MEDIA_TYPES = frozenset({CAP_MEDIA_TYPE, "application/xml", "text/xml"})
# Personal channels a CAP alert goes out on unless it names its own (``warta:channels``).
DEFAULT_CHANNELS = ("sms", "telegram", "whatsapp")
_PLACEHOLDER_CODE = "CAPCAP"


def _invalid(problem: CapProblem) -> ApiError:
    return ApiError(422, "invalid_cap", problem.message, problem.field)


def default_channels(request: web.Request) -> list[str]:
    """The personal channels this gateway runs (SMS when it runs none yet)."""
    running = running_channels(request.app)
    return [c for c in DEFAULT_CHANNELS if c in running] or ["sms"]


def _check_header(message: CapMessage) -> None:
    def refuse(name: str, reason: str) -> None:
        path, line = message.where(name)
        raise _invalid(CapProblem(path, line, reason))

    if message.status != "Actual":
        refuse("status", f"only Actual alerts reach citizens, this one is {message.status}")
    if message.scope != "Public":
        refuse("scope", f"only Public alerts are broadcast, this one is {message.scope}")
    if message.msg_type not in ("Alert", "Update", "Cancel"):
        refuse("msgType", f"{message.msg_type} is not accepted: send Alert, Update or Cancel")
    if message.msg_type != "Alert" and not message.references:
        refuse("references", f"a {message.msg_type} must name the alert it changes")


def _announcement_in(draft: Draft, *, now: Any) -> models.AnnouncementIn:
    try:
        body = models.AnnouncementIn.model_validate(draft.fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        location = ".".join(str(part) for part in first["loc"])
        context = first.get("ctx") or {}
        if not location and isinstance(context.get("field"), str):
            location = context["field"]
        raise _invalid(draft.problem(location, first["msg"])) from None
    try:
        validate_send_window(send_at=body.send_at, expires_at=body.expires_at, now=now)
    except FieldError as exc:
        raise _invalid(draft.problem(exc.field, exc.reason)) from None
    return body


def _values(body: models.AnnouncementIn) -> dict[str, Any]:
    values = body.model_dump(
        mode="json", exclude={"send_at", "expires_at", "urgency", "recurrence"}
    )
    values.update(urgency=body.urgency.value, send_at=body.send_at, expires_at=body.expires_at)
    return values


async def _checked_preview(
    request: web.Request, draft: Draft, values: dict[str, Any], agency: Any
) -> Preview:
    """What submit checks, before anything is stored: every rendition exists, fits and carries
    every fact. The verification code is not drawn yet; a stand-in of the same length is."""
    row = AnnouncementRow(
        values={**values, "id": 0, "verification_code": _PLACEHOLDER_CODE},
        agency_slug=agency["slug"],
        agency_name=agency["name"],
    )
    preview = await build_preview(request, row)
    for rendition in preview.renditions:
        prefix = (
            ""
            if rendition.language == values["language"]
            else (f"translations.{rendition.language}.")
        )
        where = f"the {rendition.channel} message in {rendition.language}"
        if rendition.text is None:
            reason = "; ".join(rendition.problems) or "it cannot be rendered"
            raise _invalid(draft.problem("channels", f"{where}: {reason}"))
        if rendition.missing_facts:
            fact = rendition.missing_facts[0]
            raise _invalid(draft.problem(f"{prefix}facts.{fact}", f"{where} lacks '{fact}'"))
        if not rendition.fits:
            reason = "; ".join(rendition.problems) or "it is too long for the channel"
            raise _invalid(draft.problem(f"{prefix}body", f"{where}: {reason}"))
    return preview


@routes.post(
    "/cap",
    summary="Import a CAP 1.2 alert: Alert creates, Update rewrites, Cancel cancels",
    roles=[Role.AUTHOR],
    response=models.AnnouncementOut,
    status=201,
    content_type=CAP_MEDIA_TYPE,
    tags=TAGS,
)
async def import_cap(request: web.Request, principal: Principal) -> web.StreamResponse:
    if request.content_type not in MEDIA_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the CAP document as {CAP_MEDIA_TYPE} (or application/xml)",
        )
    raw = await read_body(
        request,
        limit=MAX_CAP_BYTES,
        too_large=f"a CAP document may be at most {MAX_CAP_BYTES} bytes",
    )
    try:
        message = read_message(parse_cap(raw))
    except CapProblem as exc:
        raise _invalid(exc) from None
    _check_header(message)
    now = request.app[CLOCK].now()
    engine = request.app[ENGINE]
    async with reading(engine) as conn:
        agency = (
            (await conn.execute(sa.select(agencies).where(agencies.c.id == principal.agency_id)))
            .mappings()
            .one()
        )
        await cap_store.refuse_duplicate(conn, agency_id=principal.agency_id, message=message)
        earlier: list[cap_store.KnownAlert] = []
        for reference in message.references:
            known = await cap_store.find_reference(
                conn, agency_id=principal.agency_id, reference=reference
            )
            if known is None:
                path, line = message.where("references")
                raise _invalid(
                    CapProblem(
                        path,
                        line,
                        f"no earlier alert {reference.identifier!r} from {reference.sender!r} "
                        "was received by this agency",
                    )
                )
            earlier.append(known)
    targets = list(dict.fromkeys(k.announcement_id for k in earlier))
    if message.msg_type == "Update" and len(targets) != 1:
        path, line = message.where("references")
        raise _invalid(CapProblem(path, line, "an Update must refer to alerts of one announcement"))

    values: dict[str, Any] = {}
    details: dict[str, Any] = {}
    estimated_cost = None
    if message.msg_type in ("Alert", "Update"):
        public = request.app[CONFIG].http.public_url.rstrip("/")
        draft = to_draft_or_422(
            message,
            default_language=agency["default_language"],
            default_channels=default_channels(request),
            own_pages=f"{public}/a/",
            now=now,
        )
        body = _announcement_in(draft, now=now)
        values = _values(body)
        preview = await _checked_preview(
            request,
            draft,
            {**values, "agency_id": principal.agency_id, "keep_gsm7": False},
            agency,
        )
        estimated_cost = preview.estimated_cost
        details = draft.details

    cap_fields = {
        "identifier": message.identifier,
        "sender": message.sender,
        "sent": message.sent_text,
        "msgType": message.msg_type,
    }
    async with engine.begin() as conn:
        if message.msg_type == "Alert":
            announcement_id = await store.insert_announcement(
                conn,
                values={
                    **values,
                    "agency_id": principal.agency_id,
                    "created_by": principal.token_id,
                },
                now=now,
            )
            await record(
                conn,
                principal=principal,
                action="announcement.create",
                subject=("announcement", announcement_id),
                after={
                    "title": values["title"],
                    "channels": values["channels"],
                    "urgency": values["urgency"],
                    "cap": cap_fields,
                },
                now=now,
            )
            await store.transition(
                conn,
                announcement_id,
                agency_id=principal.agency_id,
                action="submit",
                now=now,
                extra={"estimated_cost": estimated_cost},
            )
            await record(
                conn,
                principal=principal,
                action="announcement.submit",
                subject=("announcement", announcement_id),
                before={"status": AnnouncementStatus.DRAFT.value},
                after={"status": AnnouncementStatus.PENDING_APPROVAL.value, "cap": cap_fields},
                now=now,
            )
        elif message.msg_type == "Update":
            announcement_id = targets[0]
            # Reading it first makes an announcement of another agency a 404, as elsewhere.
            await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
            before = await cap_store.rewrite(
                conn,
                announcement_id,
                values={**values, "estimated_cost": estimated_cost},
                now=now,
            )
            await record(
                conn,
                principal=principal,
                action="announcement.update",
                subject=("announcement", announcement_id),
                before={"status": before.value},
                after={
                    "status": AnnouncementStatus.PENDING_APPROVAL.value,
                    "title": values["title"],
                    "cap": cap_fields,
                },
                now=now,
            )
        else:
            for target in targets:
                await _cancel(conn, principal, target, now=now, cap_fields=cap_fields)
            announcement_id = targets[0]
        await cap_store.record_alert(
            conn,
            agency_id=principal.agency_id,
            message=message,
            announcement_id=announcement_id,
            details=details,
            token_id=principal.token_id,
            now=now,
        )
        row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
    if message.msg_type != "Alert":
        notify_scheduler(request.app)
    out = to_out(request, row)
    return web.json_response(
        text=out.model_dump_json(),
        status=201 if message.msg_type == "Alert" else 200,
        content_type="application/json",
    )


def to_draft_or_422(message: CapMessage, **options: Any) -> Draft:
    try:
        return to_draft(message, **options)
    except CapProblem as exc:
        raise _invalid(exc) from None


async def _cancel(
    conn: Any, principal: Principal, announcement_id: int, *, now: Any, cap_fields: dict[str, str]
) -> None:
    """The cancel path of ``POST /announcements/{id}/cancel``: the transition, queued
    deliveries cancelled at once, a series ended, and the audit event."""
    from gateway.outbox.fanout import cancel_pending

    row = await store.get_announcement(conn, announcement_id, agency_id=principal.agency_id)
    await store.transition(
        conn, announcement_id, agency_id=principal.agency_id, action="cancel", now=now
    )
    deliveries = await cancel_pending(conn, announcement_id=announcement_id, now=now)
    after: dict[str, Any] = {"status": AnnouncementStatus.CANCELLED.value, "cap": cap_fields}
    occurrences = await recurrences.cancel_series(conn, template_id=announcement_id, now=now)
    if occurrences:
        after["occurrences_cancelled"] = occurrences
    after["deliveries_cancelled"] = deliveries
    await record(
        conn,
        principal=principal,
        action="announcement.cancel",
        subject=("announcement", announcement_id),
        before={"status": row["status"]},
        after=after,
        now=now,
    )
