"""Migrations match the schema module; the gateway refuses an unmigrated database; the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.db.engine import DatabaseNotReady, current_revision
from gateway.db.migrate import head_revision
from gateway.db.schema import metadata
from gateway.personal import PhoneVault
from tests.conftest import make_config

WARTA = str(Path(sys.executable).with_name("warta"))


async def test_migrations_match_the_schema_module(engine: AsyncEngine) -> None:
    def differences(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        diff = await conn.run_sync(differences)

    assert diff == []
    assert await current_revision(engine) == head_revision()


async def test_start_up_refuses_an_unmigrated_database(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    config = make_config(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", keys)
    runner = web.AppRunner(create_app(config))

    with pytest.raises(DatabaseNotReady) as raised:
        await runner.setup()
    await runner.cleanup()

    assert "run `warta db upgrade`" in str(raised.value)


def cli_environ(database_url: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WARTA_")}
    environ.update(
        WARTA_DATABASE__URL=database_url,
        WARTA_HTTP__PORT="0",
        WARTA_SECRETS__PHONE_KEYS=PhoneVault.generate_key(),
        WARTA_SECRETS__BLIND_INDEX_KEY=PhoneVault.generate_key(),
    )
    return environ


def test_warta_db_upgrade_then_serve(tmp_path: Path) -> None:
    environ = cli_environ(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")

    upgraded = subprocess.run(
        [WARTA, "db", "upgrade"], env=environ, capture_output=True, text=True, timeout=120
    )
    again = subprocess.run(
        [WARTA, "db", "upgrade"], env=environ, capture_output=True, text=True, timeout=120
    )

    assert (upgraded.returncode, upgraded.stdout) == (0, "database is at the latest schema\n")
    assert again.returncode == 0
    assert serve_until_ready(environ) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_until_ready(environ: dict[str, str]) -> int:
    """Run ``warta serve`` until /healthz answers, stop it with SIGTERM; its exit code."""
    port = free_port()
    process = subprocess.Popen(
        [WARTA, "serve"],
        env=environ | {"WARTA_HTTP__PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if process.poll() is not None:
                return process.returncode
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("warta serve did not answer /healthz within a minute")
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_warta_serve_on_an_unmigrated_database_exits_3(tmp_path: Path) -> None:
    environ = cli_environ(f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}")
    process = subprocess.Popen(
        [WARTA, "serve"], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("warta serve kept running on an unmigrated database")

    assert process.returncode == 3
    assert stderr.strip().splitlines()[-1] == (
        "warta: the database has no Warta schema yet: run `warta db upgrade` first"
    )


def test_warta_serve_with_a_bad_setting_exits_2(tmp_path: Path) -> None:
    environ = cli_environ(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    environ["WARTA_DISPATCH__CLAIM_BATCH"] = "lots"

    finished = subprocess.run(
        [WARTA, "serve"], env=environ, capture_output=True, text=True, timeout=60
    )

    assert finished.returncode == 2
    assert finished.stderr.startswith("warta: configuration problem: dispatch.claim_batch: ")
    assert environ["WARTA_SECRETS__PHONE_KEYS"] not in finished.stderr
