"""Provider faults on demand for the simulators: a schedule that tests or operators drive.

The configured shares (``request_failure_shares``, ``latency``) make a simulator fail at random;
a fault schedule makes it fail *now*, the way a provider's bad minute looks from outside.
Each fault applies to the provider's send requests only (Africa's Talking's
``/version1/messaging`` and voice ``/call``, the Bot API's ``sendMessage``, the Graph API's
WhatsApp ``messages`` and Page ``feed`` POSTs, X's ``POST /2/tweets``, Mastodon's
``POST /api/v1/statuses``), first added first used:

=========  ============================================================================
status     the next ``count`` requests get HTTP ``status`` (a 5xx burst)
throttle   the next ``count`` get 429 with ``retry_after`` seconds, in the provider's shape
reset      the next ``count`` lose their connection (TCP reset) before any answer
cut        the next ``count`` are processed, then the answer stops half-way (TCP reset):
           the provider sent the message, the client never learns it
hang       the next ``count`` get no answer for ``seconds``, then 504; nothing is sent
slow       the next ``count`` wait ``seconds``, then are processed as usual (beyond the
           client's timeout: sent, and the client never hears of it)
down       for ``seconds`` from now the port refuses connections, and requests on
           connections already open are reset
=========  ============================================================================

Control over HTTP (not any provider's API: the simulator's own): ``POST /simulator/faults``
with one fault as JSON (``{"kind": "status", "status": 503, "count": 5}``), ``GET`` lists what
is pending and how many send requests met which fault, ``DELETE`` clears the schedule.

``DELETE`` ends the bad minute: it clears what is pending, and requests that a ``hang`` or
``slow`` holds go on at once (a hang gets its 504, a slow one is processed), so a demo or a
test decides when the provider answers. A ``down`` runs its course.

``arrivals`` records every send request (monotonic arrival time, the fault it met, its
recipients) so tests can check timing against the provider's view, e.g. that nothing arrived
before a ``Retry-After`` ran out. Recipients never appear in a repr or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

FaultKind = Literal["status", "throttle", "reset", "cut", "hang", "slow", "down"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
CONTROL_PATH = "/simulator/faults"


@dataclass(slots=True)
class Fault:
    """One scheduled fault; see the module docstring for what each kind does."""

    kind: FaultKind
    count: int = 1
    status: int = 503
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultInvalid("kind", f"kind must be one of {', '.join(sorted(FAULT_KINDS))}")
        if self.count < 1:
            raise FaultInvalid("count", "count must be at least 1")
        if not 400 <= self.status <= 599:
            raise FaultInvalid("status", "status must be an HTTP error status (400-599)")
        if self.seconds < 0 or (self.kind in ("throttle", "down") and self.seconds <= 0):
            raise FaultInvalid("seconds", "seconds must be positive")

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """The fault a control request asks for.

        Raises:
            FaultInvalid: naming the field that is missing, unknown or out of range.
        """
        if not isinstance(body, dict):
            raise FaultInvalid(None, "the body must be a JSON object")
        unknown = sorted(set(body) - {"kind", "count", "status", "seconds"})
        if unknown:
            raise FaultInvalid(str(unknown[0]), f"unknown field {unknown[0]!r}")
        values: dict[str, Any] = {"kind": body.get("kind", "")}
        for name, convert, default in (("count", int, 1), ("status", int, 503)):
            value = body.get(name, default)
            if not isinstance(value, int) or isinstance(value, bool):
                raise FaultInvalid(name, f"{name} must be an integer")
            values[name] = convert(value)
        seconds = body.get("seconds", 0.0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise FaultInvalid("seconds", "seconds must be a number")
        return cls(**values, seconds=float(seconds))


class FaultInvalid(ValueError):
    """A fault that cannot be scheduled; ``field`` names the culprit (None: the whole body)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Arrival:
    """One send request as it reached the simulator, and the fault it met (None: none)."""

    at: float  # time.monotonic()
    fault: str | None
    recipients: tuple[str, ...] = field(repr=False)


