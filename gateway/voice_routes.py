"""Africa's Talking voice callbacks, and the call audio Africa's Talking fetches from us.

- ``POST /callbacks/africastalking/{token}/voice``: the voice number's callback URL. The first
  request of a call (``isActive=1``) is answered with the XML that plays the announcement; the
  last (``isActive=0``) carries the call's outcome, which goes through the same report writer
  as SMS delivery reports (``delivered`` when answered, ``failed`` with the hang-up cause).
- ``POST /callbacks/africastalking/{token}/voice/digits``: the citizen pressed a key at the
  "press 1 to hear it again" prompt; the message plays again up to ``max_plays`` times.
- ``GET /audio/{name}``: audio rendered by espeak-ng for languages ``<Say>`` cannot speak.

The callbacks are authenticated like the SMS ones (``gateway.callbacks.authentic``: the secret
path token and the optional source allowlist). The call is found by ``sessionId``, which the
dispatcher stored as the delivery's ``provider_message_id``; what it says is the delivery's
announcement rendered with the voice template in the delivery's language. Neither a phone
number nor the token is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from cachetools import LRUCache
from sqlalchemy.exc import SQLAlchemyError

from channels.voice import (
    VoiceCallback,
    VoiceCallbackError,
    VoiceChannel,
    VoiceResponder,
    hangup_document,
    parse_voice_callback,
)
from channels.voice.actions import XML_CONTENT_TYPE
from channels.voice.speech import AUDIO_MEDIA_TYPE
from gateway.api.errors import error_response
from gateway.appkeys import CONFIG, ENGINE, RENDERER, REPORTS, running_channels
from gateway.callbacks import FORM_LIMIT, authentic
from gateway.db.schema import agencies, announcements, deliveries
from gateway.errors import ConfigError
from gateway.outbox.content import content_for
from gateway.renditions import TemplateProblem

log = logging.getLogger("warta.voice")

CALLBACK_PATH = "/callbacks/africastalking/{token}/voice"
DIGITS_PATH = CALLBACK_PATH + "/digits"
AUDIO_PATH = "/audio/{name}"
# A call can be answered before the dispatcher has stored its session id (the simulator
# answers at once; a real phone rings for seconds): wait this long for it, then hang up.
SESSION_WAIT_S = 5.0
AUDIO_CACHE_CONTROL = "public, max-age=86400, immutable"


@dataclass(frozen=True, slots=True)
class _Call:
    """What the gateway knows of one call session."""

    announcement_id: int | None
    language: str
    body: str | None


@dataclass(frozen=True, slots=True)
class _Speech:
    """The text one call reads out and the language it is in."""

    text: str
    language: str


class VoiceTexts:
    """Voice renditions by (announcement, language), kept for the calls of one broadcast."""

    def __init__(self, size: int = 256) -> None:
        self._texts: LRUCache[tuple[int, str], _Speech] = LRUCache(size)

    def get(self, announcement_id: int, language: str) -> _Speech | None:
        return self._texts.get((announcement_id, language))

    def put(self, announcement_id: int, language: str, speech: _Speech) -> None:
        self._texts[(announcement_id, language)] = speech


VOICE_TEXTS = web.AppKey("voice_texts", VoiceTexts)


def install(app: web.Application) -> None:
    app[VOICE_TEXTS] = VoiceTexts()
    app.router.add_post(CALLBACK_PATH, voice_callback)
    app.router.add_post(DIGITS_PATH, voice_digits)
    app.router.add_get(AUDIO_PATH, voice_audio)


def callback_urls(public_url: str, token: str) -> dict[str, str]:
    """The voice callback URL to set on the Africa's Talking voice number."""
    base = public_url.rstrip("/")
    return {"africastalking_voice": f"{base}{CALLBACK_PATH.format(token=token)}"}


def _voice_channel(app: web.Application) -> VoiceChannel | None:
    channel = running_channels(app).get("voice")
    return channel if isinstance(channel, VoiceChannel) else None


def _xml(document: str) -> web.Response:
    return web.Response(text=document, content_type=XML_CONTENT_TYPE)


async def voice_callback(request: web.Request) -> web.Response:
    return await _handle(request, digits_route=False)


async def voice_digits(request: web.Request) -> web.Response:
    return await _handle(request, digits_route=True)


