"""The priority lane, measured (issue #11): ``python -m bench priority``.

One agency, two audiences: ``--recipients`` normal subscribers (area 47.01) and
``--emergency-recipients`` others (area 47.02). A normal SMS broadcast to the first goes out
through the real Dispatcher and the real SmsChannel (official SDK) to the Africa's Talking
simulator in its own process. Once ``--start-share`` of it has reached the simulator, the
emergency announcement to the second audience is approved the way the API approves one
(``store.transition(..., action="approve")``, then ``Dispatcher.wake_starter()``) in the
dispatching process, and the simulator's request records tell when each emergency recipient
got their message. The same run is made twice, side by side: once with the announcement's
urgency ``emergency`` (priority 0, the lane) and once with urgency ``normal`` (what a gateway
without a lane does: the emergency queues behind the broadcast).

Every time is wall-clock (``time.time()``) on one machine: the approval's start (just before
its transaction, so waiting for the database's write lock counts) in the dispatching process,
each request's arrival at the simulator. A delivery counts when the simulator accepts it.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common
from bench.outbox import Knobs, gateway_config
from gateway.db.schema import announcements, deliveries, subscribers

NORMAL_AREA, EMERGENCY_AREA = "47.01", "47.02"
NORMAL_PREFIX, EMERGENCY_PREFIX = "2541", "2549"
BEFORE_WINDOW_S = 10.0
POLL_S = 0.2
RECORD_GRACE_S = 2.0


@dataclass(frozen=True)
class Run:
    backend: str
    lane: bool  # True: the emergency keeps urgency "emergency"; False: stored as "normal"
    normal: int
    emergency: int
    start_share: float
    knobs: Knobs


def add_arguments(parser: Any) -> None:
    parser.add_argument("--recipients", type=int, default=1_000_000, help="normal broadcast")
    parser.add_argument("--emergency-recipients", type=int, default=1_000)
    parser.add_argument(
        "--start-share",
        type=float,
        default=0.10,
        help="share of the broadcast sent before the emergency is approved",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--claim-batch", type=int, default=Knobs.claim_batch)
    parser.add_argument("--workers", type=int, default=Knobs.workers_per_channel)
    parser.add_argument("--executor-workers", type=int, default=Knobs.executor_workers)
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite files (default: /tmp)")


# -- the simulator's process ------------------------------------------------------------------


def simulator_child(pipe: Connection, api_key: str, emergency_prefix: str) -> None:
    asyncio.run(_simulator(pipe, api_key, "+" + emergency_prefix))


async def _simulator(pipe: Connection, api_key: str, emergency_prefix: str) -> None:
    """Serve AT's API; on each command fold the new request records into a timeline.

    The timeline holds one ``(arrival, normal recipients, emergency recipients)`` per
    accepted request, so a million recipients stay ~10,000 small tuples.
    """
    from channels.africastalking.simconfig import SimulatorConfig
    from channels.africastalking.simulator import AfricasTalkingSimulator

    sim = AfricasTalkingSimulator(
        SimulatorConfig(api_key=api_key, suffix_outcomes={}, max_records=100_000, currency="IDR")
    )
    pipe.send(await sim.start())
    timeline: list[tuple[float, int, int]] = []
    totals = {"normal": 0, "emergency": 0}

    def fold() -> None:
        while sim.received:
            record = sim.received.popleft()
            if record.http_status != 201:
                continue
            emergency = sum(1 for n in record.recipients if n.startswith(emergency_prefix))
            normal = len(record.recipients) - emergency
            timeline.append((record.received_at, normal, emergency))
            totals["normal"] += normal
            totals["emergency"] += emergency

    while await common.wait_for_command(pipe) != "stop":
        fold()
        pipe.send(dict(totals))
    fold()
    duplicates = len(sim.sent_count.duplicates())
    await sim.stop()
    pipe.send({"timeline": timeline, "duplicates": duplicates, "requests": sim.requests_total})


# -- the dispatching process ------------------------------------------------------------------


def dispatch_child(pipe: Connection, params: dict[str, Any]) -> None:
    asyncio.run(_dispatch(pipe, params))


async def _dispatch(pipe: Connection, params: dict[str, Any]) -> None:
    """start: fan out the broadcast and dispatch; emergency: approve it; stop: count."""
    from channels.registry import build_channels
    from gateway.app import vault_from_config
    from gateway.clock import SystemClock
    from gateway.db.engine import create_engine, reading
    from gateway.outbox.dispatcher import Dispatcher
    from gateway.renditions import Renderer
    from gateway.store.announcements import transition

    config = gateway_config(params)
    engine = create_engine(config.database)
    clock = SystemClock()
    dispatcher = Dispatcher(
        engine=engine, clock=clock, config=config, vault=vault_from_config(config),
        renderer=Renderer(), channels=build_channels(config),
    )  # fmt: skip
    pipe.send("ready")
    await common.wait_for_command(pipe)
    began = time.perf_counter()
    started = await dispatcher.start_due()  # the broadcast only: the emergency awaits approval
    fanout_s = time.perf_counter() - began
    await dispatcher.start()
    pipe.send({"started": started, "fanout_s": fanout_s})
    try:
        await common.wait_for_command(pipe)
        asked_at = time.time()
        async with engine.begin() as conn:  # what POST /announcements/{id}/approve commits
            await transition(
                conn,
                params["emergency_id"],
                agency_id=params["agency_id"],
                action="approve",
                now=clock.now(),
            )
        committed_at = time.time()
        dispatcher.wake_starter()
        fanned_at = await _fanned_out(engine, params["emergency_id"])
        pipe.send((asked_at, committed_at, fanned_at))
        await common.wait_for_command(pipe)
    finally:
        await dispatcher.stop()
    async with reading(engine) as conn:  # a worker cancelled mid-batch may hold SQLite's lock
        rows = await conn.execute(
            sa.select(deliveries.c.announcement_id, deliveries.c.state, sa.func.count())
            .group_by(deliveries.c.announcement_id, deliveries.c.state)
        )  # fmt: skip
        states: dict[int, dict[str, int]] = {}
        for announcement_id, state, count in rows:
            states.setdefault(int(announcement_id), {})[state] = int(count)
    await engine.dispose()
    pipe.send({"fanout_s": fanout_s, "states": states})


async def _fanned_out(engine: Any, announcement_id: int) -> float:
    """When the starter's fan-out of the announcement became visible (polled every 10 ms)."""
    from gateway.db.engine import reading

    has_deliveries = sa.exists().where(deliveries.c.announcement_id == announcement_id)
    while True:
        async with reading(engine) as conn:
            if await conn.scalar(sa.select(has_deliveries)):
                return time.time()
        await asyncio.sleep(0.01)


