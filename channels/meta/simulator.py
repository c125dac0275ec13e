"""A real aiohttp server speaking the Graph API wire formats Warta uses from Meta.

- WhatsApp Cloud API: ``POST /{version}/{phone-number-id}/messages`` with a JSON template
  message, or a free-form ``type: text`` message (``text.body``, at most 4,096 characters)
  that it accepts only within 24 hours of that citizen's last message to us (else 131047,
  as Meta); answers ``{"messaging_product": "whatsapp", "contacts": [...], "messages":
  [{"id": "wamid..."}]}``.
- Facebook Pages: ``POST /{version}/{page-id}/feed`` with ``message`` and optional ``link``
  (form-encoded or JSON); answers ``{"id": "{page-id}_{post-id}"}``.

Both check the access token (``Authorization: Bearer`` or an ``access_token`` parameter) and
answer failures with Graph error bodies (``{"error": {"message", "type", "code",
"error_subcode", "fbtrace_id"}}``) and their HTTP statuses; outcomes come from
``SimulatorConfig`` (see ``channels.meta.simconfig``).

For each accepted WhatsApp message it later POSTs status webhooks (``sent``, then
``delivered``/``read`` or ``failed`` with ``errors[]``) to ``status_webhook_url``, signed with
``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with the app secret>``, in order,
from a bounded pool of workers that retry while the receiver errs or is down.

A citizen writing in (``citizen_says``, or ``POST /simulator/phones/{number}/say`` with
``{"text": ..., "context_id": ...}``) opens that number's window and POSTs the signed
``messages`` webhook to ``status_webhook_url``; ``GET /simulator/phones/{number}/messages``
lists the texts accepted for that number (``?after=`` a count already seen), for
``warta phone whatsapp``. Neither route is Meta's.

What it received: ``received`` (the last ``max_records`` requests), ``used_outcomes``,
``requests_total``, ``messages_accepted``, ``posts_created`` and ``webhooks`` (its
``delivered``, ``refused`` and ``failed`` counters). ``faults`` is the fault schedule
(``channels.simfaults``: 5xx bursts, 429s, resets, hangs, an outage, on demand at
``/simulator/faults``) for the WhatsApp ``messages`` and Page ``feed`` POSTs.
Nothing here logs a phone number, a token or the app secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from channels.meta.simconfig import GRAPH_OUTCOMES, SimulatorConfig
from channels.meta.simwebhooks import StatusWebhooks
from channels.simdraws import draw, seconds
from channels.simfaults import FaultSchedule
from channels.simserver import SimulatorServer

__all__ = ["MetaSimulator", "ReceivedRequest", "SimulatorConfig", "serve_forever"]

log = logging.getLogger(__name__)
MAX_POST_LENGTH = 63_206
MAX_PARAMETER_LENGTH = 1024
MAX_TEXT_BODY = 4096
SERVICE_WINDOW_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as received. ``body`` is the exact JSON object or form fields."""

    endpoint: str  # "whatsapp" or "facebook"
    node_id: str  # the phone number id or Page id in the path
    body: Mapping[str, Any] = field(repr=False)
    recipient: str | None = field(repr=False)
    http_status: int
    token_source: str | None  # "header", "param" or None
    received_at: float