async def _handle(request: web.Request, *, digits_route: bool) -> web.Response:
    if not authentic(request):
        log.warning("refused a voice callback: bad token or source")
        return error_response(401, "unauthenticated", "callback not authenticated")
    channel = _voice_channel(request.app)
    if channel is None:
        return error_response(404, "not_found", "the voice channel is not configured")
    if request.content_length is not None and request.content_length > FORM_LIMIT:
        return error_response(413, "too_large", "callback body too large")
    try:
        data = await request.post()
    except ValueError:
        return error_response(400, "bad_form", "callback body is not a form")
    form = {key: value for key, value in data.items() if isinstance(value, str)}
    try:
        callback = parse_voice_callback(form)
    except VoiceCallbackError as exc:
        return error_response(400, "invalid", str(exc), exc.field)
    if callback.is_final:
        return await _finish(request, callback)
    return await _answer(request, channel, callback, digits_route=digits_route)


async def _finish(request: web.Request, callback: VoiceCallback) -> web.Response:
    """The call is over: its outcome becomes the delivery's state (replays change nothing)."""
    report = callback.delivery_report(request.app[CONFIG].pricing.currency)
    assert report is not None  # a final callback always makes one
    try:
        await request.app[REPORTS].submit("voice", report)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("could not store a voice call outcome: %s", type(exc).__name__)
        return error_response(503, "unavailable", "try again later")
    return _xml(hangup_document())


async def _answer(
    request: web.Request,
    channel: VoiceChannel,
    callback: VoiceCallback,
    *,
    digits_route: bool,
) -> web.Response:
    app = request.app
    try:
        call = await _wait_for_call(app[ENGINE], callback.session_id)
        speech = None if call is None else await _speech(app, call)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("could not look a voice call up: %s", type(exc).__name__)
        return error_response(503, "unavailable", "try again later")
    except TemplateProblem as exc:
        log.error("voice template failed, hanging up: %s", exc)
        return _xml(hangup_document())
    token = app[CONFIG].secrets.callback_token
    assert token is not None  # authentic() refuses every request without one
    digits_url = app[CONFIG].http.public_url.rstrip("/") + DIGITS_PATH.format(
        token=token.get_secret_value()
    )
    responder = VoiceResponder.from_config(channel.config, channel.renderer, digits_url)
    # On the digits route a missing count means "heard enough", never a fresh start.
    played = request.query.get("played", "") if digits_route else None
    try:
        document = await responder.respond(
            callback,
            None if speech is None else speech.text,
            "en" if speech is None else speech.language,
            played=played,
        )
    except ConfigError as exc:
        log.error("cannot speak this call (%s); hanging up", exc.reason)
        return _xml(hangup_document())
    return _xml(document)


async def _wait_for_call(engine: Any, session_id: str) -> _Call | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SESSION_WAIT_S
    pause = 0.05
    while True:
        call = await _find_call(engine, session_id)
        if call is not None:
            return call
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


async def _find_call(engine: Any, session_id: str) -> _Call | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(deliveries.c.announcement_id, deliveries.c.language, deliveries.c.body)
                .where(
                    deliveries.c.channel == "voice",
                    deliveries.c.provider_message_id == session_id,
                )
                .limit(1)
            )
        ).first()
    if row is None:
        return None
    return _Call(announcement_id=row.announcement_id, language=row.language, body=row.body)


async def _speech(app: web.Application, call: _Call) -> _Speech | None:
    """What the call reads out: the announcement's voice rendition in the call's language."""
    if call.announcement_id is None:
        return None if call.body is None else _Speech(call.body, call.language)
    cache = app[VOICE_TEXTS]
    speech = cache.get(call.announcement_id, call.language)
    if speech is not None:
        return speech
    async with app[ENGINE].connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(announcements, agencies.c.name.label("agency_name"))
                    .join(agencies, agencies.c.id == announcements.c.agency_id)
                    .where(announcements.c.id == call.announcement_id)
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    speech = _render(app, dict(row), call.language)
    cache.put(call.announcement_id, call.language, speech)
    return speech


def _render(app: web.Application, row: Mapping[str, Any], language: str) -> _Speech:
    public_url = f"{app[CONFIG].http.public_url.rstrip('/')}/a/{row['verification_code']}"
    content = content_for(
        row, language=language, agency_name=row["agency_name"], public_url=public_url
    )
    rendition = app[RENDERER].render(VoiceChannel, content, keep_gsm7=row["keep_gsm7"])
    # The language actually rendered (the main one when a translation is missing).
    return _Speech(rendition.text, rendition.language)


async def voice_audio(request: web.Request) -> web.StreamResponse:
    """A rendered call audio file; any other name is 404 (the name is checked, not joined)."""
    channel = _voice_channel(request.app)
    path = None if channel is None else channel.renderer.audio_path(request.match_info["name"])
    if path is None:
        return error_response(404, "not_found", "no such audio", "name")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": AUDIO_MEDIA_TYPE,
            "Cache-Control": AUDIO_CACHE_CONTROL,
            "X-Content-Type-Options": "nosniff",
        },
    )
