"""A batch's outcomes reach the database even when it cannot take them for a while.

What the provider answered is known only to the worker that sent the batch. If recording it
failed and was given up, the batch would stay ``sending``, its lease would run out, and every
message of it would go out a second time. So the record is tried again while the storage is
unavailable: here, on SQLite, another connection holding the write lock past the busy
timeout; on PostgreSQL, the database turning read-only (as a standby does before it is
promoted) with every connection dropped.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.clock import Clock, ManualClock
from gateway.config import WartaConfig
from gateway.db.schema import deliveries
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.texts import AnnouncementTexts
from tests.scheduler.support import dispatcher_of
from tests.support.config import make_config
from tests.support.sms import (
    HELD_S,
    broadcast,
    hold_next_request,
    import_numbers,
    numbers,
    requests_arrived,
    sms_world,
)

RECIPIENTS = 4
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 10:00 in Jakarta


def impatient(database_url: str, keys: dict[str, str], **overrides: Any) -> WartaConfig:
    """The test configuration with a busy timeout of 0.1 s instead of 30 s."""
    return make_config(
        database_url, keys, database={"url": database_url, "busy_timeout_ms": 100}, **overrides
    )


@dataclass
class InFlight:
    app: web.Application
    dispatcher: Dispatcher
    running: asyncio.Task[int]  # the worker's run_once
    sim: AfricasTalkingSimulator

    def answer(self) -> None:
        """The provider answers the batch's request now."""
        self.sim.faults.release_held()


@asynccontextmanager
async def batch_in_flight(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    *,
    clock: Clock | None = None,
) -> AsyncIterator[InFlight]:
    """A broadcast to ``RECIPIENTS``, one batch of it claimed and its request with the
    provider, which answers when the test calls ``answer()`` (at the latest when the block
    ends). Then the batch must be recorded as sent, and nothing of it may go out again."""
    async with sms_world(
        aiohttp_client, impatient, database_url, keys,
        dispatch={"enabled": False},
        africastalking={"batch_size": RECIPIENTS, "request_timeout_s": HELD_S + 10},
        clock=clock,
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, numbers(RECIPIENTS))
        await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1
        await hold_next_request(sim)
        running = asyncio.create_task(dispatcher.run_once("sms"))
        await requests_arrived(sim, sender=running)
        assert not running.done()
        batch = InFlight(world.app, dispatcher, running, sim)
        yield batch
        batch.answer()
        assert await asyncio.wait_for(running, 30) == RECIPIENTS
        # Recorded: nothing is left to send, and nobody got the message twice.
        async with world.engine.connect() as conn:
            states = (await conn.scalars(sa.select(deliveries.c.state))).all()
        assert len(states) == RECIPIENTS and set(states) <= {"sent", "delivered"}
        while await dispatcher.run_once("sms"):
            pass
        assert [sim.sent_count[phone] for phone in numbers(RECIPIENTS)] == [1] * RECIPIENTS


async def failed_to_record(caplog: pytest.LogCaptureFixture) -> None:
    """Waits until the worker has met the fault: the provider answered and the record failed."""
    for _ in range(3000):
        if "could not record" in caplog.text:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the record never met the fault")


@asynccontextmanager
async def write_lock_held(database_url: str) -> AsyncIterator[None]:
    """Another program (a backup, the sqlite3 shell) holding SQLite's write lock for the
    block. It is taken in a thread: a writer of the gateway's may hold it a moment, and
    needs the event loop to let go."""
    holder = sqlite3.connect(
        make_url(database_url).database or "",
        isolation_level=None,
        timeout=10,
        check_same_thread=False,
    )
    try:
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        yield
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_record_that_meets_a_held_write_lock_waits_for_it(
    aiohttp_client, database_url, keys, caplog
):
    # Another program holds the write lock from before the provider answers until well
    # after: the record meets "database is locked".
    async with (
        batch_in_flight(aiohttp_client, database_url, keys) as batch,
        write_lock_held(database_url),
    ):
        batch.answer()
        await failed_to_record(caplog)
        await asyncio.sleep(0.5)  # a few more tries
        assert not batch.running.done()
    assert "could not record 4 outcomes (OperationalError: storage is busy" in caplog.text
    assert "recorded 4 outcomes after" in caplog.text


@asynccontextmanager
async def read_only_switch(database_url: str) -> AsyncIterator[Callable[[bool], Awaitable[None]]]:
    """Turns the PostgreSQL database read-only (as a standby is before it is promoted) or
    back: sessions opened from then on follow, and every other one is dropped."""
    name = make_url(database_url).database
    admin = create_async_engine(database_url, poolclass=NullPool)

    async def turn(read_only: bool) -> None:
        setting = "SET" if read_only else "RESET"
        value = " = on" if read_only else ""
        async with admin.connect() as conn:
            await conn.execute(sa.text("SET TRANSACTION READ WRITE"))
            await conn.execute(
                sa.text(f'ALTER DATABASE "{name}" {setting} default_transaction_read_only{value}')
            )
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            await conn.commit()

    try:
        yield turn
    finally:
        await turn(read_only=False)
        await admin.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_record_during_a_read_only_spell_waits_for_it(
    aiohttp_client, database_url, keys, caplog
):
    async with (
        read_only_switch(database_url) as turn,
        batch_in_flight(aiohttp_client, database_url, keys) as batch,
    ):
        await turn(True)
        batch.answer()
        await failed_to_record(caplog)
        await asyncio.sleep(0.5)  # a few more tries
        assert not batch.running.done()
        await turn(False)
    assert "could not record 4 outcomes" in caplog.text
    assert "recorded 4 outcomes after" in caplog.text


