"""Provider faults end to end: a real gateway sends one announcement by SMS and Telegram at
once while the simulators misbehave on command (``channels.simfaults``).

The gateway is the real aiohttp app with its dispatcher loops running, on a real SQLite file
and a real PostgreSQL; SMS goes through Africa's Talking's SDK, Telegram through
python-telegram-bot. What happened is read from the simulators' records (every send request's
arrival time and recipients, what each accepted per recipient) and from the database:

- 5xx bursts, connection resets, answers cut half-way, hangs past the client's timeout and
  slow answers: every delivery ends delivered (SMS, by report), sent (Telegram has no reports)
  or failed with the right reason; the provider saw each recipient exactly as often as the
  database counts attempts, never more than ``max_attempts``; retries waited at least the
  configured backoff; duplicates only where the provider sent and the answer was lost.
- 429 with ``Retry-After``: no SMS request reaches the provider before it runs out; a batch
  claimed before the 429 waits, or goes back to the queue if the pause would outlive its lease.
- A provider hanging past the client's timeout: every Telegram message of the announcement
  goes out while SMS has reached nobody.
- An outage (the port refuses connections): nothing lost, nothing sent twice, Telegram
  finishes before SMS comes back; with too few attempts left the deliveries fail, saying why.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig as SmsSimConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from channels.simfaults import CONTROL_PATH, Arrival
from channels.telegram.simconfig import SimulatorConfig as TelegramSimConfig
from channels.telegram.simulator import TelegramSimulator
from gateway.appkeys import DISPATCHER
from gateway.db.schema import deliveries, subscribers
from gateway.domain import Role
from tests.support.config import make_config
from tests.support.sms import broadcast, numbers, wait_for
from tests.support.world import World

TG_TOKEN = "987654321:AAH-wartaProviderFaults_abcdefghi"
INVALID_SMS = "+6281299990000"  # the SMS simulator refuses numbers ending in 0000
# Dispatch settings shared by every scenario; a test may override some.
DISPATCH: dict[str, Any] = {
    "workers_per_channel": 2,
    "claim_batch": 10,
    "lease_seconds": 20.0,
    "max_attempts": 6,
    "backoff_base_s": 0.4,
    "backoff_max_s": 2.0,
    "idle_poll_s": 0.05,
}
CLIENT_TIMEOUT_S = 1.0


@dataclass
class Gateway:
    world: World
    sms: AfricasTalkingSimulator
    telegram: TelegramSimulator
    sms_url: str
    telegram_url: str
    dispatch: dict[str, Any]

    async def fault(self, provider: str, **fault: Any) -> None:
        """Schedule a fault through the simulator's control endpoint, as an operator would."""
        base = self.sms_url if provider == "sms" else self.telegram_url
        async with (
            aiohttp.ClientSession() as http,
            http.post(base + CONTROL_PATH, json=fault) as answer,
        ):
            assert answer.status == 201, await answer.text()

    async def clear_faults(self, provider: str) -> None:
        base = self.sms_url if provider == "sms" else self.telegram_url
        async with (
            aiohttp.ClientSession() as http,
            http.delete(base + CONTROL_PATH) as answer,
        ):
            assert answer.status == 200, await answer.text()

    async def rows(self, announcement_id: int) -> list[dict[str, Any]]:
        async with self.world.engine.connect() as conn:
            result = await conn.execute(
                sa.select(
                    deliveries.c.channel,
                    deliveries.c.state,
                    deliveries.c.attempts,
                    deliveries.c.error_kind,
                    deliveries.c.error_reason,
                    deliveries.c.sent_at,
                    subscribers.c.telegram_chat_id,
                    subscribers.c.id.label("subscriber_id"),
                )
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(deliveries.c.announcement_id == announcement_id)
                .order_by(deliveries.c.id)
            )
            return [dict(row) for row in result.mappings()]