class MetaSimulator(SimulatorServer):
    """The simulator: ``app`` to mount anywhere, or ``start()``/``stop()`` on its own port."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SimulatorConfig()
        self.received: deque[ReceivedRequest] = deque(maxlen=self.config.max_records)
        self.records_dropped = 0
        self.used_outcomes: set[str] = set()
        self.requests_total = 0
        self.messages_accepted = 0
        self.posts_created = 0
        self._rng = random.Random(self.config.seed)
        self.webhooks = StatusWebhooks(self.config, self._rng)
        self._seq = 0
        # WhatsApp id -> when the citizen last wrote to us (opens the 24-hour window).
        self.last_inbound: dict[str, float] = {}
        self.faults = FaultSchedule(
            is_send=self._is_send, recipients=self._recipients_of, throttled=self._throttled
        )
        self.app = web.Application(
            client_max_size=1024 * 1024, middlewares=[self.faults.middleware]
        )
        self._send_routes = (
            self.app.router.add_post("/{version}/{node}/messages", self._handle_whatsapp),
            self.app.router.add_post("/{version}/{node}/feed", self._handle_feed),
        )
        self.faults.add_routes(self.app)
        # Not Meta's: the simulator's own handset, for ``warta phone whatsapp``.
        self.app.router.add_post("/simulator/phones/{number}/say", self._handle_say)
        self.app.router.add_get("/simulator/phones/{number}/messages", self._handle_phone)
        self.app.cleanup_ctx.append(self.webhooks.run)
        self.app.on_shutdown.append(self.release_hanging)

    def __repr__(self) -> str:
        return f"<MetaSimulator requests={self.requests_total}>"

    def unused_outcomes(self) -> set[str]:
        """Recipients or Pages with a canned outcome that no request has used yet."""
        return set(self.config.outcomes) - self.used_outcomes

    async def wait_for_webhooks(self) -> None:
        """Return once every status webhook queued so far was posted or given up on."""
        await self.webhooks.join()

    async def subscribe(self, url: str, verify_token: str) -> bool:
        """Run Meta's subscription handshake against ``url``: True if it echoed the challenge."""
        challenge = f"{self._rng.getrandbits(40)}"
        query = {
            "hub.mode": "subscribe",
            "hub.verify_token": verify_token,
            "hub.challenge": challenge,
        }
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params=query) as response,
        ):
            text = await response.text()
            return response.status == 200 and text == challenge

    # -- citizens --------------------------------------------------------------------------

    async def citizen_says(
        self,
        number: str,
        text: str,
        *,
        context_id: str | None = None,
        profile_name: str = "Warga",
    ) -> tuple[str, int | None]:
        """The citizen ``number`` sends ``text`` to our business number.

        Opens the 24-hour window for free-form replies, then POSTs the signed webhook.
        Returns the message's wamid and the receiver's HTTP status (None: no webhook URL).
        """
        sender = number.lstrip("+")
        self._seq += 1
        wamid = f"wamid.SIMIN{self._seq:012d}"
        self.last_inbound[sender] = time.time()
        payload = self.webhooks.message_payload(
            wamid, sender, text, profile_name=profile_name, context_id=context_id
        )
        return wamid, await self.webhooks.post_once(payload)

    def accepted_texts(self, number: str) -> list[str]:
        """What WhatsApp would have shown ``number``, oldest first: template parameters and
        free-form text bodies of the accepted messages still in ``received``."""
        wanted = number.lstrip("+")
        texts: list[str] = []
        for record in self.received:
            if record.endpoint != "whatsapp" or record.http_status != 200:
                continue
            if (record.recipient or "").lstrip("+") != wanted:
                continue
            texts.append(_shown_text(record.body))
        return texts

    async def _handle_say(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            text = body["text"]
            context_id = body.get("context_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise web.HTTPBadRequest(
                text='POST {"text": …} to /simulator/phones/{number}/say'
            ) from None
        number = request.match_info["number"].lstrip("+")
        if not isinstance(text, str) or not text or not number.isdigit():
            raise web.HTTPBadRequest(text="text must be a non-empty string, number digits")
        if context_id is not None and not isinstance(context_id, str):
            raise web.HTTPBadRequest(text="context_id must be a string")
        wamid, status = await self.citizen_says(number, text, context_id=context_id)
        return web.json_response({"id": wamid, "webhook_status": status})

    async def _handle_phone(self, request: web.Request) -> web.StreamResponse:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an integer") from None
        texts = self.accepted_texts(request.match_info["number"])
        return web.json_response({"messages": texts[after:], "count": len(texts)})

    # -- requests --------------------------------------------------------------------------

    def _is_send(self, request: web.Request) -> bool:
        """A WhatsApp message or a Page post: the two Graph routes that send something."""
        return request.match_info.route in self._send_routes

    async def _recipients_of(self, request: web.Request) -> tuple[str, ...]:
        """WhatsApp: the ``to`` number of the JSON body; a Page post: the Page id in the path."""
        if request.match_info.route is not self._send_routes[0]:
            return (request.match_info["node"],)
        try:
            body = await request.json()  # aiohttp keeps the body for the handler
        except ValueError:
            return ()
        to = body.get("to") if isinstance(body, dict) else None
        return (to,) if isinstance(to, str) and to else ()

    def _throttled(self, retry_after: int) -> web.Response:
        """Meta's request-limit answer: HTTP 429, ``Retry-After`` and Graph error code 4."""
        headers = {"Retry-After": str(retry_after)}
        return self._graph_error(429, 4, "Application request limit reached", headers=headers)

    def _record(
        self,
        request: web.Request,
        body: Mapping[str, Any],
        recipient: str | None,
        status: int,
        token_source: str | None,
        endpoint: str,
    ) -> None:
        if len(self.received) == self.received.maxlen:
            self.records_dropped += 1
        self.received.append(
            ReceivedRequest(
                endpoint,
                request.match_info["node"],
                body,
                recipient,
                status,
                token_source,
                time.time(),
            )
        )

    def _graph_error(
        self,
        status: int,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self._seq += 1
        error: dict[str, Any] = {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "is_transient": code in (1, 2, 131000),
            "fbtrace_id": f"SimTrace{self._seq:08d}",
        }
        if subcode is not None:
            error["error_subcode"] = subcode
        return web.json_response({"error": error}, status=status, headers=headers)

    @staticmethod
    def _token(request: web.Request, body: Mapping[str, Any]) -> tuple[str | None, str | None]:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip():
            return auth[7:].strip(), "header"
        token = request.query.get("access_token") or body.get("access_token")
        return (str(token), "param") if token else (None, None)

    def _outcome_for(self, recipient: str) -> str:
        canned = self.config.outcomes.get(recipient)
        if canned is not None:
            self.used_outcomes.add(recipient)
            return canned
        drawn = draw(self.config.request_failure_shares, self._rng)
        return drawn or draw(self.config.failure_shares, self._rng) or "success"

    def _answer(self, outcome: str | None) -> web.Response | None:
        """The error answer for ``outcome``; None for success (``timeout`` answers 504 late)."""
        if outcome is None or outcome == "success":
            return None
        if outcome == "throttled":
            return self._throttled(self.config.retry_after_seconds)
        if outcome == "server_error":
            return web.Response(
                status=502, text="<html><body>Bad Gateway</body></html>", content_type="text/html"
            )
        if outcome == "timeout":
            return web.Response(status=504, text="Gateway Timeout")
        status, code, message = GRAPH_OUTCOMES[outcome]
        return self._graph_error(status, code, message)

    async def _handle_whatsapp(self, request: web.Request) -> web.StreamResponse:
        self.requests_total += 1
        try:
            body = await request.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        await asyncio.sleep(seconds(self.config.latency, self._rng))
        token, source = self._token(request, body)
        to = body.get("to") if isinstance(body.get("to"), str) else None
        answer = self._check_whatsapp(request, body, token)
        outcome = self._outcome_for(to) if answer is None and to is not None else None
        answer = answer or self._answer(outcome)
        if answer is None:
            assert to is not None
            answer = self._accept_whatsapp(to, body)
        self._record(request, body, to, answer.status, source, "whatsapp")
        if outcome == "timeout":
            await self.hang(self.config.timeout_hang)
        return answer

    def _check_whatsapp(
        self, request: web.Request, body: Mapping[str, Any], token: str | None
    ) -> web.Response | None:
        config = self.config
        if token is None:
            return self._graph_error(400, 104, "An access token is required")
        if not hmac.compare_digest(token.encode(), config.whatsapp_token.encode()):
            return self._graph_error(401, 190, "Invalid OAuth access token")
        if request.match_info["node"] != config.phone_number_id:
            return self._graph_error(400, 100, "Unsupported post request", subcode=33)
        template = body.get("template")
        if body.get("messaging_product") != "whatsapp" or not isinstance(body.get("to"), str):
            return self._graph_error(400, 100, "Invalid parameter")
        if body.get("type") == "text":
            return self._check_text(body)
        if body.get("type") != "template" or not isinstance(template, dict):
            return self._graph_error(400, 131047, "Re-engagement message")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if (template.get("name"), code) not in config.templates:
            return self._graph_error(404, 132001, "Template name does not exist in the translation")
        for component in template.get("components") or []:
            for parameter in (
                component.get("parameters") or [] if isinstance(component, dict) else []
            ):
                text = parameter.get("text", "") if isinstance(parameter, dict) else ""
                # Meta refuses new lines, tabs and more than four spaces in a row.
                if any(c in text for c in "\n\t") or "     " in text:
                    return self._graph_error(400, 100, "Invalid parameter")
                if len(text) > MAX_PARAMETER_LENGTH:
                    return self._graph_error(400, 132005, "Translated text too long")
        return None

    def _check_text(self, body: Mapping[str, Any]) -> web.Response | None:
        text = body.get("text")
        words = text.get("body") if isinstance(text, dict) else None
        if not isinstance(words, str) or not words.strip() or len(words) > MAX_TEXT_BODY:
            return self._graph_error(400, 100, "Invalid parameter")
        wrote_at = self.last_inbound.get(str(body["to"]).lstrip("+"))
        if wrote_at is None or time.time() - wrote_at > SERVICE_WINDOW_SECONDS:
            return self._graph_error(400, 131047, "Re-engagement message")
        return None

    def _accept_whatsapp(self, to: str, body: Mapping[str, Any]) -> web.Response:
        self._seq += 1
        self.messages_accepted += 1
        wamid = f"wamid.SIM{self._seq:012d}"
        self.webhooks.queue(wamid, to, body.get("biz_opaque_callback_data"))
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    async def _handle_feed(self, request: web.Request) -> web.StreamResponse:
        self.requests_total += 1
        body: dict[str, Any]
        if request.content_type == "application/json":
            try:
                parsed = await request.json()
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, dict) else {}
        else:
            body = {key: str(value) for key, value in (await request.post()).items()}
        await asyncio.sleep(seconds(self.config.latency, self._rng))
        token, source = self._token(request, body)
        page_id = request.match_info["node"]
        answer = self._check_feed(page_id, body, token)
        outcome = self._outcome_for(page_id) if answer is None else None
        answer = answer or self._answer(outcome)
        if answer is None:
            self._seq += 1
            self.posts_created += 1
            answer = web.json_response({"id": f"{page_id}_{100000 + self._seq}"})
        self._record(request, body, page_id, answer.status, source, "facebook")
        if outcome == "timeout":
            await self.hang(self.config.timeout_hang)
        return answer

    def _check_feed(
        self, page_id: str, body: Mapping[str, Any], token: str | None
    ) -> web.Response | None:
        tokens = self.config.page_tokens
        if token is None:
            return self._graph_error(400, 104, "An access token is required")
        if page_id not in tokens:
            return self._graph_error(400, 100, "Unsupported post request", subcode=33)
        if not hmac.compare_digest(token.encode(), tokens[page_id].encode()):
            known = any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens.values())
            if known:
                return self._graph_error(403, 200, "Permissions error")
            return self._graph_error(401, 190, "Invalid OAuth access token")
        message = body.get("message")
        if not message and not body.get("link"):
            return self._graph_error(400, 100, "Invalid parameter")
        if isinstance(message, str) and len(message) > MAX_POST_LENGTH:
            return self._graph_error(400, 100, "Invalid parameter")
        return None


def _shown_text(body: Mapping[str, Any]) -> str:
    text = body.get("text")
    if isinstance(text, dict):
        return str(text.get("body", ""))
    template = body.get("template")
    components = template.get("components") if isinstance(template, dict) else None
    for component in components if isinstance(components, list) else []:
        for parameter in component.get("parameters") or [] if isinstance(component, dict) else []:
            if isinstance(parameter, dict) and isinstance(parameter.get("text"), str):
                return str(parameter["text"])
    return ""


async def serve_forever(host: str, port: int, config: SimulatorConfig) -> None:
    """Run the simulator until cancelled (``warta simulate meta``)."""
    simulator = MetaSimulator(config)
    base_url = await simulator.start(host, port)
    log.info("Meta (WhatsApp + Facebook) simulator listening on %s", base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
