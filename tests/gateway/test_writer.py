"""The dispatcher's write transactions on SQLite run whole in a thread of their own.

Through the async engine every step of a transaction (BEGIN, a statement, COMMIT) goes back
to the event loop, and SQLite's one write lock stays held while the loop is busy elsewhere.
The writer finishes a transaction without the loop; a claim whose worker is cancelled while
the writer runs it gives its batch back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from gateway.appkeys import DISPATCHER
from gateway.clock import ManualClock
from gateway.config import DatabaseConfig
from gateway.db.engine import create_engine
from gateway.db.schema import deliveries
from gateway.db.writer import Writer
from gateway.outbox import claims
from tests.support.sms import started_by_hand

_SCRATCH = sa.table("scratch", sa.column("n", sa.Integer))


def _committed_while_blocked(path: str, *, within: float) -> bool:
    """Block the calling thread (the event loop) for up to ``within`` seconds and say whether,
    meanwhile, a row reached ``scratch`` and the write lock was free."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                probe.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # locked: a transaction is under way
                time.sleep(0.01)
                continue
            (rows,) = probe.execute("SELECT count(*) FROM scratch").fetchone()
            probe.execute("ROLLBACK")
            if rows:
                return True
            time.sleep(0.01)
        return False
    finally:
        probe.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_write_transaction_ends_while_the_event_loop_is_busy(database_url: str) -> None:
    path = str(make_url(database_url).database)
    engine = create_engine(DatabaseConfig(url=database_url))
    writer = Writer(engine, busy_timeout_ms=5_000)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE scratch (n INTEGER)"))

        # Through the async engine, a transaction under way cannot end while the loop is held.
        begun = asyncio.Event()

        async def through_the_loop() -> None:
            async with engine.begin() as conn:
                await conn.execute(sa.insert(_SCRATCH).values(n=1))
                begun.set()
                await conn.execute(sa.insert(_SCRATCH).values(n=2))

        control = asyncio.create_task(through_the_loop())
        await begun.wait()
        assert not _committed_while_blocked(path, within=0.5)
        await control
        async with engine.begin() as conn:
            await conn.execute(sa.delete(_SCRATCH))

        def insert(conn: sa.Connection) -> int:
            conn.execute(sa.insert(_SCRATCH).values(n=1))
            conn.execute(sa.insert(_SCRATCH).values(n=2))
            return 2

        task = asyncio.create_task(writer.run(insert))
        await asyncio.sleep(0)  # the task hands the transaction to the writer's thread
        assert _committed_while_blocked(path, within=10.0)
        assert await task == 2
    finally:
        writer.close()
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_claim_whose_worker_is_cancelled_goes_back_to_the_queue(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], monkeypatch: Any
) -> None:
    """The writer's thread finishes a claim whose worker was cancelled (the gateway
    stopping); the batch must not stay ``sending`` under a lease nobody keeps, nor lose an
    attempt it never made."""
    clock = ManualClock()
    async with started_by_hand(aiohttp_client, database_url, keys, clock, recipients=4) as (
        world,
        sim,
        _approved,
    ):
        dispatcher = world.app[DISPATCHER]
        inside, go_on = threading.Event(), threading.Event()
        claim = claims.claim

        def held(conn: Any, **kwargs: Any) -> Any:
            inside.set()
            go_on.wait(10)
            return claim(conn, **kwargs)

        monkeypatch.setattr(claims, "claim", held)
        run = asyncio.create_task(dispatcher.run_once("sms"))
        while not inside.is_set():
            await asyncio.sleep(0.01)
        run.cancel()
        await asyncio.sleep(0.05)  # the cancellation is delivered while the claim runs
        go_on.set()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(deliveries.c.state, deliveries.c.attempts, deliveries.c.lease_until)
                )
            ).all()
        assert sorted(rows) == [("queued", 0, None)] * 4
        assert sim.sent_count.total() == 0

        monkeypatch.setattr(claims, "claim", claim)
        clock.advance(timedelta(seconds=1))
        assert await dispatcher.run_once("sms") == 4
        assert sim.sent_count.total() == 4
