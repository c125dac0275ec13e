"""Quiet hours: normal announcements wait for the morning in each subscriber's own zone;
emergencies go at once. Deferral is one UPDATE per zone; the claim simply respects it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from gateway.clock import ManualClock
from gateway.db.schema import agencies, deliveries
from gateway.outbox.quiet import (
    DEFAULT_QUIET_HOURS,
    PROVINCE_ZONES,
    PROVINCES,
    QuietHours,
    defer_announcement,
    quiet_until,
    set_quiet_hours,
    zone_for_area,
)
from scheduler.service import SchedulerSettings
from scheduler.validation import FieldError
from tests.scheduler.support import (
    approve,
    create_and_submit,
    dispatcher_of,
    scheduled_world,
    scheduler_of,
)
from tests.support.config import make_config
from tests.support.sms import broadcast, claim_now, import_numbers, numbers, sms_world

WIB, WITA, WIT = ZoneInfo("Asia/Jakarta"), ZoneInfo("Asia/Makassar"), ZoneInfo("Asia/Jayapura")
DAY = datetime(2026, 1, 5, tzinfo=UTC)
# Tests that start by hand run without a scheduler: an approval would wake it, and its tick
# would start the announcement before the test does.
BY_HAND = SchedulerSettings(enabled=False)


def test_every_province_has_its_zone():
    wib = {"11", "12", "13", "14", "15", "16", "17", "18", "19", "21"}
    wib |= {"31", "32", "33", "34", "35", "36", "61", "62"}
    wita = {"51", "52", "53", "63", "64", "65", "71", "72", "73", "74", "75", "76"}
    wit = {"81", "82", "91", "92", "93", "94", "95", "96"}

    assert len(PROVINCES) == 38
    assert {p for p, z in PROVINCE_ZONES.items() if z == "Asia/Jakarta"} == wib
    assert {p for p, z in PROVINCE_ZONES.items() if z == "Asia/Makassar"} == wita
    assert {p for p, z in PROVINCE_ZONES.items() if z == "Asia/Jayapura"} == wit


@pytest.mark.parametrize(
    ("area", "zone"),
    [
        ("31.71", "Asia/Jakarta"),
        ("51.71.01", "Asia/Makassar"),
        ("91", "Asia/Jayapura"),
        ("64.72", "Asia/Makassar"),
        ("99.01", "Africa/Nairobi"),
        (None, "Africa/Nairobi"),
    ],
)
def test_zone_for_area_falls_back_to_the_agency(area, zone):
    assert zone_for_area(area, "Africa/Nairobi") == zone


@pytest.mark.parametrize(
    ("local", "resume_local"),
    [
        (datetime(2026, 1, 5, 20, 59), None),
        (datetime(2026, 1, 5, 21, 0), datetime(2026, 1, 6, 6, 0)),
        (datetime(2026, 1, 5, 23, 30), datetime(2026, 1, 6, 6, 0)),
        (datetime(2026, 1, 6, 2, 0), datetime(2026, 1, 6, 6, 0)),
        (datetime(2026, 1, 6, 6, 0), None),
        (datetime(2026, 1, 6, 12, 0), None),
    ],
)
def test_quiet_until_wraps_midnight(local, resume_local):
    now = local.replace(tzinfo=WITA).astimezone(UTC)

    resume = quiet_until(DEFAULT_QUIET_HOURS, now, WITA)

    expected = None if resume_local is None else resume_local.replace(tzinfo=WITA)
    assert resume == expected


def test_quiet_hours_within_a_day_and_off():
    lunch = QuietHours.parse("13:00-14:00")
    at = datetime(2026, 1, 5, 13, 30, tzinfo=WIB)

    assert quiet_until(lunch, at, WIB) == datetime(2026, 1, 5, 14, 0, tzinfo=WIB)
    assert quiet_until(lunch, at + timedelta(hours=1), WIB) is None
    assert quiet_until(QuietHours.parse("off"), at, WIB) is None
    assert str(lunch) == "13:00-14:00"
    assert str(QuietHours.parse("off")) == "off"
    assert QuietHours.parse(" 21:00 - 06:00 ") == DEFAULT_QUIET_HOURS


@pytest.mark.parametrize("text", ["21-06", "25:00-06:00", "21:00", "nine to five"])
def test_bad_quiet_hours_name_the_field(text):
    with pytest.raises(FieldError) as raised:
        QuietHours.parse(text, field="quiet_hours")

    assert raised.value.field == "quiet_hours"


def test_the_send_gate_holds_by_each_deliverys_zone_and_looks_at_none_by_day():
    from gateway.outbox.claims import Claimed
    from gateway.outbox.quiet import SendGate

    def item(id_: int, announcement: int | None, area: str | None) -> Claimed:
        return Claimed(id_, announcement, None, "id", 1, None, None, area_code=area)

    batch = [
        item(1, 10, "31.71"),  # Jakarta
        item(2, 10, "91.71"),  # Papua
        item(3, 10, None),  # the agency's zone: Nairobi
        item(4, None, "91.71"),  # a reply: never held
        item(5, 20, "91.71"),  # an announcement that keeps no quiet hours
    ]
    gate = SendGate(batch)
    gate.watch(10, DEFAULT_QUIET_HOURS, "Africa/Nairobi")
    gate.watch(20, QuietHours.parse("off"), WIB.key)
    ids = [1, 2, 3, 4, 5, 99]

    # 12:00 UTC: 19:00 Jakarta, 21:00 Papua, 15:00 Nairobi.
    assert gate.held(ids, DAY.replace(hour=12)) == {2: datetime(2026, 1, 6, 6, tzinfo=WIT)}
    # 19:00 UTC: 02:00 Jakarta, 04:00 Papua, 22:00 Nairobi.
    assert gate.held(ids, DAY.replace(hour=19)) == {
        1: datetime(2026, 1, 6, 6, tzinfo=WIB),
        2: datetime(2026, 1, 6, 6, tzinfo=WIT),
        3: datetime(2026, 1, 6, 6, tzinfo=ZoneInfo("Africa/Nairobi")),
    }
    # 05:00 UTC: daytime everywhere; the batch is never indexed by id.
    day_gate = SendGate(batch)
    day_gate.watch(10, DEFAULT_QUIET_HOURS, "Africa/Nairobi")
    assert day_gate.held(ids, DAY.replace(hour=5)) == {}
    assert day_gate._by_id is None
    assert not SendGate(batch)


async def _subscribe_everywhere(world) -> None:
    await import_numbers(world, numbers(2, start=1), area_code="31.71")  # Jakarta, WIB
    await import_numbers(world, numbers(2, start=11), area_code="51.71")  # Bali, WITA
    await import_numbers(world, numbers(2, start=21), area_code="91.71")  # Papua, WIT
    await import_numbers(world, numbers(2, start=31))  # no area: the agency's zone


async def _next_attempt_by_area(world, announcement_id: int) -> dict[str | None, datetime]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.area_code, sa.func.max(deliveries.c.next_attempt_at))
            .where(deliveries.c.announcement_id == announcement_id)
            .group_by(deliveries.c.area_code)
        )
        return {area: when for area, when in rows}


async def _start(world, clock, **fields) -> int:
    created = await create_and_submit(world, **fields)
    await approve(world, created["id"])
    dispatcher = dispatcher_of(world)
    assert await dispatcher.start_due() == 1
    return int(created["id"])


async def _defer_again(world, announcement_id: int, clock) -> int:
    async with world.engine.begin() as conn:
        return await defer_announcement(conn, announcement_id=announcement_id, now=clock.now())


async def _claim(world, clock) -> int:
    return len(await claim_now(world.engine, "sms", limit=100, now=clock.now()))


async def test_only_the_zone_in_quiet_hours_waits(aiohttp_client, database_url, keys):
    # 12:30 UTC: 19:30 in Jakarta, 20:30 in Bali, 21:30 in Papua.
    clock = ManualClock(DAY.replace(hour=12, minute=30))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await _subscribe_everywhere(world)
        announcement_id = await _start(world, clock)
        papua_morning = datetime(2026, 1, 6, 6, 0, tzinfo=WIT)

        # The start deferred them in its own transaction; deferring again moves nothing.
        assert await _defer_again(world, announcement_id, clock) == 0
        assert (await _next_attempt_by_area(world, announcement_id))["91.71"] == papua_morning
        assert await _claim(world, clock) == 6
        clock.set(papua_morning - timedelta(seconds=1))
        assert await _claim(world, clock) == 0
        clock.set(papua_morning)
        assert await _claim(world, clock) == 2


async def test_late_at_night_each_zone_waits_for_its_own_morning(
    aiohttp_client, database_url, keys
):
    # 15:30 UTC: 22:30 in Jakarta, 23:30 in Bali, 00:30 in Papua.
    clock = ManualClock(DAY.replace(hour=15, minute=30))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await _subscribe_everywhere(world)
        announcement_id = await _start(world, clock)

        assert await _defer_again(world, announcement_id, clock) == 0
        assert await _next_attempt_by_area(world, announcement_id) == {
            "31.71": datetime(2026, 1, 6, 6, 0, tzinfo=WIB),
            None: datetime(2026, 1, 6, 6, 0, tzinfo=WIB),
            "51.71": datetime(2026, 1, 6, 6, 0, tzinfo=WITA),
            "91.71": datetime(2026, 1, 6, 6, 0, tzinfo=WIT),
        }
        assert await _claim(world, clock) == 0


async def test_an_emergency_goes_at_once(aiohttp_client, database_url, keys):
    clock = ManualClock(DAY.replace(hour=15, minute=30))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await _subscribe_everywhere(world)
        announcement_id = await _start(world, clock, urgency="emergency")

        assert await _defer_again(world, announcement_id, clock) == 0
        assert set((await _next_attempt_by_area(world, announcement_id)).values()) == {clock.now()}
        assert await _claim(world, clock) == 8


async def test_an_agency_sets_its_own_hours_and_zone(aiohttp_client, database_url, keys):
    # 19:00 UTC is 22:00 in Nairobi and 02:00 in Jakarta.
    clock = ManualClock(DAY.replace(hour=19))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await _subscribe_everywhere(world)
        async with world.engine.begin() as conn:
            await conn.execute(
                sa.update(agencies)
                .where(agencies.c.id == world.agency_ids[0])
                .values(timezone="Africa/Nairobi")
            )
            await set_quiet_hours(
                conn, world.agency_ids[0], QuietHours(time(1, 0), time(5, 0)), now=clock.now()
            )
        announcement_id = await _start(world, clock)
        async with world.engine.begin() as conn:
            await set_quiet_hours(
                conn, world.agency_ids[0], QuietHours.parse("off"), now=clock.now()
            )
            after_off = await defer_announcement(
                conn, announcement_id=announcement_id, now=clock.now()
            )

        # 01:00-05:00 is quiet in Jakarta (02:00), Bali (03:00) and Papua (04:00), not for
        # the two without an area, who follow the agency's Nairobi (22:00).
        waiting = await _next_attempt_by_area(world, announcement_id)
        assert waiting[None] == clock.now()
        assert all(waiting[area] > clock.now() for area in ("31.71", "51.71", "91.71"))
        assert await _claim(world, clock) == 2
        assert after_off == 0


async def test_the_scheduler_defers_what_it_starts_at_night(aiohttp_client, database_url, keys):
    clock = ManualClock(DAY.replace(hour=15, minute=30))
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await _subscribe_everywhere(world)
        created = await create_and_submit(world)
        await approve(world, created["id"])

        scheduler = scheduler_of(world)
        await scheduler.settle()

        # The approval woke the scheduler: its tick (or the next) started and deferred.
        assert scheduler.started_total == 1
        assert await _next_attempt_by_area(world, created["id"]) == {
            "31.71": datetime(2026, 1, 6, 6, 0, tzinfo=WIB),
            None: datetime(2026, 1, 6, 6, 0, tzinfo=WIB),
            "51.71": datetime(2026, 1, 6, 6, 0, tzinfo=WITA),
            "91.71": datetime(2026, 1, 6, 6, 0, tzinfo=WIT),
        }
        assert await _claim(world, clock) == 0


async def test_a_dead_workers_batch_queued_again_at_night_waits_for_the_morning(
    aiohttp_client, database_url, keys
):
    # Claimed at 20:50 in Jakarta, its worker died; the lease runs out at 22:30: the batch is
    # queued again straight to the morning, never claimable in the night in between.
    clock = ManualClock(DAY.replace(hour=13, minute=50))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await import_numbers(world, numbers(3, start=1), area_code="31.71")
        announcement_id = await _start(world, clock)
        assert await _claim(world, clock) == 3  # leased for 60 s by a worker that dies
        clock.set(DAY.replace(hour=15, minute=30))
        await dispatcher_of(world).housekeeping()

        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(deliveries.c.state, deliveries.c.next_attempt_at).where(
                        deliveries.c.announcement_id == announcement_id
                    )
                )
            ).all()
        assert {(state, when) for state, when in rows} == {
            ("queued", datetime(2026, 1, 6, 6, 0, tzinfo=WIB))
        }
        assert await _claim(world, clock) == 0


async def test_what_is_still_queued_when_quiet_hours_begin_waits_from_the_next_pass(
    aiohttp_client, database_url, keys
):
    # Started at 20:59 in Jakarta, daytime still: one delivery due now (the broadcast has not
    # finished), one a retry due at 21:00:20. At 21:00:01 the dispatcher's housekeeping pass,
    # not the scheduler's (every 30 s), moves both to the morning.
    clock = ManualClock(DAY.replace(hour=13, minute=59))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await import_numbers(world, numbers(2, start=1), area_code="31.71")
        announcement_id = await _start(world, clock)
        retry_at = DAY.replace(hour=14, second=20)
        async with world.engine.begin() as conn:
            retried = await conn.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.id
                    == sa.select(sa.func.min(deliveries.c.id))
                    .where(deliveries.c.announcement_id == announcement_id)
                    .scalar_subquery()
                )
                .values(next_attempt_at=retry_at, attempts=1)
            )
            assert retried.rowcount == 1
        clock.set(DAY.replace(hour=14, second=1))
        await dispatcher_of(world).housekeeping()

        morning = datetime(2026, 1, 6, 6, 0, tzinfo=WIB)
        assert await _next_attempt_by_area(world, announcement_id) == {"31.71": morning}
        clock.set(retry_at)
        assert await _claim(world, clock) == 0


async def test_after_the_first_minute_of_quiet_hours_housekeeping_leaves_the_night_alone(
    aiohttp_client, database_url, keys
):
    """The frequent passes only look at quiet hours that began in the last minute: a delivery
    made due at 22:30 (by hand, as nothing in Warta queues one so) is the scheduler's to move."""
    clock = ManualClock(DAY.replace(hour=13, minute=59))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, _):
        await import_numbers(world, numbers(1, start=1), area_code="31.71")
        announcement_id = await _start(world, clock)
        clock.set(DAY.replace(hour=15, minute=30))
        async with world.engine.begin() as conn:
            await conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.announcement_id == announcement_id)
                .values(next_attempt_at=clock.now())
            )
        await dispatcher_of(world).housekeeping()
        assert await _next_attempt_by_area(world, announcement_id) == {"31.71": clock.now()}


