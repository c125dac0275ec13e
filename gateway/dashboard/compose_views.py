"""Composing in the dashboard: a new announcement or an edit of a draft, in Bahasa Indonesia
and/or English, with a live preview that saves nothing.

Saving goes through the API's own handler functions (``create_announcement``,
``update_announcement``), the preview through ``preview_unsaved`` (the same renditions, segments,
recipients, cost and facts check as ``GET /announcements/{id}/preview``), so a page cannot do
what the API would refuse.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from aiohttp import web
from pydantic import ValidationError

from gateway.api import announcements as api
from gateway.api import deliveries as api_deliveries
from gateway.api import models
from gateway.api.errors import ApiError, from_validation_error, unprocessable
from gateway.api.routing import path_id
from gateway.appkeys import ENGINE
from gateway.dashboard.web import PREFIX, Ctx, page, redirect
from gateway.db.engine import reading
from gateway.db.schema import agencies
from gateway.domain import CHANNELS, AnnouncementStatus, Role
from gateway.store import announcements as store


async def _agency_timezone(ctx: Ctx) -> str:
    async with reading(ctx.request.app[ENGINE]) as conn:
        zone = await conn.scalar(
            sa.select(agencies.c.timezone).where(agencies.c.id == ctx.principal.agency_id)
        )
    return str(zone or "Asia/Jakarta")


def _local_time(value: str, zone: str, field: str) -> str | None:
    """A ``datetime-local`` value in the agency's zone, as ISO 8601 with its offset."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(zone)).isoformat()
    except (ValueError, ZoneInfoNotFoundError):
        raise unprocessable(f"{field}: not a date and time", field) from None


# The form has a title and body per language; the main language's text is the announcement's,
# the other language's (when its title is given) becomes its translation.
LANGUAGES = ("id", "en")


def _other(language: str) -> str:
    return "en" if language == "id" else "id"


def _announcement_in(ctx: Ctx, zone: str) -> models.AnnouncementIn:
    """The announcement the compose form describes; a 422 ``ApiError`` naming the API field."""
    facts: dict[str, Any] = {}
    for name in ("what", "where", "action", "link"):
        if ctx.field(f"fact_{name}"):
            facts[name] = ctx.field(f"fact_{name}")
    when = _local_time(ctx.field("fact_when"), zone, "facts.when")
    if when is not None:
        facts["when"] = when
    language = ctx.field("language", "id")
    if language not in LANGUAGES:
        raise unprocessable("language: choose Bahasa Indonesia or English", "language")
    other = _other(language)
    payload: dict[str, Any] = {
        "title": ctx.field(f"title_{language}"),
        "body": ctx.field(f"body_{language}"),
        "language": language,
        "facts": facts,
        "areas": [a for a in re.split(r"[,\s]+", ctx.field("areas")) if a],
        "channels": ctx.fields("channels"),
        "urgency": ctx.field("urgency", "normal"),
        "send_at": _local_time(ctx.field("send_at"), zone, "send_at"),
        "expires_at": _local_time(ctx.field("expires_at"), zone, "expires_at"),
        "keep_gsm7": ctx.field("keep_gsm7") == "on",
    }
    if ctx.field(f"title_{other}") or ctx.field(f"body_{other}"):
        payload["translations"] = {
            other: {"title": ctx.field(f"title_{other}"), "body": ctx.field(f"body_{other}")}
        }
    try:
        return models.AnnouncementIn.model_validate(payload)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def _form_field(api_field: str | None, language: str) -> str | None:
    """The form input to mark invalid for an API field (``title`` -> ``title_id``,
    ``translations.en.body`` -> ``body_en``, ``facts.when`` -> ``fact_when``)."""
    if not api_field:
        return None
    parts = api_field.split(".")
    if parts[0] in ("title", "body"):
        return f"{parts[0]}_{language}"
    if parts[0] == "translations" and len(parts) >= 3 and parts[2] in ("title", "body"):
        return f"{parts[2]}_{parts[1]}"
    if parts[0] == "facts" and len(parts) > 1:
        return f"fact_{parts[1]}"
    return parts[0]


def _submitted_values(ctx: Ctx) -> dict[str, Any]:
    values: dict[str, Any] = {key: ctx.field(key) for key in ctx.form or {} if key != "csrf"}
    values["channels"] = ctx.fields("channels")
    return values


def _local_input(when: datetime | None, zone: str) -> str:
    """A time as a ``datetime-local`` value in the agency's zone."""
    if when is None:
        return ""
    return when.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")


def _values_of(announcement: models.AnnouncementOut, zone: str) -> dict[str, Any]:
    """The compose form's fields for an existing announcement."""
    language = announcement.language if announcement.language in LANGUAGES else "id"
    values: dict[str, Any] = {
        "language": language,
        f"title_{language}": announcement.title,
        f"body_{language}": announcement.body,
        "areas": ", ".join(announcement.areas),
        "channels": list(announcement.channels),
        "urgency": announcement.urgency.value,
        "send_at": _local_input(announcement.send_at, zone),
        "expires_at": _local_input(announcement.expires_at, zone),
        "keep_gsm7": "on" if announcement.keep_gsm7 else "",
        "fact_when": _local_input(announcement.facts.when, zone),
    }
    for name in ("what", "where", "action", "link"):
        fact = getattr(announcement.facts, name)
        values[f"fact_{name}"] = "" if fact is None else str(fact)
    translation = announcement.translations.get(_other(language))
    if translation is not None:
        values[f"title_{_other(language)}"] = translation.title
        values[f"body_{_other(language)}"] = translation.body
    return values


