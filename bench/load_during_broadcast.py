"""Citizen traffic while a big broadcast is sending (``python -m bench load``).

For each backend (SQLite, and PostgreSQL when a URL is given) the real gateway runs as one
``warta serve --role all`` OS process against the Africa's Talking simulator in its own process.
Subscribers (``recipients``) and a few published bulletins are seeded first (not measured).

1. **Broadcast alone**: one approved SMS announcement; deliveries/s from the moment it is seen
   ``sending`` until nothing is queued or sending.
2. **Broadcast under load**: the gateway and simulator start afresh, a second announcement to the
   same subscribers starts, and as soon as it is ``sending`` a load generator in another process
   drives, for ``seconds`` over loopback, ``GET /verify?code=…`` (the public page, the
   broadcast's own genuine code) and Africa's Talking USSD sessions (``bench.ussd``'s sessions
   and scripts), each from a fixed number of concurrent clients. Deliveries/s is counted over
   the part of the load window in which the broadcast was still sending.
3. **One address**: ``/verify`` only, all from 127.0.0.1, for ``--one-address-seconds``.

``/verify`` is limited per client address (``VERIFY_LIMITER``: 1/s, burst 20, fixed in
``gateway/app.py``, no configuration key). Step 2 therefore sends each address's 20 checks
and moves to a fresh loopback address (127.1.0.1 and up; Linux routes all of 127/8 to lo),
as many citizens would; step 3 shows what one busy address gets (mostly 429s).

The floor is a bare aiohttp app answering both paths with fixed bodies, driven by the same load
generator the same way, before the gateways and again after them.
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

from bench import common, outbox, scale, ussd
from gateway.codes import new_code
from gateway.db.schema import announcements

FLOOR_PAGE = "<!doctype html><html><body><p>Genuine: issued by BPBD Bench.</p>" + "x" * 3000


# -- the floor server -----------------------------------------------------------------------


def floor_child(pipe: Connection, token: str) -> None:
    asyncio.run(_floor(pipe, token))


async def _floor_verify(request: Any) -> Any:
    from aiohttp import web

    if not request.query.get("code"):
        return web.Response(status=400)
    return web.Response(text=FLOOR_PAGE, content_type="text/html")


async def _floor(pipe: Connection, token: str) -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/verify", _floor_verify)
    app.router.add_post(f"/callbacks/africastalking/{token}/ussd", ussd._floor_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    pipe.send(f"http://{host}:{port}")
    await common.wait_for_command(pipe)
    await runner.cleanup()
    pipe.send({})


# -- the load generator ----------------------------------------------------------------------


def load_child(pipe: Connection, params: dict[str, Any]) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_load(params)))


def _address(k: int) -> str:
    return f"127.{1 + k // 65025}.{(k // 255) % 255}.{k % 255 + 1}"


def _summary(times: list[float], statuses: dict[int, int], wall: float) -> dict[str, Any]:
    times.sort()

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))] * 1000 if times else float("nan")

    return {"requests": len(times), "rate": len(times) / wall, "p50": pct(0.5),
            "p99": pct(0.99), "statuses": statuses}  # fmt: skip


async def _load(params: dict[str, Any]) -> dict[str, Any]:
    """Closed-loop load until ``seconds`` pass; per path: requests, rate, p50/p99, statuses."""
    base, seconds = params["base"], params["seconds"]
    verify_url = f"{base}/verify?code={params['code']}"
    ussd_url = f"{base}/callbacks/africastalking/{params['token']}/ussd"
    reading, subscribing = ussd._scripts(params["code"])
    timeout = aiohttp.ClientTimeout(total=60)
    v_times: list[float] = []
    v_status: dict[int, int] = {}
    u_times: list[float] = []
    u_status: dict[int, int] = {200: 0}
    next_address = 0
    deadline = time.perf_counter() + seconds

    async def verifier() -> None:
        nonlocal next_address
        while time.perf_counter() < deadline:
            if params["many_addresses"]:
                address, next_address = _address(next_address), next_address + 1
                connector = aiohttp.TCPConnector(limit=1, local_addr=(address, 0))
                checks = 20  # the limiter's burst per address
            else:
                connector, checks = aiohttp.TCPConnector(limit=1), 1 << 30
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                for _ in range(checks):
                    if time.perf_counter() >= deadline:
                        return
                    began = time.perf_counter()
                    async with http.get(verify_url) as response:
                        await response.read()
                    v_times.append(time.perf_counter() - began)
                    v_status[response.status] = v_status.get(response.status, 0) + 1

    async def caller(w: int) -> None:
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            k = 0
            while time.perf_counter() < deadline:
                phone = f"+62813{params['prefix']}{w:02d}{k % 10_000:04d}"
                script = subscribing if k % 2 else reading
                _, errors = await ussd._session(http, ussd_url, phone, script, u_times)
                u_status[200] += 0
                u_status[-1] = u_status.get(-1, 0) + errors
                k += 1

    began = time.perf_counter()
    tasks = [verifier() for _ in range(params["verify_clients"])]
    tasks += [caller(w) for w in range(params["ussd_clients"])]
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - began
    u_status[200] = len(u_times) - u_status.get(-1, 0)
    return {"verify": _summary(v_times, v_status, wall), "ussd": _summary(u_times, u_status, wall),
            "addresses": next_address}  # fmt: skip


def drive(params: dict[str, Any]) -> common.Child:
    return common.spawn(load_child, params)


# -- one backend ----------------------------------------------------------------------------


async def _announce(url: str, agency_id: int) -> tuple[int, str]:
    """An approved SMS announcement to every subscriber, with a well-formed code."""
    engine = common.engine_for(url)
    try:
        row = await common.add_announcement(engine, agency_id, status="approved")
        code = new_code()
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.id == row["id"])
                .values(verification_code=code, approved_at=common.now())
            )
    finally:
        await engine.dispose()
    return int(row["id"]), code


async def _gateway(url: str, secrets: dict[str, str], sim_url: str, log: Path) -> scale.Serve:
    knobs = outbox.Knobs()
    gateway = scale.Serve(scale.serve_env(url, secrets, sim_url, knobs), "all", log)
    await gateway.start()
    return gateway


async def _broadcast_alone(url: str, agency_id: int, n: int, secrets: dict[str, str],
                           log: Path) -> dict[str, Any]:  # fmt: skip
    sim = common.spawn(outbox.simulator_child, 0.0, secrets["africastalking_api_key"])
    gateway = await _gateway(url, secrets, sim.ready, log)
    engine = common.engine_for(url)
    try:
        ann_id, _ = await _announce(url, agency_id)
        started, done = await scale.drain(engine, ann_id, timeout=max(300.0, n / 200))
        sent = await scale.sent_count(engine, ann_id)
    finally:
        gateway.stop()
        stats = sim.stop()
        await engine.dispose()
    return {"rate": sent / (done - started), "seconds": done - started, "sent": sent,
            "duplicates": stats["duplicates"]}  # fmt: skip


async def _broadcast_loaded(url: str, agency_id: int, n: int, secrets: dict[str, str],
                            log: Path, load: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    sim = common.spawn(outbox.simulator_child, 0.0, secrets["africastalking_api_key"])
    gateway = await _gateway(url, secrets, sim.ready, log)
    engine = common.engine_for(url)
    try:
        ann_id, code = await _announce(url, agency_id)
        started = await common.wait_sending(engine, ann_id, timeout=60)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{gateway.base}/verify?code={code}") as r,
        ):
            genuine = r.status == 200 and "BPBD Bench" in await r.text()
        child = drive({**load, "base": gateway.base, "code": code, "many_addresses": True})
        sent_before = await scale.sent_count(engine, ann_id)
        load_began = time.perf_counter()
        drained_at = None
        while child.process.is_alive() and not child.pipe.poll(0):
            if drained_at is None and not await scale.busy(engine, ann_id):
                drained_at = time.perf_counter()
            await asyncio.sleep(0.2)
        load_ended = time.perf_counter()
        sent_during = await scale.sent_count(engine, ann_id)
        traffic = child.finish(timeout=120)
        window_end = drained_at or load_ended
        _, done = await scale.drain(engine, ann_id, timeout=max(300.0, n / 200))
        sent = await scale.sent_count(engine, ann_id)
        one = drive({**load, "base": gateway.base, "code": code, "many_addresses": False,
                     "seconds": load["one_address_seconds"], "ussd_clients": 0})  # fmt: skip
        one_address = one.finish(timeout=120)
    finally:
        gateway.stop()
        stats = sim.stop()
        await engine.dispose()
    return {
        "traffic": traffic, "one_address": one_address, "genuine": genuine, "sent": sent,
        "duplicates": stats["duplicates"], "rate_all": sent / (done - started),
        "rate_during": (sent_during - sent_before) / max(window_end - load_began, 1e-9),
        "overlap_s": window_end - load_began, "load_s": load_ended - load_began,
        "drained_during_load": drained_at is not None,
    }  # fmt: skip


async def _backend(label: str, url: str, n: int, secrets: dict[str, str], workdir: Path,
                   load: dict[str, Any], prefix: str) -> dict[str, Any]:  # fmt: skip
    engine = common.engine_for(url)
    try:
        agency_id = await common.seed_agency(engine)
        for _ in range(ussd.BULLETINS):
            await common.add_announcement(engine, agency_id, status="done")
    finally:
        await engine.dispose()
    await common.seed_subscribers(url, agency_id, n, common.vault_of(secrets), prefix=prefix)
    alone = await _broadcast_alone(url, agency_id, n, secrets, workdir / f"{label}_alone.log")
    common.say(f"  {label} broadcast alone: {alone['rate']:,.0f}/s")
    loaded = await _broadcast_loaded(url, agency_id, n, secrets, workdir / f"{label}_load.log",
                                     {**load, "prefix": prefix})  # fmt: skip
    common.say(f"  {label} under load: {loaded['rate_during']:,.0f}/s, "
               f"verify {loaded['traffic']['verify']['rate']:,.0f}/s, "
               f"USSD {loaded['traffic']['ussd']['rate']:,.0f}/s")  # fmt: skip
    return {"label": label, "alone": alone, **loaded}


def _floor_run(secrets: dict[str, str], load: dict[str, Any]) -> dict[str, Any]:
    server = common.spawn(floor_child, secrets["callback_token"])
    try:
        traffic = drive({**load, "base": server.ready, "code": new_code(), "prefix": "9",
                         "many_addresses": True}).finish(timeout=load["seconds"] + 120)  # fmt: skip
    finally:
        server.stop()
    return {"label": "floor", "traffic": traffic}


# -- the command ----------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=30, help="length of the load")
    parser.add_argument("--verify-clients", type=int, default=16)
    parser.add_argument("--ussd-clients", type=int, default=16, help="concurrent USSD sessions")
    parser.add_argument("--one-address-seconds", type=int, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite file and logs")


def _fmt_load(r: dict[str, Any], floor: dict[str, Any], path: str) -> list[str]:
    t, f = r["traffic"][path], floor["traffic"][path]
    other = sum(v for k, v in t["statuses"].items() if k != 200)
    return [f"{t['requests']:,}", f"{t['rate']:,.0f}", f"{t['rate'] / f['rate']:.2f}x",
            f"{t['p50']:.1f}", f"{t['p99']:.1f}", f"{other:,}"]  # fmt: skip


async def main(args: Any, command: str) -> None:
    secrets = common.keys()
    load = {"seconds": args.seconds, "verify_clients": args.verify_clients,
            "ussd_clients": args.ussd_clients, "token": secrets["callback_token"],
            "one_address_seconds": args.one_address_seconds}  # fmt: skip
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    common.say_machine(command)
    if "postgres" in backends:
        await common.say_postgres()
    common.say(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}\n")
    rows: list[dict[str, Any]] = []
    floors = [_floor_run(secrets, load)]
    common.say(f"  floor: verify {floors[0]['traffic']['verify']['rate']:,.0f}/s, "
               f"USSD {floors[0]['traffic']['ussd']['rate']:,.0f}/s")  # fmt: skip
    with common.work_folder(args.workdir, "load") as workdir:
        for i, backend in enumerate(backends):
            url = await common.fresh_database(backend, f"load_{uuid.uuid4().hex[:6]}", workdir)
            try:
                rows.append(await _backend(backend, url, args.recipients, secrets, workdir,
                                           load, prefix=f"254{i + 6}"))  # fmt: skip
            finally:
                await common.drop_database(url)
        floors.append(_floor_run(secrets, load))
    common.say(f"\nload average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}\n")
    floor = floors[0]
    header = ["target", "requests", "requests/s", "vs floor", "p50 ms", "p99 ms", "non-200"]
    for path, title in (("verify", "GET /verify?code=… (genuine code)"),
                        ("ussd", "USSD callback (bench.ussd sessions)")):  # fmt: skip
        table = [[f"floor{' (again)' if j else ''}", *_fmt_load(f, floor, path)]
                 for j, f in enumerate(floors)]  # fmt: skip
        table[1:1] = [[f"Warta on {r['label']}, during the broadcast", *_fmt_load(r, floor, path)]
                      for r in rows]  # fmt: skip
        common.say(
            f"### {title}, {args.seconds} s, "
            f"{args.verify_clients if path == 'verify' else args.ussd_clients} clients\n"
        )
        common.say(common.table([title.split(" (")[0], *header[1:]], table))
        common.say()
    common.say(common.table(
        ["broadcast", "recipients", "alone deliveries/s", "during load deliveries/s",
         "during / alone", "overlap with load s", "whole broadcast under load /s",
         "numbers sent twice"],
        [[f"Warta on {r['label']}", f"{args.recipients:,}", f"{r['alone']['rate']:,.0f}",
          f"{r['rate_during']:,.0f}", f"{r['rate_during'] / r['alone']['rate']:.2f}x",
          f"{r['overlap_s']:.1f}" + (" (drained)" if r["drained_during_load"] else ""),
          f"{r['rate_all']:,.0f}", f"{r['alone']['duplicates']} / {r['duplicates']}"]
         for r in rows],
    ))  # fmt: skip
    common.say()
    for r in rows:
        one = r["one_address"]["verify"]
        refused = one["requests"] - one["statuses"].get(200, 0)
        answers = ", ".join(f"{count:,} x {status}" for status, count in
                            sorted(one["statuses"].items()))  # fmt: skip
        common.say(
            f"- {r['label']}: /verify from one address for {args.one_address_seconds} s: "
            f"{one['requests']:,} requests ({answers}), {refused / max(one['requests'], 1):.1%} "
            f"not 200; p50 {one['p50']:.1f} ms, p99 {one['p99']:.1f} ms; genuine code "
            f"confirmed: {r['genuine']}; loopback addresses used under load: "
            f"{r['traffic']['addresses']:,}"
        )
    common.say(
        "- The /verify limiter (1/s, burst 20 per address) has no configuration key; the "
        "load spreads checks over many loopback addresses instead of relaxing it."
    )
