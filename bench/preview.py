"""Preview of an announcement to 1,000,000 subscribers: recipients, SMS segments, cost.

    .venv/bin/python -m bench.preview [--subscribers 1000000] [--backend sqlite|postgres|both]

Side by side in one run, on the same database:
- floor: the bare aggregate the preview needs (one COUNT over subscribers x channel choices);
- Warta: ``GET /api/v1/announcements/{id}/preview`` through the real aiohttp app (renders
  every channel x language, one grouped query for recipients by language and country);
- the loop users would otherwise write: fetch every subscriber and price each in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bench import common
from gateway.app import create_app
from gateway.appkeys import CLOCK, ENGINE
from gateway.auth import issue_token
from gateway.config import load_config
from gateway.db.schema import subscriber_channels, subscribers
from gateway.domain import Role
from gateway.gsm import analyse

REPEATS = 5


async def _timed(label: str, action: Any) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def run(backend: str, n: int, workdir: Path) -> list[Any]:
    url = await common.fresh_database(backend, f"bench_preview_{backend}", workdir)
    secrets = common.keys()
    engine = common.engine_for(url)
    agency_id = await common.seed_agency(engine)
    await common.seed_subscribers(url, agency_id, n, common.vault_of(secrets), prefix="2547")
    announcement = await common.add_announcement(engine, agency_id, status="draft")
    await engine.dispose()
    config = load_config(
        None,
        environ={},
        overrides={"database": {"url": url}, "secrets": secrets, "dispatch": {"enabled": False}},
    )
    app = create_app(config)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        async with app[ENGINE].begin() as conn:
            token = await issue_token(
                conn, agency_id=agency_id, role=Role.AUTHOR, name="bench", now=app[CLOCK].now()
            )
        headers = {"Authorization": f"Bearer {token.token}"}
        path = f"/api/v1/announcements/{announcement['id']}/preview"
        seen: dict[str, Any] = {}

        async def warta() -> None:
            async with client.get(path, headers=headers) as response:
                assert response.status == 200, await response.text()
                seen.update(await response.json())

        audience = (
            sa.select(sa.func.count())
            .select_from(
                subscribers.join(
                    subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id
                )
            )
            .where(
                subscribers.c.agency_id == agency_id,
                subscriber_channels.c.channel == "sms",
                subscriber_channels.c.opted_out_at.is_(None),
            )
        )

        async def floor() -> None:
            async with app[ENGINE].connect() as conn:
                await conn.scalar(audience)

        text = (seen.get("renditions") or [{}])[0].get("text") or announcement["body"]

        async def loop() -> None:
            # What an agency script does: every subscriber, priced one by one.
            total = 0.0
            async with app[ENGINE].connect() as conn:
                rows = await conn.stream(
                    sa.select(subscribers.c.country, subscribers.c.language)
                    .join(
                        subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id
                    )
                    .where(subscribers.c.agency_id == agency_id)
                )
                async for country, _language in rows:
                    total += analyse(text).segments * (12.0 if country == "KE" else 350.0)

        warta_s = await _timed("warta", warta)
        floor_s = await _timed("floor", floor)
        loop_s = await _timed("loop", loop) if n <= 1_000_000 else float("nan")
    finally:
        await client.close()
    assert seen["recipients"] == n, seen["recipients"]
    return [
        backend,
        f"{n:,}",
        f"{floor_s * 1000:,.0f}",
        f"{warta_s * 1000:,.0f}",
        f"{warta_s / floor_s:.2f}x",
        f"{loop_s * 1000:,.0f}",
        f"{loop_s / warta_s:.1f}x",
    ]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.preview")
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    for line in common.machine_lines("python -m bench.preview " + " ".join(argv or [])):
        common.say(line)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            rows.append(await run(backend, args.subscribers, Path(workdir)))
    common.say(
        common.table(
            [
                "backend",
                "subscribers",
                "floor ms (bare COUNT)",
                "Warta preview ms",
                "Warta / floor",
                "per-subscriber loop ms",
                "loop / Warta",
            ],
            rows,
        )
    )
    common.say(f"(median of {REPEATS} runs each)")


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1:]))