@asynccontextmanager
async def gateway(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    *,
    sms_rate: float = 200.0,
    telegram_outcomes: dict[str, Any] | None = None,
    **dispatch: Any,
) -> AsyncIterator[Gateway]:
    sms = AfricasTalkingSimulator(
        SmsSimConfig(api_key=keys["africastalking_api_key"], max_records=10_000)
    )
    telegram = TelegramSimulator(
        TelegramSimConfig(token=TG_TOKEN, outcomes=telegram_outcomes or {}, max_records=10_000)
    )
    sms_url, telegram_url = await sms.start(), await telegram.start()
    settings = {**DISPATCH, **dispatch}
    config = make_config(
        database_url,
        {**keys, "telegram_bot_token": TG_TOKEN},
        africastalking={
            "base_url": sms_url,
            "request_timeout_s": CLIENT_TIMEOUT_S,
            "batch_size": 5,
            "rate_per_second": sms_rate,
        },
        telegram={
            "base_url": telegram_url,
            "request_timeout_s": CLIENT_TIMEOUT_S,
            "per_chat_interval_s": 0.0,
            "rate_per_second": 20.0,
            "register_webhook": False,
        },
        dispatch=settings,
    )
    world = await World.start(aiohttp_client, config)
    sms.delivery_report_url = str(
        world.client.make_url(f"/callbacks/africastalking/{keys['callback_token']}/sms/delivery")
    )
    try:
        yield Gateway(world, sms, telegram, sms_url, telegram_url, settings)
    finally:
        await sms.stop()
        await telegram.stop()


def chat_of(n: int) -> str:
    return str(700_000 + n)


def phone_of(row: dict[str, Any], phones: Sequence[str]) -> str:
    """The number of the citizen a delivery row belongs to, from their chat id."""
    return phones[int(row["telegram_chat_id"]) - 700_001]