# -- one run ----------------------------------------------------------------------------------


async def _seed(url: str, run: Run, secrets: dict[str, str]) -> dict[str, int]:
    """Both audiences and both announcements; returns the ids the dispatching child needs."""
    vault = common.vault_of(secrets)
    engine = common.engine_for(url)
    try:
        agency_id = await common.seed_agency(engine)
        await common.seed_subscribers(url, agency_id, run.normal, vault, prefix=NORMAL_PREFIX)
        await common.seed_subscribers(url, agency_id, run.emergency, vault, prefix=EMERGENCY_PREFIX)
        broadcast = await common.add_announcement(engine, agency_id, status="approved")
        emergency = await common.add_announcement(engine, agency_id, status="pending_approval")
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(subscribers)
                .where(subscribers.c.id > run.normal)
                .values(area_code=EMERGENCY_AREA)
            )
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.id == broadcast["id"])
                .values(areas=[NORMAL_AREA])
            )
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.id == emergency["id"])
                .values(
                    areas=[EMERGENCY_AREA],
                    urgency="emergency" if run.lane else "normal",
                    title="Banjir: segera mengungsi",
                    body="Air naik cepat di Kecamatan Gambir. Segera menuju titik evakuasi.",
                )
            )
    finally:
        await engine.dispose()
    return {
        "agency_id": agency_id,
        "broadcast_id": broadcast["id"],
        "emergency_id": emergency["id"],
    }


