"""Provider rates held across processes: one budget per channel and second, in PostgreSQL.

Each process's token buckets (``gateway.ratelimit``) know only what that process sends; with
N processes on one database a provider would see N times its rate. On PostgreSQL (unless
``[dispatch] shared_rate_limit = false``), every provider request first reserves its messages
in the ``rate_budgets`` table: time is cut into windows (one second, or longer for rates under
one per second) and each window of a channel allows at most the channel's rate. A reservation
is one statement that adds to a window only while the window stays within its limit::

    INSERT INTO rate_budgets (channel, window_start, used) VALUES (:channel, :window, :n)
    ON CONFLICT (channel, window_start) DO UPDATE SET used = rate_budgets.used + excluded.used
    WHERE rate_budgets.used + excluded.used <= :limit
    RETURNING used

No row back means the window is full: the next window is tried. The caller then sleeps until
the window it got begins. Requests larger than a window's limit take whole windows one after
the other and go out at the start of the last, so over any stretch of time the channels keep
to their rate, and within a second exceed it by at most one request (the provider batch).

A provider counts requests when they *arrive*, so a booked request must also leave in its
window: one held up after its sleep (an event loop stalled by load, a thread pool slow to pick
it up) would land in the next window on top of that window's own bookings. ``acquire`` returns
the time by which the request must leave: half a window after it may go (the window's start,
or the moment of booking for the window already under way), and never past the window's end,
leaving the rest for the trip. The dispatcher and the channels check it at the last moment
before sending (``gateway.ratelimit.SEND_BY``): the dispatcher books again, a channel hands
the request back unsent.

Windows are Unix seconds of each host's clock: hosts sharing a database must keep their
clocks in sync (NTP), or each one's seconds overlap the others'. A full window does not free
up (but see ``give_back``), so each process remembers how far the windows are full, as far as
it knows, and starts looking there. The requests of a batch book at the same moment: they book
one after the other (a lock per channel), each starting where the one before left off, so the
attempts grow with the requests, not with their square.

A booking whose messages will not leave after all (a cancel or opt-out found while it waited,
``gateway.outbox.late_stops``) is given back (``give_back``): its window's ``used`` goes down,
and this process looks there again for its next booking; the others, booking ahead, look back
for windows with room at most once a second (``LOOK_BACK_EVERY_S``) and take those first.
Bookings are given back only when they fit in one window; one spread over several keeps them.

When the database cannot be reached the reservation falls back to this process's own bucket
(logged): nothing can be claimed meanwhile, so only the batches already in flight are paced
locally. SQLite has one process by design and keeps the in-memory buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.config import DispatchConfig
from gateway.outbox.shared_rate_tables import rate_budgets
from gateway.ratelimit import TokenBucket

log = logging.getLogger("warta.dispatch")

# Windows that ended longer ago than this are deleted (a channel's own, as it books: a window
# of a slow channel may be far longer); what matters is only the present and the future.
KEEP_SECONDS = 60
PRUNE_EVERY_S = 30.0
# How often a process booking ahead looks back for windows given back since it passed them
# (by any process), and how many it takes note of at a time.
LOOK_BACK_EVERY_S = 1.0
LOOK_BACK_WINDOWS = 64


# How to wait (seconds, an event that ends the wait early or None).
Sleep = Callable[[float, asyncio.Event | None], Awaitable[None]]


async def _sleep(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)


@dataclass(slots=True)
class Booking:
    """``n`` messages booked on ``channel``: they may leave from ``start`` and must have left
    by ``send_by`` (Unix seconds; None: no such limit, paced by this process alone)."""

    channel: str
    n: int
    start: float
    send_by: float | None
    window: int | None = None  # the one window booked (None: several, or the local bucket)
    local: TokenBucket | None = None  # the bucket taken from while the database was away


def window_for(rate_per_second: float) -> tuple[int, int]:
    """``(seconds, limit)``: the window length for a rate and how many messages it allows.

    One second for rates of one a second or more; for slower channels (Mastodon's 0.5/s) the
    window is long enough to hold one message.
    """
    seconds = max(1, math.ceil(1.0 / rate_per_second))
    return seconds, max(1, int(rate_per_second * seconds))


class SharedRateLimit:
    """Reserves send slots per channel in ``rate_budgets`` (PostgreSQL); see the module doc.

    Args:
        engine: the gateway's PostgreSQL engine.
        lease_seconds: the claim lease; a reservation further ahead than half of it is logged,
            as the batch waiting for it risks being reclaimed and sent twice.
        clock: wall-clock seconds (windows are Unix seconds, comparable across processes).
        sleep: how to wait (tests pass a fake).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = _sleep,
    ) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._sleep = sleep
        self._next_window: dict[str, int] = {}
        self._booking: dict[str, asyncio.Lock] = {}
        self._pruned_at: dict[str, float] = {}
        # Windows before _next_window with room, as the last look back found them.
        self._room_behind: dict[str, list[int]] = {}
        self._looked_back_at: dict[str, float] = {}

    def now(self) -> float:
        """The clock the windows are counted in (Unix seconds)."""
        return self._clock()

    async def acquire(
        self, channel: str, n: int, *, rate: float, local: TokenBucket
    ) -> float | None:
        """Wait until ``n`` messages may go out on ``channel`` at ``rate`` per second.

        Returns the Unix time by which they must have left (see the module doc), or None when
        there is no such limit (paced by this process alone). ``local`` is this process's
        bucket for the channel, used only while the database is unreachable.
        """
        booking = await self.book(channel, n, rate=rate, local=local)
        await self.wait(booking)
        return booking.send_by

    async def book(self, channel: str, n: int, *, rate: float, local: TokenBucket) -> Booking:
        """Book ``n`` messages (``acquire`` without the wait: see ``wait``)."""
        now = self._clock()
        if n <= 0:
            return Booking(channel, n, now, None)
        try:
            start = await self.reserve(channel, n, rate=rate)
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "shared rate budget for %s unavailable (%s); pacing by this process alone",
                channel,
                type(exc).__name__,
            )
            return Booking(channel, n, now + local.take(n), None, local=local)
        booked_at = self._clock()
        delay = start - booked_at
        if delay > self.lease_seconds / 2:
            log.warning(
                "%s is booked %.0f s ahead across processes: claimed batches may outlive their "
                "lease; lower [dispatch] claim_batch or workers_per_channel",
                channel,
                delay,
            )
        # Half a window from when it may go (its start, or now when it got the window it is
        # in), never past the window's end.
        seconds, limit = window_for(rate)
        send_by = min(max(start, booked_at) + seconds / 2, start + seconds)
        return Booking(channel, n, start, send_by, window=int(start) if n <= limit else None)

    async def wait(self, booking: Booking, wake: asyncio.Event | None = None) -> None:
        """Sleep until ``booking`` may leave, or until ``wake`` is set."""
        delay = booking.start - self._clock()
        if delay > 0:
            await self._sleep(delay, wake)

    async def give_back(self, booking: Booking, n: int) -> None:
        """``n`` of the booked messages will not leave: their share of the window is freed
        for the next booking (of this process; the others look further on). Never fails:
        what cannot be given back stays booked, which only slows the channel."""
        n = min(n, booking.n)
        if n <= 0:
            return
        if booking.local is not None:
            booking.local.give_back(n)
            booking.n -= n
            return
        if booking.window is None:
            return
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    sa.update(rate_budgets)
                    .where(
                        rate_budgets.c.channel == booking.channel,
                        rate_budgets.c.window_start == booking.window,
                        rate_budgets.c.used >= n,
                    )
                    .values(used=rate_budgets.c.used - n)
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not give back a rate booking (%s)", type(exc).__name__)
            return
        booking.n -= n
        last = self._next_window.get(booking.channel)
        if last is not None and booking.window < last:
            self._next_window[booking.channel] = booking.window

    async def reserve(self, channel: str, n: int, *, rate: float) -> float:
        """Reserve ``n`` messages; returns the Unix time from which they may be sent."""
        seconds, limit = window_for(rate)
        now = self._clock()
        remaining = n
        # One booking of this process at a time per channel: each starts where the one before
        # left off, and meets full windows only where other processes booked.
        booking = self._booking.setdefault(channel, asyncio.Lock())
        async with booking, self.engine.connect() as conn:
            current = int(now // seconds) * seconds
            window = max(self._next_window.get(channel, 0), current)
            if n <= limit:
                behind = await self._behind(conn, channel, current, window, n, limit, now)
                if behind is not None and await self._take(conn, channel, behind, n, limit):
                    return float(behind)
            while remaining > 0:
                part = min(remaining, limit)
                while (used := await self._take(conn, channel, window, part, limit)) is None:
                    window = self._passed(channel, window + seconds)
                if used >= limit:
                    self._passed(channel, window + seconds)  # it filled the window
                remaining -= part
                if remaining > 0:
                    window += seconds
            if now - self._pruned_at.get(channel, 0.0) > PRUNE_EVERY_S:
                self._pruned_at[channel] = now
                await conn.execute(
                    sa.delete(rate_budgets).where(
                        rate_budgets.c.channel == channel,
                        rate_budgets.c.window_start < now - seconds - KEEP_SECONDS,
                    )
                )
                await conn.commit()
        self._passed(channel, window)
        return float(window)

    async def _behind(
        self,
        conn: AsyncConnection,
        channel: str,
        current: int,
        ahead: int,
        part: int,
        limit: int,
        now: float,
    ) -> int | None:
        """A window from ``current`` up to ``ahead`` (where this process's walk starts) with
        room for ``part``: one given back since this process passed it, by any process.

        Looked for at most every ``LOOK_BACK_EVERY_S`` while this process books ahead; the
        windows found are tried first until the next look. Without it, only the process
        that gave a window back would use it again.
        """
        room = self._room_behind.setdefault(channel, [])
        if ahead > current and now - self._looked_back_at.get(channel, -math.inf) >= (
            LOOK_BACK_EVERY_S
        ):
            self._looked_back_at[channel] = now
            found = await conn.scalars(
                sa.select(rate_budgets.c.window_start)
                .where(
                    rate_budgets.c.channel == channel,
                    rate_budgets.c.window_start >= current,
                    rate_budgets.c.window_start < ahead,
                    rate_budgets.c.used <= limit - part,
                )
                .order_by(rate_budgets.c.window_start)
                .limit(LOOK_BACK_WINDOWS)
            )
            room[:] = list(found)
        while room:
            window = room.pop(0)
            if current <= window < ahead:
                return window
        return None

    def _passed(self, channel: str, window: int) -> int:
        """No window before ``window`` has room for this process's next booking (as far as
        it knows); returns where the next booking starts looking."""
        self._next_window[channel] = max(self._next_window.get(channel, 0), window)
        return self._next_window[channel]

    @staticmethod
    async def _take(
        conn: AsyncConnection, channel: str, window: int, part: int, limit: int
    ) -> int | None:
        """Adds ``part`` to ``window`` if it stays within ``limit``: the window's new
        ``used``, or None when it is full."""
        insert = pg_insert(rate_budgets).values(channel=channel, window_start=window, used=part)
        added = rate_budgets.c.used + insert.excluded.used
        statement = insert.on_conflict_do_update(
            index_elements=[rate_budgets.c.channel, rate_budgets.c.window_start],
            set_={"used": added},
            where=added <= limit,
        ).returning(rate_budgets.c.used)
        used = (await conn.execute(statement)).scalar_one_or_none()
        await conn.commit()
        return None if used is None else int(used)


def shared_rate_limit(
    engine: AsyncEngine,
    dispatch: DispatchConfig,
    *,
    sleep: Sleep = _sleep,
) -> SharedRateLimit | None:
    """The shared budget on PostgreSQL unless turned off; None keeps per-process buckets.
    ``sleep`` waits for a booked window (the dispatcher's ends early when it stops)."""
    if dispatch.shared_rate_limit is False:
        return None
    if engine.dialect.name != "postgresql":
        if dispatch.shared_rate_limit:
            log.info(
                "[dispatch] shared_rate_limit needs PostgreSQL; this process paces itself alone"
            )
        return None
    return SharedRateLimit(engine, lease_seconds=dispatch.lease_seconds, sleep=sleep)
