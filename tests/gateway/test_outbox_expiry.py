"""An out-of-date announcement never goes out late; leases of dead workers are reclaimed."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from gateway.appkeys import DISPATCHER
from gateway.clock import ManualClock
from gateway.db.schema import announcements, deliveries
from tests.support.sms import started_by_hand


async def _states(world) -> dict[str, int]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)
        )
        return {state: n for state, n in rows}


async def test_deliveries_not_sent_by_expiry_become_expired(aiohttp_client, database_url, keys):
    clock = ManualClock()
    expires = clock.now() + timedelta(hours=1)
    async with started_by_hand(
        aiohttp_client,
        database_url,
        keys,
        clock,
        recipients=12,
        expires_at=expires.isoformat(),
    ) as (world, sim, approved):
        dispatcher = world.app[DISPATCHER]
        clock.advance(timedelta(hours=2))
        # A worker that claims after expiry must not send.
        assert await dispatcher.run_once("sms") == 12
        assert sim.requests_total == 0
        assert await _states(world) == {"expired": 12}
        await dispatcher.housekeeping()
        async with world.engine.connect() as conn:
            status = await conn.scalar(
                sa.select(announcements.c.status).where(announcements.c.id == approved["id"])
            )
        assert status == "done"


async def test_housekeeping_expires_queued_deliveries_and_reclaims_leases(
    aiohttp_client, database_url, keys
):
    clock = ManualClock()
    async with started_by_hand(
        aiohttp_client,
        database_url,
        keys,
        clock,
        recipients=6,
        dispatch={"lease_seconds": 30},
        expires_at=(clock.now() + timedelta(hours=1)).isoformat(),
    ) as (world, _sim, _approved):
        dispatcher = world.app[DISPATCHER]
        # A worker claims three and dies: the lease is all that is left of it.
        from gateway.outbox.claims import claim

        async with world.engine.begin() as conn:
            taken = await conn.run_sync(
                claim,
                channel="sms",
                limit=3,
                now=clock.now(),
                lease_until=clock.now() + timedelta(seconds=30),
            )
        assert len(taken) == 3
        assert await _states(world) == {"queued": 3, "sending": 3}
        clock.advance(timedelta(seconds=31))
        await dispatcher.housekeeping()
        assert await _states(world) == {"queued": 6}
        clock.advance(timedelta(hours=1))
        await dispatcher.housekeeping()
        assert await _states(world) == {"expired": 6}