async def _until(
    sim: common.Child, key: str, target: int, timeout: float, child: common.Child
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        totals: dict[str, int] = sim.ask("stats")
        if totals[key] >= target:
            return totals
        if time.monotonic() > deadline or not child.process.is_alive():
            raise TimeoutError(f"{key}: {totals[key]:,} of {target:,} reached the simulator")
        await asyncio.sleep(POLL_S)


async def run_once(run: Run, *, secrets: dict[str, str], workdir: Path) -> dict[str, Any]:
    name = f"priority_{run.backend}_{'lane' if run.lane else 'nolane'}"
    url = await common.fresh_database(run.backend, name, workdir)
    sim: common.Child | None = None
    child: common.Child | None = None
    try:
        ids = await _seed(url, run, secrets)
        api_key = secrets["africastalking_api_key"]
        sim = common.spawn(simulator_child, api_key, EMERGENCY_PREFIX)
        params = {"url": url, "secrets": secrets, "knobs": run.knobs, "sim_url": sim.ready, **ids}
        child = common.spawn(dispatch_child, params)
        drain_s = max(300.0, run.normal / 300)
        fan = child.ask("start", timeout=drain_s)
        assert fan["started"] == 1, fan
        await _until(sim, "normal", math.ceil(run.normal * run.start_share), drain_s, child)
        approved_at, committed_at, fanned_at = child.ask("emergency", timeout=120)
        await _until(sim, "emergency", run.emergency, drain_s, child)
        await asyncio.sleep(RECORD_GRACE_S)  # the last outcomes reach the outbox
        dispatched = child.stop()
        child = None
        seen = sim.stop()
        sim = None
    finally:
        for leftover in (child, sim):
            if leftover is not None:
                leftover.process.kill()
        await common.drop_database(url)
    result = summarize(seen["timeline"], approved_at=approved_at, run=run)
    emergency_states = dispatched["states"].get(ids["emergency_id"], {})
    result.update(
        fanout_s=dispatched["fanout_s"],
        commit_s=committed_at - approved_at,
        fanned_s=fanned_at - approved_at,
        duplicates=seen["duplicates"],
        emergency_states=emergency_states,
    )
    return result


def summarize(
    timeline: list[tuple[float, int, int]], *, approved_at: float, run: Run
) -> dict[str, Any]:
    """Latencies of the emergency and the broadcast's rate around it, from the simulator."""
    arrivals = sorted(t for t, _, emergency in timeline for _ in range(emergency))
    last = arrivals[-1]
    first_normal = min(t for t, normal, _ in timeline if normal)
    window_start = max(first_normal, approved_at - BEFORE_WINDOW_S)

    def normal_between(start: float, end: float) -> int:
        return sum(normal for t, normal, _ in timeline if start <= t < end)

    during_s = max(last - approved_at, 1e-3)
    return {
        "ahead": run.normal - normal_between(0.0, approved_at),
        "first_s": arrivals[0] - approved_at,
        "p95_s": arrivals[math.ceil(0.95 * len(arrivals)) - 1] - approved_at,
        "last_s": last - approved_at,
        "emergency_delivered": len(arrivals),
        "before_rate": normal_between(window_start, approved_at) / (approved_at - window_start),
        "during_rate": normal_between(approved_at, last) / during_s,
        "during_normal": normal_between(approved_at, last),
    }


# -- the report -------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def _rows(backend: str, lane: dict[str, Any], queue: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for label, r in (("emergency (priority 0: the lane)", lane),
                     ("same, stored as normal (no lane)", queue)):  # fmt: skip
        rows.append(
            [
                backend,
                label,
                f"{r['ahead']:,}",
                f"{r['emergency_delivered']:,}",
                _seconds(r["fanned_s"]),
                _seconds(r["first_s"]),
                _seconds(r["p95_s"]),
                _seconds(r["last_s"]),
                f"{r['before_rate']:,.0f}",
                f"{r['during_rate']:,.0f} ({r['during_normal']:,} sent)",
            ]
        )
    rows.append(
        [
            backend,
            "**no lane / lane**",
            "",
            "",
            "",
            f"**{queue['first_s'] / lane['first_s']:,.1f}x**",
            f"**{queue['p95_s'] / lane['p95_s']:,.1f}x**",
            f"**{queue['last_s'] / lane['last_s']:,.1f}x**",
            "",
            "",
        ]
    )
    return rows


HEADER = [
    "backend",
    "emergency announcement",
    "broadcast not yet sent at approval",
    "emergency delivered",
    "fanned out s",
    "first delivery s",
    "p95 s",
    "last s",
    "broadcast/s before (10 s)",
    "broadcast/s during (approval -> last emergency)",
]


async def main(args: Any, command: str) -> None:
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    knobs = Knobs(
        claim_batch=args.claim_batch,
        workers_per_channel=args.workers,
        executor_workers=args.executor_workers,
    )
    secrets = common.keys()
    common.say_machine(command)
    if "postgres" in backends:
        await common.say_postgres()
    common.say(f"knobs: {knobs.describe()}")
    common.say()
    rows: list[list[Any]] = []
    with common.work_folder(args.workdir, "priority") as workdir:
        for backend in backends:
            results = {}
            for lane in (True, False):
                run = Run(backend, lane, args.recipients, args.emergency_recipients,
                          args.start_share, knobs)  # fmt: skip
                r = await run_once(run, secrets=secrets, workdir=workdir)
                results[lane] = r
                common.say(
                    f"  {backend} {'lane' if lane else 'no lane'}: first {r['first_s']:.2f} s, "
                    f"p95 {r['p95_s']:.2f} s, last {r['last_s']:.2f} s, approval committed "
                    f"in {r['commit_s']:.2f} s, fanned out at {r['fanned_s']:.2f} s, broadcast "
                    f"{r['before_rate']:,.0f}/s -> {r['during_rate']:,.0f}/s, fan-out "
                    f"{r['fanout_s']:.1f} s, emergency states {r['emergency_states']}, "
                    f"duplicates {r['duplicates']}"
                )
            rows += _rows(backend, results[True], results[False])
    common.say()
    common.say(
        f"## Priority lane: {args.emergency_recipients:,} emergency recipients approved once "
        f"{args.start_share:.0%} of a {args.recipients:,}-recipient broadcast was sent\n"
    )
    common.say(common.table(HEADER, rows))
