"""A real aiohttp server speaking X API v2's ``POST /2/tweets`` as documented.

Requests carry ``Authorization: Bearer <token>`` and a JSON body ``{"text": ...}``. Answers:

====================  =====  ===============================================================
outcome               HTTP   body / headers
====================  =====  ===============================================================
success               201    ``{"data": {"id": "<digits>", "text": ...}}`` + rate headers
(wrong token)         401    ``{"title": "Unauthorized", "type": "about:blank", ...}``
duplicate (natural)   403    ``{"detail": "You are not allowed to create a Tweet with
                             duplicate content.", "type": "about:blank", "title":
                             "Forbidden", "status": 403}``
forbidden             403    X's ``client-forbidden`` problem (app not allowed to post)
too_long (natural)    400    ``invalid-request`` problem naming ``text`` (the simulator's
                             choice: X does not document its answer for an over-long text)
invalid_request       400    ``invalid-request`` problem
throttled             429    ``x-rate-limit-limit``, ``x-rate-limit-remaining: 0``,
                             ``x-rate-limit-reset`` (epoch seconds)
server_error          503    ``{"title": "Service Unavailable", ...}``
timeout               -      no answer for ``timeout_hang`` seconds
created_then_timeout  -      creates the post, then does not answer (a lost answer)
====================  =====  ===============================================================

A canned outcome (``outcomes[text]``) applies to the FIRST request with that text; later
requests with the same text behave normally, so a retry can be tested. Otherwise each
request draws from ``request_failure_shares``. "Natural" outcomes follow from the request
itself: the same account posting the same text within ``duplicate_window`` seconds, or a
text whose weighted length exceeds 280. ``faults`` is the fault schedule
(``channels.simfaults``: 5xx bursts, 429s, resets, hangs, an outage, on demand at
``/simulator/faults``) for ``POST /2/tweets``. Nothing here logs a token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web

from channels.simdraws import Seconds, seconds
from channels.simfaults import FaultSchedule, bearer_account, bearer_recipients
from channels.simserver import SimulatorServer
from channels.x.textcount import MAX_WEIGHTED_LENGTH, weighted_length

__all__ = ["Outcome", "ReceivedPost", "XSimulator", "XSimulatorConfig", "serve_forever"]

log = logging.getLogger(__name__)

Outcome = Literal[
    "success",
    "forbidden",
    "invalid_request",
    "throttled",
    "server_error",
    "timeout",
    "created_then_timeout",
]
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))
DUPLICATE_DETAIL = "You are not allowed to create a Tweet with duplicate content."


@dataclass(frozen=True, slots=True)
class XSimulatorConfig:
    """One run of the X simulator.

    Attributes:
        accounts: accepted token -> the username it posts as (anything else: HTTP 401).
        latency: seconds before each answer, fixed or a (low, high) range.
        request_failure_shares: per request, the chance of each non-success outcome.
        outcomes: canned outcome for the first request with a given text.
        duplicate_window: seconds during which an account may not repeat a text.
        window_limit, window_seconds: posts per account per window before a natural 429.
        retry_after_seconds: how far ``x-rate-limit-reset`` lies ahead on a 429.
        reset_at: a fixed ``x-rate-limit-reset`` (epoch seconds), for exact tests.
        timeout_hang: how long a ``timeout`` request hangs.
        max_records: request records kept in ``received``.
        seed: seeds every draw; None draws from the OS.
    """

    accounts: Mapping[str, str] = field(
        default_factory=lambda: {"warta-x-simulator-token": "warta_demo"}, repr=False
    )
    latency: Seconds = 0.0
    request_failure_shares: Mapping[Outcome, float] = field(default_factory=dict)
    outcomes: Mapping[str, Outcome] = field(default_factory=dict, repr=False)
    duplicate_window: float = 24 * 3600.0
    window_limit: int | None = None
    window_seconds: float = 15 * 60.0
    retry_after_seconds: int = 60
    reset_at: int | None = None
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
class ReceivedPost:
    """One request as received: its JSON body, the account it authenticated as, the answer."""

    body: Mapping[str, Any]
    username: str | None
    http_status: int
    received_at: float

    @property
    def authenticated(self) -> bool:
        return self.username is not None


def _problem(status: int, title: str, detail: str, kind: str = "about:blank") -> web.Response:
    body = {"title": title, "detail": detail, "type": kind, "status": status}
    return web.json_response(body, status=status)


def _invalid_request(message: str) -> web.Response:
    body = {
        "errors": [{"parameters": {"text": []}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }
    return web.json_response(body, status=400)


class XSimulator(SimulatorServer):
    """The simulator: ``app`` to mount anywhere, or ``start()``/``stop()`` on its own port."""

    def __init__(self, config: XSimulatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or XSimulatorConfig()
        self.received: deque[ReceivedPost] = deque(maxlen=self.config.max_records)
        self.records_dropped = 0
        self.requests_total = 0
        self.posts: dict[str, tuple[str, str]] = {}  # post id -> (username, text)
        self.posts_by_account: Counter[str] = Counter()
        self.used_outcomes: set[str] = set()
        self._recent: dict[tuple[str, str], float] = {}
        self._windows: dict[str, deque[float]] = {}
        self._rng = random.Random(self.config.seed)
        self._next_id = 1_790_000_000_000_000_000
        self.faults = FaultSchedule(
            is_send=self._is_send,
            recipients=bearer_recipients(self.config.accounts),
            throttled=self._throttled,
        )
        self.app = web.Application(middlewares=[self.faults.middleware])
        self._create_route = self.app.router.add_post("/2/tweets", self._handle_create)
        self.faults.add_routes(self.app)
        self.app.on_shutdown.append(self.release_hanging)

    def __repr__(self) -> str:
        return f"<XSimulator requests={self.requests_total} posts={len(self.posts)}>"

    def unused_outcomes(self) -> set[str]:
        """Texts with a canned outcome that no request used."""
        return set(self.config.outcomes) - self.used_outcomes

    async def _hang(self) -> web.Response:
        await self.hang(self.config.timeout_hang)
        return web.Response(status=504)

    def _record(self, body: Mapping[str, Any], username: str | None, status: int) -> None:
        if len(self.received) == self.received.maxlen:
            self.records_dropped += 1
        self.received.append(ReceivedPost(body, username, status, time.time()))

    def _rate_headers(self, username: str) -> dict[str, str]:
        limit = self.config.window_limit or 100
        used = len(self._windows.get(username, ()))
        return self._limit_headers(max(0, limit - used))

    def _limit_headers(self, remaining: int, reset: int | None = None) -> dict[str, str]:
        config = self.config
        if reset is None:
            reset = config.reset_at or int(time.time()) + config.retry_after_seconds
        return {
            "x-rate-limit-limit": str(config.window_limit or 100),
            "x-rate-limit-remaining": str(remaining),
            "x-rate-limit-reset": str(reset),
        }

    def _too_many_requests(self, reset: int | None = None) -> web.Response:
        """X's 429: a problem body and the rate headers with nothing left until ``reset``."""
        response = _problem(429, "Too Many Requests", "Too Many Requests")
        response.headers.update(self._limit_headers(0, reset))
        return response

    def _is_send(self, request: web.Request) -> bool:
        return request.match_info.route is self._create_route

    def _throttled(self, seconds: int) -> web.Response:
        """A fault's 429: ``x-rate-limit-reset`` at least ``seconds`` from now (epoch seconds)."""
        return self._too_many_requests(reset=math.ceil(time.time() + seconds))

    def _outcome_for(self, text: str) -> str | None:
        canned = self.config.outcomes.get(text)
        if canned is not None and text not in self.used_outcomes:
            self.used_outcomes.add(text)
            return canned
        shares = self.config.request_failure_shares
        point = self._rng.random()
        for outcome, share in shares.items():
            point -= share
            if point < 0:
                return outcome
        return None

    def _window_full(self, username: str, now: float) -> bool:
        limit = self.config.window_limit
        window = self._windows.setdefault(username, deque())
        while window and window[0] <= now - self.config.window_seconds:
            window.popleft()
        return limit is not None and len(window) >= limit

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        self.requests_total += 1
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        fields: Mapping[str, Any] = body if isinstance(body, dict) else {}
        delay = seconds(config.latency, self._rng)
        if delay > 0:
            await asyncio.sleep(delay)

        username = bearer_account(request, config.accounts)
        if username is None:
            self._record(fields, None, 401)
            return _problem(401, "Unauthorized", "Unauthorized")
        text = fields.get("text")
        if not isinstance(text, str) or not text:
            self._record(fields, username, 400)
            return _invalid_request("The `text` field is required")

        outcome = self._outcome_for(text)
        now = time.time()
        if outcome == "timeout":
            self._record(fields, username, 504)
            return await self._hang()
        if outcome == "throttled" or self._window_full(username, now):
            self._record(fields, username, 429)
            return self._too_many_requests()
        if outcome == "server_error":
            self._record(fields, username, 503)
            return _problem(503, "Service Unavailable", "Service Unavailable")
        if outcome == "forbidden":
            self._record(fields, username, 403)
            return _problem(
                403,
                "Client Forbidden",
                "This app is not allowed to post on behalf of this account.",
                "https://api.twitter.com/2/problems/client-forbidden",
            )
        if outcome == "invalid_request":
            self._record(fields, username, 400)
            return _invalid_request("Invalid request")
        if weighted_length(text) > MAX_WEIGHTED_LENGTH:
            self._record(fields, username, 400)
            return _invalid_request("Your Tweet text is too long.")
        last = self._recent.get((username, text))
        if last is not None and now - last < config.duplicate_window:
            self._record(fields, username, 403)
            return _problem(403, "Forbidden", DUPLICATE_DETAIL)

        self._next_id += self._rng.randint(1, 4096)
        post_id = str(self._next_id)
        self.posts[post_id] = (username, text)
        self.posts_by_account[username] += 1
        self._recent[(username, text)] = now
        self._windows[username].append(now)
        if outcome == "created_then_timeout":
            self._record(fields, username, 504)
            return await self._hang()
        self._record(fields, username, 201)
        response = web.json_response({"data": {"id": post_id, "text": text}}, status=201)
        response.headers.update(self._rate_headers(username))
        return response


async def serve_forever(host: str, port: int, config: XSimulatorConfig) -> None:
    """Run the simulator until cancelled (``warta simulate x``)."""
    simulator = XSimulator(config)
    base_url = await simulator.start(host, port)
    log.info("X simulator listening on %s", base_url)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
