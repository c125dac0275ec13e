"""Process and database faults under a running broadcast, with real ``warta serve`` processes.

- A worker SIGKILLed ten times at random moments of one broadcast, restarted each time: every
  recipient is reached, and duplicates stay within the README's bound (per kill, at most the
  batches in flight: ``workers_per_channel × claim_batch``).
- PostgreSQL stopped and started again under a broadcast (a throwaway cluster of this test's
  own, from ``.ci/pg-up``): the gateway reconnects and finishes, and sends nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.db.migrate import upgrade
from tests.gateway.test_scale_out import Api, Process, gateway_env
from tests.support.ci import unavailable
from tests.support.processes import seed_tokens
from tests.support.sms import numbers

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
async def test_worker_killed_ten_times_loses_nothing(
    database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    workers_per_channel, claim_batch, kills = 2, 25, 10
    sim = AfricasTalkingSimulator(
        SimulatorConfig(api_key=keys["africastalking_api_key"], latency=0.005, seed=2)
    )
    sim_url = await sim.start()
    # 100/s shared by both workers: 7,000 recipients take 70 s, long enough for ten kills
    # (a restart takes three to five seconds on a busy two-core machine).
    env = gateway_env(
        database_url,
        keys,
        sim_url,
        africastalking__rate_per_second="100",
        dispatch__workers_per_channel=str(workers_per_channel),
        dispatch__claim_batch=str(claim_batch),
        dispatch__lease_seconds="4",
    )
    tokens = await seed_tokens(database_url, slug="faults")
    api = Process(env, tmp_path / "api.log", role="api")
    steady = Process(env, tmp_path / "steady.log", role="worker")
    victim = Process(env, tmp_path / "victim.log", role="worker")
    phones = [n for n in numbers(7_000) if not n.endswith("0000")]
    rng = random.Random(12)
    try:
        await asyncio.gather(api.start(), steady.start(), victim.start())
        async with aiohttp.ClientSession(api.base) as http:
            agency = Api(http, tokens)
            announcement_id = await agency.broadcast(phones)
            deadline = time.monotonic() + 60
            while sim.sent_count.total() < 200:
                assert time.monotonic() < deadline, "the broadcast did not get going"
                await asyncio.sleep(0.02)
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                assert len(sim.sent_count) < len(phones), "the broadcast ended before the kills"
                victim.kill()
                await victim.start()
            body = await agency.wait_done(announcement_id, timeout=90)
    finally:
        for process in (api, steady, victim):
            process.stop()
        await sim.stop()

    assert victim.kills == kills
    reached = dict(sim.sent_count.items())
    assert set(reached) == set(phones), "every recipient reached"
    duplicates = sum(n - 1 for n in reached.values())
    assert duplicates <= kills * workers_per_channel * claim_batch
    counts = {c["channel"]: c["counts"] for c in body["stats"]}
    assert counts["sms"]["sent"] == len(phones)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A throwaway cluster this test may stop: (URL, data directory, server binaries)."""
    if not os.environ.get("WARTA_TEST_POSTGRES_URL"):
        unavailable("PostgreSQL is not configured", fix="set WARTA_TEST_POSTGRES_URL")
    # Not under pytest's tmp_path: the postgres user must be able to reach the directory.
    pg_dir = Path(tempfile.mkdtemp(prefix="warta-fault-pg."))
    up = subprocess.run(
        ["bash", str(REPO / ".ci/pg-up"), str(pg_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("WARTA_PG")},
    )
    exports = dict(re.findall(r"(WARTA_\w+)=(\S+)", up.stdout))
    down_env = {**os.environ, **exports}
    try:
        yield exports["WARTA_TEST_POSTGRES_URL"], pg_dir, exports["WARTA_PG_BIN"]
    finally:
        subprocess.run(["bash", str(REPO / ".ci/pg-down")], env=down_env, check=False, timeout=120)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _pg_ctl(bin_dir: str, pg_dir: Path, *args: str) -> None:
    command = [f"{bin_dir}/pg_ctl", "-D", str(pg_dir / "data"), *args]
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


@pytest.mark.slow
async def test_gateway_survives_a_postgres_restart_mid_broadcast(
    own_postgres: tuple[str, Path, str], keys: dict[str, str], tmp_path: Path
) -> None:
    url, pg_dir, bin_dir = own_postgres
    port = make_url(url).port
    await asyncio.to_thread(upgrade, url)
    workers_per_channel, claim_batch = 2, 100
    sim = AfricasTalkingSimulator(
        SimulatorConfig(api_key=keys["africastalking_api_key"], latency=0.005, seed=3)
    )
    sim_url = await sim.start()
    env = gateway_env(
        url,
        keys,
        sim_url,
        africastalking__rate_per_second="300",
        dispatch__workers_per_channel=str(workers_per_channel),
        dispatch__claim_batch=str(claim_batch),
        dispatch__lease_seconds="3",
    )
    tokens = await seed_tokens(url, slug="faults")
    gateway = Process(env, tmp_path / "gateway.log", role="all")
    phones = [n for n in numbers(4_000) if not n.endswith("0000")]
    try:
        await gateway.start()
        async with aiohttp.ClientSession(gateway.base) as http:
            agency = Api(http, tokens)
            announcement_id = await agency.broadcast(phones)
            deadline = time.monotonic() + 60
            while sim.sent_count.total() < len(phones) // 4:
                assert time.monotonic() < deadline, "the broadcast did not get going"
                await asyncio.sleep(0.02)
            _pg_ctl(bin_dir, pg_dir, "-m", "fast", "-w", "stop")
            stopped_at = len(sim.sent_count)
            await asyncio.sleep(3)
            assert gateway.process is not None and gateway.process.poll() is None
            _pg_ctl(
                bin_dir,
                pg_dir,
                "-l",
                str(pg_dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                f"-c listen_addresses=127.0.0.1 -c port={port} -k {pg_dir} -c fsync=off",
            )
            assert stopped_at < len(phones), "the restart came too late to test anything"
            started = time.monotonic()
            while True:
                try:
                    body = await agency.wait_done(announcement_id, timeout=60)
                    break
                except (aiohttp.ClientError, AssertionError):
                    # An answer from before the pool reconnected; the deadline still holds.
                    if time.monotonic() - started > 60:
                        raise
                    await asyncio.sleep(0.5)
    finally:
        gateway.stop()
        await sim.stop()

    reached = dict(sim.sent_count.items())
    assert set(reached) == set(phones), "every recipient reached"
    duplicates = sum(n - 1 for n in reached.values())
    # The batches in flight while the database was away are recorded once it is back (the
    # worker keeps trying, and housekeeping leaves what it holds alone): none goes out again.
    # Before, their leases ran out and each went out twice (200 here, the kill's bound).
    assert duplicates == 0
    counts = {c["channel"]: c["counts"] for c in body["stats"]}
    assert counts["sms"]["sent"] == len(phones)