@pytest.mark.parametrize("backend", ["postgres"])
async def test_another_process_does_not_reclaim_a_batch_held_through_an_outage(
    aiohttp_client, database_url, keys, caplog
):
    """Two processes on one PostgreSQL, and the database away for five minutes, far longer
    than the 60 s lease, while one process has a batch with the provider: its lease ran out,
    but its worker is alive and records the batch once the provider answers. The other
    process saw the outage too, and so does not reclaim the batch (to send it again) on the
    database's return, but gives that worker a lease's time to record it."""
    clock = ManualClock(T0)
    async with (
        read_only_switch(database_url) as turn,
        batch_in_flight(aiohttp_client, database_url, keys, clock=clock) as batch,
    ):
        other = Dispatcher.from_app(batch.app)
        await turn(True)
        clock.set(T0 + timedelta(minutes=5))
        with pytest.raises(sa.exc.DBAPIError):
            await other.housekeeping()  # the other process's pass meets the outage
        await turn(False)
        await other.housekeeping()  # and its first pass after it
        async with other.engine.connect() as conn:
            states = (await conn.scalars(sa.select(deliveries.c.state))).all()
        assert states == ["sending"] * RECIPIENTS
        assert "leases that ran out are not reclaimed before 2026-03-02T03:06:00" in caplog.text
        await other.stop()


async def test_a_batch_whose_lease_ran_out_in_its_workers_hands_is_not_reclaimed(
    aiohttp_client, database_url, keys
):
    """The lease is for a worker that died; this one still has its batch (its renewals could
    not reach the database, say). Its own process's housekeeping leaves the batch alone, and
    the worker records it: reclaimed, it would have been sent a second time."""
    clock = ManualClock(T0)
    async with batch_in_flight(aiohttp_client, database_url, keys, clock=clock) as batch:
        clock.set(T0 + timedelta(minutes=5))  # well past the 60 s lease
        await batch.dispatcher.housekeeping()
        async with batch.dispatcher.engine.connect() as conn:
            states = (await conn.scalars(sa.select(deliveries.c.state))).all()
        assert states == ["sending"] * RECIPIENTS


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_stop_waits_within_its_grace_for_a_record_that_meets_a_held_lock(
    aiohttp_client, database_url, keys, caplog
):
    """SIGTERM arrives while the record of an answered batch waits for the write lock: the
    stop gives it its grace instead of cutting it off (which would leave the batch to be
    sent again after its lease)."""
    async with sms_world(
        aiohttp_client, impatient, database_url, keys,
        dispatch={"enabled": False, "stop_grace_s": 30.0},
        africastalking={"batch_size": RECIPIENTS, "request_timeout_s": HELD_S + 10},
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, numbers(RECIPIENTS))
        await broadcast(world)
        await hold_next_request(sim)
        dispatcher = Dispatcher.from_app(world.app)
        # Fanned out before the workers start: with a 0.1 s busy timeout their claims would
        # otherwise meet the fan-out's write lock (a claim still recovers, see below).
        assert await dispatcher.start_due() == 1
        await dispatcher.start()
        await requests_arrived(sim)
        # Another program takes the write lock before the provider answers.
        async with write_lock_held(database_url):
            sim.faults.release_held()
            await failed_to_record(caplog)
            stopping = asyncio.create_task(dispatcher.stop())
            # The record tries again (several times, each meeting the lock) while the stop
            # waits for it.
            await asyncio.sleep(1.5)
            assert not stopping.done()
        await asyncio.wait_for(stopping, 30)
        async with world.engine.connect() as conn:
            states = (await conn.scalars(sa.select(deliveries.c.state))).all()
        assert len(states) == RECIPIENTS and set(states) <= {"sent", "delivered"}
        assert "recorded 4 outcomes after" in caplog.text
        assert [sim.sent_count[phone] for phone in numbers(RECIPIENTS)] == [1] * RECIPIENTS


async def test_a_batch_whose_texts_cannot_be_read_goes_back_to_the_queue_at_once(
    aiohttp_client, database_url, keys, monkeypatch
):
    """The batch is claimed, then reading its announcement fails (the storage busy): nothing of
    it has left, so it is queued again at once with its attempt given back, not left to wait
    out its lease; the worker's next turn sends it."""
    async with sms_world(
        aiohttp_client, impatient, database_url, keys, dispatch={"enabled": False}
    ) as (world, sim):
        await import_numbers(world, numbers(RECIPIENTS))
        await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1
        read = AnnouncementTexts.announcement

        async def busy(self: AnnouncementTexts, announcement_id: int) -> Any:
            monkeypatch.setattr(AnnouncementTexts, "announcement", read)
            raise OperationalError("SELECT", {}, Exception("database is locked"))

        monkeypatch.setattr(AnnouncementTexts, "announcement", busy)
        with pytest.raises(OperationalError):
            await dispatcher.run_once("sms")
        async with world.engine.connect() as conn:
            rows = (await conn.execute(sa.select(deliveries.c.state, deliveries.c.attempts))).all()
        assert sorted(rows) == [("queued", 0)] * RECIPIENTS
        # The worker's next turns send it (a loaded machine may hand a request back once, late
        # for its window of PostgreSQL's shared budget: it is queued again at once).
        assert await dispatcher.run_once("sms") == RECIPIENTS
        while await dispatcher.run_once("sms"):
            pass
        assert [sim.sent_count[phone] for phone in numbers(RECIPIENTS)] == [1] * RECIPIENTS