async def subscribe_everyone(world: World, phones: Sequence[str]) -> None:
    """Each citizen on SMS and Telegram (chat ids 700001, 700002, …)."""
    lines = ["phone,channels,telegram_chat_id"]
    lines += [f"{phone},sms;telegram,{chat_of(n)}" for n, phone in enumerate(phones, start=1)]
    answer = await world.call(
        "POST",
        "/api/v1/subscribers/import",
        role=Role.OPERATOR,
        data="\n".join(lines) + "\n",
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status == 200, answer.body
    assert answer.body["errors"] == [], answer.body["errors"][:3]


async def settle(gw: Gateway, announcement_id: int, *, timeout: float) -> None:
    """Wait until the announcement is done and every SMS sent has its delivery report."""

    def settled(counts: dict[str, int], body: dict[str, Any]) -> bool:
        sms = next((c["counts"] for c in body["stats"] if c["channel"] == "sms"), {})
        return body["status"] == "done" and sms.get("sent", 0) == 0

    await wait_for(gw.world, announcement_id, settled, timeout=timeout)
    await gw.sms.wait_for_reports()


def as_utc(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they are stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def per_recipient(arrivals: Sequence[Arrival]) -> dict[str, list[Arrival]]:
    seen: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        for recipient in arrival.recipients:
            seen[recipient].append(arrival)
    return seen


def check_backoff(arrivals: Sequence[Arrival], dispatch: dict[str, Any]) -> int:
    """Every retry reached the provider no sooner than the shortest backoff allowed for it
    (the dispatcher waits a random share between half and all of the attempt's ceiling).
    Returns how many retries were checked."""
    checked = 0
    for recipient, seen in per_recipient(arrivals).items():
        for attempt, (before, after) in enumerate(itertools.pairwise(seen), start=1):
            ceiling = min(
                dispatch["backoff_max_s"], dispatch["backoff_base_s"] * 2 ** (attempt - 1)
            )
            gap = after.at - before.at
            assert gap >= ceiling / 2, (recipient[-4:], attempt, gap, ceiling / 2)
            checked += 1
    return checked


def lost_answers(arrivals: Sequence[Arrival]) -> Counter[str]:
    """Recipients of requests the provider processed but whose answer the client lost."""
    lost: Counter[str] = Counter()
    for arrival in arrivals:
        if arrival.fault == "cut":
            lost.update(arrival.recipients)
    return lost


def assert_sent_twice_only_unanswered(sim: AfricasTalkingSimulator) -> None:
    """Nothing sent twice, except a recipient of a request the provider processed after the
    client had given up waiting (the gateway and this simulator share one event loop, which a
    loaded machine can hold up past the 1 s client timeout): the gateway never heard of that
    send, and sending again is what it must do."""
    extra = sim.sent_count.duplicates()
    unanswered = sim.faults.unanswered
    assert all(n - 1 <= unanswered[r] for r, n in extra.items()), (extra, unanswered)


async def test_bursts_resets_timeouts_and_slow_answers_end_delivered_or_failed(
    database_url: str, aiohttp_client: Any, keys: dict[str, str]
) -> None:
    phones = [*numbers(29), INVALID_SMS]
    never = chat_of(7)  # Telegram answers 500 to this chat every time: retries run out
    async with gateway(
        aiohttp_client, database_url, keys, telegram_outcomes={never: "server_error"}
    ) as gw:
        await subscribe_everyone(gw.world, phones)
        for provider in ("sms", "telegram"):
            await gw.fault(provider, kind="status", status=503, count=3)
            await gw.fault(provider, kind="reset", count=2)
            await gw.fault(provider, kind="cut")
            await gw.fault(provider, kind="hang", seconds=CLIENT_TIMEOUT_S * 3)
            await gw.fault(provider, kind="slow", seconds=CLIENT_TIMEOUT_S / 4, count=2)
            await gw.fault(provider, kind="status", status=502)
        approved = await broadcast(gw.world, channels=["sms", "telegram"])
        await settle(gw, approved["id"], timeout=90)
        rows = await gw.rows(approved["id"])
        max_attempts = gw.dispatch["max_attempts"]

        for sim in (gw.sms, gw.telegram):
            assert list(sim.faults.pending) == [], "every scheduled fault was met"
            assert sim.faults.met["status"] == 4
            assert sim.faults.met["reset"] == 2
        sms_rows = {r["subscriber_id"]: r for r in rows if r["channel"] == "sms"}
        tg_rows = {r["subscriber_id"]: r for r in rows if r["channel"] == "telegram"}
        assert len(sms_rows) == len(tg_rows) == len(phones)

        # Every delivery ends delivered/sent or failed with the right reason.
        by_state = Counter((r["channel"], r["state"], r["error_kind"]) for r in rows)
        assert by_state == {
            ("sms", "delivered", None): len(phones) - 1,
            ("sms", "failed", "rejected"): 1,
            ("telegram", "sent", None): len(phones) - 1,
            ("telegram", "failed", "connection"): 1,
        }, by_state
        (invalid,) = [r for r in sms_rows.values() if r["state"] == "failed"]
        assert invalid["error_reason"] == "InvalidPhoneNumber"
        (exhausted,) = [r for r in tg_rows.values() if r["state"] == "failed"]
        assert str(exhausted["telegram_chat_id"]) == never
        assert exhausted["attempts"] == max_attempts

        # The providers saw each recipient exactly as often as the database counts attempts.
        sms_seen = per_recipient(gw.sms.faults.arrivals)
        tg_seen = per_recipient(gw.telegram.faults.arrivals)
        for row in sms_rows.values():
            phone = phone_of(row, phones)
            assert len(sms_seen[phone]) == row["attempts"] <= max_attempts
        for row in tg_rows.values():
            assert len(tg_seen[str(row["telegram_chat_id"])]) == row["attempts"] <= max_attempts
        assert len(tg_seen[never]) == max_attempts
        assert check_backoff(gw.sms.faults.arrivals, gw.dispatch) >= 5
        assert check_backoff(gw.telegram.faults.arrivals, gw.dispatch) >= 5 + max_attempts - 1

        # Nothing lost; a second copy only where the provider sent and the answer was lost.
        for sim, wanted in (
            (gw.sms, [p for p in phones if p != INVALID_SMS]),
            (gw.telegram, [chat_of(n) for n in range(1, len(phones) + 1) if chat_of(n) != never]),
        ):
            sent = dict(sim.sent_count.items())
            assert set(sent) == set(wanted)
            extra = {r: n - 1 for r, n in sent.items() if n > 1}
            # Cut answers, and answers to clients that had given up (under load a slow one).
            lost = lost_answers(sim.faults.arrivals) + sim.faults.unanswered
            assert all(extra[r] <= lost[r] for r in extra), (len(extra), len(lost))


async def test_retry_after_holds_back_every_request_to_that_provider(
    database_url: str, aiohttp_client: Any, keys: dict[str, str]
) -> None:
    # 5 SMS a second in requests of 5 with 4 workers: once the first second's burst is
    # spent, the workers hold claimed batches queued for the rate a second apart; the 429
    # meets the third request, while later ones wait, which is when they could slip through.
    phones = numbers(30)
    retry_after = 3
    async with gateway(
        aiohttp_client, database_url, keys, sms_rate=5.0, workers_per_channel=4
    ) as gw:
        await subscribe_everyone(gw.world, phones)
        await gw.fault("sms", kind="slow", seconds=0.05, count=2)
        await gw.fault("sms", kind="throttle", seconds=retry_after)
        approved = await broadcast(gw.world, channels=["sms", "telegram"])
        await settle(gw, approved["id"], timeout=90)
        rows = await gw.rows(approved["id"])

    arrivals = list(gw.sms.faults.arrivals)
    (throttled,) = [a for a in arrivals if a.fault == "throttle"]
    too_soon = [
        round(a.at - throttled.at, 3)
        for a in arrivals
        # A request already on its way when the 429 was answered cannot have known; on a
        # loaded machine one can reach the simulator's handler a few hundred ms late.
        if throttled.at + 0.5 < a.at < throttled.at + retry_after
    ]
    assert too_soon == [], too_soon
    assert any(a.at >= throttled.at + retry_after for a in arrivals), "then everything goes"
    assert Counter((r["channel"], r["state"]) for r in rows) == {
        ("sms", "delivered"): len(phones),
        ("telegram", "sent"): len(phones),
    }
    assert_sent_twice_only_unanswered(gw.sms)
    assert set(dict(gw.sms.sent_count.items())) == set(phones)


@pytest.mark.parametrize("max_attempts", [5, 1])
async def test_a_claimed_batch_is_handed_back_when_the_pause_would_outlive_its_lease(
    database_url: str, aiohttp_client: Any, keys: dict[str, str], max_attempts: int
) -> None:
    # Two claims of 5 at 5 SMS a second: the second waits a second for the rate while the
    # first meets a 429 asking for 4 s, longer than half the 4 s lease. Waiting would let the
    # lease run out (maintenance queues the batch again: it could go out twice), so the
    # second batch goes back to the queue unsent, to be tried after the pause, and gets its
    # attempt back: with one attempt allowed the batch that met the 429 fails, the one never
    # sent stays queued (before attempts were given back, it failed too). Paced by this
    # process's bucket: the second claim's turn is then a whole second after the first's.
    # The budget shared on PostgreSQL books wall-clock seconds, and a test that starts late
    # in one would see the second window open before the 429 came back.
    async with gateway(
        aiohttp_client,
        database_url,
        keys,
        sms_rate=5.0,
        enabled=False,
        claim_batch=5,
        lease_seconds=4.0,
        max_attempts=max_attempts,
        shared_rate_limit=False,
    ) as gw:
        await subscribe_everyone(gw.world, numbers(10))
        await gw.fault("sms", kind="throttle", seconds=4)
        approved = await broadcast(gw.world, channels=["sms"])
        dispatcher = gw.world.app[DISPATCHER]
        assert await dispatcher.start_due() == 1
        began = dispatcher.clock.now()
        assert await asyncio.gather(dispatcher.run_once("sms"), dispatcher.run_once("sms")) == [
            5,
            5,
        ]
        async with gw.world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        deliveries.c.state,
                        deliveries.c.attempts,
                        deliveries.c.error_kind,
                        deliveries.c.error_reason,
                        deliveries.c.next_attempt_at,
                    ).where(
                        deliveries.c.announcement_id == approved["id"],
                        deliveries.c.channel == "sms",
                    )
                )
            ).all()

    assert [a.fault for a in gw.sms.faults.arrivals] == ["throttle"]
    assert gw.sms.sent_count.total() == 0
    met_the_429 = "queued" if max_attempts > 1 else "failed"
    assert Counter((r.state, r.attempts, r.error_kind, r.error_reason) for r in rows) == {
        (met_the_429, 1, "throttled", "HTTP 429"): 5,
        ("queued", 0, "throttled", "channel paused after HTTP 429"): 5,
    }
    # Nothing queued comes back before the provider's Retry-After ran out.
    queued = [r for r in rows if r.state == "queued"]
    assert all(as_utc(r.next_attempt_at) >= began + timedelta(seconds=2.5) for r in queued)


