"""Stops that come after a worker claimed its batch: an opt-out, an erasure, a cancelled or
expired announcement. Nothing of theirs leaves after the stop, whether the batch is still
waiting for the channel's rate, is being retried, or belonged to a worker that died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from channels.simfaults import Fault
from gateway.clock import ManualClock
from gateway.db.schema import announcements, deliveries, subscribers
from gateway.domain import Role
from gateway.outbox import late_stops
from gateway.outbox.claims import Claimed
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.fanout import cancel_pending
from gateway.outbox.shared_rate_tables import rate_budgets
from gateway.store import announcements as announcement_store
from gateway.store import subscribers as subscriber_store
from tests.gateway.test_fallback import gateway, start
from tests.scheduler.support import dispatcher_of
from tests.support.config import make_config
from tests.support.sms import (
    HELD_S,
    broadcast,
    claim_now,
    hold_next_request,
    import_numbers,
    numbers,
    requests_arrived,
    sms_world,
)

# One message every two seconds, one per request: the first leaves at once, the next two
# seconds later, the third four; a claimed batch of three is still waiting when a stop comes
# (which has two seconds to commit: a loaded CI machine has stalled for more than one).
# Paced by this process's own bucket: the budget shared on PostgreSQL books whole-second
# windows, and its second window may open a few milliseconds after the first message.
PACED = {
    "dispatch": {"enabled": False, "shared_rate_limit": False},
    "africastalking": {"batch_size": 1, "rate_per_second": 0.5},
}
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 10:00 in Jakarta


@dataclass
class Started:
    world: Any
    sim: Any
    dispatcher: Any
    announcement_id: int
    phones: list[str]
    subscriber_ids: list[int]  # in the order of ``phones``

    async def states(self) -> dict[int, tuple[str, str | None, str | None, int]]:
        """i -> the state, error kind and reason, and attempts of phones[i]'s delivery."""
        async with self.world.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    deliveries.c.subscriber_id,
                    deliveries.c.state,
                    deliveries.c.error_kind,
                    deliveries.c.error_reason,
                    deliveries.c.attempts,
                )
            )
            by_subscriber = {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}
        return {
            i: by_subscriber[s] for i, s in enumerate(self.subscriber_ids) if s in by_subscriber
        }

    async def request_out(self) -> asyncio.Task[int]:
        """Starts the worker's ``run_once`` on SMS; returns it once its first request is with
        the provider, which holds it (a ``slow`` fault) until ``answer()``."""
        await hold_next_request(self.sim)
        running = asyncio.create_task(self.dispatcher.run_once("sms"))
        await requests_arrived(self.sim, sender=running)
        assert len(self.sim.faults.arrivals) == 1 and not running.done()
        return running

    def answer(self) -> None:
        """The provider answers the request ``request_out`` left with it."""
        self.sim.faults.release_held()

    def sent(self) -> list[int]:
        return [self.sim.sent_count[phone] for phone in self.phones]

    async def first_of_batch_sent(self, running: asyncio.Task[int]) -> int:
        """Waits for the batch's first message; returns the index of the phone it went to (the
        order of a fan-out's rows is the database's)."""
        for _ in range(500):
            if self.sim.sent_count.total() >= 1:
                break
            await asyncio.sleep(0.01)
        assert self.sim.sent_count.total() == 1 and not running.done()
        return next(i for i, count in enumerate(self.sent()) if count)

    async def opt_out(self, keys: dict[str, str], i: int) -> None:
        """Africa's Talking reports that phones[i] opted out (they sent STOP to the short
        code)."""
        url = f"/callbacks/africastalking/{keys['callback_token']}/sms/optout"
        form = {"senderId": "WARTA", "phoneNumber": self.phones[i]}
        answer = await self.world.client.post(url, data=form)
        assert answer.status == 200


@asynccontextmanager
async def started(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    recipients: int,
    *,
    fields: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Started]:
    """An ``sms_world`` (``options``) with ``recipients`` subscribers and one broadcast
    (``fields``) to them, approved and fanned out; the test drives the dispatcher."""
    phones = numbers(recipients)
    async with sms_world(aiohttp_client, make_config, database_url, keys, **options) as (
        world,
        sim,
    ):
        await import_numbers(world, phones)
        async with world.engine.connect() as conn:
            ids = list((await conn.scalars(sa.select(subscribers.c.id).order_by("id"))).all())
        approved = await broadcast(world, **(fields or {}))
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1
        yield Started(world, sim, dispatcher, int(approved["id"]), phones, ids)


