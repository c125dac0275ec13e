"""Token buckets per channel (provider rates), and arrival pacing for providers that count
requests as they arrive. Limits per client that must hold across processes (sign-in, code
checks) are counted in the database instead (``gateway.attempts``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar

from gateway.errors import HandedBack

# The wall-clock time (Unix seconds) by which the provider request being sent must leave,
# or None. Set by the dispatcher around ``Channel.send`` when the request's share of the rate
# was booked in a window of the shared budget (``gateway.outbox.shared_rate``): a request
# that leaves later would land in a window booked by others. A channel whose requests wait
# somewhere before they leave (the SDK's thread pool) calls ``leave_by_deadline`` at the last
# moment before it sends.
SEND_BY: ContextVar[float | None] = ContextVar("warta_send_by", default=None)


def leave_by_deadline(deadline: float | None, *, clock: Callable[[], float] = time.time) -> None:
    """Raise ``HandedBack`` (nothing sent) when ``deadline`` (a ``SEND_BY``) has passed."""
    if deadline is not None and clock() >= deadline:
        raise HandedBack(
            "the rate window booked for this request passed before it left", retry_after=0.0
        )


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self, n: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there (0 when they already are)."""
        self._refill()
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate

    def take(self, n: float) -> float:
        """Take ``n`` tokens now, going into debt; returns how long the caller should wait."""
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def give_back(self, n: float) -> None:
        """Return ``n`` tokens taken for messages that did not leave (never past ``burst``).

        Sound as long as they never leave: what went out by any moment stays within the
        burst plus the rate times the time passed. Requests that took their tokens after
        these keep the later turns they were given; only those that take from now on gain.
        """
        if n > 0:
            self._refill()
            self._tokens = min(self.burst, self._tokens + n)


class ArrivalPacer:
    """Paces requests so a provider that counts them *as they arrive* never sees too many.

    A provider such as Telegram holds each bot to a token bucket of ``rate`` per second with a
    burst of ``burst`` (one second's worth), counted when requests reach it. A plain bucket on
    our side, reserving departure times ahead, is not enough: a request held up in a
    connection pool or on the network arrives late while the ones behind it do not, and after
    a stall of the event loop every overdue request leaves at once.

    Two limits together keep any stretch ``[a, b]`` of arrivals within ``burst + rate *
    (b - a)``, whatever the network or the event loop does:

    - requests leave through a bucket of ``rate`` with a small burst ``depart_burst``, taken
      at the moment a request really leaves (a waiter that overslept finds no more than
      ``depart_burst`` tokens, never a backlog): what *leaves* in ``[a, b]`` is at most
      ``depart_burst + rate * (b - a)``;
    - at most ``in_flight`` units are unanswered at once: what arrives in ``[a, b]`` but left
      before ``a`` was in flight at ``a``.

    With ``in_flight + depart_burst <= burst`` the sum stays within the provider's bucket.
    Throughput is the full rate while answers take less than ``in_flight / rate`` seconds
    (two thirds of a second for Telegram's 30/s). Waiters go in arrival order
    (``asyncio.Lock`` is fair); a request larger than a limit waits until it is alone.
    """

    __slots__ = (
        "_answered",
        "_bucket",
        "_clock",
        "_in_flight",
        "_turn",
        "depart_burst",
        "in_flight",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        smallest_burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.depart_burst = max(smallest_burst, burst / 3)
        self.in_flight = max(smallest_burst, burst - self.depart_burst)
        self._clock = clock
        self._bucket = TokenBucket(rate, self.depart_burst, clock=clock)
        self._in_flight = 0.0
        self._turn = asyncio.Lock()
        self._answered = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"<ArrivalPacer rate={self.rate:g}/s in_flight={self.in_flight:g} "
            f"depart_burst={self.depart_burst:g}>"
        )

    async def acquire(self, n: float) -> None:
        """Wait until ``n`` units may leave now; call ``release(n)`` once they are answered."""
        async with self._turn:
            while self._in_flight and self._in_flight + n > self.in_flight:
                self._answered.clear()
                await self._answered.wait()
            while True:
                wait = self._bucket.wait_time(min(n, self.depart_burst))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self._bucket.take(n)
            self._in_flight += n

    def give_back(self, n: float) -> None:
        """``n`` units acquired did not leave after all: their departure tokens return."""
        self._bucket.give_back(n)

    def release(self, n: float) -> None:
        """``n`` units were answered (or failed without an answer)."""
        self._in_flight -= n
        self._answered.set()
