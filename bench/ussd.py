"""USSD callback latency against a bare aiohttp floor (``python -m bench ussd``).

The real gateway (``create_app``, real database, dispatch and scheduler off) serves Africa's
Talking's USSD callback at ``/callbacks/africastalking/{token}/ussd`` in one process. A load
generator in a SECOND process plays ``sessions`` concurrent USSD sessions over loopback, each
several steps in AT's wire format (``sessionId``, ``serviceCode``, ``phoneNumber``,
``networkCode``, ``text`` = every input so far joined by ``*``), and times every request.

The floor is the same load generator against a minimal aiohttp app that parses the same form
and answers a fixed ``CON`` text, run before and after the gateways in the same command.

Sessions alternate two scripts: reading (home, latest list, first bulletin, back, home,
verify a code: 7 requests) and subscribing (home, subscribe, area, SMS, consent: 5 requests,
one database write).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench import common

SERVICE_CODE = "*384*123#"
FLOOR_TEXT = "CON Warta\n1 Info terbaru\n2 Cek kode\n3 Berlangganan\n4 Berhenti"
BULLETINS = 10


def _scripts(code: str) -> tuple[list[str], list[str]]:
    reading = ["1", "1", "0", "00", "2", code]
    subscribing = ["3", "3171", "1", "1"]
    return reading, subscribing


# -- servers --------------------------------------------------------------------------------


def server_child(pipe: Connection, params: dict[str, Any]) -> None:
    asyncio.run(_serve(pipe, params))


async def _floor_handler(request: Any) -> Any:
    from aiohttp import web

    form = await request.post()
    if not form.get("sessionId"):
        return web.Response(text="END Maaf, coba lagi.")
    return web.Response(text=FLOOR_TEXT)


async def _serve(pipe: Connection, params: dict[str, Any]) -> None:
    from aiohttp import web

    if params["bare"]:
        app = web.Application()
        app.router.add_post("/callbacks/africastalking/{token}/ussd", _floor_handler)
    else:
        from gateway.app import create_app
        from gateway.config import load_config

        config = load_config(
            None,
            environ={},
            overrides={
                "database": {"url": params["url"]},
                "secrets": params["secrets"],
                "dispatch": {"enabled": False},
                "scheduler": {"enabled": False},
                "log_level": "WARNING",
            },
        )
        app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    pipe.send(f"http://{host}:{port}/callbacks/africastalking/{params['token']}/ussd")
    await common.wait_for_command(pipe)
    result = {"peak_rss_mib": common.vm_hwm_mib(), "cpu_s": time.process_time()}
    await runner.cleanup()
    pipe.send(result)


# -- the load generator ----------------------------------------------------------------------


def load_child(pipe: Connection, url: str, sessions: int, code: str, prefix: str) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_load(url, sessions, code, prefix)))


async def _session(
    http: aiohttp.ClientSession, url: str, phone: str, inputs: list[str], times: list[float]
) -> tuple[int, int]:
    """One session; appends each request's latency to ``times``; returns (requests, errors)."""
    session_id = "ATUid_" + uuid.uuid4().hex
    history: list[str] = []
    errors = 0
    for step in [None, *inputs]:
        if step is not None:
            history.append(step)
        form = {"sessionId": session_id, "serviceCode": SERVICE_CODE, "phoneNumber": phone,
                "networkCode": "51010", "text": "*".join(history)}  # fmt: skip
        began = time.perf_counter()
        async with http.post(url, data=form) as response:
            body = await response.text()
        times.append(time.perf_counter() - began)
        if response.status != 200 or not body.startswith(("CON ", "END ")):
            errors += 1
        if not body.startswith("CON "):
            break
    return len(history) + 1, errors


async def _load(url: str, sessions: int, code: str, prefix: str) -> dict[str, Any]:
    reading, subscribing = _scripts(code)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        warm: list[float] = []
        await asyncio.gather(
            *(_session(http, url, f"+62811{prefix}{i:05d}", reading, warm) for i in range(20))
        )
        times: list[float] = []
        began = time.perf_counter()
        done = await asyncio.gather(
            *(
                _session(
                    http,
                    url,
                    f"+62812{prefix}{i:05d}",
                    subscribing if i % 2 else reading,
                    times,
                )
                for i in range(sessions)
            )
        )
        wall = time.perf_counter() - began
    times.sort()

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))] * 1000

    return {
        "requests": sum(r for r, _ in done),
        "errors": sum(e for _, e in done),
        "short_sessions": sum(
            1 for i, (r, _) in enumerate(done) if r != 1 + len(subscribing if i % 2 else reading)
        ),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": times[-1] * 1000,
        "wall_s": wall,
        "rate": len(times) / wall,
    }


