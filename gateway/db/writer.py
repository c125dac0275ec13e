"""Write transactions that run whole, in one go: the outbox's claims, records, lease renewals
and delivery reports.

On a SQLite file, SQLite has one write lock for the whole database, held from ``BEGIN
IMMEDIATE`` to ``COMMIT``. Through the async engine each step of a transaction (BEGIN, every
statement, its rows, COMMIT) is a hop from the event loop to the driver's thread and back, and
while the loop is busy sending a batch each hop waits its turn: the lock was held about 65 µs
of every 88 µs a delivery took, most of it waiting for the loop (bench/RESULTS.md). Here the
transaction instead runs from BEGIN to COMMIT in one thread of its own, on a connection of its
own, with the statements back to back; the loop awaits only the end.

Elsewhere (PostgreSQL, whose row locks let workers write side by side; an in-memory SQLite,
which a second connection would not see) the same function runs in a transaction of the
async engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import tune_sqlite

T = TypeVar("T")


class Writer:
    """Runs ``work(conn)`` in one write transaction and returns what it returns.

    ``work`` is a plain function over a synchronous ``Connection``; on SQLite it runs in the
    writer's own thread, so it must not touch the event loop.
    """

    def __init__(self, engine: AsyncEngine, *, busy_timeout_ms: int = 30_000) -> None:
        self._engine = engine
        self.sync_engine: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self.sync_engine = create_engine(
                url.set(drivername="sqlite"),
                connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
            )
            tune_sqlite(self.sync_engine, busy_timeout_ms)

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        undo: Callable[[Connection, T], None] | None = None,
    ) -> T:
        """Run ``work`` in a transaction of its own.

        Args:
            undo: on SQLite the thread finishes a transaction its caller stopped waiting for
                (a cancelled task); ``undo(conn, result)`` then runs in a transaction after it,
                so what was taken for a caller that is gone is given back.
        """
        if self.sync_engine is None:
            async with self._engine.begin() as conn:
                return await conn.run_sync(work)
        if self._thread is None:
            # One thread: SQLite takes one writer at a time, and writers of this process then
            # queue here, handing over at once, instead of polling the lock on its busy timeout.
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="warta-writer")
        thread = self._thread
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(thread, self._transaction, work)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            # Nothing of this transaction's may be left half-seen by a caller that stopped:
            # wait for its end, give back what it took, then let the cancellation through.
            with contextlib.suppress(Exception):
                result = await done
                if undo is not None:
                    await loop.run_in_executor(
                        thread, self._transaction, lambda conn: undo(conn, result)
                    )
            raise

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        assert self.sync_engine is not None
        with self.sync_engine.begin() as conn:
            return work(conn)

    def close(self) -> None:
        """Wait for the transaction under way, if any, and close the writer's connection.

        A later ``run`` opens them again.
        """
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self.sync_engine is not None:
            self.sync_engine.dispose()
