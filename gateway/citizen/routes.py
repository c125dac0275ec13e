"""Africa's Talking callbacks for citizens: the USSD menu and inbound SMS keywords.

``POST /callbacks/africastalking/{token}/ussd`` takes AT's USSD form (``sessionId``,
``serviceCode``, ``phoneNumber``, ``networkCode``, ``text``) and answers ``text/plain``
``CON …``/``END …``. Whatever arrives (missing fields, a number that is not one, a database
that is down) the caller gets an ``END`` screen in their language with HTTP 200, never a 500:
a USSD gateway shows an error page for anything else.

``POST /callbacks/africastalking/{token}/sms/inbound`` takes AT's inbound SMS form (``from``,
``to``, ``text``, ``date``, ``id``, ``linkId``); keywords are answered through the reply sink
(``SMS_REPLIES``), everything else waits in the operator inbox.

Both are authenticated like every AT callback (secret path token, optional source allowlist,
``gateway.callbacks``). Which agency: ``CitizenSettings.service_codes`` (USSD) and
``short_codes`` (SMS) map a code to an agency slug; an unmapped code goes to the first agency
(lowest id), which is right for a gateway serving one agency.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from gateway.api.errors import error_response
from gateway.appkeys import CLOCK, CONFIG, ENGINE, VAULT
from gateway.callbacks import FORM_LIMIT, authentic
from gateway.citizen import wording
from gateway.citizen.directory import AgencyDirectories, SqlCitizenDirectory
from gateway.citizen.keywords import answer_sms
from gateway.citizen.ports import Caller
from gateway.citizen.screens import DEFAULT_SCREEN, check_size, screen
from gateway.citizen.ussd import respond, split_history
from gateway.db.schema import inbound_messages
from gateway.personal import InvalidPhoneNumber, PhoneNumber, normalise
from gateway.store import inbox
from gateway.store.subscribers import find_by_phone

log = logging.getLogger("warta.citizen")
MAX_USSD_TEXT = 2_000
MAX_SMS_TEXT = 1_600


@dataclass(frozen=True, slots=True)
class CitizenSettings:
    """USSD screen size and which agency answers which USSD service code / SMS short code."""

    screen_size: int = DEFAULT_SCREEN
    service_codes: Mapping[str, str] = field(default_factory=dict)
    short_codes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_size(self.screen_size)


@dataclass(frozen=True, slots=True)
class SmsReply:
    """A reply to send to a citizen's number, in answer to the provider message
    ``in_reply_to``, on ``channel`` (SMS, or WhatsApp for a WhatsApp message)."""

    agency_id: int
    phone: PhoneNumber = field(repr=False)
    text: str
    language: str
    in_reply_to: str | None
    channel: str = "sms"


SmsReplySink = Callable[[SmsReply], Awaitable[None]]
CITIZEN = web.AppKey("citizen", CitizenSettings)
SMS_REPLIES: web.AppKey[SmsReplySink] = web.AppKey("sms_replies")
USSD_DIRECTORIES = web.AppKey("ussd_directories", AgencyDirectories)


def install(
    app: web.Application,
    *,
    settings: CitizenSettings | None = None,
    replies: SmsReplySink | None = None,
) -> None:
    """Add the citizen callbacks. Without ``replies``, keyword replies are built and dropped."""
    app[CITIZEN] = settings or CitizenSettings()
    app[USSD_DIRECTORIES] = AgencyDirectories()
    if replies is not None:
        app[SMS_REPLIES] = replies
    base = "/callbacks/africastalking/{token}"
    app.router.add_post(base + "/ussd", ussd_callback)
    app.router.add_post(base + "/sms/inbound", sms_inbound)


def callback_urls(public_url: str, token: str) -> dict[str, str]:
    """The citizen callback URLs, by ``<provider>_<purpose>`` (for the demo and operators)."""
    base = f"{public_url.rstrip('/')}/callbacks/africastalking/{token}"
    return {
        "africastalking_ussd": f"{base}/ussd",
        "africastalking_sms_inbound": f"{base}/sms/inbound",
    }


def _code(raw: str | None) -> str:
    return "".join((raw or "").split())


async def _directory(request: web.Request, slug: str | None) -> SqlCitizenDirectory | None:
    app = request.app
    return await SqlCitizenDirectory.for_agency(
        app[ENGINE], vault=app[VAULT], clock=app[CLOCK], slug=slug
    )


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain", charset="utf-8")


async def _form(request: web.Request) -> dict[str, str] | None:
    if request.content_length is not None and request.content_length > FORM_LIMIT:
        return None
    try:
        data = await request.post()
    except ValueError:
        return None
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def ussd_callback(request: web.Request) -> web.Response:
    if not authentic(request):
        log.warning("refused a USSD callback: bad token or source")
        return error_response(403, "forbidden", "callback not authenticated")
    settings = request.app[CITIZEN]
    size = settings.screen_size
    language = "id"
    try:
        form = await _form(request)
        fields = form or {}
        slug = settings.service_codes.get(_code(fields.get("serviceCode")))
        # Kept between requests: a session's every step reads the same agency and bulletins.
        app = request.app
        directory = await app[USSD_DIRECTORIES].get(
            app[ENGINE], vault=app[VAULT], clock=app[CLOCK], slug=slug
        )
        if directory is None:
            return _text(screen(wording.say(language, "busy"), size=size, final=True))
        language = wording.supported(directory.default_language)
        text = fields.get("text", "")
        try:
            phone = normalise(
                fields.get("phoneNumber", ""), request.app[CONFIG].phone.default_region
            )
        except InvalidPhoneNumber:
            return _text(screen(wording.say(language, "bad_request"), size=size, final=True))
        if form is None or not fields.get("sessionId") or len(text) > MAX_USSD_TEXT:
            known = await directory.subscription(phone)
            if known is not None:
                language = wording.supported(known.language, language)
            key = "too_long" if len(text) > MAX_USSD_TEXT else "bad_request"
            return _text(screen(wording.say(language, key), size=size, final=True))
        caller = Caller(phone=phone, network_code=fields.get("networkCode") or None)
        answer = await respond(
            split_history(text), caller, directory, screen_size=size, language=language
        )
    except Exception as exc:  # the caller must get a screen; the reason is the class only
        log.warning("USSD request failed: %s", type(exc).__name__)
        answer = screen(wording.say(language, "busy"), size=size, final=True)
    return _text(answer)


async def sms_inbound(request: web.Request) -> web.Response:
    if not authentic(request):
        log.warning("refused an inbound SMS callback: bad token or source")
        return error_response(403, "forbidden", "callback not authenticated")
    form = await _form(request)
    if form is None:
        return error_response(400, "bad_form", "callback body is not a form")
    if "from" not in form or "text" not in form:
        missing = "from" if "from" not in form else "text"
        return error_response(400, "invalid", f"{missing} is required", missing)
    app = request.app
    try:
        phone: PhoneNumber | None = normalise(form["from"], app[CONFIG].phone.default_region)
    except InvalidPhoneNumber:
        phone = None
    directory = await _directory(request, app[CITIZEN].short_codes.get(_code(form.get("to"))))
    if directory is None:
        return error_response(503, "unavailable", "no agency is configured")
    message_id = form.get("id") or None
    answer = await answer_sms(
        form["text"][:MAX_SMS_TEXT],
        phone,
        directory,
        default_language=directory.default_language,
        provider_message_id=message_id,
    )
    if answer.keyword is None and phone is not None:
        # Also for a replayed message: filing is idempotent, and repairs a crash before it.
        await file_in_inbox(app, agency_id=directory.agency_id, phone=phone)
    if answer.reply is not None and phone is not None:
        reply = SmsReply(
            agency_id=directory.agency_id,
            phone=phone,
            text=answer.reply,
            language=answer.language,
            in_reply_to=message_id,
        )
        sink = app.get(SMS_REPLIES)
        if sink is not None:
            await sink(reply)
        else:
            log.info("SMS keyword %s answered; no reply sink installed", answer.keyword)
    return _text("OK")


async def file_in_inbox(
    app: web.Application, *, agency_id: int, phone: PhoneNumber, channel: str = "sms"
) -> None:
    """File a sender's free-text messages (SMS, WhatsApp) in their inbox thread
    (``gateway.store.inbox``); the thread answers on ``channel``."""
    vault = app[VAULT]
    index, *older = indexes = vault.blind_indexes(phone)
    async with app[ENGINE].begin() as conn:
        subscriber_id = await find_by_phone(conn, agency_id=agency_id, phone_indexes=indexes)
        # A thread opened under an older blind index key (mid-rotation) is carried over too.
        earlier = tuple(inbox.phone_key(i) for i in older)
        citizen = inbox.Citizen(
            key=inbox.phone_key(index)
            if subscriber_id is None
            else inbox.subscriber_key(subscriber_id),
            subscriber_id=subscriber_id,
            phone_masked=str(phone),
            reply_ciphertext=vault.encrypt(phone),
            aliases=earlier if subscriber_id is None else (inbox.phone_key(index), *earlier),
        )
        await inbox.file_messages(
            conn,
            agency_id=agency_id,
            channel=channel,
            citizen=citizen,
            waiting=inbound_messages.c.phone_index.in_(indexes),
            now=app[CLOCK].now(),
        )
