"""Stopping the gateway (SIGTERM: a deploy, a restart) in the middle of a broadcast.

Each worker finishes the batch in its hands within ``[dispatch] stop_grace_s``: what still
waits for the channel's rate is queued again unsent, due at once and with no attempt spent;
what the provider answered is recorded. The next process sends the rest, and nobody gets a
message twice. (A SIGKILL cannot do this: ``tests/gateway/test_crash_resume.py``.)
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from gateway.db.schema import deliveries
from gateway.outbox.dispatcher import STOPPING, Dispatcher
from tests.gateway.test_late_stops import PACED, started

RECIPIENTS = 4


async def test_a_stop_queues_again_what_waits_for_the_rate_and_records_what_went(
    aiohttp_client, database_url, keys
):
    async with started(aiohttp_client, database_url, keys, RECIPIENTS, **PACED) as run:
        # One message a second: the first leaves at once, the rest wait for the rate.
        first = Dispatcher.from_app(run.world.app)
        await first.start()
        for _ in range(500):
            if run.sim.sent_count.total():
                break
            await asyncio.sleep(0.01)
        assert run.sim.sent_count.total() == 1
        await asyncio.wait_for(first.stop(), 30)

        states = list((await run.states()).values())
        assert [s[0] for s in states if s[0] != "queued"] in (["sent"], ["delivered"])
        queued = [s for s in states if s[0] == "queued"]
        assert queued == [("queued", "throttled", STOPPING, 0)] * (RECIPIENTS - 1)
        async with run.world.engine.connect() as conn:
            due = await conn.scalar(
                sa.select(sa.func.count()).where(
                    deliveries.c.state == "queued",
                    deliveries.c.next_attempt_at <= first.clock.now(),
                )
            )
        assert due == RECIPIENTS - 1  # at once, not after a lease

        # The next process (or this one, restarted) sends the rest, once each.
        second = Dispatcher.from_app(run.world.app)
        try:
            while await second.run_once("sms"):
                pass
        finally:
            await second.stop()
        assert run.sent() == [1] * RECIPIENTS