def _compose_page(
    ctx: Ctx,
    *,
    zone: str,
    values: dict[str, Any],
    status: int = 200,
    error: ApiError | None = None,
    editing: models.AnnouncementOut | None = None,
    preview: Any = None,
) -> web.Response:
    return ctx.render(
        "compose.html",
        status=status,
        values=values,
        error=error,
        invalid=_form_field(error.field if error else None, values.get("language", "id")),
        channels=CHANNELS,
        zone=zone,
        editing=editing,
        preview=preview,
        languages=LANGUAGES,
    )


@page(api=api.create_announcement)
async def compose_form(ctx: Ctx) -> web.StreamResponse:
    return _compose_page(ctx, zone=await _agency_timezone(ctx), values={})


@page(api=api.create_announcement)
async def compose(ctx: Ctx) -> web.StreamResponse:
    zone = await _agency_timezone(ctx)
    try:
        body = _announcement_in(ctx, zone)
        created = await api.create_announcement(ctx.request, ctx.principal, body)
    except ApiError as exc:
        return _compose_page(
            ctx, zone=zone, values=_submitted_values(ctx), status=exc.status, error=exc
        )
    return redirect(f"{PREFIX}/announcements/{created.id}")


async def _editing(ctx: Ctx, announcement_id: int) -> models.AnnouncementOut:
    """The announcement being edited: a 403 page for anyone but its author (or an admin), a
    409 page unless it is still a draft."""
    async with reading(ctx.request.app[ENGINE]) as conn:
        row = await store.get_announcement(conn, announcement_id, agency_id=ctx.principal.agency_id)
    if row["created_by"] != ctx.principal.token_id and ctx.principal.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", ctx.t("forbidden"))
    announcement = api.to_out(ctx.request, row)
    if announcement.status is not AnnouncementStatus.DRAFT:
        raise ApiError(409, "conflict", ctx.t("not_a_draft"), "status")
    return announcement


@page(api=api.update_announcement)
async def edit_form(ctx: Ctx) -> web.StreamResponse:
    announcement = await _editing(ctx, path_id(ctx.request))
    zone = await _agency_timezone(ctx)
    return _compose_page(
        ctx, zone=zone, values=_values_of(announcement, zone), editing=announcement
    )


def _keep_what_the_form_lacks(
    body: models.AnnouncementIn, announcement: models.AnnouncementOut
) -> models.AnnouncementIn:
    """Topics and a translation's own facts can be set through the API only; an edit in the
    form keeps them rather than erasing them."""
    translations = {
        language: (
            text.model_copy(update={"facts": announcement.translations[language].facts})
            if language in announcement.translations and text.facts is None
            else text
        )
        for language, text in body.translations.items()
    }
    return body.model_copy(update={"topics": announcement.topics, "translations": translations})


@page(api=api.update_announcement)
async def update(ctx: Ctx) -> web.StreamResponse:
    """Save an edited draft through the API's own ``PUT /announcements/{id}``."""
    zone = await _agency_timezone(ctx)
    announcement = await _editing(ctx, path_id(ctx.request))
    try:
        body = _announcement_in(ctx, zone)
        body = _keep_what_the_form_lacks(body, announcement)
        await api.update_announcement(ctx.request, ctx.principal, body)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return _compose_page(
            ctx,
            zone=zone,
            values=_submitted_values(ctx),
            status=exc.status,
            error=exc,
            editing=announcement,
        )
    return redirect(f"{PREFIX}/announcements/{announcement.id}?done=saved")


FRAGMENT_HEADER = "X-Warta-Fragment"


def _fragment(response: web.Response) -> web.Response:
    """Mark a block for the script, which shows nothing else (a login page after the session
    ended, say, is not a preview)."""
    response.headers[FRAGMENT_HEADER] = "1"
    return response


@page(api=api_deliveries.preview_draft)
async def live_preview(ctx: Ctx) -> web.StreamResponse:
    """The preview of the compose form as it is, saving nothing.

    The compose page's script sends the form here as one types (with ``X-Warta-Fragment``)
    and shows the returned block; without JavaScript the form's Preview button posts here
    and gets the whole compose page back, with the preview under the form.
    """
    fragment = ctx.request.headers.get(FRAGMENT_HEADER) == "1"
    zone = await _agency_timezone(ctx)
    editing = None
    raw_id = ctx.field("editing")
    if raw_id:
        if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) < 18):
            raise ApiError(404, "not_found", "no such announcement", "editing")
        editing = await _editing(ctx, int(raw_id))
    try:
        body = _announcement_in(ctx, zone)
        if editing is not None:
            result = await api_deliveries.preview_unsaved(
                ctx.request,
                ctx.principal,
                _keep_what_the_form_lacks(body, editing),
                announcement_id=editing.id,
                verification_code=editing.verification_code,
            )
        else:
            result = await api_deliveries.preview_draft(ctx.request, ctx.principal, body)
    except ApiError as exc:
        if exc.status == 404:
            raise
        if fragment:
            return _fragment(
                ctx.render("_live_preview.html", status=exc.status, preview=None, error=exc)
            )
        return _compose_page(
            ctx,
            zone=zone,
            values=_submitted_values(ctx),
            status=exc.status,
            error=exc,
            editing=editing,
        )
    if fragment:
        return _fragment(ctx.render("_live_preview.html", preview=result, error=None))
    return _compose_page(
        ctx, zone=zone, values=_submitted_values(ctx), editing=editing, preview=result
    )


_SCRIPT = Path(__file__).resolve().parent.parent / "web" / "static" / "live-preview.js"


async def live_preview_script(request: web.Request) -> web.Response:
    """The compose page's only script (vendored, no build step): debounced live preview."""
    return web.Response(
        body=_SCRIPT.read_bytes(),
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