async def test_a_batch_that_reaches_quiet_hours_before_the_housekeeping_pass_waits_unsent(
    aiohttp_client, database_url, keys
):
    """Started at 20:59 in Jakarta: due, claimable, and housekeeping has not run yet when
    21:00 comes. The send gate holds what would go at night: queued for the morning, the
    claim's attempt given back, nothing sent. Subscribers without an area keep to the
    agency's zone (WIB here) and are held the same way."""
    clock = ManualClock(DAY.replace(hour=13, minute=59))
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, sim):
        await import_numbers(world, numbers(3, start=1), area_code="31.71")  # Jakarta, WIB
        await import_numbers(world, numbers(2, start=31))  # no area: the agency's zone (WIB)
        announcement_id = await _start(world, clock)
        assert await _next_attempt_by_area(world, announcement_id) == {
            "31.71": clock.now(),
            None: clock.now(),
        }
        clock.set(DAY.replace(hour=14))  # 21:00 in Jakarta
        dispatcher = dispatcher_of(world)

        assert await dispatcher.run_once("sms") == 5
        assert sim.sent_count.total() == 0
        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        deliveries.c.state, deliveries.c.next_attempt_at, deliveries.c.attempts
                    ).where(deliveries.c.announcement_id == announcement_id)
                )
            ).all()
        morning = datetime(2026, 1, 6, 6, 0, tzinfo=WIB)
        assert {(state, when, attempts) for state, when, attempts in rows} == {
            ("queued", morning, 0)
        }
        assert await dispatcher.run_once("sms") == 0
        clock.set(morning)
        while await dispatcher.run_once("sms"):
            pass
        assert sim.sent_count.total() == 5