class FaultSchedule:
    """The faults pending for one simulator, applied by ``middleware`` to its send requests.

    Args:
        is_send: whether a request is one of the provider's send requests.
        recipients: the recipients a send request names (read from its form or body).
        throttled: the provider's 429 answer for a wait of the given seconds.
        max_records: arrivals kept (oldest dropped first).
    """

    def __init__(
        self,
        *,
        is_send: Callable[[web.Request], bool],
        recipients: Callable[[web.Request], Awaitable[tuple[str, ...]]],
        throttled: Callable[[int], web.StreamResponse],
        max_records: int = 10_000,
    ) -> None:
        self._is_send = is_send
        self._recipients = recipients
        self._throttled = throttled
        self.pending: deque[Fault] = deque()
        self.arrivals: deque[Arrival] = deque(maxlen=max_records)
        self.met: Counter[str] = Counter()
        # Recipients of requests processed (sent) after their client had given up waiting
        # (a slow answer past its timeout, or a loaded machine): the client never heard of
        # them, so it may rightly send them again.
        self.unanswered: Counter[str] = Counter()
        self.down_until = 0.0  # time.monotonic(); 0: up
        self._runner: web.AppRunner | None = None
        self._addresses: list[tuple[str, int]] = []
        self._restore: asyncio.Task[None] | None = None
        # Set (and replaced) when the faults holding requests end: by ``clear`` or ``close``.
        self._held_end = asyncio.Event()

    def __repr__(self) -> str:
        return f"<FaultSchedule pending={len(self.pending)} met={dict(self.met)}>"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(CONTROL_PATH, self._handle_add)
        app.router.add_get(CONTROL_PATH, self._handle_list)
        app.router.add_delete(CONTROL_PATH, self._handle_clear)

    def bind(self, runner: web.AppRunner) -> None:
        """The runner serving the simulator, whose sites ``down`` closes and reopens."""
        self._runner = runner

    async def close(self) -> None:
        """Release held requests and forget a pending restart (the simulator stops)."""
        self.release_held()
        if self._restore is not None:
            self._restore.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restore
            self._restore = None

    async def add(self, fault: Fault) -> None:
        """Schedule ``fault``; a ``down`` starts at once."""
        if fault.kind == "down":
            await self._go_down(fault.seconds)
        else:
            self.pending.append(fault)

    def clear(self) -> None:
        """Forget pending faults and let the requests a ``hang`` or ``slow`` holds go on now."""
        self.pending.clear()
        self.release_held()

    def release_held(self) -> None:
        # Those waiting hold the old event; a fault met from now on waits on a new one.
        self._held_end.set()
        self._held_end = asyncio.Event()

    async def _hold(self, seconds: float) -> None:
        held_end = self._held_end
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(held_end.wait(), timeout=seconds)

    def _take(self) -> str | Fault | None:
        if time.monotonic() < self.down_until:
            return "down"
        if not self.pending:
            return None
        fault = self.pending[0]
        fault.count -= 1
        if fault.count == 0:
            self.pending.popleft()
        return fault

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._is_send(request):
            return await handler(request)
        arrived = time.monotonic()
        taken = self._take()
        recipients = await self._recipients(request)
        kind = taken if isinstance(taken, str) or taken is None else taken.kind
        self.arrivals.append(Arrival(arrived, kind, recipients))
        if kind is not None:
            self.met[kind] += 1
        if taken is None:
            return await self._answered(request, handler, recipients)
        if isinstance(taken, str) or taken.kind == "reset":
            return _reset(request)
        if taken.kind == "status":
            return web.Response(status=taken.status, text=f"HTTP {taken.status} from the fault")
        if taken.kind == "throttle":
            return self._throttled(max(1, round(taken.seconds)))
        if taken.kind == "hang":
            await self._hold(taken.seconds)
            return web.Response(status=504, text="Gateway Timeout")
        if taken.kind == "slow":
            await self._hold(taken.seconds)
            return await self._answered(request, handler, recipients)
        return await _cut(request, await handler(request))

    async def _answered(
        self, request: web.Request, handler: Handler, recipients: tuple[str, ...]
    ) -> web.StreamResponse:
        """Process the request as usual, noting whether its client was still there."""
        response = await handler(request)
        # A client that gave up while the request was handled has closed its end; this side
        # learns of it when the event loop next polls the socket (in tests the gateway and
        # the simulator share one loop, so a busy loop may not have yet): one turn first. The
        # answer is not written yet, so a connection closed by now never delivers it.
        await asyncio.sleep(0)
        if request.transport is None or request.transport.is_closing():
            self.unanswered.update(recipients)
        return response

    async def _go_down(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds
        runner = self._runner
        if runner is None:
            return  # mounted elsewhere: requests are reset, the port stays open
        if self._restore is None:
            self._addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]
            for site in list(runner.sites):
                await site.stop()
            self._restore = asyncio.create_task(self._come_back(runner))
        log.info("simulated provider outage for %.1f s", seconds)

    async def _come_back(self, runner: web.AppRunner) -> None:
        # A second ``down`` while down moves ``down_until``: sleep until the latest end.
        wait = self.down_until - time.monotonic()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self.down_until - time.monotonic()
        for host, port in self._addresses:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        self._restore = None
        log.info("simulated provider outage over")

    async def _handle_add(self, request: web.Request) -> web.StreamResponse:
        try:
            fault = Fault.from_json(await request.json())
        except FaultInvalid as exc:
            return invalid_body(exc.field, exc.message)
        except ValueError:
            return invalid_body(None, "the body must be JSON")
        await self.add(fault)
        return web.json_response({"pending": len(self.pending)}, status=201)

    async def _handle_list(self, _request: web.Request) -> web.StreamResponse:
        pending = [
            {"kind": f.kind, "count": f.count, "status": f.status, "seconds": f.seconds}
            for f in self.pending
        ]
        down = max(0.0, self.down_until - time.monotonic())
        return web.json_response({"pending": pending, "down_for": down, "met": dict(self.met)})

    async def _handle_clear(self, _request: web.Request) -> web.StreamResponse:
        self.clear()
        return web.json_response({"pending": 0})


