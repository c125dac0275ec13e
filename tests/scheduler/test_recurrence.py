"""Recurring announcements: every Monday 07:00 WIB, a dated copy approved under the original
approval, each with its own code and tracking, until a count or a date; exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from gateway.clock import ManualClock
from gateway.config import DatabaseConfig
from gateway.db.engine import create_engine
from gateway.db.schema import announcements
from gateway.domain import Role
from scheduler import recurrence
from scheduler.series import series_of
from scheduler.tables import recurrence_instances, recurrences
from scheduler.validation import RecurrenceIn
from tests.scheduler.support import (
    approve,
    delivery_states,
    scheduled_world,
    scheduler_of,
    status_of,
)
from tests.support.sms import import_numbers, numbers

FIRST = datetime(2026, 1, 12, 0, 0, tzinfo=UTC)  # Monday 07:00 WIB
WEEK = timedelta(days=7)
HORIZON = timedelta(minutes=10)


async def recurring(world, clock, spec: RecurrenceIn) -> int:
    """Created with its recurrence through the API, submitted, approved (which activates the
    series in the approval's transaction); the template's id."""
    created = await world.announce(
        send_at=(clock.now() + timedelta(hours=1)).isoformat(),
        recurrence=spec.model_dump(mode="json", exclude_none=True),
    )
    assert created["series"]["status"] == "pending"
    path = f"/api/v1/announcements/{created['id']}"
    assert (await world.call("POST", path + "/submit", role=Role.AUTHOR)).status == 200
    approved = await approve(world, created["id"])
    assert approved["status"] == "scheduled"
    assert approved["series"]["status"] == "active"
    return int(created["id"])


async def occurrences(world) -> list[dict]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(announcements, recurrence_instances.c.occurrence_at)
            .join(
                recurrence_instances, recurrence_instances.c.announcement_id == announcements.c.id
            )
            .order_by(recurrence_instances.c.occurrence_at)
        )
        return [dict(r) for r in rows.mappings()]


async def test_every_monday_0700_wib_three_times(aiohttp_client, database_url, keys):
    clock = ManualClock()  # Monday 2026-01-05 10:00 WIB
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(4))
        spec = RecurrenceIn(cron="0 7 * * 1", timezone="WIB", count=3, valid_for_minutes=120)
        template_id = await recurring(world, clock, spec)
        scheduler = scheduler_of(world)

        quiet_week = await scheduler.settle()
        clock.set(FIRST - HORIZON)
        ahead = await scheduler.settle()
        clock.set(FIRST)
        on_time = await scheduler.settle()
        reports = []
        for week in (1, 2, 3):
            clock.set(FIRST + week * WEEK)
            reports.append(await scheduler.settle())

        assert (quiet_week.issued, quiet_week.next_wakeup) == (0, FIRST - HORIZON)
        assert (ahead.issued, ahead.started) == (1, 0)
        assert (on_time.issued, on_time.started) == (0, 1)
        assert [(r.issued, r.started) for r in reports] == [(1, 1), (1, 1), (0, 0)]
        issued = await occurrences(world)
        template = (await world.call("GET", f"/api/v1/announcements/{template_id}")).body
        assert [o["occurrence_at"] for o in issued] == [FIRST, FIRST + WEEK, FIRST + 2 * WEEK]
        assert [o["send_at"] for o in issued] == [o["occurrence_at"] for o in issued]
        assert [o["expires_at"] - o["send_at"] for o in issued] == [timedelta(hours=2)] * 3
        codes = {o["verification_code"] for o in issued} | {template["verification_code"]}
        assert len(codes) == 4
        assert {(o["approved_by"], o["approved_at"]) for o in issued} == {
            (o["approved_by"], o["approved_at"]) for o in issued[:1]
        }
        assert (
            issued[0]["approved_at"].isoformat()
            == datetime.fromisoformat(template["approved_at"]).isoformat()
        )
        assert {o["title"] for o in issued} == {template["title"]}
        assert template["status"] == "done"
        for o in issued:
            # Nothing sends here (dispatch is off), so each copy expired two hours in.
            assert await delivery_states(world, o["id"]) == {"expired": 4}
            own = await world.call("GET", f"/api/v1/announcements/{o['id']}")
            assert own.body["stats"][0]["total"] == 4
        async with world.engine.connect() as conn:
            series = await series_of(conn, issued[1]["id"])
        assert series is not None
        assert (series.role, series.status, series.issued) == ("occurrence", "finished", 3)


async def test_the_template_itself_is_never_sent(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(2))
        template_id = await recurring(world, clock, RecurrenceIn(cron="0 7 * * 1"))

        clock.advance(timedelta(hours=2))
        report = await scheduler_of(world).settle()

        assert report.started == 0
        assert await status_of(world, template_id) == "scheduled"
        assert await delivery_states(world, template_id) == {}


async def test_the_series_ends_at_until(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        spec = RecurrenceIn(
            cron="0 7 * * 1", timezone="Asia/Jakarta", until=FIRST + timedelta(days=1)
        )
        template_id = await recurring(world, clock, spec)
        scheduler = scheduler_of(world)

        clock.set(FIRST)
        first = await scheduler.settle()
        clock.set(FIRST + WEEK)
        second = await scheduler.settle()

        assert (first.issued, second.issued) == (1, 0)
        assert await status_of(world, template_id) == "done"


async def test_occurrences_missed_while_down_are_skipped(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await recurring(world, clock, RecurrenceIn(cron="0 7 * * 1", timezone="WIB"))

        clock.set(FIRST + 2 * WEEK + timedelta(minutes=20))
        report = await scheduler_of(world).settle()

        assert (report.issued, report.started) == (1, 1)
        assert [o["occurrence_at"] for o in await occurrences(world)] == [FIRST + 2 * WEEK]
        async with world.engine.connect() as conn:
            skipped = await conn.scalar(sa.select(recurrences.c.skipped))
        assert skipped == 2


async def test_cancelling_the_template_ends_the_series(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        template_id = await recurring(world, clock, RecurrenceIn(cron="0 7 * * 1", timezone="WIB"))
        scheduler = scheduler_of(world)
        clock.set(FIRST - HORIZON)
        assert (await scheduler.settle()).issued == 1

        cancelled = await world.call(
            "POST", f"/api/v1/announcements/{template_id}/cancel", role=Role.APPROVER
        )
        clock.set(FIRST + WEEK)
        report = await scheduler.settle()

        assert cancelled.status == 200
        assert (report.issued, report.started) == (0, 0)
        assert [o["status"] for o in await occurrences(world)] == ["cancelled"]
        async with world.engine.connect() as conn:
            assert await conn.scalar(sa.select(recurrences.c.status)) == "cancelled"


async def test_two_processes_issue_each_occurrence_once(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await recurring(world, clock, RecurrenceIn(cron="0 7 * * 1", timezone="WIB"))
        async with world.engine.connect() as conn:
            series_id = await conn.scalar(sa.select(recurrences.c.id))
        engines = [create_engine(DatabaseConfig(url=database_url)) for _ in range(2)]
        try:
            results = await asyncio.gather(
                *(
                    recurrence.issue_series(
                        engine,
                        series_id=series_id,
                        now=FIRST,
                        horizon=HORIZON,
                        grace=timedelta(hours=1),
                    )
                    for engine in engines
                )
            )
        finally:
            for engine in engines:
                await engine.dispose()

        assert sorted(len(ids) for ids in results) == [0, 1]
        assert len(await occurrences(world)) == 1