async def test_the_send_gate_lets_an_emergency_and_the_daytime_zone_through(
    aiohttp_client, database_url, keys
):
    """At 20:00 in Jakarta Papua (WIT) is at 22:00: the gate holds only Papua's normal
    deliveries (there because the broadcast was due before, as a retry would be); an
    emergency goes everywhere."""
    clock = ManualClock(DAY.replace(hour=11, minute=30))  # 18:30 Jakarta, 20:30 Papua
    async with scheduled_world(
        aiohttp_client, database_url, keys, clock=clock, settings=BY_HAND
    ) as (world, sim):
        await import_numbers(world, numbers(2, start=1), area_code="31.71")  # Jakarta
        await import_numbers(world, numbers(2, start=21), area_code="91.71")  # Papua
        normal = await _start(world, clock)
        emergency = await _start(world, clock, urgency="emergency")
        clock.set(DAY.replace(hour=13))  # 20:00 Jakarta, 22:00 Papua
        dispatcher = dispatcher_of(world)

        while await dispatcher.run_once("sms"):
            pass

        assert sim.sent_count.total() == 6
        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        deliveries.c.announcement_id,
                        deliveries.c.area_code,
                        deliveries.c.state,
                        deliveries.c.next_attempt_at,
                    )
                )
            ).all()
        papua_morning = datetime(2026, 1, 6, 6, 0, tzinfo=WIT)
        by_key = {(a, area, state, when) for a, area, state, when in rows if state == "queued"}
        assert by_key == {(normal, "91.71", "queued", papua_morning)}
        assert sum(1 for r in rows if r.announcement_id == emergency and r.state == "sent") == 4


