"""A real aiohttp server speaking the Telegram Bot API, as far as Warta uses it.

``/bot<token>/<method>`` for ``getMe``, ``sendMessage``, ``setWebhook``, ``deleteWebhook``,
``getWebhookInfo`` and ``getUpdates`` (method names in any case, as the Bot API allows);
parameters from the query string, a form (python-telegram-bot sends
``application/x-www-form-urlencoded``, JSON-encoding non-string values) or a JSON body. Every
answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description":
"...", "parameters": {...}}`` with HTTP status N, like Telegram's
(https://core.telegram.org/bots/api#making-requests). Outcomes, shares and flood limits come
from ``SimulatorConfig`` (see ``channels.telegram.simconfig``).

Citizens' side: ``deliver(update)`` POSTs an update to the webhook set with ``setWebhook``
(with its ``secret_token`` header) or queues it for ``getUpdates``; ``citizen_says`` and
``citizen_blocks`` build the update first.

What it received, for tests and benchmarks: ``received`` (the last ``max_records`` requests,
with monotonic arrival times), ``sent_count`` (accepted messages per chat id, never bounded),
``requests_total``, ``throttled_total`` (429 answers) and ``rate_limited_total`` (the 429s
the enforced flood limits caused). ``faults`` is the fault schedule (``channels.simfaults``:
5xx bursts, 429s, resets, hangs, an outage, on demand at ``/simulator/faults``) with
``arrivals``, every ``sendMessage``'s time and chat. Nothing here logs a token, a chat id or a text.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import random
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from channels.simdraws import draw, seconds
from channels.simfaults import FaultSchedule
from channels.simserver import SimulatorServer
from channels.telegram.simconfig import (
    ERRORS,
    REQUEST_OUTCOMES,
    SimulatorConfig,
)
from channels.telegram.simupdates import member_update, post_webhook_update, text_update
from channels.telegram.simwire import (
    BAD_GATEWAY_PAGE,
    JsonObject,
    chat_object,
    error,
    ok,
    wire,
)
from gateway.ratelimit import TokenBucket

__all__ = ["ReceivedRequest", "SimulatorConfig", "TelegramSimulator", "serve_forever"]

log = logging.getLogger(__name__)

_TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]+")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_TEXT = 4096
_PRUNE_PER_CALL = 32


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One Bot API call as received. ``params`` are strings, as on the wire."""

    method: str
    params: Mapping[str, str] = field(repr=False)
    received_at: float  # time.monotonic() at arrival
    http_status: int  # 0: never answered (a ``timeout`` outcome)

    @property
    def chat_id(self) -> str | None:
        return self.params.get("chat_id")


