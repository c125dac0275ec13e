"""A real aiohttp server speaking Mastodon's documented status API.

``POST /api/v1/statuses`` takes ``status``, ``visibility`` and ``language`` (form or JSON),
``Authorization: Bearer <token>`` and ``Idempotency-Key``; ``GET /api/v2/instance`` tells
``configuration.statuses.max_characters`` and ``characters_reserved_per_url``. Answers:

====================  =====  ===============================================================
outcome               HTTP   body / headers
====================  =====  ===============================================================
success               200    Status JSON (``id``, ``url``, ``uri``, ``content``, ...)
(same key again)      200    the SAME status: an ``Idempotency-Key`` seen from that account
                             within ``idempotency_ttl`` (1 hour) creates nothing new
(wrong token)         401    ``{"error": "The access token is invalid"}``
too_long (natural)    422    ``{"error": "Validation failed: Text character limit of 500
                             exceeded"}`` (with the configured limit)
blank (natural)       422    ``{"error": "Validation failed: Text can't be blank"}``
forbidden             403    ``{"error": "This action is not allowed"}``
throttled             429    ``{"error": "Too many requests"}`` + ``X-RateLimit-Limit``,
                             ``X-RateLimit-Remaining: 0``, ``X-RateLimit-Reset`` (ISO 8601)
server_error          503    an HTML error page, as the reverse proxy serves it
timeout               -      no answer for ``timeout_hang`` seconds
created_then_timeout  -      creates the status, then does not answer (a lost answer)
====================  =====  ===============================================================

A canned outcome (``outcomes[text]``) applies to the FIRST request with that text; later
requests with the same text behave normally, so a retry can be tested. Without one, each
request draws from ``request_failure_shares``. ``faults`` is the fault schedule
(``channels.simfaults``: 5xx bursts, 429s, resets, hangs, an outage, on demand at
``/simulator/faults``) for ``POST /api/v1/statuses``. Nothing here logs a token.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from aiohttp import web

from channels.mastodon.textcount import status_length
from channels.simdraws import Seconds, seconds
from channels.simfaults import FaultSchedule, bearer_account, bearer_recipients
from channels.simserver import SimulatorServer

__all__ = [
    "MastodonSimulator",
    "MastodonSimulatorConfig",
    "Outcome",
    "ReceivedStatus",
    "serve_forever",
]

log = logging.getLogger(__name__)

Outcome = Literal[
    "success", "forbidden", "throttled", "server_error", "timeout", "created_then_timeout"
]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))


@dataclass(frozen=True, slots=True)
class MastodonSimulatorConfig:
    """One run of the Mastodon simulator.

    Attributes:
        accounts: accepted token -> the account name it posts as (anything else: HTTP 401).
        max_characters, characters_reserved_per_url: the server's status limits.
        latency: seconds before each answer, fixed or a (low, high) range.
        request_failure_shares: per request, the chance of each non-success outcome.
        outcomes: canned outcome for the first request with a given text.
        idempotency_ttl: seconds an ``Idempotency-Key`` is remembered (Mastodon: 1 hour).
        window_limit, window_seconds: statuses per account per window before a natural 429.
        retry_after_seconds: how far ``X-RateLimit-Reset`` lies ahead on a 429.
        reset_at: a fixed ``X-RateLimit-Reset`` (epoch seconds), for exact tests.
        timeout_hang: how long a hanging request hangs.
        max_records: request records kept in ``received``.
        seed: seeds every draw; None draws from the OS.
    """

    accounts: Mapping[str, str] = field(
        default_factory=lambda: {"warta-mastodon-simulator-token": "warta_demo"}, repr=False
    )
    max_characters: int = 500
    characters_reserved_per_url: int = 23
    latency: Seconds = 0.0
    request_failure_shares: Mapping[Outcome, float] = field(default_factory=dict)
    outcomes: Mapping[str, Outcome] = field(default_factory=dict, repr=False)
    idempotency_ttl: float = 3600.0
    window_limit: int | None = None
    window_seconds: float = 30 * 60.0
    retry_after_seconds: int = 60
    reset_at: float | None = None
    timeout_hang: float = 60.0
    max_records: int = 1000
    seed: int | None = 0

    def __post_init__(self) -> None:
        for outcome in (*self.request_failure_shares, *self.outcomes.values()):
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
        if any(share < 0 for share in self.request_failure_shares.values()):
            raise ValueError("request_failure_shares: negative share")
        if sum(self.request_failure_shares.values()) > 1.0 + 1e-9:
            raise ValueError("request_failure_shares: shares add up to more than 1")


@dataclass(frozen=True, slots=True)
class ReceivedStatus:
    """One request as received: its fields, account, idempotency key and our answer."""

    fields: Mapping[str, str]
    account: str | None
    idempotency_key: str | None
    http_status: int
    received_at: float


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class MastodonSimulator(SimulatorServer):
    """The simulator: ``app`` to mount anywhere, or ``start()``/``stop()`` on its own port."""

    def __init__(self, config: MastodonSimulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or MastodonSimulatorConfig()
        self.received: deque[ReceivedStatus] = deque(maxlen=self.config.max_records)
        self.records_dropped = 0
        self.requests_total = 0
        self.statuses: dict[str, dict[str, Any]] = {}  # id -> Status JSON
        self.statuses_by_account: Counter[str] = Counter()
        self.used_outcomes: set[str] = set()
        self._keys: dict[tuple[str, str], tuple[float, str]] = {}
        self._windows: dict[str, deque[float]] = {}
        self._rng = random.Random(self.config.seed)
        self._next_id = 113_000_000_000_000_000
        self.faults = FaultSchedule(
            is_send=self._is_send,
            recipients=bearer_recipients(self.config.accounts),
            throttled=self._throttled,
        )
        self.app = web.Application(middlewares=[self.faults.middleware])
        self._create_route = self.app.router.add_post("/api/v1/statuses", self._handle_create)
        self.faults.add_routes(self.app)
        self.app.router.add_get("/api/v2/instance", self._handle_instance)
        self.app.on_shutdown.append(self.release_hanging)

    def __repr__(self) -> str:
        return f"<MastodonSimulator requests={self.requests_total} statuses={len(self.statuses)}>"

    def unused_outcomes(self) -> set[str]:
        """Texts with a canned outcome that no request used."""
        return set(self.config.outcomes) - self.used_outcomes

    async def _hang(self) -> web.Response:
        await self.hang(self.config.timeout_hang)
        return web.Response(status=504)

    def _record(
        self, fields: Mapping[str, str], account: str | None, key: str | None, status: int
    ) -> None:
        if len(self.received) == self.received.maxlen:
            self.records_dropped += 1
        self.received.append(ReceivedStatus(fields, account, key, status, time.time()))

    def _rate_headers(self, account: str) -> dict[str, str]:
        limit = self.config.window_limit or 300
        used = len(self._windows.get(account, ()))
        return self._limit_headers(max(0, limit - used))

    def _limit_headers(self, remaining: int, reset: float | None = None) -> dict[str, str]:
        config = self.config
        if reset is None:
            reset = config.reset_at or time.time() + config.retry_after_seconds
        return {
            "X-RateLimit-Limit": str(config.window_limit or 300),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": _iso(reset),
        }

    def _too_many_requests(self, reset: float | None = None) -> web.Response:
        """Mastodon's 429: its error JSON and the rate headers with nothing left until ``reset``."""
        response = _error(429, "Too many requests")
        response.headers.update(self._limit_headers(0, reset))
        return response

    def _is_send(self, request: web.Request) -> bool:
        return request.match_info.route is self._create_route

    def _throttled(self, seconds: int) -> web.Response:
        """A fault's 429: ``X-RateLimit-Reset`` on the first whole second ``seconds`` from now."""
        return self._too_many_requests(reset=math.ceil(time.time() + seconds))

    def _outcome_for(self, text: str) -> str | None:
        canned = self.config.outcomes.get(text)
        if canned is not None and text not in self.used_outcomes:
            self.used_outcomes.add(text)
            return canned
        point = self._rng.random()
        for outcome, share in self.config.request_failure_shares.items():
            point -= share
            if point < 0:
                return outcome
        return None

    def _window_full(self, account: str, now: float) -> bool:
        window = self._windows.setdefault(account, deque())
        while window and window[0] <= now - self.config.window_seconds:
            window.popleft()
        limit = self.config.window_limit
        return limit is not None and len(window) >= limit

    async def _handle_instance(self, request: web.Request) -> web.Response:
        config = self.config
        return web.json_response(
            {
                "domain": request.host,
                "title": "Warta Mastodon simulator",
                "version": "4.3.0",
                "configuration": {
                    "statuses": {
                        "max_characters": config.max_characters,
                        "max_media_attachments": 4,
                        "characters_reserved_per_url": config.characters_reserved_per_url,
                    }
                },
            }
        )

    async def _read_fields(self, request: web.Request) -> dict[str, str]:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return {}
            return {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        form = await request.post()
        return {key: str(value) for key, value in form.items()}

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        self.requests_total += 1
        fields = await self._read_fields(request)
        key = request.headers.get("Idempotency-Key")
        delay = seconds(config.latency, self._rng)
        if delay > 0:
            await asyncio.sleep(delay)

        account = bearer_account(request, config.accounts)
        if account is None:
            self._record(fields, None, key, 401)
            return _error(401, "The access token is invalid")
        now = time.time()
        if key:
            seen = self._keys.get((account, key))
            if seen is not None and now - seen[0] < config.idempotency_ttl:
                self._record(fields, account, key, 200)
                response = web.json_response(self.statuses[seen[1]])
                response.headers.update(self._rate_headers(account))
                return response

        text = fields.get("status", "")
        outcome = self._outcome_for(text)
        if outcome == "timeout":
            self._record(fields, account, key, 504)
            return await self._hang()
        if outcome == "throttled" or self._window_full(account, now):
            self._record(fields, account, key, 429)
            return self._too_many_requests()
        if outcome == "server_error":
            self._record(fields, account, key, 503)
            page = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            return web.Response(status=503, text=page, content_type="text/html")
        if outcome == "forbidden":
            self._record(fields, account, key, 403)
            return _error(403, "This action is not allowed")
        if not text.strip():
            self._record(fields, account, key, 422)
            return _error(422, "Validation failed: Text can't be blank")
        length = status_length(text, characters_per_url=config.characters_reserved_per_url)
        if length > config.max_characters:
            self._record(fields, account, key, 422)
            limit = config.max_characters
            return _error(422, f"Validation failed: Text character limit of {limit} exceeded")

        status = self._create(request, account, fields, now)
        if key:
            self._keys[(account, key)] = (now, status["id"])
        if outcome == "created_then_timeout":
            self._record(fields, account, key, 504)
            return await self._hang()
        self._record(fields, account, key, 200)
        response = web.json_response(status)
        response.headers.update(self._rate_headers(account))
        return response

    def _create(
        self, request: web.Request, account: str, fields: Mapping[str, str], now: float
    ) -> dict[str, Any]:
        self._next_id += self._rng.randint(1, 65536)
        status_id = str(self._next_id)
        origin = f"{request.scheme}://{request.host}"
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in fields["status"].split("\n\n"))
        status: dict[str, Any] = {
            "id": status_id,
            "created_at": _iso(now),
            "in_reply_to_id": None,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": fields.get("visibility", "public"),
            "language": fields.get("language"),
            "uri": f"{origin}/users/{account}/statuses/{status_id}",
            "url": f"{origin}/@{account}/{status_id}",
            "replies_count": 0,
            "reblogs_count": 0,
            "favourites_count": 0,
            "content": paragraphs,
            "account": {"id": "1", "username": account, "acct": account},
            "media_attachments": [],
            "mentions": [],
            "tags": [],
            "emojis": [],
            "card": None,
            "poll": None,
        }
        self.statuses[status_id] = status
        self.statuses_by_account[account] += 1
        self._windows.setdefault(account, deque()).append(now)
        return status


async def serve_forever(host: str, port: int, config: MastodonSimulatorConfig) -> None:
    """Run the simulator until cancelled (``warta simulate mastodon``)."""
    simulator = MastodonSimulator(config)
    base_url = await simulator.start(host, port)
    log.info("Mastodon simulator listening on %s", base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