async def test_attempts_that_run_out_in_an_outage_end_failed_saying_why(
    database_url: str, aiohttp_client: Any, keys: dict[str, str]
) -> None:
    phones = numbers(12)
    async with gateway(aiohttp_client, database_url, keys, max_attempts=3) as gw:
        await subscribe_everyone(gw.world, phones)
        await gw.fault("sms", kind="down", seconds=30)
        approved = await broadcast(gw.world, channels=["sms", "telegram"])
        await settle(gw, approved["id"], timeout=60)
        rows = await gw.rows(approved["id"])
        assert gw.sms.faults.down_until > time.monotonic(), "the outage outlasted the test"

    assert Counter(
        (r["channel"], r["state"], r["error_kind"], r["error_reason"], r["attempts"])
        for r in rows
        if r["channel"] == "sms"
    ) == {("sms", "failed", "connection", "connection error", 3): len(phones)}
    assert gw.sms.sent_count.total() == 0
    assert Counter(r["state"] for r in rows if r["channel"] == "telegram") == {"sent": len(phones)}


async def test_a_hanging_provider_does_not_hold_up_the_other_channel(
    database_url: str, aiohttp_client: Any, keys: dict[str, str]
) -> None:
    phones = numbers(30)
    async with gateway(aiohttp_client, database_url, keys, max_attempts=20) as gw:
        await subscribe_everyone(gw.world, phones)
        # Every SMS request hangs past the client's timeout until the faults are cleared.
        await gw.fault("sms", kind="hang", seconds=CLIENT_TIMEOUT_S * 2, count=10_000)
        approved = await broadcast(gw.world, channels=["sms", "telegram"])

        def telegram_done(counts: dict[str, int], body: dict[str, Any]) -> bool:
            per_channel = {c["channel"]: c["counts"] for c in body["stats"]}
            return per_channel.get("telegram", {}).get("sent", 0) == len(phones)

        await wait_for(gw.world, approved["id"], telegram_done, timeout=60)
        # By order of events: every Telegram message went out while SMS was hanging and had
        # reached nobody.
        assert gw.sms.faults.met["hang"] >= 1
        assert gw.sms.sent_count.total() == 0
        await gw.clear_faults("sms")
        await settle(gw, approved["id"], timeout=60)
        rows = await gw.rows(approved["id"])

    assert Counter((r["channel"], r["state"]) for r in rows) == {
        ("sms", "delivered"): len(phones),
        ("telegram", "sent"): len(phones),
    }
    assert_sent_twice_only_unanswered(gw.sms)
    assert gw.telegram.sent_count == Counter(chat_of(n) for n in range(1, len(phones) + 1))