class TelegramSimulator(SimulatorServer):
    """The simulator: ``app`` to mount anywhere, or ``start()``/``stop()`` on its own port."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SimulatorConfig()
        self.received: deque[ReceivedRequest] = deque(maxlen=self.config.max_records)
        self.records_dropped = 0
        self.sent_count: Counter[str] = Counter()
        self._message_ids: Counter[int] = Counter()  # message ids count per chat
        self.requests_total = 0
        self.throttled_total = 0
        self.rate_limited_total = 0
        self.used_outcomes: set[str] = set()
        self.webhook_url = self.config.webhook_url
        self.webhook_secret = self.config.webhook_secret
        self._rng = random.Random(self.config.seed)
        rate = self.config.enforce_bot_rate
        self._bucket = (
            TokenBucket(rate, self.config.bot_burst or rate) if rate is not None else None
        )
        self._last_accepted: OrderedDict[str, float] = OrderedDict()
        self._updates: deque[JsonObject] = deque(maxlen=self.config.max_pending_updates)
        self._update_seq = 0
        self._new_update = asyncio.Event()
        self.bot_user: JsonObject = {
            "id": self.config.bot_id,
            "is_bot": True,
            "first_name": self.config.bot_first_name,
            "username": self.config.bot_username,
        }
        self.faults = FaultSchedule(
            is_send=lambda request: request.match_info.get("method", "").lower() == "sendmessage",
            recipients=self._chat_of,
            throttled=self._throttled,
        )
        self.app = web.Application(middlewares=[self.faults.middleware])
        self.app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self.faults.add_routes(self.app)
        # Not Telegram's: the simulator's own handset, for ``warta phone telegram``.
        self.app.router.add_post("/simulator/chats/{chat_id}/say", self._handle_say)
        self.app.router.add_get("/simulator/chats/{chat_id}/messages", self._handle_messages)
        self.app.on_shutdown.append(self.release_hanging)

    def __repr__(self) -> str:
        return f"<TelegramSimulator requests={self.requests_total}>"

    def unused_outcomes(self) -> set[str]:
        """Chat ids with a canned outcome that no request has used yet."""
        return set(self.config.outcomes) - self.used_outcomes

    async def _handle_say(self, request: web.Request) -> web.StreamResponse:
        """A citizen in chat ``chat_id`` types the JSON body's ``text`` to the bot."""
        try:
            chat_id = int(request.match_info["chat_id"])
            body = await request.json()
            text = str(body["text"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='POST {"text": …} to a numeric chat id') from None
        language = body.get("language_code", "id")
        status = await self.citizen_says(chat_id, text, language_code=language)
        return web.json_response({"delivered_by": "webhook" if status else "getUpdates"})

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        """What the bot sent to ``chat_id``, oldest first (``?after=`` a count already seen)."""
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an integer") from None
        sent = self.accepted(request.match_info["chat_id"])
        return web.json_response(
            {"messages": [r.params.get("text", "") for r in sent[after:]], "count": len(sent)}
        )

    def accepted(self, chat_id: str | None = None) -> list[ReceivedRequest]:
        """Recorded ``sendMessage`` calls that Telegram would have delivered, oldest first."""
        return [
            r
            for r in self.received
            if r.method == "sendmessage"
            and r.http_status == 200
            and (chat_id is None or r.chat_id == chat_id)
        ]

    # -- citizens --------------------------------------------------------------------------

    def _next_update_id(self) -> int:
        self._update_seq += 1
        return self._update_seq

    async def deliver(self, update: JsonObject) -> int | None:
        """POST ``update`` to the webhook (returns its HTTP status), or queue it (None)."""
        if self.webhook_url is not None:
            return await post_webhook_update(self.webhook_url, update, self.webhook_secret)
        self._updates.append(update)
        self._new_update.set()
        return None

    async def citizen_says(
        self, chat_id: int, text: str, *, language_code: str | None = "id"
    ) -> int | None:
        """The citizen ``chat_id`` sends ``text`` to the bot (e.g. ``/start``, ``/cek K7QX``)."""
        update_id = self._next_update_id()
        update = text_update(update_id, update_id, chat_id, text, language_code=language_code)
        return await self.deliver(update)

    async def citizen_blocks(self, chat_id: int, *, blocked: bool = True) -> int | None:
        """The citizen blocks (or unblocks) the bot; Telegram sends ``my_chat_member``."""
        update = member_update(self._next_update_id(), chat_id, self.bot_user, blocked=blocked)
        return await self.deliver(update)

    # -- the Bot API -----------------------------------------------------------------------

    def _record(self, method: str, params: dict[str, str], arrived: float, status: int) -> None:
        if len(self.received) == self.received.maxlen:
            self.records_dropped += 1
        self.received.append(ReceivedRequest(method, params, arrived, status))

    async def _params(self, request: web.Request) -> dict[str, str] | None:
        params = {key: value for key, value in request.query.items()}
        if request.method != "POST" or not request.body_exists:
            return params
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return None
            if not isinstance(body, dict):
                return None
            params.update({str(k): wire(v) for k, v in body.items() if v is not None})
        else:
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        self.requests_total += 1
        method = request.match_info["method"].lower()
        params = await self._params(request)
        latency = seconds(self.config.latency, self._rng)
        if latency > 0:
            await asyncio.sleep(latency)
        response = self._check_token(request.match_info["token"])
        if response is None and params is None:
            response = error(400, "Bad Request: can't parse JSON object")
        if response is not None:
            self._record(method, params or {}, arrived, response.status)
            return response
        assert params is not None
        if method == "sendmessage":
            return await self._send_message(params, arrived)
        handlers = {
            "getme": self._get_me,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
        }
        if method == "getupdates":
            response = await self._get_updates(params)
        elif method in handlers:
            response = handlers[method](params)
        else:
            response = error(404, "Not Found")
        self._record(method, params, arrived, response.status)
        return response

    def _check_token(self, token: str) -> web.Response | None:
        if not _TOKEN_SHAPE.fullmatch(token):
            return error(404, "Not Found")
        if not hmac.compare_digest(token.encode(), self.config.token.encode()):
            return error(401, "Unauthorized")
        return None

    def _get_me(self, _params: Mapping[str, str]) -> web.Response:
        me = {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        return ok(me)

    def _set_webhook(self, params: Mapping[str, str]) -> web.Response:
        url = params.get("url", "")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET.fullmatch(secret):
            return error(400, "Bad Request: secret token contains unallowed characters")
        if not url:
            self.webhook_url, self.webhook_secret = None, None
            return ok(True, "Webhook was deleted")
        self.webhook_url, self.webhook_secret = url, secret
        return ok(True, "Webhook was set")

    def _delete_webhook(self, params: Mapping[str, str]) -> web.Response:
        self.webhook_url, self.webhook_secret = None, None
        if params.get("drop_pending_updates") == "true":
            self._updates.clear()
        return ok(True, "Webhook was deleted")

    def _get_webhook_info(self, _params: Mapping[str, str]) -> web.Response:
        info = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        return ok(info)

    async def _get_updates(self, params: Mapping[str, str]) -> web.Response:
        if self.webhook_url is not None:
            return error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        try:
            offset = int(params.get("offset", "0"))
            limit = min(max(int(params.get("limit", "100")), 1), 100)
            wait = min(max(float(params.get("timeout", "0")), 0.0), self.config.long_poll_max)
        except ValueError:
            return error(400, "Bad Request: wrong parameter")
        # Asking from ``offset`` confirms every earlier update: Telegram forgets them.
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()
        if not self._updates and wait > 0:
            self._new_update.clear()
            waiters = {
                asyncio.ensure_future(self._new_update.wait()),
                asyncio.ensure_future(self._closing.wait()),
            }
            _, pending = await asyncio.wait(
                waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
        return ok(list(self._updates)[:limit])

    def _flood_wait(self, chat_id: str, now: float) -> float:
        """Seconds until this message would respect the enforced limits (0: it does now)."""
        config = self.config
        if config.enforce_chat_limits:
            group = chat_id.startswith(("-", "@"))
            interval = config.group_interval if group else config.chat_interval
            last = self._last_accepted.get(chat_id)
            if last is not None and now - last < interval - config.limit_slack:
                return interval - (now - last)
        if self._bucket is not None and not self._bucket.try_take():
            return max(self._bucket.wait_time(), 1e-3)
        return 0.0

    def _accept(self, chat_id: str, now: float) -> None:
        self.sent_count[chat_id] += 1
        if not self.config.enforce_chat_limits:
            return
        self._last_accepted[chat_id] = now
        self._last_accepted.move_to_end(chat_id)
        horizon = max(self.config.chat_interval, self.config.group_interval)
        for _ in range(_PRUNE_PER_CALL):
            oldest = next(iter(self._last_accepted.items()), None)
            if oldest is None or now - oldest[1] < horizon:
                break
            del self._last_accepted[oldest[0]]

    def _outcome_for(self, chat_id: str) -> str:
        canned = self.config.outcomes.get(chat_id)
        if canned is not None:
            self.used_outcomes.add(chat_id)
            return canned
        drawn = draw(self.config.request_failure_shares, self._rng)
        return drawn or draw(self.config.recipient_failure_shares, self._rng) or "ok"

    async def _chat_of(self, request: web.Request) -> tuple[str, ...]:
        params = await self._params(request)  # aiohttp keeps the body for the handler
        chat = (params or {}).get("chat_id")
        return (chat,) if chat else ()

    def _throttled(self, wait: float) -> web.Response:
        self.throttled_total += 1
        retry = max(1, math.ceil(wait))
        return error(429, f"Too Many Requests: retry after {retry}", retry_after=retry)

    async def _send_message(self, params: dict[str, str], arrived: float) -> web.StreamResponse:
        chat_id, text = params.get("chat_id", ""), params.get("text", "")
        response = self._message_answer(chat_id, text, arrived)
        if response is None:  # the ``timeout`` outcome: hold the line, then drop it
            self._record("sendmessage", params, arrived, 0)
            await self.hang(self.config.timeout_hang)
            return error(504, "Gateway Timeout")
        self._record("sendmessage", params, arrived, response.status)
        return response

    def _message_answer(self, chat_id: str, text: str, now: float) -> web.Response | None:
        if not chat_id:
            return error(400, "Bad Request: chat_id is empty")
        if not text.strip():
            return error(400, "Bad Request: message text is empty")
        if len(text) > _MAX_TEXT:
            return error(400, "Bad Request: message is too long")
        outcome = self._outcome_for(chat_id)
        if outcome == "timeout":
            return None
        if outcome == "throttled":
            return self._throttled(self.config.retry_after_seconds)
        if outcome == "bad_gateway":
            return web.Response(status=502, text=BAD_GATEWAY_PAGE, content_type="text/html")
        if outcome not in REQUEST_OUTCOMES:
            chat = chat_object(chat_id, self.config.channels)
            if chat is None:
                outcome = "chat_not_found"
            elif outcome == "ok":
                wait = self._flood_wait(chat_id, now)
                if wait > 0:
                    self.rate_limited_total += 1
                    return self._throttled(wait)
                self._accept(chat_id, now)
                self._message_ids[chat["id"]] += 1
                message: JsonObject = {
                    "message_id": self._message_ids[chat["id"]],
                    "chat": chat,
                    "date": int(time.time()),
                    "text": text,
                }
                if chat["type"] == "channel":
                    message["sender_chat"] = chat
                else:
                    message["from"] = self.bot_user
                return ok(message)
        code, description = ERRORS[outcome]
        if outcome == "migrated":
            return error(code, description, migrate_to_chat_id=-1001000000099)
        return error(code, description)


async def serve_forever(host: str, port: int, config: SimulatorConfig) -> None:
    """Run the simulator until cancelled (``warta simulate telegram``)."""
    simulator = TelegramSimulator(config)
    base_url = await simulator.start(host, port)
    log.info("Telegram Bot API simulator listening on %s", base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
