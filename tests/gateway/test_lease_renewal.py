"""A batch that takes longer than its lease to send, or to record, keeps its lease until its
outcomes are written; a large fan-out leaves the planner knowing how big the outbox is.

Without renewal, maintenance would reclaim the batch once its lease ran out and another
worker would send it a second time while the first send was still waiting for its answer.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from gateway.clock import ManualClock
from gateway.outbox.leases import Outages
from tests.support.config import make_config
from tests.support.sms import (
    broadcast,
    import_numbers,
    numbers,
    sms_world,
    started_by_hand,
    wait_for,
)


def _settled(total: int) -> Any:
    def check(counts: dict[str, int], _body: dict[str, Any]) -> bool:
        return counts.get("delivered", 0) + counts.get("failed", 0) >= total

    return check


async def _goes_out_once(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], **settings: Any
) -> None:
    """A broadcast to 20 numbers on a gateway with ``settings``: each delivered, none twice."""
    phones = numbers(20)
    async with sms_world(aiohttp_client, make_config, database_url, keys, **settings) as (
        world,
        sim,
    ):
        await import_numbers(world, phones)
        approved = await broadcast(world, facts={"what": "Uji", "where": "Gambir"})
        body = await wait_for(world, approved["id"], _settled(len(phones)), timeout=60)
        counts = {c["channel"]: c["counts"] for c in body["stats"]}
        assert counts["sms"].get("delivered", 0) == len(phones)
        assert sim.sent_count.duplicates() == {}
        assert sim.sent_count.total() == len(phones)


async def test_a_slow_batch_keeps_its_lease_and_goes_out_once(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    await _goes_out_once(
        aiohttp_client,
        database_url,
        keys,
        # Each request is answered after 3 s, three times the 1 s lease; maintenance runs
        # every second, so without renewal it reclaims the batch mid-send.
        simulator=SimulatorConfig(latency=3.0, delivery_report_delay=0.05),
        africastalking={"request_timeout_s": 10.0},
        dispatch={"lease_seconds": 1.0, "workers_per_channel": 2},
    )


async def test_a_batch_whose_record_waits_past_its_lease_goes_out_once(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], monkeypatch: Any
) -> None:
    """The lease is kept until the outcomes are written, not only while sending.

    The first record waits 6 s (as behind a long transaction holding the write lock, or the
    report lock), three times the 2 s lease, while maintenance runs every second: the batch
    was reclaimed, its record found nothing ``sending``, and it was sent a second time. (With
    a 1 s lease, a loaded CI machine once stalled long enough between the claim and the first
    renewal for the lease to run out before any renewal could keep it.)
    """
    from gateway.outbox.dispatcher import Dispatcher

    record = Dispatcher._record
    waits = [6.0]

    async def slow_record(self: Dispatcher, *args: Any) -> int:
        if waits:
            await asyncio.sleep(waits.pop())
        return await record(self, *args)

    monkeypatch.setattr(Dispatcher, "_record", slow_record)
    await _goes_out_once(
        aiohttp_client,
        database_url,
        keys,
        simulator=SimulatorConfig(delivery_report_delay=0.05),
        dispatch={"lease_seconds": 2.0, "workers_per_channel": 1},
    )
    assert not waits  # the slow record happened


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_large_fan_out_refreshes_the_planners_statistics(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], monkeypatch: Any
) -> None:
    """Statistics from a nearly empty table made every claim on a million rows a nested loop
    over a sequential scan; a large fan-out analyses ``deliveries`` before workers claim."""
    from gateway.outbox import fanout

    monkeypatch.setattr(fanout, "ANALYZE_AFTER_ROWS", 20)  # "large" for a test
    phones = numbers(30)
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _sim):
        engine = world.engine
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE deliveries"))  # empty: 0 rows known
        await import_numbers(world, phones)
        approved = await broadcast(world, facts={"what": "Uji", "where": "Gambir"})
        await wait_for(world, approved["id"], _settled(len(phones)), timeout=60)
        async with engine.connect() as conn:
            known = await conn.scalar(
                sa.text("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'")
            )
    assert known == len(phones)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_claim_that_waited_for_the_write_lock_gets_its_whole_lease(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], monkeypatch: Any
) -> None:
    """On SQLite a claim waits its turn for the write lock (``BEGIN IMMEDIATE``) behind
    another writer; its lease runs from the moment it has the lock. Counted from before the
    wait, a wait as long as the lease left the batch claimed with its lease already over, for
    maintenance to hand to another worker while this one was sending it. (PostgreSQL claims
    do not queue on a lock at BEGIN; a wait for a pooled connection is the same case.)
    """
    from datetime import timedelta

    from gateway.appkeys import DISPATCHER
    from gateway.clock import ManualClock
    from gateway.outbox import claims

    clock = ManualClock()
    async with started_by_hand(
        aiohttp_client,
        database_url,
        keys,
        clock,
        recipients=4,
        dispatch={"lease_seconds": 30},
    ) as (world, sim, _approved):
        dispatcher = world.app[DISPATCHER]
        leases: list[timedelta] = []
        claim = claims.claim

        def watched(conn: Any, **kwargs: Any) -> Any:
            leases.append(kwargs["lease_until"] - clock.now())
            return claim(conn, **kwargs)

        monkeypatch.setattr(claims, "claim", watched)
        holding, release = asyncio.Event(), asyncio.Event()

        async def other_writer() -> None:
            async with world.engine.begin():  # BEGIN IMMEDIATE: the write lock is ours
                holding.set()
                await release.wait()

        writer = asyncio.create_task(other_writer())
        await holding.wait()
        run = asyncio.create_task(dispatcher.run_once("sms"))
        await asyncio.sleep(0.5)
        assert not run.done()  # queued behind the other writer
        clock.advance(timedelta(minutes=5))  # the wait outlasts the lease
        release.set()
        await writer
        assert await run == 4
        assert sim.sent_count.total() == 4
    assert leases == [timedelta(seconds=30)]


def test_leases_that_ran_out_while_the_database_was_away_wait_a_lease_before_reclaim() -> None:
    """``Outages``: no worker could renew or record while the database was away, so a lease
    that ran out then is given a lease's time after the last failure this process saw."""
    start = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    clock = ManualClock(start)
    outages = Outages(clock)
    lease = timedelta(seconds=60)
    assert outages.doubt_leases(start, lease) is None
    outages.saw(ValueError("a bug, not an outage"))
    assert outages.doubt_leases(start, lease) is None
    clock.set(start + timedelta(minutes=5))
    outages.saw(sa.exc.OperationalError("UPDATE deliveries", {}, Exception("database is locked")))
    back = start + timedelta(minutes=5, seconds=1)
    assert outages.doubt_leases(back, lease) == start + timedelta(minutes=6)
    assert outages.doubt_leases(start + timedelta(minutes=6), lease) is None
