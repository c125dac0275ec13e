"""Stops that come after a worker claimed its batch: an opt-out, an erasure, a cancelled or
expired announcement. Nothing of theirs leaves after the stop, whether the batch is still
waiting for the channel's rate, is being retried, or belonged to a worker that died."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from gateway.clock import ManualClock
from gateway.db.schema import deliveries
from gateway.domain import Role
from gateway.outbox import late_stops
from tests.scheduler.support import dispatcher_of
from tests.support.config import make_config
from tests.support.sms import broadcast, claim_now, import_numbers, numbers, sms_world

# One message a second, one per request: the first leaves at once, the next a second later,
# the third two seconds later; a claimed batch of three is still waiting when a stop comes.
# Paced by this process's own bucket: the budget shared on PostgreSQL books whole-second
# windows, and its second window may open a few milliseconds after the first message.
PACED = {"batch_size": 1, "rate_per_second": 1.0}
UNSHARED = {"enabled": False, "shared_rate_limit": False}
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 10:00 in Jakarta


async def _states(world: Any) -> dict[str, tuple[str, str | None, str | None, int]]:
    """ "#i", the i-th delivery (the i-th subscriber's) -> its state, error kind and reason,
    and attempts."""
    async with world.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    deliveries.c.state,
                    deliveries.c.error_kind,
                    deliveries.c.error_reason,
                    deliveries.c.attempts,
                ).order_by(deliveries.c.subscriber_id)
            )
        ).all()
    return {f"#{i}": (row[0], row[1], row[2], row[3]) for i, row in enumerate(rows)}


async def _first_sent(sim: Any, running: asyncio.Task[int], phones: list[str]) -> int:
    """Waits for the batch's first message; returns which of ``phones`` it went to (the
    order of a fan-out's rows is the database's)."""
    for _ in range(500):
        if sim.sent_count.total() >= 1:
            break
        await asyncio.sleep(0.01)
    assert sim.sent_count.total() == 1 and not running.done()
    return next(i for i, phone in enumerate(phones) if sim.sent_count[phone])


async def _opt_out(world: Any, keys: dict[str, str], phone: str) -> None:
    """Africa's Talking reports that the citizen opted out (they sent STOP to the short code)."""
    url = f"/callbacks/africastalking/{keys['callback_token']}/sms/optout"
    answer = await world.client.post(url, data={"senderId": "WARTA", "phoneNumber": phone})
    assert answer.status == 200


def _went(states: dict[str, tuple[Any, ...]]) -> list[str]:
    return [key for key, (state, *_) in states.items() if state in ("sent", "delivered")]


async def test_an_opt_out_stops_what_a_paced_batch_has_not_sent_yet(
    aiohttp_client, database_url, keys
):
    """Three claimed at once, paced at one a second. The second citizen opts out while the
    batch waits: theirs is not sent and is recorded as cancelled, with no attempt spent; the
    others go."""
    phones = numbers(3)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys,
        dispatch=UNSHARED, africastalking=PACED,
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, phones)
        await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1

        running = asyncio.create_task(dispatcher.run_once("sms"))
        first = await _first_sent(sim, running, phones)
        stopped = 2 if first == 1 else 1
        await _opt_out(world, keys, phones[stopped])
        assert await running == 3

        assert [sim.sent_count[p] for p in phones] == [int(i != stopped) for i in range(3)]
        states = await _states(world)
        assert states[f"#{stopped}"] == ("cancelled", "stopped", "opted out", 0)
        assert len(_went(states)) == 2


async def test_a_cancelled_broadcast_stops_at_once_on_a_paced_channel(
    aiohttp_client, database_url, keys
):
    """The operator cancels a broadcast sent by mistake while a claimed batch waits for the
    rate: nothing more of it leaves, and the announcement's counts say so."""
    phones = numbers(3)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys,
        dispatch=UNSHARED, africastalking=PACED,
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, phones)
        approved = await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1

        running = asyncio.create_task(dispatcher.run_once("sms"))
        first = await _first_sent(sim, running, phones)
        cancelled = await world.call(
            "POST", f"/api/v1/announcements/{approved['id']}/cancel", role=Role.APPROVER
        )
        assert cancelled.status == 200
        assert await running == 3

        assert sim.sent_count.total() == 1
        states = await _states(world)
        rest = [states[f"#{i}"] for i in range(3) if i != first]
        assert rest == [("cancelled", None, "cancelled", 0)] * 2
        shown = await world.call(
            "GET", f"/api/v1/announcements/{approved['id']}", role=Role.OPERATOR
        )
        counts = shown.body["stats"][0]["counts"]
        assert counts.get("cancelled") == 2
        assert counts.get("sending", 0) == counts.get("queued", 0) == 0


