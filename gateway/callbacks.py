"""Provider callbacks under ``/callbacks/<provider>/…``.

Africa's Talking signs nothing, so its callback URLs carry a random secret path token
(``/callbacks/africastalking/{token}/…``), compared in constant time, and an optional
allowlist of source addresses. A failed check is a 403 that is logged without the payload and
changes nothing. Every callback is idempotent: a replay stores nothing new.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging

import sqlalchemy as sa
from aiohttp import web

from channels.sms.callbacks import CallbackFieldError, parse_delivery_report, parse_opt_out
from gateway.api.errors import error_response
from gateway.appkeys import CLOCK, CONFIG, ENGINE, REPORTS, VAULT
from gateway.db.schema import agencies, subscribers
from gateway.personal import InvalidPhoneNumber, normalise
from gateway.store.subscribers import opt_out

log = logging.getLogger("warta.callbacks")
FORM_LIMIT = 64 * 1024


class _Routes:
    def install(self, app: web.Application) -> None:
        base = "/callbacks/africastalking/{token}"
        app.router.add_post(base + "/sms/delivery", sms_delivery_report)
        app.router.add_post(base + "/sms/optout", sms_opt_out)
        app.router.add_get("/callbacks/meta/whatsapp", whatsapp_verify)
        app.router.add_post("/callbacks/meta/whatsapp", whatsapp_webhook)


routes = _Routes()


def callback_urls(public_url: str, token: str) -> dict[str, str]:
    """Every provider callback URL, by ``<provider>_<purpose>`` (for the demo and operators)."""
    base = f"{public_url.rstrip('/')}/callbacks/africastalking/{token}"
    return {
        "africastalking_sms_delivery": f"{base}/sms/delivery",
        "africastalking_sms_optout": f"{base}/sms/optout",
        "meta_whatsapp_webhook": f"{public_url.rstrip('/')}/callbacks/meta/whatsapp",
    }


def authentic(request: web.Request) -> bool:
    config = request.app[CONFIG]
    expected = config.secrets.callback_token
    if expected is None:
        return False
    given = request.match_info.get("token", "")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        return False
    allow = config.africastalking.callback_allowlist
    if allow:
        try:
            source = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(source in ipaddress.ip_network(net, strict=False) for net in allow)
    return True


async def _form(request: web.Request) -> dict[str, str] | web.Response:
    if not authentic(request):
        log.warning("refused a callback on %s: bad token or source", request.path.split("/")[-2:])
        return error_response(403, "forbidden", "callback not authenticated")
    if request.content_length is not None and request.content_length > FORM_LIMIT:
        return error_response(413, "too_large", "callback body too large")
    try:
        data = await request.post()
    except ValueError:
        return error_response(400, "bad_form", "callback body is not a form")
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def sms_delivery_report(request: web.Request) -> web.Response:
    form = await _form(request)
    if isinstance(form, web.Response):
        return form
    try:
        report = parse_delivery_report(form)
    except CallbackFieldError as exc:
        return error_response(400, "invalid", str(exc), exc.field)
    await request.app[REPORTS].submit("sms", report)
    return web.Response(text="OK")


async def sms_opt_out(request: web.Request) -> web.Response:
    form = await _form(request)
    if isinstance(form, web.Response):
        return form
    app = request.app
    try:
        number = normalise(parse_opt_out(form), app[CONFIG].phone.default_region)
    except CallbackFieldError as exc:
        return error_response(400, "invalid", str(exc), exc.field)
    except InvalidPhoneNumber:
        return error_response(400, "invalid", "phoneNumber is not a valid number", "phoneNumber")
    indexes = app[VAULT].blind_indexes(number)
    async with app[ENGINE].begin() as conn:
        ids = (
            (
                await conn.execute(
                    # Every agency on the account: naming them lets the (agency, phone index)
                    # unique index find the number; the index alone would read every
                    # subscriber, holding the write lock, once per opt-out.
                    sa.select(subscribers.c.id).where(
                        subscribers.c.agency_id.in_(sa.select(agencies.c.id)),
                        subscribers.c.phone_index.in_(indexes),
                    )
                )
            )
            .scalars()
            .all()
        )
        await opt_out(conn, subscriber_ids=list(ids), channels=["sms"], now=app[CLOCK].now())
    return web.Response(text="OK")


async def whatsapp_verify(request: web.Request) -> web.Response:
    """Meta's subscription handshake: echo the challenge only for our verify token."""
    from channels.meta.signature import verify_subscription

    token = request.app[CONFIG].secrets.meta_verify_token
    challenge = None
    if token is not None:
        challenge = verify_subscription(request.query, token.get_secret_value())
    if challenge is None:
        return error_response(403, "forbidden", "verification refused")
    return web.Response(text=challenge)


async def whatsapp_webhook(request: web.Request) -> web.Response:
    """Cloud API webhooks (statuses and citizens' messages), signed with
    ``X-Hub-Signature-256`` over the raw body; the whole body is checked before anything is
    written, so a malformed one (400, naming the field) changes nothing."""
    from channels.meta.signature import SIGNATURE_HEADER, verify_signature
    from channels.whatsapp import WebhookFieldError, parse_webhook_body
    from gateway.citizen import whatsapp_inbound

    secret = request.app[CONFIG].secrets.meta_app_secret
    if request.content_length is not None and request.content_length > 1024 * 1024:
        return error_response(413, "too_large", "webhook body too large")
    raw = await request.read()
    if secret is None or not verify_signature(
        raw, request.headers.get(SIGNATURE_HEADER), secret.get_secret_value()
    ):
        log.warning("refused a WhatsApp webhook: bad signature")
        return error_response(401, "unauthenticated", "webhook signature does not match")
    try:
        webhook = parse_webhook_body(raw)
        people = whatsapp_inbound.senders(request.app, webhook.messages)
    except WebhookFieldError as exc:
        return error_response(400, "invalid", f"malformed webhook field {exc.field}", exc.field)
    except whatsapp_inbound.UnknownSender as exc:
        return error_response(400, "invalid", str(exc), exc.field)
    writer = request.app[REPORTS]
    await asyncio.gather(*(writer.submit("whatsapp", report) for report in webhook.reports))
    try:
        await whatsapp_inbound.receive(request.app, people)
    except whatsapp_inbound.NoAgency:
        return error_response(503, "unavailable", "no agency is configured")
    return web.Response(text="OK")
