"""The durable outbox, measured against its floors in one run (``python -m bench outbox``).

Processes: the provider simulator always runs in its own process, and so does the side being
measured (Warta's dispatcher, the bare aiohttp client, the gateway serving callbacks), so on a
2-core machine each gets a core. The parent only seeds, orchestrates and prints.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import sqlalchemy as sa

from bench import common
from channels.africastalking.simconfig import SimulatorConfig
from gateway.db.engine import reading
from gateway.db.schema import deliveries
from gateway.outbox.fanout import fan_out
from gateway.pricing import Tariff

TEXT = "Warta: listrik padam pukul 10.00-14.00. Info: https://warta.example/a/ABC"


@dataclass(frozen=True)
class Knobs:
    claim_batch: int = 2000
    workers_per_channel: int = 4
    executor_workers: int = 16
    rate_per_second: float = 1e9
    batch_size: int = 100
    pool_size: int = 10

    def describe(self) -> str:
        return (
            f"dispatch.claim_batch={self.claim_batch}, dispatch.workers_per_channel="
            f"{self.workers_per_channel}, africastalking.executor_workers={self.executor_workers}"
            f", africastalking.batch_size={self.batch_size}, africastalking.rate_per_second="
            f"{self.rate_per_second:g}, database.pool_size={self.pool_size}"
        )


# -- 1. fan-out -----------------------------------------------------------------------------


async def bench_fanout(backend: str, n: int, secrets: dict[str, str], workdir: Any) -> list[Any]:
    url = await common.fresh_database(backend, "fanout", workdir)
    engine = common.engine_for(url)
    try:
        agency_id = await common.seed_agency(engine)
        await common.seed_subscribers(url, agency_id, n, common.vault_of(secrets), prefix="2547")
        floor, indexed = (
            common.copy_table("deliveries_floor", indexed=False),
            common.copy_table("deliveries_indexed", indexed=True),
        )
        async with engine.begin() as conn:
            await conn.run_sync(floor.metadata.create_all)
            await conn.run_sync(indexed.metadata.create_all)
        async with engine.connect() as conn:  # warm the page cache
            await conn.execute(sa.text("SELECT count(*), sum(length(phone_ciphertext)) "
                                       "FROM subscribers"))  # fmt: skip
        ann = await common.add_announcement(engine, agency_id, status="sending")
        times: dict[str, float] = {}
        rows: dict[str, int] = {}
        for label, table in (("floor", floor), ("indexed", indexed), ("warta", None)):
            if backend == "postgres":
                async with engine.connect() as conn:
                    await conn.execute(sa.text("CHECKPOINT"))
            start = time.perf_counter()
            async with engine.begin() as conn:
                if table is None:
                    added = await fan_out(
                        conn, announcement=ann, now=common.now(),
                        segments_by_channel={"sms": {"id": 1}},
                        tariff=Tariff(currency="IDR", default=Decimal(350),
                                      per_region={"KE": Decimal(12)}),
                    )  # fmt: skip
                    rows[label] = added["sms"]
                else:
                    result = await conn.execute(
                        common.plain_select(table),
                        {"announcement": ann["id"], "now": common.now(), "agency": agency_id},
                    )
                    rows[label] = int(result.rowcount or 0)
            times[label] = time.perf_counter() - start
        async with engine.connect() as conn:
            check = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(deliveries)
                .where(deliveries.c.announcement_id == ann["id"], deliveries.c.cost == 12)
            )
        assert rows["warta"] == rows["floor"] == rows["indexed"] == check == n, (rows, check)
    finally:
        await engine.dispose()
        await common.drop_database(url)
    return [
        backend, f"{n:,}", f"{times['floor']:.2f}", f"{times['indexed']:.2f}",
        f"{times['warta']:.2f}", f"{times['warta'] / times['floor']:.2f}x",
        f"{times['warta'] / times['indexed']:.2f}x",
    ]  # fmt: skip


# -- children -------------------------------------------------------------------------------


def simulator_child(
    pipe: Connection, latency: float, api_key: str, invalid_share: float = 0.0
) -> None:
    asyncio.run(_simulator_main(pipe, latency, api_key, invalid_share))


async def _simulator_main(
    pipe: Connection, latency: float, api_key: str, invalid_share: float
) -> None:
    from channels.africastalking.simulator import AfricasTalkingSimulator

    sim = AfricasTalkingSimulator(
        SimulatorConfig(
            api_key=api_key, latency=latency, suffix_outcomes={}, max_records=10, currency="IDR",
            # A share of numbers refused for good, as a real list has (moved, mistyped).
            recipient_failure_shares={"invalid_number": invalid_share} if invalid_share else {},
        )  # the gateway's [pricing] currency: costs recorded
    )  # fmt: skip
    pipe.send(await sim.start())

    def stats() -> dict[str, int]:
        return {"requests": sim.requests_total, "recipients": sim.recipients_total,
                "accepted": sim.sent_count.total()}  # fmt: skip

    while await common.wait_for_command(pipe) != "stop":
        pipe.send(stats())
    final = {**stats(), "duplicates": len(sim.sent_count.duplicates())}
    await sim.stop()
    pipe.send(final)


def floor_client_child(
    pipe: Connection, base_url: str, api_key: str, n: int, concurrency: int
) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_floor_client(base_url, api_key, n, concurrency)))


async def _floor_client(base_url: str, api_key: str, n: int, concurrency: int) -> dict[str, Any]:
    """Bulk form posts, 100 recipients each, straight to the simulator: no database at all."""
    url = base_url + "/version1/messaging"
    headers = {"apiKey": api_key, "Accept": "application/json"}
    next_start, accepted = 1, 0
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_start, accepted
            while next_start <= n:
                start = next_start
                next_start += 100
                numbers = range(start, min(start + 100, n + 1))
                to = ",".join(common.phone("2549", i) for i in numbers)
                form = {"username": "sandbox", "to": to, "message": TEXT, "bulkSMSMode": "1",
                        "enqueue": "1"}  # fmt: skip
                async with session.post(url, data=form, headers=headers) as response:
                    answer = await response.json(content_type=None)
                recipients = answer["SMSMessageData"]["Recipients"]
                accepted += sum(1 for r in recipients if r["statusCode"] == 101)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return {"accepted": accepted, "seconds": seconds, "peak_rss_mib": common.vm_hwm_mib()}


def channel_child(pipe: Connection, params: dict[str, Any]) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_channel_only(params)))


async def _channel_only(params: dict[str, Any]) -> dict[str, Any]:
    """Warta's SMS channel alone: the official SDK on its thread pool, no database, no outbox.

    Fed batches of ``claim_batch``, ``workers_per_channel`` at a time, as the dispatcher's
    workers claim them (the dispatcher hands a batch over in requests of ``batch_size``;
    ``send`` splits it the same way itself). The gap between this and Warta is what the
    durable outbox costs, and this is the most one process can send through the SDK, whatever
    the outbox does.
    """
    from channels.base import OutgoingMessage
    from channels.registry import build_channels
    from gateway.app import settle_process

    knobs: Knobs = params["knobs"]
    channel = build_channels(gateway_config(params))["sms"]
    settle_process()  # as in a Warta process
    n, next_start, sent = params["n"], 1, 0

    async def worker() -> None:
        nonlocal next_start, sent
        while next_start <= n:
            start = next_start
            next_start += knobs.claim_batch
            batch = [
                OutgoingMessage(delivery_id=i, recipient=common.phone("2548", i), text=TEXT,
                                idempotency_key=f"warta-{i}", language="id")
                for i in range(start, min(start + knobs.claim_batch, n + 1))
            ]  # fmt: skip
            results = await channel.send(batch)
            sent += sum(1 for r in results if r.state.value == "sent")

    cpu_began, began = time.process_time(), time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(knobs.workers_per_channel)))
    finally:
        await channel.close()
    seconds = time.perf_counter() - began
    return {"sent": sent, "seconds": seconds, "cpu_s": time.process_time() - cpu_began}


def dispatch_child(pipe: Connection, params: dict[str, Any]) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_dispatch(params)))


def gateway_config(params: dict[str, Any]) -> Any:
    from gateway.config import load_config

    knobs: Knobs = params["knobs"]
    return load_config(
        None,
        environ={},
        overrides={
            "database": {"url": params["url"], "pool_size": knobs.pool_size},
            "secrets": params["secrets"],
            "africastalking": {
                "base_url": params.get("sim_url", "http://127.0.0.1:9"),
                "executor_workers": knobs.executor_workers,
                "rate_per_second": knobs.rate_per_second,
                "batch_size": knobs.batch_size,
                "request_timeout_s": 10.0,
            },
            "dispatch": {
                "claim_batch": knobs.claim_batch,
                "workers_per_channel": knobs.workers_per_channel,
                "idle_poll_s": 0.05,
                "enabled": params.get("dispatch_enabled", True),
                # Figures in RESULTS.md were taken without the PostgreSQL rate budget (the
                # simulator enforces no rate); bench.scale says so in its knobs line.
                "shared_rate_limit": False,
            },
            # Measured at any hour: at night in Jakarta a normal broadcast waits for 06:00.
            "scheduler": {"quiet_hours": "off"},
            "log_level": "WARNING",
        },
    )


async def _dispatch(params: dict[str, Any]) -> dict[str, Any]:
    """Real Dispatcher + real SmsChannel + real database: fan out, then drain the outbox."""
    from channels.registry import build_channels
    from gateway.app import settle_process, vault_from_config
    from gateway.clock import SystemClock
    from gateway.db.engine import create_engine
    from gateway.outbox.dispatcher import Dispatcher
    from gateway.renditions import Renderer

    config = gateway_config(params)
    engine = create_engine(config.database)
    dispatcher = Dispatcher(
        engine=engine, clock=SystemClock(), config=config, vault=vault_from_config(config),
        renderer=Renderer(), channels=build_channels(config),
    )  # fmt: skip
    # The dispatcher's claims and records run on its writer's engine on SQLite (gateway.db.writer).
    timed = [engine.sync_engine, dispatcher.writer.sync_engine]
    statements = _time_statements(*filter(None, timed)) if params.get("statements") else None
    announcement_id = params["announcement_id"]
    began = time.perf_counter()
    if params.get("helper"):
        # Another worker process of the same deployment: it only dispatches, from the moment
        # the starter's fan-out is committed (the starter's clock is the one reported).
        await common.wait_sending(engine, announcement_id, timeout=params["timeout_s"])
    else:
        started = await dispatcher.start_due()  # the real start: approved -> sending + fan-out
        assert started == 1
    fanned = time.perf_counter()
    pending = [
        sa.exists().where(deliveries.c.announcement_id == announcement_id,
                          deliveries.c.channel == "sms", deliveries.c.state == state)
        for state in ("queued", "sending")
    ]  # fmt: skip
    import gc

    gc_time = [0.0, 0.0, 0]
    # Per generation: seconds, collections, objects found to be cyclic garbage. In CPU time of
    # the collecting thread: wall time would count the GIL handed to other threads in between.
    gc_by_generation = [[0.0, 0, 0] for _ in range(3)]

    def gc_clock(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[1] = time.thread_time()
        else:
            took = time.thread_time() - gc_time[1]
            gc_time[0] += took
            gc_time[2] += info["generation"] == 2
            entry = gc_by_generation[info["generation"]]
            entry[0] += took
            entry[1] += 1
            entry[2] += info["collected"]

    gc.callbacks.append(gc_clock)
    profiler = _start_profile(params.get("profile"))
    # As `warta serve` does once it is up: the GIL handed over sooner, start-up objects out
    # of the collector's scans.
    settle_process()
    cpu_began = time.process_time()
    await dispatcher.start()
    deadline = fanned + params["timeout_s"]
    drained = False
    try:
        while time.perf_counter() < deadline:
            async with reading(engine) as conn:
                busy = await conn.scalar(sa.select(sa.or_(*pending)))
            if not busy:
                drained = True
                break
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        cpu_s = time.process_time() - cpu_began
        threads_cpu = _threads_cpu()
    finally:
        await dispatcher.stop()
        _stop_profile(profiler, params.get("profile"))
    async with engine.connect() as conn:
        states: dict[str, int] = dict(
            (await conn.execute(
                sa.select(deliveries.c.state, sa.func.count())
                .where(deliveries.c.announcement_id == announcement_id)
                .group_by(deliveries.c.state)
            )).all()
        )  # fmt: skip
    await engine.dispose()
    return {
        "fanout_s": fanned - began, "seconds": done - fanned, "drained": drained, "cpu_s": cpu_s,
        "gc_s": gc_time[0], "gc_full": gc_time[2], "gc_by_generation": gc_by_generation,
        "threads_cpu": threads_cpu,
        "statements": statements,
        "states": {k: int(v) for k, v in states.items()}, "peak_rss_mib": common.vm_hwm_mib(),
    }  # fmt: skip


def _time_statements(*engines: Any) -> dict[str, list[float]]:
    """Wall seconds and calls per SQL statement (by its first words), and per transaction from
    BEGIN to COMMIT (by its first statement), for ``--statements``; over the (sync) engines."""
    totals: dict[str, list[float]] = {}
    for engine in engines:
        _time_engine(engine, totals)
    return totals


def _time_engine(sync_engine: Any, totals: dict[str, list[float]]) -> None:
    from sqlalchemy import event

    @event.listens_for(sync_engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_began"] = time.perf_counter()

    @event.listens_for(sync_engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        key = " ".join(statement.split())[:70]
        entry = totals.setdefault(key, [0.0, 0])
        entry[0] += time.perf_counter() - conn.info.pop("bench_began")
        entry[1] += 1
        conn.info.setdefault("bench_first", key[:40])

    # A transaction from its BEGIN (on SQLite, once BEGIN IMMEDIATE has the write lock) to its
    # COMMIT, under "held" and its first statement: how long each kind keeps the lock.
    @event.listens_for(sync_engine, "begin")
    def begun(conn: Any) -> None:
        conn.info["bench_tx"] = time.perf_counter()
        conn.info.pop("bench_first", None)

    @event.listens_for(sync_engine, "commit")
    def committed(conn: Any) -> None:
        key = "held: " + conn.info.get("bench_first", "?")
        entry = totals.setdefault(key, [0.0, 0])
        entry[0] += time.perf_counter() - conn.info.pop("bench_tx", time.perf_counter())
        entry[1] += 1


def _threads_cpu() -> dict[str, float]:
    """CPU seconds per kind of thread (Linux): event loop, SQLite, SDK pool; since each began."""
    import os
    import re
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    kinds: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task), "other")
        kind = "sdk" if name.startswith("warta-at") else re.sub(r"[-_ ]?\d+.*$", "", name)
        kinds[kind] = kinds.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return kinds


def _start_profile(path: str | None) -> Any:
    """cProfile of the event-loop thread (``--profile``); SDK threads need py-spy."""
    if not path:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _stop_profile(profiler: Any, path: str | None) -> None:
    if profiler is not None and path:
        profiler.disable()
        profiler.dump_stats(path)


def callbacks_child(pipe: Connection, params: dict[str, Any]) -> None:
    asyncio.run(_serve_callbacks(pipe, params))


async def _bare_report(request: Any) -> Any:
    from aiohttp import web

    form = await request.post()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not fields.get("id"):
        return web.Response(status=400)
    return web.Response(text="OK")


async def _serve_callbacks(pipe: Connection, params: dict[str, Any]) -> None:
    """The real gateway app (``bare=False``) or a bare form-parsing handler, until told to stop."""
    from aiohttp import web

    from gateway.app import create_app

    if params["bare"]:
        app = web.Application()
        app.router.add_post("/callbacks/africastalking/{token}/sms/delivery", _bare_report)
    else:
        app = create_app(gateway_config({**params, "dispatch_enabled": False}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    pipe.send(f"http://{host}:{port}")
    await common.wait_for_command(pipe)
    result: dict[str, Any] = {"peak_rss_mib": common.vm_hwm_mib()}
    if not params["bare"]:
        from gateway.appkeys import ENGINE
        from gateway.db.schema import delivery_reports

        # One statement, so one snapshot: the writer may still be committing a batch that
        # wrk stopped waiting for, and two reads could fall either side of it.
        stored = sa.select(sa.func.count()).select_from(delivery_reports).scalar_subquery()
        delivered = (
            sa.select(sa.func.count()).where(deliveries.c.state == "delivered").scalar_subquery()
        )
        async with app[ENGINE].connect() as conn:
            row = (await conn.execute(sa.select(stored, delivered))).one()
        result["stored"], result["delivered"] = int(row[0]), int(row[1])
    await runner.cleanup()
    pipe.send(result)


# -- 2 and 4. end-to-end dispatch, peak RSS ---------------------------------------------------


async def run_warta(
    backend: str, n: int, *, sim_url: str, secrets: dict[str, str], knobs: Knobs,
    workdir: Any, prefix: str, name: str, profile: str | None = None, pyspy: str | None = None,
    statements: bool = False, processes: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Seed ``n`` subscribers and an approved announcement; the child fans out and drains.

    ``processes`` > 1 starts that many Warta processes on the one database (as several
    ``warta serve --role worker``): one fans out, all dispatch, the first one's clock counts.

    ``profile``: write a cProfile of the child's drain phase there; ``pyspy``: record the
    child with ``py-spy`` (every thread) into that flame graph.
    """
    url = await common.fresh_database(backend, name, workdir)
    engine = common.engine_for(url)
    try:
        agency_id = await common.seed_agency(engine)
        await common.seed_subscribers(url, agency_id, n, common.vault_of(secrets), prefix=prefix)
        ann = await common.add_announcement(engine, agency_id, status="approved")
        await engine.dispose()
        params = {"url": url, "secrets": secrets, "knobs": knobs, "sim_url": sim_url,
                  "announcement_id": ann["id"], "timeout_s": max(120.0, n / 500),
                  "profile": profile, "statements": statements}  # fmt: skip
        helpers = [
            common.spawn(dispatch_child, {**params, "helper": True, "profile": None})
            for _ in range(processes - 1)
        ]
        child = common.spawn(dispatch_child, params)
        spy = _py_spy(child.process.pid, pyspy)
        result: dict[str, Any] = child.finish(timeout=params["timeout_s"] + 120)
        for helper in helpers:
            helper.finish(timeout=params["timeout_s"] + 120)
        if spy is not None:
            spy.wait(60)
    finally:
        await engine.dispose()
        await common.drop_database(url)
    result["n"] = n
    finished = result["states"].get("sent", 0) + result["states"].get("failed", 0)
    result["rate"] = finished / result["seconds"]
    return result