def _other_than(first: int) -> int:
    """One of the two deliveries still waiting after the batch's first went."""
    return 2 if first == 1 else 1


async def test_an_opt_out_stops_what_a_paced_batch_has_not_sent_yet(
    aiohttp_client, database_url, keys
):
    """Three claimed at once, paced at one every two seconds. One citizen opts out while the batch
    waits: theirs is not sent and is recorded as cancelled, with no attempt spent; the others
    go."""
    async with started(aiohttp_client, database_url, keys, 3, **PACED) as run:
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        stopped = _other_than(await run.first_of_batch_sent(running))
        await run.opt_out(keys, stopped)
        assert await running == 3

        assert run.sent() == [int(i != stopped) for i in range(3)]
        states = await run.states()
        assert states[stopped] == ("cancelled", "stopped", "opted out", 0)
        went = [i for i, (state, *_) in states.items() if state in ("sent", "delivered")]
        assert len(went) == 2


async def test_a_cancelled_broadcast_stops_at_once_on_a_paced_channel(
    aiohttp_client, database_url, keys
):
    """The operator cancels a broadcast sent by mistake while a claimed batch waits for the
    rate: nothing more of it leaves, and the announcement's counts say so."""
    async with started(aiohttp_client, database_url, keys, 3, **PACED) as run:
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        first = await run.first_of_batch_sent(running)
        path = f"/api/v1/announcements/{run.announcement_id}"
        cancelled = await run.world.call("POST", path + "/cancel", role=Role.APPROVER)
        assert cancelled.status == 200
        assert await running == 3

        assert sum(run.sent()) == 1
        states = await run.states()
        rest = [states[i] for i in range(3) if i != first]
        assert rest == [("cancelled", None, "cancelled", 0)] * 2
        shown = await run.world.call("GET", path, role=Role.OPERATOR)
        counts = shown.body["stats"][0]["counts"]
        assert counts.get("cancelled") == 2
        assert counts.get("sending", 0) == counts.get("queued", 0) == 0


# One message every 1,000 s: a claimed batch of three would hold its worker for over half an
# hour if its requests slept until their turns (a lease long enough for a claim of three).
SLOW_RATE = 0.001
SLOW = {"shared_rate_limit": False, "lease_seconds": 6000.0, "workers_per_channel": 1}
SLOW_PACED = {
    "dispatch": {"enabled": False, **SLOW},
    "africastalking": {"batch_size": 1, "rate_per_second": SLOW_RATE},
}


async def test_a_cancel_frees_a_paced_batch_and_its_share_of_the_rate_at_once(
    aiohttp_client, database_url, keys
):
    """The operator cancels a broadcast while its claimed batch waits for turns 1,000 and
    2,000 s away. The batch's look finds the cancel within a second and the waiting requests
    stop there: the worker is free for the correction, and the rate they had taken is given
    back, so the next message waits for one turn after the one that went, not three."""
    async with started(aiohttp_client, database_url, keys, 3, **SLOW_PACED) as run:
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        first = await run.first_of_batch_sent(running)
        path = f"/api/v1/announcements/{run.announcement_id}"
        cancelled = await run.world.call("POST", path + "/cancel", role=Role.APPROVER)
        assert cancelled.status == 200
        # Bounded only so that a regression fails instead of hanging for half an hour.
        assert await asyncio.wait_for(running, HELD_S) == 3

        assert sum(run.sent()) == 1
        states = await run.states()
        assert [states[i] for i in range(3) if i != first] == [
            ("cancelled", None, "cancelled", 0)
        ] * 2
        bucket = run.dispatcher._buckets["sms"]
        assert bucket.wait_time(1) <= 1 / SLOW_RATE


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_cancel_gives_back_the_windows_booked_in_the_shared_budget(
    aiohttp_client, database_url, keys
):
    """On PostgreSQL the rate is booked across processes, one 1,000 s window per message
    here. The cancelled requests wake, and their windows are given back: the budget holds
    only the message that left, and this process books its next message there."""
    paced = {**SLOW_PACED, "dispatch": {**SLOW_PACED["dispatch"], "shared_rate_limit": True}}
    async with started(aiohttp_client, database_url, keys, 3, **paced) as run:
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        await run.first_of_batch_sent(running)
        # The batch's requests book one after the other: the first may leave before the
        # last has booked.
        booked: dict[int, int] = {}
        for _ in range(500):
            async with run.world.engine.connect() as conn:
                windows = sa.select(rate_budgets.c.window_start, rate_budgets.c.used)
                booked = dict((await conn.execute(windows)).all())
            if len(booked) == 3:
                break
            await asyncio.sleep(0.01)
        assert sorted(booked.values()) == [1, 1, 1]
        path = f"/api/v1/announcements/{run.announcement_id}/cancel"
        assert (await run.world.call("POST", path, role=Role.APPROVER)).status == 200
        assert await asyncio.wait_for(running, HELD_S) == 3

        assert sum(run.sent()) == 1
        async with run.world.engine.connect() as conn:
            used = dict((await conn.execute(sa.select(rate_budgets.c.window_start,
                                                      rate_budgets.c.used))).all())  # fmt: skip
        first, second, _ = sorted(booked)
        assert used == {window: int(window == first) for window in booked}
        shared = run.dispatcher._shared_rate
        assert await shared.reserve("sms", 1, rate=SLOW_RATE) == second