# -- databases ------------------------------------------------------------------------------


async def _postgres_database(base_url: str, name: str) -> str:
    from gateway.db.migrate import upgrade_async

    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    await upgrade_async(url)
    return url


async def _drop_postgres(base_url: str, name: str) -> None:
    admin = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _seed(url: str) -> str:
    """One agency with ``BULLETINS`` published announcements; returns one verification code."""
    engine = common.engine_for(url)
    try:
        agency_id = await common.seed_agency(engine)
        codes = [
            (await common.add_announcement(engine, agency_id, status="done"))["verification_code"]
            for _ in range(BULLETINS)
        ]
    finally:
        await engine.dispose()
    return str(codes[0])[:6]


# -- one target -----------------------------------------------------------------------------


async def measure(
    label: str, *, sessions: int, secrets: dict[str, str], url: str | None, code: str, prefix: str
) -> dict[str, Any]:
    """Serve (the gateway on ``url``, or the floor when None), then load it from a child."""
    params = {"bare": url is None, "url": url, "secrets": secrets,
              "token": secrets["callback_token"]}  # fmt: skip
    server = common.spawn(server_child, params)
    try:
        load = common.spawn(load_child, server.ready, sessions, code, prefix).finish(timeout=600)
    finally:
        served = server.stop()
    return {"label": label, **load, **served}


def add_arguments(parser: Any) -> None:
    parser.add_argument("--sessions", type=int, default=500, help="concurrent USSD sessions")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("WARTA_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL (default: $WARTA_TEST_POSTGRES_URL; none: SQLite only)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite file (default: /tmp)")


async def main(args: Any, command: str) -> None:
    secrets = common.keys()
    common.say_machine(command)
    if args.postgres:
        await common.say_postgres(args.postgres)
    common.say()
    rows: list[dict[str, Any]] = []
    pg_name = f"bench_ussd_{uuid.uuid4().hex[:6]}"
    with common.work_folder(args.workdir, "ussd") as workdir:
        try:
            rows.append(
                await measure(
                    "floor", sessions=args.sessions, secrets=secrets, url=None, code="X", prefix="0"
                )
            )
            sqlite_path = workdir / "ussd.db"
            sqlite_url = f"sqlite+aiosqlite:///{sqlite_path}"
            from gateway.db.migrate import upgrade_async

            await upgrade_async(sqlite_url)
            code = await _seed(sqlite_url)
            rows.append(
                await measure(
                    "Warta on SQLite",
                    sessions=args.sessions,
                    secrets=secrets,
                    url=sqlite_url,
                    code=code,
                    prefix="1",
                )
            )
            if args.postgres:
                pg_url = await _postgres_database(args.postgres, pg_name)
                code = await _seed(pg_url)
                rows.append(
                    await measure(
                        "Warta on PostgreSQL",
                        sessions=args.sessions,
                        secrets=secrets,
                        url=pg_url,
                        code=code,
                        prefix="2",
                    )
                )
            rows.append(
                await measure(
                    "floor (again)",
                    sessions=args.sessions,
                    secrets=secrets,
                    url=None,
                    code="X",
                    prefix="3",
                )
            )
        finally:
            if args.postgres:
                await _drop_postgres(args.postgres, pg_name)
    floor = rows[0]
    table = [
        [
            r["label"],
            f"{r['requests']:,}",
            r["errors"],
            f"{r['p50']:.1f}",
            f"{r['p90']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['max']:.0f}",
            f"{r['p50'] / floor['p50']:.2f}x",
            f"{r['p99'] / floor['p99']:.2f}x",
            f"{r['rate']:,.0f}",
            f"{r['wall_s']:.2f}",
        ]
        for r in rows
    ]
    common.say(
        common.table(
            [
                "target",
                "requests",
                "errors",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "p50 vs floor",
                "p99 vs floor",
                "requests/s",
                "wall s",
            ],
            table,
        )
    )
    short = {r["label"]: r["short_sessions"] for r in rows if r["short_sessions"]}
    if short:
        common.say(f"\nsessions that ended early (an END before the script ran out): {short}")