def _py_spy(pid: int | None, path: str | None) -> Any:
    if not path or pid is None:
        return None
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "250", "--threads", "--gil",
         "--output", path, "--format", "raw" if path.endswith(".txt") else "flamegraph"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def per_recipient_loop(sim_url: str, api_key: str, n: int) -> float:
    """What an agency writes without Warta: one SDK ``send`` per number, one after another."""
    from africastalking.SMS import SMSService

    class DirectSMS(SMSService):  # type: ignore[misc]  # the SDK's own requests.post, no pool
        def __init__(self) -> None:
            self._bench_url = sim_url
            super().__init__("sandbox", api_key)

        def _init_service(self) -> None:
            self._baseUrl = self._bench_url + "/version1"
            self._contentUrl = self._baseUrl

    sms = DirectSMS()
    began = time.perf_counter()
    sent = 0
    for i in range(1, n + 1):
        answer = sms.send(TEXT, [common.phone("2546", i)], enqueue=True)
        sent += answer["SMSMessageData"]["Recipients"][0]["statusCode"] == 101
    assert sent == n
    return n / (time.perf_counter() - began)


def _delta(after: dict[str, int], before: dict[str, int]) -> int:
    return after["accepted"] - before["accepted"]


async def bench_dispatch(
    backends: list[str], n: int, *, knobs: Knobs, secrets: dict[str, str], workdir: Any,
    loop_n: int, latency_n: int, rss_n: int, invalid_share: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    api_key = secrets["africastalking_api_key"]
    out: dict[str, Any] = {"warta": {}, "invalid": {}}
    sim = common.spawn(simulator_child, 0.0, api_key)
    try:
        before = sim.ask("stats")
        floor = common.spawn(floor_client_child, sim.ready, api_key, n, 16).finish()
        out["floor"] = {**floor, "rate": floor["accepted"] / floor["seconds"],
                        "sim_accepted": _delta(sim.ask("stats"), before)}  # fmt: skip
        common.say(f"  floor: {out['floor']['rate']:,.0f}/s")
        params = {"n": n, "knobs": knobs, "secrets": secrets, "sim_url": sim.ready,
                  "url": "sqlite+aiosqlite://"}  # fmt: skip  # the config wants one; never opened
        before = sim.ask("stats")
        channel = common.spawn(channel_child, params).finish()
        out["channel"] = {**channel, "rate": channel["sent"] / channel["seconds"],
                          "sim_accepted": _delta(sim.ask("stats"), before)}  # fmt: skip
        common.say(f"  SMS channel alone: {out['channel']['rate']:,.0f}/s")
        for i, backend in enumerate(backends):
            before = sim.ask("stats")
            result = await run_warta(backend, n, sim_url=sim.ready, secrets=secrets, knobs=knobs,
                                     workdir=workdir, prefix=f"254{i + 1}",
                                     name=f"dispatch_{backend}")  # fmt: skip
            result["sim_accepted"] = _delta(sim.ask("stats"), before)
            out["warta"][backend] = result
            common.say(f"  warta {backend}: {result['rate']:,.0f}/s {result['states']}")
        if rss_n and rss_n != n:
            before = sim.ask("stats")
            result = await run_warta("sqlite", rss_n, sim_url=sim.ready, secrets=secrets,
                                     knobs=knobs, workdir=workdir, prefix="2543",
                                     name="dispatch_rss")  # fmt: skip
            result["sim_accepted"] = _delta(sim.ask("stats"), before)
            out["rss"] = result
            common.say(f"  warta sqlite {rss_n:,}: {result['rate']:,.0f}/s, "
                       f"peak RSS {result['peak_rss_mib']:.0f} MiB")  # fmt: skip
    finally:
        out["simulator"] = sim.stop()
    if invalid_share:
        # A real list has numbers that moved or were mistyped: each refusal is recorded, and
        # the fallback check runs for every batch that has one.
        refusing = common.spawn(simulator_child, 0.0, api_key, invalid_share)
        try:
            for i, backend in enumerate(backends):
                result = await run_warta(backend, n, sim_url=refusing.ready, secrets=secrets,
                                         knobs=knobs, workdir=workdir, prefix=f"255{i + 1}",
                                         name=f"dispatch_invalid_{backend}")  # fmt: skip
                result["share"] = invalid_share
                out["invalid"][backend] = result
                common.say(f"  warta {backend}, {invalid_share:.0%} invalid: "
                           f"{result['rate']:,.0f}/s {result['states']}")  # fmt: skip
        finally:
            out["refusing_simulator"] = refusing.stop()
    out["kannel"] = await _kannel(n)
    slow = common.spawn(simulator_child, 0.1, api_key)
    try:
        out["loop_rate"] = await asyncio.to_thread(per_recipient_loop, slow.ready, api_key, loop_n)
        common.say(f"  per-recipient loop: {out['loop_rate']:.1f}/s")
        out["latency"] = await run_warta(
            backends[0], latency_n, sim_url=slow.ready, secrets=secrets,
            knobs=replace(knobs, executor_workers=max(knobs.executor_workers, 32)),
            workdir=workdir, prefix="2545", name="dispatch_latency",
        )  # fmt: skip
        common.say(f"  warta {backends[0]} at 100 ms: {out['latency']['rate']:,.0f}/s")
    finally:
        out["slow_simulator"] = slow.stop()
    return out


async def bench_against_kannel(
    backends: list[str], n: int, *, rounds: int, knobs: Knobs, secrets: dict[str, str],
    workdir: Any,
) -> list[dict[str, float]]:  # fmt: skip
    """Kannel and Warta on each backend, one after the other, ``rounds`` times.

    The machine's speed drifts by a fifth within minutes (bench/RESULTS.md), and section 2 runs
    each contender once, minutes apart: here each round's ratio compares runs next to each
    other, and the median of the rounds is the figure.
    """
    if rounds > 10:
        # Each round and backend sends to its own block of numbers (prefix 26<round><backend>),
        # so that the simulator's count of numbers sent twice stays meaningful.
        raise SystemExit("--kannel-rounds: at most 10")
    api_key = secrets["africastalking_api_key"]
    out: list[dict[str, float]] = []
    sim = common.spawn(simulator_child, 0.0, api_key)
    try:
        for r in range(rounds):
            kannel = await _kannel(n)
            if not isinstance(kannel, dict):
                common.say(f"  Kannel {kannel}")
                return out
            entry = {"kannel": float(kannel["rate"])}
            for i, backend in enumerate(backends):
                result = await run_warta(backend, n, sim_url=sim.ready, secrets=secrets,
                                         knobs=knobs, workdir=workdir,
                                         prefix=f"26{r}{i + 1}",  # fresh numbers a round
                                         name=f"against_kannel_{backend}")  # fmt: skip
                entry[backend] = float(result["rate"])
                common.say(f"  round {r + 1}: warta {backend}: {result['rate']:,.0f}/s")
            out.append(entry)
    finally:
        stats = sim.stop()
    common.say(f"  simulator: {stats['duplicates']} numbers sent twice")
    return out


async def _kannel(n: int) -> dict[str, Any] | str:
    try:
        from bench.kannel import KannelError, measure_kannel
    except ImportError as exc:
        return f"bench.kannel unavailable ({exc})"
    try:
        result = await measure_kannel(n, 100)
    except KannelError as exc:
        return f"not measured: {exc} (install: apt-get install kannel kannel-extras)"
    common.say(f"  kannel: {result.messages_per_s:,.0f}/s")
    return {"rate": result.messages_per_s, "messages": result.messages,
            "seconds": result.seconds, "how": result.counted_by}  # fmt: skip


# -- 3. delivery-report ingestion -----------------------------------------------------------


async def bench_reports(
    backends: list[str], *, seconds: int, connections: int, secrets: dict[str, str],
    workdir: Any, knobs: Knobs, rounds: int = 1,
) -> list[dict[str, Any]]:  # fmt: skip
    """wrk against the bare handler and Warta on each backend, ``rounds`` times in turn:
    each Warta run is compared with the bare run of its own round."""
    path = f"/callbacks/africastalking/{secrets['callback_token']}/sms/delivery"
    rows: list[dict[str, Any]] = []
    for round_ in range(1, rounds + 1):
        for label in ["bare", *backends]:
            params: dict[str, Any] = {"bare": label == "bare", "secrets": secrets, "knobs": knobs}
            if label != "bare":
                params["url"] = await common.fresh_database(label, f"reports_{label}", workdir)
                await common.seed_sent(params["url"], 600_000)
            server = common.spawn(callbacks_child, params)
            try:
                load = await common.run_wrk(server.ready + path, seconds, connections, workdir)
            finally:
                stats = server.stop()
            if label != "bare":
                await common.drop_database(params["url"])
            rows.append({"label": label, "round": round_, **load, **stats})
            common.say(f"  reports {label} (round {round_}): {load.get('rate', 0):,.0f}/s {stats}")
    return rows


# -- profiling one dispatch: python -m bench.outbox --recipients 50000 --profile out.prof ------


async def _profile_main(args: Any) -> None:
    secrets = common.keys()
    knobs = Knobs(args.claim_batch, args.workers, args.executor_workers)
    sim = common.spawn(simulator_child, 0.0, secrets["africastalking_api_key"], args.invalid_share)
    try:
        result = await run_warta(
            args.backend, args.recipients, sim_url=sim.ready, secrets=secrets, knobs=knobs,
            workdir=args.workdir, prefix="2541", name="dispatch_profile",
            profile=args.profile, pyspy=args.pyspy, statements=args.statements,
            processes=args.processes,
        )  # fmt: skip
    finally:
        stats = sim.stop()
    sent = result["states"].get("sent", 0) + result["states"].get("failed", 0)
    per_thread = {k: round(v * 1e6 / max(sent, 1), 1) for k, v in result["threads_cpu"].items()}
    print(
        f"{args.backend} {args.recipients:,}: {result['rate']:,.0f}/s, {result['states']}, "
        f"CPU {result['cpu_s'] / max(sent, 1) * 1e6:.1f} us/delivery "
        f"(wall {result['seconds'] / max(sent, 1) * 1e6:.1f} us), "
        f"threads {per_thread} "
        f"duplicates {stats['duplicates']}, GC {result['gc_s']:.2f} s ({result['gc_full']} full)"
    )
    by_generation = result.get("gc_by_generation") or []
    print(
        "  GC by generation: "
        + "; ".join(
            f"{g}: {seconds:.2f} s in {runs} runs, {found:,} cyclic garbage"
            for g, (seconds, runs, found) in enumerate(by_generation)
        )
    )
    for statement, (seconds, calls) in sorted(
        (result["statements"] or {}).items(), key=lambda kv: -kv[1][0]
    )[:12]:
        print(f"  {seconds / max(sent, 1) * 1e6:6.1f} us/delivery {calls:6d}x  {statement}")


if __name__ == "__main__":
    import argparse
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description="one Warta SMS dispatch, optionally profiled")
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--profile", help="cProfile output of the child's event-loop thread")
    parser.add_argument("--pyspy", help="py-spy flame graph (.svg) or raw stacks (.txt)")
    parser.add_argument("--statements", action="store_true", help="time each SQL statement")
    parser.add_argument("--claim-batch", type=int, default=Knobs.claim_batch)
    parser.add_argument("--workers", type=int, default=Knobs.workers_per_channel)
    parser.add_argument("--executor-workers", type=int, default=Knobs.executor_workers)
    parser.add_argument("--processes", type=int, default=1, help="Warta processes on the database")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--invalid-share", type=float, default=0.0, help="share of numbers the simulator refuses"
    )
    asyncio.run(_profile_main(parser.parse_args()))