async def test_an_opt_out_found_while_a_batch_waits_gives_back_only_its_turn(
    aiohttp_client, database_url, keys
):
    """A look that finds one citizen's opt-out wakes the waiting requests: theirs is dropped
    and its turn given back; the other waits on for its own turn."""
    async with started(aiohttp_client, database_url, keys, 3, **SLOW_PACED) as run:
        found = asyncio.Event()
        read = late_stops.LateStops._read

        async def noted(self: late_stops.LateStops) -> None:
            await read(self)
            if self._stopped:
                found.set()

        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        stopped = _other_than(await run.first_of_batch_sent(running))
        bucket = run.dispatcher._buckets["sms"]
        assert bucket.wait_time(1) > 2 / SLOW_RATE  # the two turns taken, and one more
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(late_stops.LateStops, "_read", noted)
            await run.opt_out(keys, stopped)
            await asyncio.wait_for(found.wait(), HELD_S)
        for _ in range(100):  # loop turns, not time: the waiting requests wake
            if bucket.wait_time(1) <= 2 / SLOW_RATE:
                break
            await asyncio.sleep(0)
        assert not running.done() and sum(run.sent()) == 1
        assert bucket.wait_time(1) <= 2 / SLOW_RATE

        # A cancel ends the wait of the other.
        path = f"/api/v1/announcements/{run.announcement_id}/cancel"
        assert (await run.world.call("POST", path, role=Role.APPROVER)).status == 200
        assert await asyncio.wait_for(running, HELD_S) == 3
        states = await run.states()
        assert states[stopped] == ("cancelled", "stopped", "opted out", 0)
        assert sum(run.sent()) == 1


async def cancel_telegram_after_one(gw: Any) -> list[str]:
    """Three chats; the operator cancels once the first has its message. Returns the states
    of the three deliveries once the worker's batch is done."""
    for i, phone in enumerate(numbers(3)):
        await gw.subscriber(phone, channels=["telegram"], telegram_chat_id=5000 + i)
    announcement_id = await start(gw, channels=["telegram"])

    def sent() -> int:
        return sum(1 for r in gw.telegram.received if r.method == "sendmessage")

    running = asyncio.create_task(gw.dispatcher.run_once("telegram"))
    for _ in range(500):
        if sent():
            break
        await asyncio.sleep(0.01)
    assert sent() == 1 and not running.done()
    path = f"/api/v1/announcements/{announcement_id}/cancel"
    cancelled = await gw.world.call("POST", path, role=Role.APPROVER)
    assert cancelled.status == 200
    # Bounded only so that a regression fails instead of hanging for half an hour.
    assert await asyncio.wait_for(running, HELD_S) == 3
    assert sent() == 1
    return sorted(row["state"] for row in await gw.rows(announcement_id))