def invalid_body(field: str | None, message: str) -> web.Response:
    # The gateway API's error shape, so one client can read both.
    error = {"code": "invalid", "message": message, "field": field}
    return web.json_response({"error": error}, status=400)


def _reset(request: web.Request) -> web.StreamResponse:
    """Drop the connection with a TCP reset; aiohttp then has nothing left to answer on."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST instead of FIN, as a crashed load balancer would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # What aiohttp sees when a client goes away mid-request: it drops the connection quietly.
    raise asyncio.CancelledError


async def _cut(request: web.Request, answer: web.StreamResponse) -> web.StreamResponse:
    """Send ``answer``'s status, headers and half its body, then reset the connection."""
    if not isinstance(answer, web.Response) or not isinstance(answer.body, bytes):
        return _reset(request)
    body = answer.body
    partial = web.StreamResponse(status=answer.status, headers=answer.headers)
    partial.content_length = len(body)
    await partial.prepare(request)
    await partial.write(body[: len(body) // 2])
    return _reset(request)


def bearer_account(request: web.Request, accounts: Mapping[str, str]) -> str | None:
    """The account a request's ``Authorization: Bearer <token>`` posts as (X, Mastodon);
    None for no or an unknown token. Never returns the token."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return accounts.get(token) if scheme == "Bearer" else None


def bearer_recipients(
    accounts: Mapping[str, str],
) -> Callable[[web.Request], Awaitable[tuple[str, ...]]]:
    """``recipients`` for a provider whose send request names no one but the account its
    bearer token posts as: that account, or nothing when the token is unknown."""

    async def account_of(request: web.Request) -> tuple[str, ...]:
        account = bearer_account(request, accounts)
        return (account,) if account else ()

    return account_of
