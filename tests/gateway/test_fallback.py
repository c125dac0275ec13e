"""Fallback across channels: the real app, the real channels against their simulators.

The dispatcher's loops are off (``dispatch.enabled = false``) and the tests drive it by hand
(``start_due``, ``run_once`` per channel, ``housekeeping``) on a ``ManualClock``, so every step
is deterministic and no test sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig as SmsSimConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from channels.meta.simulator import MetaSimulator
from channels.meta.simulator import SimulatorConfig as MetaSimConfig
from channels.telegram.simconfig import SimulatorConfig as TelegramSimConfig
from channels.telegram.simulator import TelegramSimulator
from gateway.appkeys import CONFIG, DISPATCHER
from gateway.clock import ManualClock
from gateway.db.schema import deliveries, subscriber_channels
from gateway.domain import DeliveryState, Role
from gateway.outbox import claims, fallback
from gateway.outbox.claims import Outcome
from gateway.outbox.dispatcher import Dispatcher
from gateway.pricing import Tariff
from tests.support.config import make_config
from tests.support.plans import captured, plans
from tests.support.sms import broadcast, claim_now, import_numbers, numbers, wait_for
from tests.support.world import World

TG_TOKEN = "987654321:AAH-wartaFallbackToken_abcdefghijk"
WA_PHONE_ID = "106540352242922"
WA_TOKEN = "EAAwa-fallback-token-5b1c9e0d7f"
APP_SECRET = "app-secret-fallback-0c4d7e2a"
TEMPLATE = "warta_announcement"
INVALID_SMS = "+6281299990000"  # the SMS simulator refuses numbers ending in 0000


@dataclass
class Gateway:
    world: World
    clock: ManualClock
    dispatcher: Dispatcher
    sms: AfricasTalkingSimulator
    telegram: TelegramSimulator
    whatsapp: MetaSimulator

    async def run(self, *channels: str) -> None:
        """Send everything queued on ``channels``, in that order, until nothing is left."""
        for name in channels:
            while await self.dispatcher.run_once(name):
                pass

    async def rows(self, announcement_id: int) -> list[dict[str, Any]]:
        async with self.world.engine.connect() as conn:
            result = await conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.subscriber_id,
                    deliveries.c.channel,
                    deliveries.c.state,
                    deliveries.c.error_kind,
                    deliveries.c.fallback_of,
                    deliveries.c.priority,
                    deliveries.c.segments,
                    deliveries.c.cost,
                )
                .where(deliveries.c.announcement_id == announcement_id)
                .order_by(deliveries.c.id)
            )
            return [dict(row) for row in result.mappings()]

    async def subscriber(self, phone: str, **fields: Any) -> int:
        answer = await self.world.subscribe(phone, **fields)
        assert answer.status == 201, answer.body
        return int(answer.body["id"])

    async def stats(self, announcement_id: int) -> dict[str, Any]:
        answer = await self.world.call(
            "GET", f"/api/v1/announcements/{announcement_id}", role=Role.OPERATOR
        )
        assert answer.status == 200, answer.body
        body: dict[str, Any] = answer.body
        return body


@asynccontextmanager
async def gateway(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    tmp_path: Path,
    *,
    whatsapp_outcomes: dict[str, str] | None = None,
    telegram_outcomes: dict[str, Any] | None = None,
    sms_reports: dict[str, str] | None = None,
    voice: bool = False,
    telegram_rate: float | None = None,
    **dispatch: Any,
) -> AsyncIterator[Gateway]:
    sms = AfricasTalkingSimulator(
        replace(
            SmsSimConfig(),
            api_key=keys["africastalking_api_key"],
            delivery_report_outcomes=sms_reports or {},
        )
    )
    telegram = TelegramSimulator(
        TelegramSimConfig(token=TG_TOKEN, outcomes=telegram_outcomes or {})
    )
    whatsapp = MetaSimulator(
        MetaSimConfig(
            phone_number_id=WA_PHONE_ID,
            whatsapp_token=WA_TOKEN,
            app_secret=APP_SECRET,
            templates=frozenset({(TEMPLATE, "id")}),
            outcomes=whatsapp_outcomes or {},
        )
    )
    urls = [await sim.start() for sim in (sms, telegram, whatsapp)]
    clock = ManualClock()
    extra: dict[str, Any] = {}
    if voice:
        # Only queued in these tests, never called: the address is never dialled.
        extra["voice"] = {
            "enabled": True,
            "caller_number": "+62215550100",
            "base_url": "http://127.0.0.1:9",
        }
    config = make_config(
        database_url,
        {
            **keys,
            "telegram_bot_token": TG_TOKEN,
            "whatsapp_access_token": WA_TOKEN,
            "meta_app_secret": APP_SECRET,
            "meta_verify_token": "verify-fallback",
        },
        data_dir=str(tmp_path),
        africastalking={"base_url": urls[0], "request_timeout_s": 2.0},
        telegram={
            "base_url": urls[1],
            "per_chat_interval_s": 0.0,
            "register_webhook": False,
            **({} if telegram_rate is None else {"rate_per_second": telegram_rate}),
        },
        whatsapp={
            "phone_number_id": WA_PHONE_ID,
            "base_url": urls[2],
            "template_name": TEMPLATE,
            "template_languages": {"id": "id"},
        },
        dispatch={"enabled": False, **dispatch},
        **extra,
    )
    world = await World.start(aiohttp_client, config, clock=clock)
    sms.delivery_report_url = str(
        world.client.make_url(f"/callbacks/africastalking/{keys['callback_token']}/sms/delivery")
    )
    dispatcher = world.app[DISPATCHER]
    for name in ("sms", "telegram", "whatsapp"):
        await dispatcher.channels[name].start()
    try:
        yield Gateway(world, clock, dispatcher, sms, telegram, whatsapp)
    finally:
        for name in ("sms", "telegram", "whatsapp"):
            await dispatcher.channels[name].close()
        for sim in (sms, telegram, whatsapp):
            await sim.stop()


async def start(gw: Gateway, **fields: Any) -> int:
    approved = await broadcast(gw.world, **fields)
    assert await gw.dispatcher.start_due() == 1
    return int(approved["id"])


async def test_rejected_whatsapp_falls_back_to_the_next_channel_by_preference(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    sms_next, telegram_next = numbers(2, start=501)
    async with gateway(
        aiohttp_client,
        database_url,
        keys,
        tmp_path,
        whatsapp_outcomes={sms_next: "outside_window", telegram_next: "undeliverable"},
    ) as gw:
        ani = await gw.subscriber(sms_next, channels=["whatsapp", "sms"])
        budi = await gw.subscriber(
            telegram_next, channels=["whatsapp", "telegram", "sms"], telegram_chat_id=4242
        )
        announcement = await start(gw, channels=["whatsapp"])

        await gw.run("whatsapp")
        rows = await gw.rows(announcement)
        first = {(r["subscriber_id"], r["channel"]): r for r in rows}
        assert [(r["subscriber_id"], r["channel"], r["state"]) for r in rows] == [
            (ani, "whatsapp", "failed"),
            (budi, "whatsapp", "failed"),
            (ani, "sms", "queued"),
            (budi, "telegram", "queued"),
        ]
        assert first[ani, "sms"]["fallback_of"] == first[ani, "whatsapp"]["id"]
        assert first[budi, "telegram"]["fallback_of"] == first[budi, "whatsapp"]["id"]
        assert first[ani, "sms"]["segments"] == 1

        await gw.run("sms", "telegram")
        await gw.sms.wait_for_reports()
        body = await wait_for(
            gw.world, announcement, lambda counts, _: counts.get("delivered", 0) == 1
        )

    assert gw.sms.sent_count.total() == 1
    assert [r.params["chat_id"] for r in gw.telegram.received if r.method == "sendmessage"] == [
        "4242"
    ]
    counts = {c["channel"]: c["counts"] for c in body["stats"]}
    assert (counts["whatsapp"]["failed"], counts["sms"]["delivered"]) == (2, 1)
    assert counts["telegram"]["sent"] == 1
    assert body["reached_by_fallback"] == 2


async def test_blocked_telegram_bot_falls_back_to_sms_and_opts_telegram_out(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    (phone,) = numbers(1, start=601)
    async with gateway(
        aiohttp_client, database_url, keys, tmp_path, telegram_outcomes={"777": "blocked"}
    ) as gw:
        citizen = await gw.subscriber(phone, channels=["telegram"], telegram_chat_id=777)
        announcement = await start(gw, channels=["telegram"])

        await gw.run("telegram")
        rows = await gw.rows(announcement)
        listed = await gw.world.call("GET", "/api/v1/subscribers", role=Role.OPERATOR)
        await gw.run("sms")
        await gw.sms.wait_for_reports()
        body = await wait_for(
            gw.world, announcement, lambda counts, _: counts.get("delivered", 0) == 1
        )

    assert [(r["channel"], r["state"], r["error_kind"]) for r in rows] == [
        ("telegram", "failed", "stopped"),
        ("sms", "queued", None),
    ]
    assert rows[1]["fallback_of"] == rows[0]["id"]
    (person,) = listed.body["items"]
    assert (person["id"], person["channels"], person["opted_out"]) == (citizen, [], ["telegram"])
    assert gw.sms.sent_count.total() == 1
    assert body["reached_by_fallback"] == 1


async def test_unconfirmed_emergency_falls_back_after_the_configured_time(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    warned, informed = numbers(2, start=701)
    async with gateway(
        aiohttp_client, database_url, keys, tmp_path, fallback_unconfirmed_s=120
    ) as gw:
        await gw.subscriber(warned, channels=["telegram", "sms"], telegram_chat_id=11)
        emergency = await start(gw, channels=["telegram"], urgency="emergency")
        await gw.subscriber(informed, channels=["telegram", "sms"], telegram_chat_id=12)
        # The second subscriber arrives after the emergency: only the normal one reaches them.
        normal = await start(gw, channels=["telegram"])
        await gw.run("telegram")

        gw.clock.advance(timedelta(seconds=119))
        await gw.dispatcher.housekeeping()
        too_early = [r["channel"] for r in await gw.rows(emergency)]
        gw.clock.advance(timedelta(seconds=2))
        await gw.dispatcher.housekeeping()
        emergency_rows = await gw.rows(emergency)
        normal_rows = await gw.rows(normal)
        gw.clock.advance(timedelta(seconds=600))
        await gw.dispatcher.housekeeping()  # nothing more: one stand-in per delivery
        later = await gw.rows(emergency)
        await gw.run("sms")

    assert too_early == ["telegram"]
    assert [(r["channel"], r["state"], r["priority"]) for r in emergency_rows] == [
        ("telegram", "sent", 0),
        ("sms", "queued", 0),
    ]
    assert emergency_rows[1]["fallback_of"] == emergency_rows[0]["id"]
    assert [(r["channel"], r["state"]) for r in normal_rows] == [
        ("telegram", "sent"),
        ("telegram", "sent"),
    ]
    assert len(later) == 2
    assert gw.sms.sent_count.total() == 1


async def test_a_failure_reported_later_falls_back_at_housekeeping(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    (phone,) = numbers(1, start=901)
    async with gateway(
        aiohttp_client, database_url, keys, tmp_path, sms_reports={phone: "Failed:DeliveryFailure"}
    ) as gw:
        await gw.subscriber(phone, channels=["sms", "telegram"], telegram_chat_id=91)
        announcement = await start(gw, channels=["sms"])
        await gw.run("sms")
        await gw.sms.wait_for_reports()
        await wait_for(gw.world, announcement, lambda counts, _: counts.get("failed", 0) == 1)
        before = await gw.rows(announcement)
        await gw.dispatcher.housekeeping()
        await gw.run("telegram")
        rows = await gw.rows(announcement)
        body = await gw.stats(announcement)

    assert [r["channel"] for r in before] == ["sms"]
    assert [(r["channel"], r["state"], r["fallback_of"]) for r in rows] == [
        ("sms", "failed", None),
        ("telegram", "sent", rows[0]["id"]),
    ]
    assert body["reached_by_fallback"] == 1


async def test_no_fallback_to_a_delivered_channel_nor_an_opted_out_one(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    reached, stopped_sms = numbers(2, start=801)
    async with gateway(
        aiohttp_client,
        database_url,
        keys,
        tmp_path,
        whatsapp_outcomes={reached: "outside_window", stopped_sms: "outside_window"},
    ) as gw:
        # Reached by SMS already: no second SMS, and no Telegram message either.
        await gw.subscriber(reached, channels=["whatsapp", "sms", "telegram"], telegram_chat_id=5)
        quiet = await gw.subscriber(stopped_sms, channels=["whatsapp", "sms"])
        async with gw.world.engine.begin() as conn:
            await conn.execute(
                sa.update(subscriber_channels)
                .where(
                    subscriber_channels.c.subscriber_id == quiet,
                    subscriber_channels.c.channel == "sms",
                )
                .values(opted_out_at=gw.clock.now())
            )
        announcement = await start(gw, channels=["whatsapp", "sms"])
        await gw.run("sms")
        await gw.sms.wait_for_reports()
        await wait_for(gw.world, announcement, lambda counts, _: counts.get("delivered", 0) == 1)
        await gw.run("whatsapp", "telegram")
        gw.clock.advance(timedelta(seconds=3600))
        await gw.dispatcher.housekeeping()
        rows = await gw.rows(announcement)
        body = await gw.stats(announcement)

    assert sorted((r["channel"], r["state"]) for r in rows) == [
        ("sms", "delivered"),
        ("whatsapp", "failed"),
        ("whatsapp", "failed"),
    ]
    assert [r for r in gw.telegram.received if r.method == "sendmessage"] == []
    assert body["reached_by_fallback"] == 0


async def test_voice_is_the_last_resort_of_an_emergency_and_never_of_a_normal_announcement(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    async with gateway(
        aiohttp_client,
        database_url,
        keys,
        tmp_path,
        telegram_outcomes={"31": "blocked"},
        voice=True,
    ) as gw:
        assert "voice" in gw.dispatcher.channels
        await gw.subscriber(INVALID_SMS, channels=["telegram"], telegram_chat_id=31)
        normal = await start(gw, channels=["telegram"])
        emergency = await start(gw, channels=["telegram"], urgency="emergency")
        await gw.run("telegram", "sms")
        normal_rows = await gw.rows(normal)
        emergency_rows = await gw.rows(emergency)
        minutes = await gw.dispatcher.texts.call_minutes_of(emergency)
        per_minute = Tariff.for_calls(gw.world.app[CONFIG].pricing).price("ID", None)

    assert [(r["channel"], r["state"]) for r in normal_rows] == [
        ("telegram", "failed"),
        ("sms", "failed"),
    ]
    assert [(r["channel"], r["state"]) for r in emergency_rows] == [
        ("telegram", "failed"),
        ("sms", "failed"),
        ("voice", "queued"),
    ]
    chain = [r["fallback_of"] for r in emergency_rows]
    assert chain == [None, emergency_rows[0]["id"], emergency_rows[1]["id"]]
    # The stand-in call carries the estimate fan-out would give a call of the announcement:
    # its length in the subscriber's language, billed by the started minute.
    assert minutes["id"] >= 1 and minutes["id"] == int(minutes["id"])
    assert emergency_rows[2]["cost"] == per_minute * minutes["id"] > 0


@pytest.mark.parametrize("size", [2000])
async def test_a_batch_of_failures_falls_back_in_a_bounded_number_of_statements(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path, size: int
) -> None:
    async with gateway(aiohttp_client, database_url, keys, tmp_path) as gw:
        await import_numbers(gw.world, numbers(size, start=10_001), channels="whatsapp;sms")
        announcement = await start(gw, channels=["whatsapp"])
        now = gw.clock.now()
        batch = await claim_now(gw.world.engine, "whatsapp", limit=size, now=now)
        assert len(batch) == size
        rules = fallback.FallbackRules(
            channels=frozenset({"sms", "telegram", "whatsapp"}),
            unconfirmed_after=timedelta(seconds=300),
        )
        ids = [item.id for item in batch]
        outcomes = [
            Outcome(i, DeliveryState.FAILED, error_kind="rejected", error_reason="x") for i in ids
        ]
        prepared = claims.prepare_outcomes(outcomes, dialect=gw.world.engine.dialect.name)
        with captured(gw.world.engine) as statements:
            async with gw.world.engine.begin() as conn:
                await conn.run_sync(claims.write_outcomes, prepared, now=now)
                queued = await conn.run_sync(
                    fallback.queue_fallbacks_among, ids, now=now, rules=rules
                )
        await gw.dispatcher.housekeeping()  # the sweep sees them too, and adds nothing
        rows = await gw.rows(announcement)

    assert queued == size
    # The outcomes' UPDATE and the stand-ins' INSERT, whatever the batch's size.
    inserts = [s for s, _ in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert len(statements) == 2
    stand_ins = [r for r in rows if r["channel"] == "sms"]
    assert len(stand_ins) == size
    assert {r["fallback_of"] for r in stand_ins} == set(ids)


async def test_stand_ins_are_priced_by_the_rules_of_their_own_batch(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    """The batch statement is built once per set of rules and kept: a batch under other
    rules (another tariff, another announcement's segments) must not get the kept one's."""
    async with gateway(aiohttp_client, database_url, keys, tmp_path) as gw:
        await import_numbers(gw.world, numbers(3, start=20_001), channels="whatsapp;sms")
        priced: dict[int, list[tuple[int, Decimal | None]]] = {}
        for price, segments in ((Decimal("100"), 1), (Decimal("250"), 3), (Decimal("100"), 1)):
            announcement = await start(gw, channels=["whatsapp"])
            now = gw.clock.now()
            batch = await claim_now(gw.world.engine, "whatsapp", limit=10, now=now)
            ids = [item.id for item in batch]
            assert len(ids) == 3
            rules = fallback.FallbackRules(
                channels=frozenset({"sms", "whatsapp"}),
                unconfirmed_after=timedelta(seconds=300),
                tariff=Tariff(currency="IDR", default=price),
                sms_segments={announcement: {"id": segments, "en": segments}},
            )
            outcomes = [
                Outcome(i, DeliveryState.FAILED, error_kind="rejected", error_reason="x")
                for i in ids
            ]
            prepared = claims.prepare_outcomes(outcomes, dialect=gw.world.engine.dialect.name)
            async with gw.world.engine.begin() as conn:
                await conn.run_sync(claims.write_outcomes, prepared, now=now)
                assert (
                    await conn.run_sync(fallback.queue_fallbacks_among, ids, now=now, rules=rules)
                    == 3
                )
                # Twice the same batch: each failure already has its stand-in.
                assert (
                    await conn.run_sync(fallback.queue_fallbacks_among, ids, now=now, rules=rules)
                    == 0
                )
                rows = await conn.execute(
                    sa.select(
                        deliveries.c.segments, deliveries.c.cost, deliveries.c.next_attempt_at
                    ).where(
                        deliveries.c.announcement_id == announcement,
                        deliveries.c.channel == "sms",
                    )
                )
                found = rows.all()
            assert {row.next_attempt_at for row in found} == {now}
            priced[announcement] = [(row.segments, row.cost) for row in found]

    assert [sorted(set(p)) for p in priced.values()] == [
        [(1, Decimal("100"))],
        [(3, Decimal("750"))],
        [(1, Decimal("100"))],
    ]


# What each database says when it reads a whole table, or a whole announcement's deliveries.
_SQLITE_SCAN = re.compile(r"^SCAN (deliveries|failed|other|child|taken)\b")
_SQLITE_WHOLE_ANNOUNCEMENT = re.compile(r"^SEARCH \w+ USING .*INDEX \w+ \(announcement_id=\?\)")
_PG_SCAN = re.compile(r"Seq Scan on deliveries")
_PG_WHOLE_ANNOUNCEMENT = re.compile(r"Index Cond: \(announcement_id = [\w.]+\)$")


async def test_housekeeping_finds_its_rows_by_index_in_a_large_outbox(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    """Each pass (about every second, in every process) reads what it needs, not the outbox.

    It read every delivery of a broadcast once per recent failure, to ask whether that person
    had another delivery still under way: on SQLite, 1,000 failures among 200,000 sends took
    60 s per pass, inside the transaction that holds the write lock. It also scanned the whole
    outbox for unconfirmed emergencies, and a whole finished broadcast to see whether anything
    was pending. The plans are read from each database's EXPLAIN, for every statement one
    pass runs, over a broadcast with failures and unconfirmed sends on a data channel.
    """
    async with gateway(aiohttp_client, database_url, keys, tmp_path) as gw:
        await gw.subscriber(numbers(1, start=801)[0], channels=["sms"])
        announcement = await start(gw, channels=["sms"], urgency="emergency")
        now = gw.clock.now()
        async with gw.world.engine.begin() as conn:
            agency = await conn.scalar(
                sa.select(deliveries.c.agency_id).where(
                    deliveries.c.announcement_id == announcement
                )
            )
            rows = [
                {
                    "announcement_id": announcement,
                    "agency_id": agency,
                    "subscriber_id": 10_000 + i,
                    "channel": "telegram" if i % 10 == 0 else "sms",
                    "language": "id",
                    "state": "failed" if i % 50 == 1 else "sent",
                    "priority": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "sent_at": now - timedelta(seconds=30),
                    "finished_at": now - timedelta(seconds=5) if i % 50 == 1 else None,
                }
                for i in range(6_000)
            ]
            await conn.execute(sa.insert(deliveries), rows)
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text("ANALYZE deliveries"))
        with captured(gw.world.engine) as statements:
            gw.clock.advance(timedelta(seconds=1))
            await gw.dispatcher.housekeeping()
        sqlite = gw.world.engine.dialect.name == "sqlite"
        read = await plans(gw.world.engine, statements)

    assert any("failed" in statement for statement, _ in read)  # the sweep ran
    bad = (
        (_SQLITE_SCAN, _SQLITE_WHOLE_ANNOUNCEMENT) if sqlite else (_PG_SCAN, _PG_WHOLE_ANNOUNCEMENT)
    )
    for statement, lines in read:
        for line in lines:
            assert not any(p.search(line) for p in bad), f"{line}\n  in\n{statement}"
