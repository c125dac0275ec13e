"""The shared harness: every database test runs on a real SQLite file and a real PostgreSQL.

PostgreSQL comes from ``WARTA_TEST_POSTGRES_URL`` (``.ci/run`` starts a throwaway cluster and
sets it). Without it, PostgreSQL cases are skipped locally, and fail when ``CI=true``. The same
rule holds for espeak-ng (the ``espeak`` fixture), which voice calls in Bahasa Indonesia need.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.config import WartaConfig
from gateway.db.migrate import upgrade
from gateway.personal import PhoneVault
from tests.support.ci import unavailable
from tests.support.config import make_config
from tests.support.world import World

POSTGRES_URL = os.environ.get("WARTA_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def espeak() -> str:
    """espeak-ng's path; tests needing it skip locally without it and fail when ``CI=true``."""
    found = shutil.which("espeak-ng")
    if found is None:
        unavailable("espeak-ng is not installed", fix="apt-get install espeak-ng")
    return found


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "warta.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not POSTGRES_URL:
        unavailable("PostgreSQL is not configured", fix="set WARTA_TEST_POSTGRES_URL")
    name = f"warta_tpl_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(statement: str) -> None:
    """Run one administrative statement (CREATE/DROP DATABASE) on the server.

    It runs in its own thread with its own event loop, so it works from sync fixtures whether
    or not a loop is running.
    """
    import asyncio
    import threading

    async def run() -> None:
        engine = create_async_engine(POSTGRES_URL or "", isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "warta.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    name = f"warta_t_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield make_url(POSTGRES_URL or "").set(database=name).render_as_string(hide_password=False)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    return {
        "phone_keys": PhoneVault.generate_key(),
        "blind_index_key": PhoneVault.generate_key(),
        "africastalking_api_key": "test-at-key-" + uuid.uuid4().hex,
        "callback_token": "cb-" + uuid.uuid4().hex,
    }


@pytest.fixture
def config(database_url: str, keys: dict[str, str]) -> WartaConfig:
    # No Africa's Talking key here: API tests run without channels unless they add one.
    without_channels = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    return make_config(database_url, without_channels)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    from gateway.config import DatabaseConfig
    from gateway.db.engine import create_engine

    eng = create_engine(DatabaseConfig(url=database_url))
    yield eng
    await eng.dispose()


@pytest.fixture
async def world(aiohttp_client: Any, config: WartaConfig) -> AsyncIterator[World]:
    """The running gateway (real aiohttp app on a real database) with two agencies."""
    world = await World.start(aiohttp_client, config)
    yield world
