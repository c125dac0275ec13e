"""Sign-in and verification limits hold across two gateway processes on one PostgreSQL: an
attacker spreading attempts over both gets no more than from one. SQLite (one process by
design) counts in memory, and a database that refuses the write does not stop a check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.app import create_app
from gateway.attempts import AttemptLimit
from gateway.config import WartaConfig
from gateway.db.schema import attempt_counters
from gateway.domain import Role
from tests.gateway import test_dashboard
from tests.gateway.test_dashboard import add_user
from tests.support.world import World

browsers = test_dashboard.browsers  # the fixture: one cookie jar per person


async def _second(aiohttp_client: Any, config: WartaConfig, first: World) -> World:
    """Another gateway process on the same database."""
    app = create_app(config)
    return World(
        client=await aiohttp_client(app), app=app, tokens=first.tokens, agency_ids=first.agency_ids
    )


@pytest.mark.parametrize("backend", ["postgres"])
async def test_sign_in_attempts_count_across_two_app_instances(
    world: World,
    aiohttp_client: Any,
    config: WartaConfig,
    browsers: Any,
) -> None:
    other = await _second(aiohttp_client, config, world)
    email = await add_user(world, Role.AUTHOR)
    on_first, on_second = browsers(world), browsers(other)
    statuses = []
    for n in range(5):
        browser = on_first if n % 2 else on_second
        statuses.append((await browser.login(email, password=f"wrong password {n}")).status)
    assert statuses == [401] * 5
    # Five wrong guesses spread over both processes: the sixth is refused by either.
    assert (await on_first.login(email)).status == 429
    assert (await on_second.login(email)).status == 429
    # Another account from the same address still gets through on both.
    approver = await add_user(world, Role.APPROVER)
    assert (await on_second.login(approver)).status == 200
    # What is stored is a digest, never the e-mail address or the client address.
    async with world.engine.connect() as conn:
        keys = (await conn.execute(sa.select(attempt_counters.c.key_hash))).scalars().all()
    assert keys and all(len(key) == 64 and "@" not in key for key in keys)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_code_checks_count_across_two_app_instances(
    world: World, aiohttp_client: Any, config: WartaConfig
) -> None:
    other = await _second(aiohttp_client, config, world)
    statuses = []
    for n in range(20):
        instance = world if n % 2 else other
        statuses.append((await instance.call("GET", "/api/v1/verify/ABCDEF", role=None)).status)
    assert statuses == [200] * 20
    # One process alone would allow 20; together they have used the address's 20 already.
    assert (await world.call("GET", "/api/v1/verify/ABCDEF", role=None)).status == 429
    assert (await other.call("GET", "/api/v1/verify/ABCDEF", role=None)).status == 429


async def test_the_window_slides_and_old_windows_are_deleted(world: World, backend: str) -> None:
    limit = AttemptLimit("test", limit=3, window_s=60)
    start = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)  # a window boundary
    at = [start + timedelta(seconds=s) for s in (1, 2, 3, 4)]
    assert [await limit.allow(world.engine, "10.0.0.1", now=t) for t in at] == [
        True,
        True,
        True,
        False,
    ]
    # Just after the boundary the previous window still weighs almost fully: refused.
    assert not await limit.allow(world.engine, "10.0.0.1", now=start + timedelta(seconds=61))
    # Another key is counted on its own.
    assert await limit.allow(world.engine, "10.0.0.2", now=start + timedelta(seconds=61))
    # Two windows later the old counts are gone, rows and all.
    assert await limit.allow(world.engine, "10.0.0.1", now=start + timedelta(seconds=185))
    if backend == "sqlite":
        # One process: counted in memory, so a public check never waits for the write lock.
        async with world.engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(attempt_counters)) == 0
        return
    async with world.engine.connect() as conn:
        windows = (
            await conn.execute(
                sa.select(attempt_counters.c.window_start).where(attempt_counters.c.scope == "test")
            )
        ).scalars()
        assert set(windows) >= {int((start + timedelta(seconds=180)).timestamp())}
        left = await conn.scalar(
            sa.select(sa.func.min(attempt_counters.c.window_start)).where(
                attempt_counters.c.scope == "test"
            )
        )
    assert left is not None and left >= int((start + timedelta(seconds=120)).timestamp())


async def test_a_database_that_refuses_the_count_does_not_stop_the_check() -> None:
    from gateway.config import DatabaseConfig
    from gateway.db.engine import create_engine

    # Nothing listens on port 1: every write fails at once, and the process counts alone.
    engine = create_engine(DatabaseConfig(url="postgresql+asyncpg://warta@127.0.0.1:1/warta"))
    limit = AttemptLimit("test", limit=2, window_s=60)
    now = datetime(2026, 11, 27, 8, 0, 30, tzinfo=UTC)
    try:
        assert [await limit.allow(engine, "10.0.0.9", now=now) for _ in range(3)] == [
            True,
            True,
            False,
        ]
    finally:
        await engine.dispose()
