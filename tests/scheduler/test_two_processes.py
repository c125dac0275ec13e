"""Two Warta processes on one database both try to start the same due announcement: exactly
one fan-out happens (``Dispatcher.start_due``'s conditional update approved -> sending).

The racers are separate OS processes (``python -m tests.scheduler.racer``), each with its own
engine and scheduler; the test checks their process ids and the database they used, so on
the PostgreSQL run the race really is between two processes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from tests.scheduler.support import (
    approve,
    create_and_submit,
    delivery_states,
    scheduled_world,
    status_of,
)
from tests.support.sms import import_numbers, numbers

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(paths: list[Path], processes: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in paths):
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a racer exited early: {process.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail("the racers did not start within two minutes")
        time.sleep(0.02)


async def test_exactly_one_process_starts_a_due_announcement(
    aiohttp_client, database_url, keys, tmp_path, backend
):
    clock = ManualClock()
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(25))
        send_at = clock.now() + timedelta(hours=1)
        created = await create_and_submit(world, send_at=send_at.isoformat())
        await approve(world, created["id"])
        racer_keys = json.dumps({k: v for k, v in keys.items() if k != "africastalking_api_key"})
        go = tmp_path / "go"
        ready = [tmp_path / f"ready-{n}" for n in range(2)]
        racers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.scheduler.racer",
                    database_url,
                    racer_keys,
                    str(ready[n]),
                    str(go),
                    clock.now().isoformat(),
                    send_at.isoformat(),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(2)
        ]
        # The waits run in a thread: this process's own gateway keeps its event loop (a sweep
        # here that began a write and then stalled behind a blocked loop would hold SQLite's
        # only write lock for as long as the racers run).
        try:
            await asyncio.to_thread(_wait_for, ready, racers)
            go.touch()
            outputs = [await asyncio.to_thread(racer.communicate, timeout=300) for racer in racers]
        finally:
            for racer in racers:
                if racer.poll() is None:
                    racer.kill()
                    racer.communicate()

        assert [racer.returncode for racer in racers] == [0, 0], [err for _, err in outputs]
        reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        assert len({r["pid"] for r in reports} | {os.getpid()}) == 3
        assert {r["dialect"] for r in reports} == {
            "postgresql" if backend == "postgres" else "sqlite"
        }
        assert sorted(r["started"] for r in reports) == [0, 1]
        assert await status_of(world, created["id"]) == "sending"
        assert await delivery_states(world, created["id"]) == {"queued": 25}
