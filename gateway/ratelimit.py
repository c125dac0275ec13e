"""Token buckets: per client (abuse limits on public endpoints) and per channel (provider rates);
answer windows for providers that count requests as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable


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


class KeyedLimiter:
    """One bucket per key (e.g. client address), remembering at most ``max_keys`` keys."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.try_take()


class AnswerWindow:
    """At most ``capacity`` units in any ``window`` seconds *as the provider receives them*.

    A token bucket paces requests as they leave, but a provider counts them as they arrive:
    a request held up in a connection pool or on the network arrives late, the ones behind it
    catch up, and the provider sees a burst our bucket never allowed (Telegram answers 429).
    Here a unit holds its place from the moment its request leaves until ``window`` seconds
    after its answer came back. Any request the provider received in the ``window`` before a
    new one arrives was either still unanswered when the new one left or answered less than
    ``window`` before that, so it was counted: the provider never sees more than
    ``capacity`` in a window, whatever the network does. The price is the answer time: each
    unit is held ``latency + window``, so the rate reached is ``window / (latency + window)`` of
    the limit (97% at 30 ms).

    Waiters go in arrival order (``asyncio.Lock`` is fair). A request larger than
    ``capacity`` goes alone.
    """

    __slots__ = (
        "_answered",
        "_changed",
        "_clock",
        "_in_flight",
        "_recent",
        "_turn",
        "capacity",
        "window",
    )

    def __init__(
        self, capacity: float, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.window = window
        self._clock = clock
        self._in_flight = 0.0
        self._recent = 0.0  # units answered within the last window
        self._answered: deque[tuple[float, float]] = deque()
        self._turn = asyncio.Lock()
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<AnswerWindow capacity={self.capacity:g} window={self.window:g}s>"

    def _forget(self, now: float) -> None:
        while self._answered and self._answered[0][0] + self.window <= now:
            self._recent -= self._answered.popleft()[1]

    async def acquire(self, n: float) -> None:
        """Wait until ``n`` units may leave; pair with ``release`` once answered."""
        async with self._turn:
            while True:
                self._forget(self._clock())
                used = self._in_flight + self._recent
                if used + n <= self.capacity or used == 0:
                    self._in_flight += n
                    return
                self._changed.clear()
                timeout = (
                    self._answered[0][0] + self.window - self._clock() if self._answered else None
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)

    def release(self, n: float) -> None:
        """``n`` units were answered (or never left): they count for one more window."""
        self._in_flight -= n
        self._answered.append((self._clock(), n))
        self._recent += n
        self._changed.set()