async def test_each_request_of_a_batch_asks_the_gate_as_it_leaves(
    aiohttp_client, database_url, keys
):
    """A batch claimed at 20:59:59 in Jakarta, two requests of two at one message a second:
    the first goes at once, the second waits two seconds for the rate, and quiet hours have
    begun by then. It is held as it leaves, not judged by the time the batch was claimed."""
    clock = ManualClock(DAY.replace(hour=13, minute=59, second=59))

    def with_quiet_hours(*args: Any, **sections: Any) -> Any:
        return make_config(*args, scheduler={"quiet_hours": "21:00-06:00"}, **sections)

    async with sms_world(
        aiohttp_client,
        with_quiet_hours,
        database_url,
        keys,
        dispatch={"enabled": False},
        africastalking={"batch_size": 2, "rate_per_second": 1.0},
        clock=clock,
    ) as (world, sim):
        await import_numbers(world, numbers(4, start=1), area_code="31.71")
        approved = await broadcast(world)
        dispatcher = dispatcher_of(world)
        assert await dispatcher.start_due() == 1

        running = asyncio.create_task(dispatcher.run_once("sms"))
        for _ in range(500):
            if sim.sent_count.total() == 2:
                break
            await asyncio.sleep(0.01)
        assert sim.sent_count.total() == 2 and not running.done()
        clock.set(DAY.replace(hour=14))  # 21:00 in Jakarta, while the second request waits
        assert await running == 4

        assert sim.sent_count.total() == 2
        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(deliveries.c.state, deliveries.c.next_attempt_at).where(
                        deliveries.c.announcement_id == approved["id"]
                    )
                )
            ).all()
        morning = datetime(2026, 1, 6, 6, 0, tzinfo=WIB)
        # The first two went (and may be reported delivered by now); the second two wait.
        went = [state for state, when in rows if state in ("sent", "delivered")]
        waiting = [when for state, when in rows if state == "queued"]
        assert len(went) == 2 and waiting == [morning, morning]
