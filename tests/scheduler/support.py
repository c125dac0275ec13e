"""A running gateway with the scheduler in its ``cleanup_ctx``, on a manual clock.

The dispatcher's own loops are off (``dispatch.enabled = false``), so whatever starts, defers
or expires in these tests was done by the scheduler's ticks (or by the test, by hand).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.app import create_app
from gateway.appkeys import DISPATCHER
from gateway.clock import Clock
from gateway.db.schema import announcements, deliveries
from gateway.domain import Role
from scheduler.service import (
    SCHEDULER,
    SCHEDULER_SETTINGS,
    SchedulerSettings,
    WartaScheduler,
    scheduler_ctx,
)
from tests.support.config import make_config
from tests.support.world import World, seed_agencies

# Long sweeps: in tests, ticks happen when a test asks for one (settle) or notify() is called.
TEST_SETTINGS = SchedulerSettings(enabled=True, sweep_interval_s=3600.0)


def scheduler_app(config: Any, *, clock: Clock | None, settings: SchedulerSettings) -> Any:
    app = create_app(config, clock=clock)
    app[SCHEDULER_SETTINGS] = settings
    assert scheduler_ctx in app.cleanup_ctx  # create_app wires the scheduler
    return app


@asynccontextmanager
async def scheduled_world(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    *,
    clock: Clock | None,
    settings: SchedulerSettings = TEST_SETTINGS,
    seed: bool = True,
) -> AsyncIterator[tuple[World, AfricasTalkingSimulator]]:
    sim = AfricasTalkingSimulator(
        replace(SimulatorConfig(), api_key=keys["africastalking_api_key"])
    )
    base_url = await sim.start()
    config = make_config(
        database_url,
        keys,
        africastalking={"base_url": base_url, "request_timeout_s": 2.0},
        dispatch={"enabled": False},
        # The dispatcher defers what it starts by the same default as the scheduler.
        scheduler={"quiet_hours": str(settings.quiet_hours_default)},
    )
    app = scheduler_app(config, clock=clock, settings=settings)
    client = await aiohttp_client(app)
    tokens, ids = await seed_agencies(app) if seed else ([], [])
    try:
        yield World(client=client, app=app, tokens=tokens, agency_ids=ids), sim
    finally:
        await sim.stop()


def scheduler_of(world: World) -> WartaScheduler:
    return world.app[SCHEDULER]


def dispatcher_of(world: World) -> Any:
    return world.app[DISPATCHER]


async def status_of(world: World, announcement_id: int) -> str:
    async with world.engine.connect() as conn:
        status = await conn.scalar(
            sa.select(announcements.c.status).where(announcements.c.id == announcement_id)
        )
    return str(status)


async def delivery_states(world: World, announcement_id: int | None = None) -> dict[str, int]:
    query = sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)
    if announcement_id is not None:
        query = query.where(deliveries.c.announcement_id == announcement_id)
    async with world.engine.connect() as conn:
        return {state: n for state, n in await conn.execute(query)}


async def create_and_submit(world: World, **fields: Any) -> dict[str, Any]:
    created = await world.announce(**fields)
    answer = await world.call(
        "POST", f"/api/v1/announcements/{created['id']}/submit", role=Role.AUTHOR
    )
    assert answer.status == 200, answer.body
    return created


async def approve(world: World, announcement_id: int) -> dict[str, Any]:
    answer = await world.call(
        "POST", f"/api/v1/announcements/{announcement_id}/approve", role=Role.APPROVER
    )
    assert answer.status == 200, answer.body
    result: dict[str, Any] = answer.body
    return result
