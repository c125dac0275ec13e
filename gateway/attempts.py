"""Attempt limits that hold across processes: sign-ins and verification-code checks.

An in-memory bucket per process (``gateway.ratelimit``) lets an attacker multiply the limit by
the number of ``warta serve`` processes behind the load balancer. These counters live in the
database instead (table ``attempt_counters``, migration 0012): one row per scope, key and fixed
window, and each attempt is one upsert that adds 1 and returns the window's count, so every
process sharing the database sees the same count. The limit applies to a sliding estimate
(the previous window's count, weighted by how much of it still overlaps the last
``window_s`` seconds, plus the current one), so crossing a window boundary does not hand out
a fresh allowance at once. Keys (a client address, an agency and e-mail) are stored only as a
SHA-256 digest, and rows older than the previous window are deleted as they age (at most once
a window per process, one DELETE).

SQLite has one process by design, so there the same counts are kept in memory: a public
``/verify`` must not wait for SQLite's single write lock behind a busy dispatcher. When the
database cannot take the write (read-only, full, unreachable), the process counts alone
rather than refusing a check that only reads.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

import sqlalchemy as sa
from cachetools import LRUCache
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import attempt_counters

log = logging.getLogger("warta.attempts")

_LOCAL_KEYS = 20_000  # keys remembered in memory per limit (oldest forgotten first)


class AttemptLimit:
    """About ``limit`` attempts per key in any ``window_s`` seconds (a sliding estimate).

    Args:
        scope: what is limited (``login_address``, ``login_account``, ``verify``).
        limit: attempts allowed per key and window.
        window_s: the window's length in seconds.
    """

    def __init__(self, scope: str, *, limit: int, window_s: int) -> None:
        if limit < 1 or window_s < 1:
            raise ValueError("limit and window_s must be at least 1")
        self.scope = scope
        self.limit = limit
        self.window_s = window_s
        self._swept_window: int | None = None
        # (key digest, window start) -> attempts, for SQLite and when the database refuses.
        self._local: LRUCache[tuple[str, int], int] = LRUCache(_LOCAL_KEYS)

    def __repr__(self) -> str:
        return f"AttemptLimit({self.scope!r}, limit={self.limit}, window_s={self.window_s})"

    def _digest(self, key: str) -> str:
        return hashlib.sha256(f"{self.scope}\n{key}".encode()).hexdigest()

    async def allow(self, engine: AsyncEngine, key: str, *, now: datetime) -> bool:
        """Count one attempt for ``key``; True while the estimate is within the limit."""
        stamp = now.timestamp()
        window = int(stamp) // self.window_s * self.window_s
        digest = self._digest(key)
        if engine.dialect.name == "sqlite":
            return self._estimate(stamp, window, *self._count_locally(digest, window))
        try:
            previous, count = await self._count_in_database(engine, digest, window)
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "%s attempts counted by this process alone: %s", self.scope, type(exc).__name__
            )
            previous, count = self._count_locally(digest, window)
        return self._estimate(stamp, window, previous, count)

    def _estimate(self, stamp: float, window: int, previous: int, count: int) -> bool:
        overlap = 1.0 - (stamp - window) / self.window_s
        return previous * overlap + count <= self.limit

    def _count_locally(self, digest: str, window: int) -> tuple[int, int]:
        local = self._local
        key = (digest, window)
        local[key] = local.get(key, 0) + 1
        return local.get((digest, window - self.window_s), 0), local[key]

    async def _count_in_database(
        self, engine: AsyncEngine, digest: str, window: int
    ) -> tuple[int, int]:
        table = attempt_counters
        async with engine.begin() as conn:
            previous = await conn.scalar(
                sa.select(table.c.attempts).where(
                    table.c.scope == self.scope,
                    table.c.key_hash == digest,
                    table.c.window_start == window - self.window_s,
                )
            )
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
                table
            )
            count = await conn.scalar(
                insert.values(scope=self.scope, key_hash=digest, window_start=window, attempts=1)
                .on_conflict_do_update(
                    index_elements=["scope", "key_hash", "window_start"],
                    set_={"attempts": table.c.attempts + 1},
                )
                .returning(table.c.attempts)
            )
            if self._swept_window != window:
                self._swept_window = window
                await conn.execute(
                    sa.delete(table).where(
                        table.c.scope == self.scope,
                        table.c.window_start < window - self.window_s,
                    )
                )
        return int(previous or 0), int(count or 0)
