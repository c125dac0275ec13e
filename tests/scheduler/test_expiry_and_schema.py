"""Expiry with the scheduler running: deliveries not sent by ``expires_at`` show as expired in
the announcement's counts. And the scheduler's tables match their migration."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import scheduler.tables  # noqa: F401  (registers the tables on the metadata compared below)
from gateway.clock import ManualClock
from gateway.db.schema import metadata
from gateway.domain import Role
from tests.scheduler.support import approve, create_and_submit, scheduled_world, scheduler_of
from tests.support.sms import import_numbers, numbers


async def _counts(world, announcement_id: int) -> tuple[str, dict[str, int]]:
    answer = await world.call("GET", f"/api/v1/announcements/{announcement_id}", role=Role.OPERATOR)
    totals: dict[str, int] = {}
    for per_channel in answer.body["stats"] or []:
        for state, n in per_channel["counts"].items():
            if n:
                totals[state] = totals.get(state, 0) + n
    return answer.body["status"], totals


async def test_unsent_deliveries_expire_and_the_counts_show_it(aiohttp_client, database_url, keys):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(7))
        expires_at = clock.now() + timedelta(minutes=45)
        created = await create_and_submit(world, expires_at=expires_at.isoformat())
        await approve(world, created["id"])
        scheduler = scheduler_of(world)

        started = await scheduler.settle()
        before = await _counts(world, created["id"])
        clock.set(expires_at)
        await scheduler.settle()
        after = await _counts(world, created["id"])

        # The approval woke the scheduler, so the start may have come from that tick.
        assert (scheduler.started_total, started.next_wakeup) == (1, expires_at)
        assert before == ("sending", {"queued": 7})
        assert after == ("done", {"expired": 7})


async def test_scheduler_tables_match_the_migrations(engine) -> None:
    def differences(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []
