"""One broadcast, 1, 2 and 4 ``warta serve --role worker`` processes (``python -m bench scale``).

One PostgreSQL holds an agency with ``recipients`` SMS subscribers (seeded once, not measured).
For each worker count a fresh Africa's Talking simulator starts in its own process (latency 0,
no rate limit), the workers start as real OS processes (``python -m gateway.cli serve --role
worker``, configured through ``WARTA_*`` variables as in ``tests/gateway/test_scale_out.py``),
and the parent inserts one approved announcement: the workers race to start it (exactly one
wins the ``approved -> sending`` update and fans out), then share the claims. The clock runs
from the moment the announcement is seen ``sending`` (its deliveries exist: fan-out commits in
the same transaction) until none is queued or sending. The floor is ``bench.outbox``'s bare
aiohttp client posting the same 100-recipient bulk requests straight to a simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from bench import common, outbox
from gateway.db.schema import deliveries

WORKER_COUNTS = (1, 2, 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(url: str, secrets: dict[str, str], sim_url: str, knobs: outbox.Knobs,
              **settings: str) -> dict[str, str]:  # fmt: skip
    """The environment of a ``warta serve`` child; ``settings`` are extra ``WARTA_*``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("WARTA_")},
        "WARTA_DATABASE__URL": url,
        "WARTA_DATABASE__POOL_SIZE": str(knobs.pool_size),
        "WARTA_AFRICASTALKING__BASE_URL": sim_url,
        "WARTA_AFRICASTALKING__RATE_PER_SECOND": f"{knobs.rate_per_second:g}",
        "WARTA_AFRICASTALKING__BATCH_SIZE": str(knobs.batch_size),
        "WARTA_AFRICASTALKING__EXECUTOR_WORKERS": str(knobs.executor_workers),
        "WARTA_DISPATCH__WORKERS_PER_CHANNEL": str(knobs.workers_per_channel),
        "WARTA_DISPATCH__CLAIM_BATCH": str(knobs.claim_batch),
        "WARTA_DISPATCH__IDLE_POLL_S": "0.05",
        # The default with PostgreSQL: each provider request books its share of the rate in
        # the database first, so the processes together keep to it.
        "WARTA_DISPATCH__SHARED_RATE_LIMIT": "true",
        "WARTA_LOG_LEVEL": "WARNING",
        # Measured at any hour: at night in Jakarta a normal broadcast waits for 06:00.
        "WARTA_SCHEDULER__QUIET_HOURS": "off",
        **{f"WARTA_SECRETS__{k.upper()}": v for k, v in secrets.items()},
        **{f"WARTA_{k.upper()}": v for k, v in settings.items()},
    }


@dataclass
class Serve:
    """``warta serve --role ROLE`` as an OS process on its own port; log in ``log_path``."""

    env: dict[str, str]
    role: str
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> None:
        env = {**self.env, "WARTA_HTTP__PORT": str(self.port),
               "WARTA_HTTP__PUBLIC_URL": self.base}  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--role", self.role],
                env=env, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.role} exited: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.base + "/readyz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.role} not ready in {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


async def busy(engine: Any, announcement_id: int) -> bool:
    """Is any delivery of the announcement still queued or being sent?"""
    pending = [
        sa.exists().where(deliveries.c.announcement_id == announcement_id,
                          deliveries.c.state == state)
        for state in ("queued", "sending")
    ]  # fmt: skip
    async with engine.connect() as conn:
        return bool(await conn.scalar(sa.select(sa.or_(*pending))))


async def states_of(engine: Any, announcement_id: int) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.state, sa.func.count())
            .where(deliveries.c.announcement_id == announcement_id)
            .group_by(deliveries.c.state)
        )
        return {str(k): int(v) for k, v in rows.all()}


async def sent_count(engine: Any, announcement_id: int) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.select(sa.func.count()).where(
                    deliveries.c.announcement_id == announcement_id,
                    deliveries.c.state.in_(("sent", "delivered")),
                )
            )
            or 0
        )


async def drain(engine: Any, announcement_id: int, *, timeout: float) -> tuple[float, float]:
    """(started, drained) perf_counter times of one broadcast the gateway is sending."""
    started = await common.wait_sending(engine, announcement_id, timeout=60)
    deadline = started + timeout
    while await busy(engine, announcement_id):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"announcement {announcement_id} not drained in {timeout:.0f} s")
        await asyncio.sleep(0.1)
    return started, time.perf_counter()


# -- one run --------------------------------------------------------------------------------


async def run_workers(
    count: int, *, url: str, agency_id: int, n: int, secrets: dict[str, str],
    knobs: outbox.Knobs, workdir: Path, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """One broadcast through ``count`` worker processes; a run past ``timeout`` is reported
    as stalled with the states it reached, not retried."""
    sim = common.spawn(outbox.simulator_child, 0.0, secrets["africastalking_api_key"])
    env = serve_env(url, secrets, sim.ready, knobs)
    workers = [Serve(env, "worker", workdir / f"worker{count}_{i}.log") for i in range(count)]
    engine = common.engine_for(url)
    try:
        await asyncio.gather(*(w.start() for w in workers))
        ann = await common.add_announcement(engine, agency_id, status="approved")
        # Fan-out of a million rows and the 30 s sweep can take a while: not measured.
        started = await common.wait_sending(engine, ann["id"], timeout=timeout)
        deadline = started + timeout
        while await busy(engine, ann["id"]) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        done = time.perf_counter()
        stalled = done >= deadline
        states = await states_of(engine, ann["id"])
    finally:
        for w in workers:
            w.stop()
        stats = sim.stop()
        await engine.dispose()
    tracebacks = sum("Traceback" in w.log_path.read_text(errors="replace") for w in workers)
    sent = states.get("sent", 0) + states.get("delivered", 0)
    return {
        "workers": count, "n": n, "seconds": done - started, "rate": sent / (done - started),
        "states": states, "accepted": stats["accepted"], "requests": stats["requests"],
        "duplicates": stats["duplicates"], "tracebacks": tracebacks, "announcement": ann["id"],
        "stalled": stalled,
    }  # fmt: skip


async def _forget(url: str, announcement_id: int) -> None:
    """Delete one run's deliveries so the next run claims from a table of the same size."""
    engine = common.engine_for(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.delete(deliveries).where(deliveries.c.announcement_id == announcement_id)
            )
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE deliveries"))
    finally:
        await engine.dispose()


def add_arguments(parser: Any) -> None:
    parser.add_argument("--recipients", type=int, default=200_000)
    parser.add_argument("--workers", default=",".join(map(str, WORKER_COUNTS)),
                        help="comma-separated worker-process counts")  # fmt: skip
    parser.add_argument("--claim-batch", type=int, default=outbox.Knobs.claim_batch)
    parser.add_argument("--workers-per-channel", type=int,
                        default=outbox.Knobs.workers_per_channel)  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before a broadcast counts as stalled"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="worker logs (default: /tmp)")


async def main(args: Any, command: str) -> None:
    knobs = outbox.Knobs(claim_batch=args.claim_batch,
                         workers_per_channel=args.workers_per_channel)  # fmt: skip
    secrets = common.keys()
    counts = [int(c) for c in args.workers.split(",")]
    common.say_machine(command)
    await common.say_postgres()
    common.say(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}\n")
    n = args.recipients
    with common.work_folder(args.workdir, "scale") as workdir:
        url = await common.fresh_database("postgres", f"scale_{uuid.uuid4().hex[:6]}", workdir)
        rows: list[dict[str, Any]] = []
        try:
            engine = common.engine_for(url)
            try:
                agency_id = await common.seed_agency(engine)
            finally:
                await engine.dispose()
            began = time.perf_counter()
            await common.seed_subscribers(
                url, agency_id, n, common.vault_of(secrets), prefix="2548"
            )
            common.say(f"  seeded {n:,} subscribers in {time.perf_counter() - began:.0f} s")
            sim = common.spawn(outbox.simulator_child, 0.0, secrets["africastalking_api_key"])
            try:
                floor = common.spawn(outbox.floor_client_child, sim.ready,
                                     secrets["africastalking_api_key"], n, 16).finish()  # fmt: skip
            finally:
                sim.stop()
            floor_rate = floor["accepted"] / floor["seconds"]
            common.say(f"  floor: {floor_rate:,.0f}/s")
            for count in counts:
                row = await run_workers(count, url=url, agency_id=agency_id, n=n,
                                        secrets=secrets, knobs=knobs, workdir=workdir,
                                        timeout=args.timeout)  # fmt: skip
                rows.append(row)
                common.say(f"  {count} worker(s): {row['rate']:,.0f}/s {row['states']} "
                           f"duplicates {row['duplicates']}")  # fmt: skip
                await _forget(url, row["announcement"])
        finally:
            await common.drop_database(url)
    common.say(f"\nload average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}\n")
    one = rows[0]["rate"] if rows else 0.0
    table = [["floor: bare aiohttp client -> simulator, no database", f"{floor['accepted']:,}",
              "-", f"{floor_rate:,.0f}", "1.00x", "-", "-", "-"]]  # fmt: skip
    for r in rows:
        table.append([
            f"{r['workers']} x `warta serve --role worker`", f"{r['n']:,}",
            f"{r['seconds']:.1f}", f"{r['rate']:,.0f}", f"{r['rate'] / floor_rate:.2f}x",
            f"{r['rate'] / one:.2f}x" if one else "n/a", f"{r['accepted']:,}",
            f"{r['duplicates']}" + (f" ({r['tracebacks']} logs with a traceback)"
                                    if r["tracebacks"] else "")
            + (f"; STALLED after {args.timeout:.0f} s: {r['states']}" if r["stalled"] else ""),
        ])  # fmt: skip
    common.say(common.table(
        ["SMS broadcast on one PostgreSQL", "recipients", "drain s", "deliveries/s",
         "vs floor", "vs 1 worker", "accepted by simulator", "numbers sent twice"],
        table,
    ))  # fmt: skip
    common.say(f"\nknobs per worker process: {knobs.describe()}, shared_rate_limit=true")
    common.say(
        f"\nExpected on more cores: this machine has {os.cpu_count()} cores shared by "
        "PostgreSQL, the simulator and the workers, so extra worker processes cannot add CPU "
        "here; the check is that throughput does not fall (vs 1 worker near 1.00x), no run "
        "stalls and no number is sent twice as processes are added. With a core per worker "
        "process (and PostgreSQL on its own cores) throughput should grow with the number of "
        "workers until PostgreSQL's claim/outcome writes or the provider's rate is the limit."
    )