@pytest.mark.slow
async def test_a_provider_down_for_a_minute_loses_nothing_and_sends_nothing_twice(
    database_url: str, aiohttp_client: Any, keys: dict[str, str], backend: str
) -> None:
    # The full minute on PostgreSQL; 15 s on SQLite keeps the suite's time in check (the
    # dispatcher code is the same, only the claim and record statements differ).
    outage = 60.0 if backend == "postgres" else 15.0
    phones = numbers(40)
    # Attempts enough to outlast the outage: 0.5, 1, 2, then 2-4 s between attempts.
    dispatch = {"max_attempts": 40, "backoff_base_s": 1.0, "backoff_max_s": 4.0}
    async with gateway(aiohttp_client, database_url, keys, **dispatch) as gw:
        await subscribe_everyone(gw.world, phones)
        await gw.fault("sms", kind="down", seconds=outage)
        came_back = gw.sms.faults.down_until
        approved = await broadcast(gw.world, channels=["sms", "telegram"])
        await settle(gw, approved["id"], timeout=outage + 60)
        rows = await gw.rows(approved["id"])

    # Nothing lost, nothing sent twice, everything delivered once the provider was back.
    assert_sent_twice_only_unanswered(gw.sms)
    assert set(dict(gw.sms.sent_count.items())) == set(phones)
    assert Counter((r["channel"], r["state"]) for r in rows) == {
        ("sms", "delivered"): len(phones),
        ("telegram", "sent"): len(phones),
    }
    assert all(r["attempts"] <= dispatch["max_attempts"] for r in rows)
    assert max(r["attempts"] for r in rows if r["channel"] == "sms") > 3, "it really retried"
    # Per-channel isolation, by order of events: every Telegram message was accepted before
    # the first SMS went out, and none waited for the outage to end.
    telegram_last = max(a.at for a in gw.telegram.faults.arrivals)
    sms_first = min(a.at for a in gw.sms.faults.arrivals if a.fault is None)
    assert telegram_last < came_back <= sms_first
    sms_sent = min(r["sent_at"] for r in rows if r["channel"] == "sms")
    assert max(r["sent_at"] for r in rows if r["channel"] == "telegram") < sms_sent
