"""The gateway wired to a running Africa's Talking simulator, through the real SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from channels.simfaults import Fault
from gateway.appkeys import DISPATCHER
from gateway.clock import Clock
from gateway.domain import Role
from gateway.outbox import claims
from tests.support.config import make_config
from tests.support.world import World

HELD_S = 60.0  # how long a held request waits unless the test lets the provider answer


async def hold_next_request(sim: AfricasTalkingSimulator) -> None:
    """The next send request waits at the simulator (a ``slow`` fault) until the test calls
    ``sim.faults.release_held()`` (or ``HELD_S`` pass): its batch stays with the provider."""
    await sim.faults.add(Fault(kind="slow", seconds=HELD_S))


async def requests_arrived(
    sim: AfricasTalkingSimulator, count: int = 1, *, sender: asyncio.Task[Any] | None = None
) -> None:
    """Waits until ``count`` send requests have reached the simulator: at most ``HELD_S / 2``
    (a bound for a regression to fail by, not a timing; a loaded CI machine has stalled
    for seconds). ``sender``, the task sending them, fails the wait at once if it ends."""
    loop = asyncio.get_running_loop()
    until = loop.time() + HELD_S / 2
    while len(sim.faults.arrivals) < count and loop.time() < until:
        if sender is not None and sender.done():
            raise AssertionError(f"the sender ended before its requests arrived: {sender!r}")
        await asyncio.sleep(0.01)
    arrived = len(sim.faults.arrivals)
    if arrived < count:
        raise AssertionError(f"{arrived} of {count} send requests reached the provider")


@asynccontextmanager
async def sms_world(
    aiohttp_client: Any,
    make_config: Callable[..., Any],
    database_url: str,
    keys: dict[str, str],
    *,
    simulator: SimulatorConfig | None = None,
    dispatch: dict[str, Any] | None = None,
    africastalking: dict[str, Any] | None = None,
    clock: Clock | None = None,
    provider_currency: str = "IDR",
) -> AsyncIterator[tuple[World, AfricasTalkingSimulator]]:
    # The simulator charges in the gateway's [pricing] currency (IDR by default), as in
    # `warta demo`, unless a test asks for another.
    sim_config = replace(
        simulator or SimulatorConfig(),
        api_key=keys["africastalking_api_key"],
        currency=provider_currency,
    )
    sim = AfricasTalkingSimulator(sim_config)
    base_url = await sim.start()
    config = make_config(
        database_url,
        keys,
        africastalking={"base_url": base_url, "request_timeout_s": 2.0, **(africastalking or {})},
        dispatch={
            "idle_poll_s": 0.05,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            **(dispatch or {}),
        },
    )
    world = await World.start(aiohttp_client, config, clock=clock)
    sim.delivery_report_url = str(
        world.client.make_url(f"/callbacks/africastalking/{keys['callback_token']}/sms/delivery")
    )
    try:
        yield world, sim
    finally:
        await sim.stop()
        # The app stops before the test's database goes (pytest drops it before it closes
        # the client): a report still arriving would otherwise be stored into a database
        # being dropped.
        await world.client.close()


@asynccontextmanager
async def started_by_hand(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    clock: Clock,
    *,
    recipients: int,
    dispatch: dict[str, Any] | None = None,
    **fields: Any,
) -> AsyncIterator[tuple[World, AfricasTalkingSimulator, dict[str, Any]]]:
    """An ``sms_world`` on the test config whose dispatcher the test drives (no workers, no
    housekeeping loop) on ``clock``, with ``recipients`` SMS subscribers and one broadcast to
    them (``fields``) approved and fanned out. Yields the world, the simulator and the
    approved announcement.
    """
    settings = {**(dispatch or {}), "enabled": False}
    async with sms_world(
        aiohttp_client, make_config, database_url, keys, dispatch=settings, clock=clock
    ) as (world, sim):
        await import_numbers(world, numbers(recipients))
        approved = await broadcast(world, **fields)
        assert await world.app[DISPATCHER].start_due() == 1
        yield world, sim, approved


def csv_of(numbers: list[str], **columns: str) -> str:
    header = ["phone", *columns]
    lines = [",".join(header)]
    lines.extend(",".join([n, *columns.values()]) for n in numbers)
    return "\n".join(lines) + "\n"


def numbers(count: int, *, start: int = 1, prefix: str = "+62812") -> list[str]:
    return [f"{prefix}{start + i:08d}" for i in range(count)]


async def import_numbers(world: World, phones: list[str], agency: int = 0, **columns: str) -> None:
    answer = await world.call(
        "POST",
        "/api/v1/subscribers/import",
        role=Role.OPERATOR,
        agency=agency,
        data=csv_of(phones, **columns),
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status == 200, answer.body
    assert answer.body["errors"] == [], answer.body["errors"][:3]


async def broadcast(world: World, agency: int = 0, **fields: Any) -> dict[str, Any]:
    """Create, submit and approve (author, then approver); returns the approved announcement."""
    created = await world.announce(agency=agency, **fields)
    path = f"/api/v1/announcements/{created['id']}"
    submitted = await world.call("POST", path + "/submit", role=Role.AUTHOR, agency=agency)
    assert submitted.status == 200, submitted.body
    approved = await world.call("POST", path + "/approve", role=Role.APPROVER, agency=agency)
    assert approved.status == 200, approved.body
    result: dict[str, Any] = approved.body
    return result


async def wait_for(
    world: World,
    announcement_id: int,
    settled: Callable[[dict[str, int], dict[str, Any]], bool],
    *,
    timeout: float = 60.0,
    agency: int = 0,
) -> dict[str, Any]:
    """Poll the announcement until ``settled(counts, body)``; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = await world.call(
            "GET", f"/api/v1/announcements/{announcement_id}", role=Role.OPERATOR, agency=agency
        )
        body = answer.body
        counts: dict[str, int] = {}
        for per_channel in body.get("stats") or []:
            for state, n in per_channel["counts"].items():
                counts[state] = counts.get(state, 0) + n
        if settled(counts, body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"announcement {announcement_id} did not settle: {body.get('status')} {body.get('stats')}"
    )


async def claim_now(
    engine: AsyncEngine, channel: str, *, limit: int, now: datetime
) -> list[claims.Claimed]:
    """Claim up to ``limit`` due deliveries of ``channel`` as a worker would, leased for 60 s."""
    async with engine.begin() as conn:
        return await conn.run_sync(
            claims.claim,
            channel=channel,
            limit=limit,
            now=now,
            lease_until=now + timedelta(seconds=60),
        )