@pytest.mark.parametrize("rate", [0.5, SLOW_RATE])
async def test_a_cancel_stops_a_telegram_batch_paced_at_the_bot_rate(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path, rate: float
) -> None:
    """Telegram, paced for arrival: the case the look is for. The operator cancels after the
    first message; the other two chats get nothing. At one message every two seconds the
    next request finds the cancel at its turn; at one every 1,000 s the requests waiting for
    the pacer give up their places as soon as the batch's look finds it."""
    settings = SLOW if rate == SLOW_RATE else {}
    async with gateway(
        aiohttp_client, database_url, keys, tmp_path, telegram_rate=rate, **settings
    ) as gw:
        assert await cancel_telegram_after_one(gw) == ["cancelled", "cancelled", "sent"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_cancelled_telegram_batch_gives_back_its_shared_windows(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    """The same with the rate booked across processes: the two windows booked for the chats
    that got nothing are free again."""
    shared = {**SLOW, "shared_rate_limit": True}
    async with gateway(
        aiohttp_client, database_url, keys, tmp_path, telegram_rate=SLOW_RATE, **shared
    ) as gw:
        assert await cancel_telegram_after_one(gw) == ["cancelled", "cancelled", "sent"]
        async with gw.world.engine.connect() as conn:
            used = await conn.scalars(
                sa.select(rate_budgets.c.used).where(rate_budgets.c.channel == "telegram")
            )
            assert sorted(used) == [0, 0, 1]


async def test_an_erased_person_gets_nothing_more_from_a_claimed_batch(
    aiohttp_client, database_url, keys
):
    async with started(aiohttp_client, database_url, keys, 3, **PACED) as run:
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        stopped = _other_than(await run.first_of_batch_sent(running))
        path = f"/api/v1/subscribers/{run.subscriber_ids[stopped]}"
        erased = await run.world.call("DELETE", path, role=Role.ADMIN)
        assert erased.status == 204
        assert await running == 3

        assert run.sent() == [int(i != stopped) for i in range(3)]
        # Unlinked by the erasure: the stopped delivery has no subscriber any more.
        async with run.world.engine.connect() as conn:
            unlinked = await conn.execute(
                sa.select(
                    deliveries.c.state,
                    deliveries.c.error_kind,
                    deliveries.c.error_reason,
                    deliveries.c.attempts,
                ).where(deliveries.c.subscriber_id.is_(None))
            )
            assert [tuple(row) for row in unlinked] == [("cancelled", "stopped", "erased", 0)]


@pytest.mark.parametrize("pace", ["turns due", "turns far"])
async def test_an_announcement_that_expires_while_its_batch_waits_is_not_sent_late(
    aiohttp_client, database_url, keys, pace
):
    """Its requests find the expiry at their turns (one every two seconds), or, with turns
    1,000 s away, the batch's watch tells them as it passes and they end there."""
    clock = ManualClock(T0)
    expiry = {"expires_at": (T0 + timedelta(minutes=5)).isoformat()}
    options = PACED if pace == "turns due" else SLOW_PACED
    async with started(
        aiohttp_client, database_url, keys, 3, fields=expiry, clock=clock, **options
    ) as run:
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        first = await run.first_of_batch_sent(running)
        clock.set(T0 + timedelta(minutes=5))
        assert await asyncio.wait_for(running, HELD_S) == 3

        assert sum(run.sent()) == 1
        states = await run.states()
        rest = [states[i] for i in range(3) if i != first]
        assert rest == [("expired", None, "expired before it could be sent", 0)] * 2
        rate = options["africastalking"]["rate_per_second"]
        assert run.dispatcher._buckets["sms"].wait_time(1) <= 1 / rate  # the rest given back


async def test_a_cancel_frees_a_batch_waiting_out_a_providers_pause(
    aiohttp_client, database_url, keys, monkeypatch
):
    """The batch's first request meets a 429 asking for 1,000 s; the other two come up during
    that pause and wait it out. A cancel ends their wait at the next look: nothing is sent."""
    config = {
        "dispatch": {"enabled": False, **SLOW},
        "africastalking": {"batch_size": 1, "rate_per_second": 1.0},
    }
    waiting = 0
    wait_out_pause = Dispatcher._wait_out_pause

    async def counted(self: Dispatcher, channel_name: str, *args: Any) -> Any:
        nonlocal waiting
        loop = asyncio.get_running_loop()
        waiting += self._paused_until.get(channel_name, 0.0) > loop.time()
        return await wait_out_pause(self, channel_name, *args)

    monkeypatch.setattr(Dispatcher, "_wait_out_pause", counted)
    async with started(aiohttp_client, database_url, keys, 3, **config) as run:
        await run.sim.faults.add(Fault(kind="throttle", seconds=1000))
        running = asyncio.create_task(run.dispatcher.run_once("sms"))
        for _ in range(3000):  # loop turns: until both wait out the pause
            if waiting == 2:
                break
            await asyncio.sleep(0.01)
        assert waiting == 2 and not running.done()
        path = f"/api/v1/announcements/{run.announcement_id}/cancel"
        assert (await run.world.call("POST", path, role=Role.APPROVER)).status == 200
        assert await asyncio.wait_for(running, HELD_S) == 3

        assert sum(run.sent()) == 0 and run.sim.faults.met["throttle"] == 1
        assert [s for s, *_ in (await run.states()).values()] == ["cancelled"] * 3


async def test_a_retry_of_someone_who_opted_out_meanwhile_is_cancelled(
    aiohttp_client, database_url, keys
):
    """The request is out (the provider holds it, then fails it with a 500)
    when the citizen opts out. The worker queues the batch again for a retry, and in that same
    transaction cancels what was stopped meanwhile: the retry sends only to the other one."""
    simulator = SimulatorConfig(outcomes={numbers(1)[0]: "server_error"})
    async with started(
        aiohttp_client, database_url, keys, 2,
        simulator=simulator, dispatch={"enabled": False},
        africastalking={"batch_size": 2, "request_timeout_s": HELD_S + 10},
    ) as run:  # fmt: skip
        running = await run.request_out()
        await run.opt_out(keys, 1)
        run.answer()
        assert await running == 2

        states = await run.states()
        assert states[0][0] == "queued"
        assert states[1] == ("cancelled", "stopped", "opted out", 1)
        run.sim.config = SimulatorConfig(
            api_key=run.sim.config.api_key, currency=run.sim.config.currency
        )
        async with run.world.engine.begin() as conn:
            await conn.execute(sa.update(deliveries).values(next_attempt_at=T0))
        while await run.dispatcher.run_once("sms"):
            pass
        assert run.sent() == [1, 0]


async def test_a_dead_workers_batch_is_not_queued_again_for_who_opted_out(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(T0)
    async with started(
        aiohttp_client, database_url, keys, 2, clock=clock, dispatch={"enabled": False}
    ) as run:
        assert len(await claim_now(run.world.engine, "sms", limit=10, now=clock.now())) == 2
        # The worker that holds them is gone; meanwhile one citizen opts out.
        await run.opt_out(keys, 0)
        clock.set(T0 + timedelta(minutes=2))  # past the 60 s lease
        await run.dispatcher.housekeeping()

        states = await run.states()
        assert states[0] == ("cancelled", "stopped", "opted out", 1)
        assert states[1][0] == "queued"
        while await run.dispatcher.run_once("sms"):
            pass
        assert run.sent() == [0, 1]
        assert "sending" not in {state for state, *_ in (await run.states()).values()}


@asynccontextmanager
async def a_stop_still_committing(run: Started, stop: str, now: datetime) -> AsyncIterator[None]:
    """``stop`` ("opt_out": phones[0] opts out of SMS; "cancel": the broadcast is cancelled)
    done in a transaction of its own, as the API does it, and committed only when the block
    ends: its UPDATE of the queued deliveries has run, and passed the claimed ones by."""
    async with run.world.engine.connect() as conn:
        await conn.begin()
        if stop == "opt_out":
            await subscriber_store.opt_out(
                conn, subscriber_ids=[run.subscriber_ids[0]], channels=["sms"], now=now
            )
        else:
            agency_id = await conn.scalar(
                sa.select(announcements.c.agency_id).where(
                    announcements.c.id == run.announcement_id
                )
            )
            await announcement_store.transition(
                conn, run.announcement_id, agency_id=agency_id, action="cancel", now=now
            )
            await cancel_pending(conn, announcement_id=run.announcement_id, now=now)
        yield
        await conn.commit()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_retry_queued_while_an_opt_out_commits_waits_for_it(
    aiohttp_client, database_url, keys
):
    """PostgreSQL: the worker queues its batch again after a 500 while an opt-out is between
    its UPDATE and its commit, so the worker's look cannot see it yet. The delivery is left to
    housekeeping, which cancels it once the opt-out is in; the other one is retried."""
    clock = ManualClock(T0)
    simulator = SimulatorConfig(outcomes={numbers(1)[0]: "server_error"})
    async with started(
        aiohttp_client, database_url, keys, 2,
        clock=clock, simulator=simulator, dispatch={"enabled": False},
        africastalking={"batch_size": 2, "request_timeout_s": HELD_S + 10},
    ) as run:  # fmt: skip
        running = await run.request_out()
        async with a_stop_still_committing(run, "opt_out", clock.now()):
            run.answer()
            # The record does not wait for the opt-out: it skips the row the opt-out holds.
            assert await asyncio.wait_for(running, 30) == 2
        states = await run.states()
        assert states[0][0] == "sending" and states[1][0] == "queued"

        clock.set(T0 + timedelta(seconds=1))
        await run.dispatcher.housekeeping()
        states = await run.states()
        assert states[0][:3] == ("cancelled", "stopped", "opted out")
        assert states[1][0] == "queued"
        run.sim.config = SimulatorConfig(
            api_key=run.sim.config.api_key, currency=run.sim.config.currency
        )
        clock.set(T0 + timedelta(hours=1))
        while await run.dispatcher.run_once("sms"):
            pass
        assert run.sent() == [0, 1]


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("stop", ["opt_out", "cancel"])
async def test_a_dead_workers_batch_waits_for_a_stop_still_committing(
    aiohttp_client, database_url, keys, stop
):
    """PostgreSQL: housekeeping reclaims a dead worker's batch while a stop is between its
    UPDATE and its commit. What the stop concerns stays out of the queue until the next pass,
    which cancels it; nothing of it is sent."""
    clock = ManualClock(T0)
    async with started(
        aiohttp_client, database_url, keys, 2, clock=clock, dispatch={"enabled": False}
    ) as run:
        assert len(await claim_now(run.world.engine, "sms", limit=10, now=clock.now())) == 2
        clock.set(T0 + timedelta(minutes=2))  # past the 60 s lease
        async with a_stop_still_committing(run, stop, clock.now()):
            await asyncio.wait_for(run.dispatcher.housekeeping(), 30)
        states = await run.states()
        if stop == "opt_out":
            assert states[0][0] == "sending" and states[1][0] == "queued"
        else:
            assert states[0][0] == states[1][0] == "sending"

        clock.set(T0 + timedelta(minutes=2, seconds=1))
        await run.dispatcher.housekeeping()
        states = await run.states()
        if stop == "opt_out":
            assert states[0][:3] == ("cancelled", "stopped", "opted out")
            assert states[1][0] == "queued"
        else:
            assert {states[0][:3], states[1][:3]} == {("cancelled", None, "cancelled")}
        while await run.dispatcher.run_once("sms"):
            pass
        assert run.sent() == ([0, 1] if stop == "opt_out" else [0, 0])


async def test_a_batch_that_goes_at_once_is_not_looked_at_again(
    aiohttp_client, database_url, keys, monkeypatch
):
    """The look costs nothing where there is nothing to catch: a batch that leaves within
    ``LOOK_EVERY_S`` of its claim reads nothing more."""
    looks: list[int] = []
    read = late_stops.LateStops._read

    async def counted(self: late_stops.LateStops) -> None:
        looks.append(1)
        await read(self)

    monkeypatch.setattr(late_stops.LateStops, "_read", counted)
    monkeypatch.setattr(late_stops, "LOOK_EVERY_S", 60.0)
    unpaced = {"dispatch": {"enabled": False}, "africastalking": {"rate_per_second": 1e5}}
    async with started(aiohttp_client, database_url, keys, 250, **unpaced) as run:
        while await run.dispatcher.run_once("sms"):
            pass
        assert sum(run.sent()) == 250
        assert looks == []


async def test_the_requests_that_leave_together_share_one_look(monkeypatch):
    """Every request looks (``LOOK_EVERY_S`` 0), five leave at once: one reading serves all."""
    monkeypatch.setattr(late_stops, "LOOK_EVERY_S", 0.0)
    reads: list[int] = []
    answer = asyncio.Event()

    async def read(self: late_stops.LateStops) -> None:
        reads.append(1)
        await answer.wait()
        self._stopped[3] = late_stops.OPTED_OUT

    monkeypatch.setattr(late_stops.LateStops, "_read", read)
    batch = [Claimed(i, 1, 100 + i, "id", 1, b"", None) for i in range(1, 6)]
    stops = late_stops.LateStops(None, batch)  # type: ignore[arg-type]  # never read here
    leaving = [asyncio.create_task(stops.outcomes([i], T0)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    answer.set()
    found = await asyncio.gather(*leaving)
    assert reads == [1]
    assert [sorted(f) for f in found] == [[], [], [3], [], []]
    assert found[2][3].error_reason == "opted out" and found[2][3].refund
