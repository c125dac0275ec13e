"""An account problem at the provider holds the channel instead of failing the broadcast.

When Africa's Talking refuses a whole request for an account reason (the balance ran out,
the credentials were refused), every later request would be refused alike until an operator
acts. Failing each delivery would turn an agency's empty balance into a million permanent
failures within seconds. Instead the channel is held (``[dispatch] account_hold_s``), its
deliveries wait in the queue with no attempt spent, and the broadcast goes on where it
stopped once the account is put right: each citizen reached exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from channels.simfaults import Fault
from gateway.appkeys import DISPATCHER
from gateway.clock import ManualClock
from gateway.db.schema import channel_holds, deliveries
from gateway.domain import Role
from gateway.outbox.shared_rate_tables import rate_budgets
from tests.gateway.test_dashboard import add_user, browsers  # noqa: F401 - a fixture
from tests.gateway.test_late_stops import T0, started
from tests.support.config import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world

EMPTY = "insufficient_balance"
# One request per claimed batch of 100; the provider's rate does not pace them.
BY_HAND = {"enabled": False, "claim_batch": 100, "account_hold_s": 1.0}
UNPACED = {"rate_per_second": 1e5}
REACHED = {"sent", "delivered"}  # the simulator's delivery report may have come already


PAUSED_FOR_ACCOUNT = r'warta_channel_paused_seconds\{channel="sms",reason="config"\} 0\.\d+'


async def metrics_of(world: Any) -> str:
    async with world.client.get("/metrics") as response:
        assert response.status == 200
        text: str = await response.text()
        return text


def by_hand(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], recipients: int, clock: Any
) -> Any:
    """``recipients`` SMS subscribers and one broadcast, by hand on ``clock``, unpaced."""
    return started(
        aiohttp_client,
        database_url,
        keys,
        recipients,
        clock=clock,
        dispatch=BY_HAND,
        africastalking=UNPACED,
    )


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def held_channels(run: Any) -> list[dict[str, Any]]:
    path = f"/api/v1/announcements/{run.announcement_id}"
    answer = await run.world.call("GET", path, role=Role.OPERATOR)
    assert answer.status == 200, answer.body
    held: list[dict[str, Any]] = answer.body["held_channels"]
    return held


async def refuse(run: Any, refusal: str) -> str:
    """The provider starts refusing every request for ``refusal``; returns its word."""
    if refusal == "balance":
        run.sim.config = replace(run.sim.config, outcomes={p: EMPTY for p in run.phones})
        return "InsufficientBalance"
    await run.sim.faults.add(Fault(kind="status", status=401, count=1000))
    return "authentication refused (HTTP 401)"


def put_right(run: Any) -> None:
    run.sim.config = replace(run.sim.config, outcomes={})
    run.sim.faults.clear()


@pytest.mark.parametrize("refusal", ["balance", "credentials"])
async def test_an_account_refused_holds_the_broadcast_until_it_is_put_right(
    aiohttp_client,
    database_url,
    keys,
    caplog,
    refusal,
    browsers,  # noqa: F811 - the fixture imported above
):
    caplog.set_level(logging.INFO)
    clock = ManualClock(T0)
    async with by_hand(aiohttp_client, database_url, keys, 250, clock) as run:
        word = await refuse(run, refusal)
        loop = asyncio.get_running_loop()
        assert await run.dispatcher.run_once("sms") == 100
        refused_at = loop.time()
        states = await run.states()
        # Refused whole: back in the queue for after the hold, its attempt given back.
        held = [s for s in states.values() if s[1] is not None]
        assert held == [("queued", "config", word, 0)] * 100
        assert (
            sorted(s for s in states.values() if s[1] is None) == [("queued", None, None, 0)] * 150
        )
        assert sum(run.sent()) == 0

        # Operators can alert on it: the channel is listed as paused for its account.
        assert re.search(PAUSED_FOR_ACCOUNT, await metrics_of(run.world))
        # And the broadcast says why it waits, in the API and on the dashboard.
        (hold,) = await held_channels(run)
        assert (hold["channel"], hold["reason"]) == ("sms", word)
        assert instant(hold["since"]) == T0
        assert instant(hold["next_try"]) == T0 + timedelta(seconds=BY_HAND["account_hold_s"])
        operator = browsers(run.world)
        await operator.login(await add_user(run.world, Role.OPERATOR))
        page = await operator.get(f"/dashboard/announcements/{run.announcement_id}/broadcast")
        assert page.status == 200
        assert f'data-held="sms">Kanal sms tertahan: penyedia menolak akun ({word})' in page.text

        # Held: the next claim waits for the hold's end; the 150 still due are not claimed.
        requests = len(run.sim.faults.arrivals)
        second = asyncio.create_task(run.dispatcher.run_once("sms"))
        await asyncio.sleep(0.3)
        assert not second.done()
        assert len(run.sim.faults.arrivals) == requests
        assert [s[0] for s in (await run.states()).values()] == ["queued"] * 250

        # The agency tops up (or fixes its key): the broadcast goes on where it stopped.
        put_right(run)
        clock.set(T0 + timedelta(seconds=2))
        assert await asyncio.wait_for(second, 10) == 100
        # The hold (1 s from the refusal) was waited out, less the refusal's own record.
        assert loop.time() - refused_at >= 0.5
        while await run.dispatcher.run_once("sms"):
            pass
        assert run.sent() == [1] * 250
        assert "warta_channel_paused_seconds{" not in await metrics_of(run.world)
        assert await held_channels(run) == []
        final = (await run.states()).values()
        assert {s[0] for s in final} <= REACHED and {s[1:] for s in final} == {(None, None, 1)}
    refused = [r for r in caplog.records if "refused the account" in r.getMessage()]
    assert len(refused) == 1 and word in refused[0].getMessage()
    assert any("accepts the account again" in r.getMessage() for r in caplog.records)
    assert not any(phone in caplog.text for phone in run.phones)


async def test_requests_waiting_for_their_turn_when_the_account_is_refused_wait_in_the_queue(
    aiohttp_client, database_url, keys
):
    """One message a request at 2/s: the first is refused while the other two wait for
    their turns. They are not sent into the refusal, and not counted as throttled: they
    go back to the queue as held for the account, no attempt spent."""
    clock = ManualClock(T0)
    paced = {"rate_per_second": 2.0, "batch_size": 1}
    hold = {**BY_HAND, "account_hold_s": 100.0}
    async with started(
        aiohttp_client, database_url, keys, 3, clock=clock, dispatch=hold, africastalking=paced
    ) as run:
        await refuse(run, "balance")
        assert await run.dispatcher.run_once("sms") == 3
        states = await run.states()
        assert list(states.values()) == [("queued", "config", "InsufficientBalance", 0)] * 3
        reached = len(run.sim.faults.arrivals)
        assert reached <= 2  # the first, and on PostgreSQL one sharing its window
        # What did not leave gave its share of the rate back.
        if run.dispatcher._shared_rate is None:
            assert run.dispatcher._buckets["sms"].wait_time(1) <= 0.25
        else:
            async with run.world.engine.connect() as conn:
                booked = await conn.scalar(sa.select(sa.func.sum(rate_budgets.c.used)))
            assert booked == reached


async def test_an_account_problem_named_for_some_recipients_retries_them_alone(
    aiohttp_client, database_url, keys, caplog
):
    """The balance ran out within a request: the provider sent to the first recipients and
    refused the last. Those are retried with backoff like a failed connection (not failed
    for good); the channel is not held, as the request was not refused whole."""
    clock = ManualClock(T0)
    async with by_hand(aiohttp_client, database_url, keys, 3, clock) as run:
        last = run.phones[2]
        run.sim.config = replace(run.sim.config, outcomes={last: EMPTY})
        assert await run.dispatcher.run_once("sms") == 3
        states = await run.states()
        assert states[2] == ("queued", "config", "InsufficientBalance", 1)
        assert run.sent() == [1, 1, 0]
        put_right(run)
        clock.set(T0 + timedelta(minutes=1))
        assert await run.dispatcher.run_once("sms") == 1
        assert run.sent() == [1, 1, 1]
        final = (await run.states())[2]
        assert final[0] in REACHED and final[1:] == (None, None, 2)
    assert not any("refused the account" in r.getMessage() for r in caplog.records)


async def test_a_balance_that_runs_out_mid_broadcast_then_a_top_up_reaches_everyone_once(
    aiohttp_client, database_url, keys
):
    """The simulator keeps the account's balance: 130 messages' worth for 250 citizens. The
    second request runs it out part-way (its last 70 recipients refused, retried), the third
    is refused whole (the channel held). After the top-up, everyone has exactly one message."""
    clock = ManualClock(T0)
    async with by_hand(aiohttp_client, database_url, keys, 250, clock) as run:
        run.sim.balance = run.sim.config.cost_per_segment * 130
        while await run.dispatcher.run_once("sms"):
            pass
        states = list((await run.states()).values())
        assert sum(run.sent()) == 130
        waiting = sorted(s for s in states if s[0] == "queued")
        assert (
            waiting
            == [("queued", "config", "InsufficientBalance", 0)] * 50
            + [("queued", "config", "InsufficientBalance", 1)] * 70
        )
        assert run.sim.balance < run.sim.config.cost_per_segment

        run.sim.balance = None  # topped up
        clock.set(T0 + timedelta(minutes=1))
        while await run.dispatcher.run_once("sms"):
            pass
        assert run.sent() == [1] * 250
        assert {s[0] for s in (await run.states()).values()} <= REACHED


@pytest.mark.parametrize(
    ("outcome", "word", "calls_held"),
    [
        # The balance is the account's: calls draw on it too.
        (EMPTY, "InsufficientBalance", True),
        # A sender id is the SMS channel's own setting: calls go on.
        ("invalid_sender", "InvalidSenderId", False),
    ],
)
async def test_a_refused_balance_holds_the_calls_paid_from_it_too(
    aiohttp_client, database_url, keys, tmp_path, caplog, outcome, word, calls_held
):
    caplog.set_level(logging.INFO)
    with_voice = functools.partial(
        make_config,
        data_dir=str(tmp_path),
        # Never dialled here: the voice channel is only held, or not.
        voice={"enabled": True, "caller_number": "+62215550100", "base_url": "http://127.0.0.1:9"},
    )
    async with sms_world(
        aiohttp_client, with_voice, database_url, keys, dispatch=BY_HAND, africastalking=UNPACED
    ) as (world, sim):
        phones = numbers(3)
        await import_numbers(world, phones)
        await broadcast(world)
        dispatcher = world.app[DISPATCHER]
        assert await dispatcher.start_due() == 1
        sim.config = replace(sim.config, outcomes=dict.fromkeys(phones, outcome))
        assert await dispatcher.run_once("sms") == 3

        paused = {name: why for name, (why, _) in dispatcher.paused_channels().items()}
        assert paused == ({"sms": "config", "voice": "config"} if calls_held else {"sms": "config"})
        metrics = await metrics_of(world)
        held_voice = 'warta_channel_paused_seconds{channel="voice",reason="config"}'
        assert (held_voice in metrics) is calls_held
        async with world.engine.connect() as conn:
            rows = await conn.execute(sa.select(channel_holds.c.channel, channel_holds.c.reason))
            stored = {row.channel: row.reason for row in rows}
        assert stored == ({"sms": word, "voice": word} if calls_held else {"sms": word})

        # Put right: once an SMS request goes through, the calls are released with it.
        sim.config = replace(sim.config, outcomes={})
        await asyncio.sleep(BY_HAND["account_hold_s"])
        assert await dispatcher.run_once("sms") == 3
        assert dispatcher.paused_channels() == {}
        async with world.engine.connect() as conn:
            states = (await conn.execute(sa.select(deliveries.c.state))).scalars().all()
            assert set(states) <= REACHED and len(states) == 3
            assert (await conn.execute(sa.select(channel_holds.c.channel))).all() == []
    released = [
        r.getMessage() for r in caplog.records if "from the same account as" in r.getMessage()
    ]
    assert released == (
        ["voice: sends again, paid from the same account as sms"] if calls_held else []
    )
