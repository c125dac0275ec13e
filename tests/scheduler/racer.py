"""One Warta process in a start race (run by ``test_two_processes``; not a test itself).

It starts the gateway with the scheduler (dispatch loops off), says it is ready, waits for
the go signal, moves its clock to the send time and asks its scheduler for a tick (through
APScheduler's one-shot job), then prints how many announcements it started, its process id
and the database it used, as JSON.

Usage: python -m tests.scheduler.racer DATABASE_URL KEYS_JSON READY GO CLOCK_START SEND_AT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from aiohttp import web

from gateway.clock import ManualClock
from scheduler.service import SCHEDULER
from tests.scheduler.support import TEST_SETTINGS, scheduler_app
from tests.support.config import make_config


async def race(argv: list[str]) -> dict[str, int | str]:
    database_url, keys_json, ready, go, clock_start, send_at = argv
    config = make_config(database_url, json.loads(keys_json), dispatch={"enabled": False})
    clock = ManualClock(datetime.fromisoformat(clock_start))
    app = scheduler_app(config, clock=clock, settings=TEST_SETTINGS)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        scheduler = app[SCHEDULER]
        # Generous: on a loaded CI machine two processes starting at once can queue on
        # SQLite's single writer for a while; the race itself is what is measured below.
        await scheduler.settle(timeout=120)
        Path(ready).touch()
        for _ in range(12_000):
            if Path(go).exists():
                break
            await asyncio.sleep(0.005)
        clock.set(datetime.fromisoformat(send_at))
        # A tick that fails (SQLite busy under load) is retried by the sweep in production;
        # here the racer asks again, as the sweep would.
        for _ in range(5):
            report = await scheduler.settle(timeout=120)
            if not report.failed:
                break
        return {
            "started": scheduler.started_total,
            "pid": os.getpid(),
            "dialect": scheduler.engine.dialect.name,
        }
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(race(sys.argv[1:]))))