async def test_an_erased_person_gets_nothing_more_from_a_claimed_batch(
    aiohttp_client, database_url, keys
):
    phones = numbers(3)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys,
        dispatch=UNSHARED, africastalking=PACED,
    ) as (world, sim):  # fmt: skip
        ids = []
        for phone in phones:
            added = await world.subscribe(phone)
            assert added.status == 201, added.body
            ids.append(added.body["id"])
        await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1

        running = asyncio.create_task(dispatcher.run_once("sms"))
        first = await _first_sent(sim, running, phones)
        stopped = 2 if first == 1 else 1
        erased = await world.call("DELETE", f"/api/v1/subscribers/{ids[stopped]}", role=Role.ADMIN)
        assert erased.status == 204
        assert await running == 3

        assert [sim.sent_count[p] for p in phones] == [int(i != stopped) for i in range(3)]
        # Unlinked by the erasure: the stopped delivery has no subscriber any more.
        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        deliveries.c.subscriber_id,
                        deliveries.c.state,
                        deliveries.c.error_kind,
                        deliveries.c.error_reason,
                        deliveries.c.attempts,
                    )
                )
            ).all()
        assert [tuple(r[1:]) for r in rows if r[0] is None] == [
            ("cancelled", "stopped", "erased", 0)
        ]


async def test_an_announcement_that_expires_while_its_batch_waits_is_not_sent_late(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(T0)
    phones = numbers(3)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys,
        dispatch=UNSHARED, africastalking=PACED, clock=clock,
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, phones)
        await broadcast(world, expires_at=(T0 + timedelta(minutes=5)).isoformat())
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1

        running = asyncio.create_task(dispatcher.run_once("sms"))
        first = await _first_sent(sim, running, phones)
        clock.set(T0 + timedelta(minutes=5))
        assert await running == 3

        assert sim.sent_count.total() == 1
        states = await _states(world)
        rest = [states[f"#{i}"] for i in range(3) if i != first]
        assert rest == [("expired", None, "expired before it could be sent", 0)] * 2


async def test_a_retry_of_someone_who_opted_out_meanwhile_is_cancelled(
    aiohttp_client, database_url, keys
):
    """The request is out (the provider takes a second to answer, then fails with a 500)
    when the citizen opts out. The worker queues the batch again for a retry, and in that same
    transaction cancels what was stopped meanwhile: the retry sends only to the other one."""
    phones = numbers(2)
    simulator = SimulatorConfig(latency=1.0, outcomes={phones[0]: "server_error"})
    async with sms_world(
        aiohttp_client, make_config, database_url, keys,
        simulator=simulator, dispatch={"enabled": False}, africastalking={"batch_size": 2},
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, phones)
        await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1

        running = asyncio.create_task(dispatcher.run_once("sms"))
        for _ in range(500):
            if sim.requests_total:
                break
            await asyncio.sleep(0.01)
        assert sim.requests_total == 1 and not running.done()
        await _opt_out(world, keys, phones[1])
        assert await running == 2

        states = await _states(world)
        assert states["#0"][0] == "queued"
        assert states["#1"] == ("cancelled", "stopped", "opted out", 1)
        sim.config = SimulatorConfig(api_key=sim.config.api_key, currency=sim.config.currency)
        async with world.engine.begin() as conn:
            await conn.execute(sa.update(deliveries).values(next_attempt_at=T0))
        while await dispatcher.run_once("sms"):
            pass
        assert [sim.sent_count[p] for p in phones] == [1, 0]


async def test_a_dead_workers_batch_is_not_queued_again_for_who_opted_out(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(T0)
    phones = numbers(2)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys, dispatch={"enabled": False}, clock=clock
    ) as (world, sim):
        await import_numbers(world, phones)
        approved = await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1
        assert len(await claim_now(world.engine, "sms", limit=10, now=clock.now())) == 2
        # The worker that holds them is gone; meanwhile one citizen opts out.
        await _opt_out(world, keys, phones[0])
        clock.set(T0 + timedelta(minutes=2))  # past the 60 s lease
        await dispatcher.housekeeping()

        states = await _states(world)
        assert states["#0"] == ("cancelled", "stopped", "opted out", 1)
        assert states["#1"][0] == "queued"
        while await dispatcher.run_once("sms"):
            pass
        assert [sim.sent_count[p] for p in phones] == [0, 1]
        async with world.engine.connect() as conn:
            left = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.announcement_id == approved["id"],
                    deliveries.c.state == "sending",
                )
            )
        assert left == 0


async def test_a_batch_that_goes_at_once_is_not_looked_at_again(
    aiohttp_client, database_url, keys, monkeypatch
):
    """The look costs nothing where there is nothing to catch: an unpaced batch leaves within
    ``LOOK_EVERY_S`` of its claim and reads nothing more."""
    looks: list[int] = []
    read = late_stops.LateStops._read

    async def counted(self: late_stops.LateStops) -> None:
        looks.append(1)
        await read(self)

    monkeypatch.setattr(late_stops.LateStops, "_read", counted)
    monkeypatch.setattr(late_stops, "LOOK_EVERY_S", 60.0)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys,
        dispatch={"enabled": False}, africastalking={"rate_per_second": 100_000.0},
    ) as (world, sim):  # fmt: skip
        await import_numbers(world, numbers(250))
        await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1
        while await dispatcher.run_once("sms"):
            pass
        assert sim.sent_count.total() == 250
        assert looks == []
        # With every request looking, one reading serves the requests that leave together:
        # one a batch.
        monkeypatch.setattr(late_stops, "LOOK_EVERY_S", 0.0)
        await import_numbers(world, numbers(250, start=1001))
        await broadcast(world)
        assert await dispatcher.start_due() == 1
        batches = 0
        while await dispatcher.run_once("sms"):
            batches += 1
        assert sim.sent_count.total() == 250 + 500  # the second broadcast reaches all
        assert len(looks) == batches >= 1
