"""Send-at: an approved announcement waits for its time in the database, survives a restart,
starts when its time comes (by the scheduler, with the dispatcher's loops off), and can be
moved or cancelled before then."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from gateway.appkeys import CONFIG
from gateway.clock import ManualClock, SystemClock
from gateway.domain import Role
from scheduler.planning import Pending, next_wakeup
from scheduler.sendat import NotChangeable, change_send_at, pending
from scheduler.service import SCHEDULER
from scheduler.validation import FieldError
from tests.scheduler.support import (
    TEST_SETTINGS,
    approve,
    create_and_submit,
    delivery_states,
    scheduled_world,
    scheduler_app,
    scheduler_of,
    status_of,
)
from tests.support.sms import import_numbers, numbers


async def test_waits_for_send_at_then_starts(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(5))
        send_at = clock.now() + timedelta(hours=2)
        created = await create_and_submit(world, send_at=send_at.isoformat())
        await approve(world, created["id"])
        scheduler = scheduler_of(world)

        early = await scheduler.settle()
        assert (early.started, early.next_wakeup) == (0, send_at)
        assert await status_of(world, created["id"]) == "approved"

        clock.set(send_at)
        on_time = await scheduler.settle()

        assert on_time.started == 1
        assert await status_of(world, created["id"]) == "sending"
        assert await delivery_states(world, created["id"]) == {"queued": 5}


async def test_a_waiting_announcement_survives_a_restart(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(3))
        send_at = clock.now() + timedelta(days=1)
        created = await create_and_submit(world, send_at=send_at.isoformat())
        await approve(world, created["id"])
        assert (await scheduler_of(world).settle()).started == 0
        config = world.app[CONFIG]
        await world.client.close()

    clock.set(send_at + timedelta(seconds=1))
    restarted = scheduler_app(config, clock=clock, settings=TEST_SETTINGS)
    client = await aiohttp_client(restarted)
    report = await restarted[SCHEDULER].settle()
    await client.close()

    assert report.started == 1


async def test_changing_send_at_before_the_time_moves_the_start(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(2))
        first = clock.now() + timedelta(hours=1)
        later = clock.now() + timedelta(hours=3)
        created = await create_and_submit(world, send_at=first.isoformat())
        await approve(world, created["id"])
        async with world.engine.begin() as conn:
            before = await change_send_at(
                conn,
                announcement_id=created["id"],
                agency_id=world.agency_ids[0],
                send_at=later,
                expires_at=None,
                now=clock.now(),
            )
        assert before["send_at"] == first
        scheduler = scheduler_of(world)

        clock.set(first)
        at_old_time = await scheduler.settle()
        clock.set(later)
        at_new_time = await scheduler.settle()

        assert (at_old_time.started, at_old_time.next_wakeup) == (0, later)
        assert at_new_time.started == 1


async def test_a_started_announcement_keeps_its_send_at(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(1))
        created = await create_and_submit(world)
        await approve(world, created["id"])
        await scheduler_of(world).settle()
        async with world.engine.begin() as conn:
            with pytest.raises(NotChangeable) as refused:
                await change_send_at(
                    conn,
                    announcement_id=created["id"],
                    agency_id=world.agency_ids[0],
                    send_at=clock.now() + timedelta(hours=1),
                    expires_at=None,
                    now=clock.now(),
                )
            with pytest.raises(FieldError) as past:
                await change_send_at(
                    conn,
                    announcement_id=created["id"],
                    agency_id=world.agency_ids[0],
                    send_at=clock.now() - timedelta(minutes=1),
                    expires_at=None,
                    now=clock.now(),
                )
            with pytest.raises(LookupError):
                await change_send_at(
                    conn,
                    announcement_id=created["id"],
                    agency_id=world.agency_ids[1],
                    send_at=None,
                    expires_at=None,
                    now=clock.now(),
                )

        assert refused.value.status == "sending"
        assert past.value.field == "send_at"


async def test_cancelled_before_its_time_never_starts(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(2))
        send_at = clock.now() + timedelta(minutes=30)
        created = await create_and_submit(world, send_at=send_at.isoformat())
        await approve(world, created["id"])
        cancelled = await world.call(
            "POST", f"/api/v1/announcements/{created['id']}/cancel", role=Role.APPROVER
        )
        assert cancelled.status == 200

        clock.set(send_at + timedelta(minutes=1))
        report = await scheduler_of(world).settle()

        assert (report.started, report.next_wakeup) == (0, None)
        assert await status_of(world, created["id"]) == "cancelled"
        assert await delivery_states(world, created["id"]) == {}


async def test_pending_reads_what_is_coming(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        soon = clock.now() + timedelta(minutes=5)
        later = clock.now() + timedelta(minutes=50)
        for when in (later, soon):
            created = await create_and_submit(world, send_at=when.isoformat())
            await approve(world, created["id"])
        async with world.engine.connect() as conn:
            coming = await pending(conn, now=clock.now())

        assert coming == Pending(earliest_send_at=soon)
        assert next_wakeup(coming, now=clock.now(), horizon=timedelta(0)) == soon


async def test_the_real_scheduler_fires_at_send_at_without_being_asked(
    aiohttp_client, database_url, keys
):
    clock = SystemClock()  # real time passes: APScheduler's own timer fires the job
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(2))
        created = await create_and_submit(
            world, send_at=(clock.now() + timedelta(hours=1)).isoformat()
        )
        await approve(world, created["id"])
        scheduler = scheduler_of(world)
        async with world.engine.begin() as conn:
            await change_send_at(
                conn,
                announcement_id=created["id"],
                agency_id=world.agency_ids[0],
                send_at=clock.now() + timedelta(milliseconds=300),
                expires_at=None,
                now=clock.now(),
            )
        await scheduler.settle()  # plans the one-shot job at the new send_at

        # The tick counts its starts when it finishes, after the start is committed.
        deadline = time.monotonic() + 20
        while scheduler.started_total == 0:
            assert time.monotonic() < deadline, "the one-shot job never started it"
            await asyncio.sleep(0.05)

        assert scheduler.started_total == 1
        assert await status_of(world, created["id"]) == "sending"
