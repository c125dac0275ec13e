"""Stopping the gateway (SIGTERM: a deploy, a restart) in the middle of a broadcast.

Each worker finishes the batch in its hands within ``[dispatch] stop_grace_s``: what still
waits for the channel's rate is queued again unsent, due at once and with no attempt spent;
what the provider answered is recorded. The next process sends the rest, and nobody gets a
message twice. (A SIGKILL cannot do this: ``tests/gateway/test_crash_resume.py``.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web

from gateway.db.schema import deliveries
from gateway.outbox.dispatcher import STOPPING, Dispatcher
from tests.gateway.test_fallback import gateway, start
from tests.gateway.test_late_stops import started
from tests.support.sms import numbers

RECIPIENTS = 3
# One message every four seconds, and two seconds' grace: a wait for the rate that did not
# end when the stop came would outlast the grace, and the batch would be cancelled unrecorded.
GRACE = {"stop_grace_s": 2.0}
PACED = {
    "dispatch": {"enabled": False, "shared_rate_limit": False, **GRACE},
    "africastalking": {"batch_size": 1, "rate_per_second": 0.25},
}


async def test_a_stop_queues_again_what_waits_for_the_rate_and_records_what_went(
    aiohttp_client, database_url, keys
):
    await stop_while_paced(aiohttp_client, database_url, keys, PACED)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_stop_ends_the_wait_for_a_window_of_the_shared_budget(
    aiohttp_client, database_url, keys
):
    """PostgreSQL's budget shared by processes: the request sleeps until its booked window."""
    shared = {**PACED, "dispatch": {"enabled": False, "shared_rate_limit": True, **GRACE}}
    await stop_while_paced(aiohttp_client, database_url, keys, shared)


async def stop_while_paced(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], pacing: dict[str, Any]
) -> None:
    async with started(aiohttp_client, database_url, keys, RECIPIENTS, **pacing) as run:
        # The first leaves at once, the rest wait for the rate.
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
        await drain(run.world.app, "sms")
        assert run.sent() == [1] * RECIPIENTS


async def test_a_stop_hands_back_what_waits_for_its_telegram_arrival_turn(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    """Telegram is paced for arrival (here one message every four seconds): the requests
    queue for their turn in the pacer, and a stop ends that wait too."""
    async with gateway(
        aiohttp_client, database_url, keys, tmp_path, telegram_rate=0.25, **GRACE
    ) as gw:
        for i, phone in enumerate(numbers(3)):
            await gw.subscriber(phone, channels=["telegram"], telegram_chat_id=5000 + i)
        announcement_id = await start(gw, channels=["telegram"])

        def chats() -> list[Any]:
            return [
                r.params.get("chat_id") for r in gw.telegram.received if r.method == "sendmessage"
            ]

        first = Dispatcher.from_app(gw.world.app)
        await first.start()
        for _ in range(500):
            if chats():
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(first.stop(), 30)
        assert len(chats()) == 1
        rows = await gw.rows(announcement_id)
        assert sorted(r["state"] for r in rows) == ["queued", "queued", "sent"]
        async with gw.world.engine.connect() as conn:
            reasons = await conn.scalars(
                sa.select(deliveries.c.error_reason).where(deliveries.c.state == "queued")
            )
            assert set(reasons) == {STOPPING}

        await drain(gw.world.app, "telegram")
        assert sorted(map(str, chats())) == ["5000", "5001", "5002"]


async def drain(app: web.Application, channel: str) -> None:
    """What a process started after the stop does: send everything due on ``channel``."""
    dispatcher = Dispatcher.from_app(app)
    try:
        while await dispatcher.run_once(channel):
            pass
    finally:
        await dispatcher.stop()
