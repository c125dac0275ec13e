"""A Telegram broadcast at Telegram's limits (``python -m bench telegram``).

Warta's real ``Dispatcher`` with the real ``TelegramChannel`` (python-telegram-bot over HTTP)
broadcasts one announcement to ``chats`` subscribers, against the Telegram simulator enforcing
Telegram's documented limits in their strict reading (``channels.telegram.simconfig``): a
token bucket of 30 messages per second per bot (burst 30), and 1 message per second per chat.
Every message beyond them gets HTTP 429, which the simulator counts (``rate_limited_total``).

Processes: the simulator in one child, the dispatcher in another, the parent seeds and prints.
Rates are the simulator's own view: accepted messages over the time from the first accepted
message to the last, so neither start-up nor the outbox's final poll is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common
from gateway.db.schema import announcements, deliveries
from gateway.db.types import UtcDateTime

TELEGRAM_BOT_RATE = 30.0  # Bot FAQ: "about 30 messages per second"
TOKEN = "123456789:AAF-wartaBenchToken_0123456789abcdefg"  # the simulator's own, not a secret
CHAT_BASE = 700_000_000


@dataclass(frozen=True)
class Run:
    """One broadcast: the gateway's knobs and the simulator's answer time."""

    chats: int
    workers: int
    claim_batch: int
    rate_per_second: float
    latency: tuple[float, float]

    def describe(self) -> str:
        return (
            f"telegram.rate_per_second={self.rate_per_second:g}, "
            f"dispatch.workers_per_channel={self.workers}, dispatch.claim_batch="
            f"{self.claim_batch}, simulator latency {self.latency[0] * 1000:.0f}-"
            f"{self.latency[1] * 1000:.0f} ms"
        )


# -- children -------------------------------------------------------------------------------


def simulator_child(pipe: Connection, run: Run) -> None:
    asyncio.run(_simulator_main(pipe, run))


async def _simulator_main(pipe: Connection, run: Run) -> None:
    from channels.telegram.simconfig import SimulatorConfig
    from channels.telegram.simulator import TelegramSimulator

    sim = TelegramSimulator(
        SimulatorConfig(
            token=TOKEN,
            latency=run.latency,
            enforce_bot_rate=TELEGRAM_BOT_RATE,
            enforce_chat_limits=True,
            max_records=run.chats * 6 + 100,
            seed=1,
        )
    )
    pipe.send(await sim.start())
    await common.wait_for_command(pipe)
    accepted = [r.received_at for r in sim.accepted()]
    duplicates = sum(1 for count in sim.sent_count.values() if count > 1)
    result = {
        # Each accepted message's arrival (time.monotonic(): one clock for the machine's
        # processes) and text, for ``bench.cancel``.
        "arrivals": [(r.received_at, r.params.get("text", "")) for r in sim.accepted()],
        "requests": sim.requests_total,
        "accepted": sum(sim.sent_count.values()),
        "chats": len(sim.sent_count),
        "duplicates": duplicates,
        "throttled": sim.throttled_total,
        "rate_limited": sim.rate_limited_total,
        "first": min(accepted, default=0.0),
        "last": max(accepted, default=0.0),
        "records_dropped": sim.records_dropped,
    }
    await sim.stop()
    pipe.send(result)


def dispatch_child(pipe: Connection, params: dict[str, Any]) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_dispatch(params)))


def _config(params: dict[str, Any]) -> Any:
    from gateway.config import load_config

    run: Run = params["run"]
    return load_config(
        None,
        environ={},
        overrides={
            "database": {"url": params["url"]},
            "secrets": {**params["secrets"], "telegram_bot_token": TOKEN},
            "telegram": {
                "base_url": params["sim_url"],
                "register_webhook": False,
                "rate_per_second": run.rate_per_second,
            },
            "dispatch": {
                "claim_batch": run.claim_batch,
                "workers_per_channel": run.workers,
                "idle_poll_s": 0.05,
            },
            # Measured at any hour: at night in Jakarta a normal broadcast waits for 06:00.
            "scheduler": {"quiet_hours": "off"},
            "log_level": "WARNING",
        },
    )


def gateway_of(params: dict[str, Any]) -> tuple[Any, Any]:
    """The engine and a real ``Dispatcher`` with the real ``TelegramChannel``."""
    from channels.registry import build_channels
    from gateway.app import vault_from_config
    from gateway.clock import SystemClock
    from gateway.db.engine import create_engine
    from gateway.outbox.dispatcher import Dispatcher
    from gateway.renditions import Renderer

    config = _config(params)
    engine = create_engine(config.database)
    dispatcher = Dispatcher(
        engine=engine, clock=SystemClock(), config=config, vault=vault_from_config(config),
        renderer=Renderer(), channels=build_channels(config),
    )  # fmt: skip
    return engine, dispatcher


async def _dispatch(params: dict[str, Any]) -> dict[str, Any]:
    """Real Dispatcher + real TelegramChannel + real database: fan out, then drain."""
    from gateway.db.engine import reading

    engine, dispatcher = gateway_of(params)
    announcement_id = params["announcement_id"]
    assert await dispatcher.start_due() == 1  # approved -> sending, and the fan-out
    pending = sa.exists().where(
        deliveries.c.announcement_id == announcement_id,
        deliveries.c.state.in_(("queued", "sending")),
    )
    began = time.perf_counter()
    await dispatcher.start()
    deadline = began + params["timeout_s"]
    drained = False
    try:
        while time.perf_counter() < deadline:
            async with reading(engine) as conn:
                if not await conn.scalar(sa.select(pending)):
                    drained = True
                    break
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - began
    finally:
        await dispatcher.stop()  # closes the channels too
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.state, sa.func.count())
            .where(deliveries.c.announcement_id == announcement_id)
            .group_by(deliveries.c.state)
        )
        states = {str(state): int(count) for state, count in rows.all()}
        retried = await conn.scalar(
            sa.select(sa.func.count()).where(
                deliveries.c.announcement_id == announcement_id, deliveries.c.attempts > 1
            )
        )
    await engine.dispose()
    return {"seconds": seconds, "drained": drained, "states": states, "retried": int(retried or 0)}


# -- seeding ------------------------------------------------------------------------------


async def _seed(url: str, chats: int) -> int:
    """``chats`` Telegram subscribers of one agency and an approved announcement to them."""
    engine = common.engine_for(url)
    try:
        agency_id = await common.seed_agency(engine)
        ann = await common.add_announcement(engine, agency_id, status="approved")
        stamp = datetime.now(UTC)
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.id == ann["id"])
                .values(channels=["telegram"])
            )
            first = int(
                await conn.scalar(sa.text("SELECT COALESCE(MAX(id), 0) + 1 FROM subscribers")) or 1
            )
            ids = range(first, first + chats)
            await conn.execute(
                sa.text(
                    "INSERT INTO subscribers (id, agency_id, telegram_chat_id, language, topics,"
                    " created_at) VALUES (:id, :agency, :chat, 'id', '[]', :now)"
                ).bindparams(sa.bindparam("now", type_=UtcDateTime())),
                [{"id": i, "agency": agency_id, "chat": CHAT_BASE + i, "now": stamp} for i in ids],
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO subscriber_channels (subscriber_id, channel, preference,"
                    " opted_in_at) VALUES (:id, 'telegram', 0, :now)"
                ).bindparams(sa.bindparam("now", type_=UtcDateTime())),
                [{"id": i, "now": stamp} for i in ids],
            )
        return int(ann["id"])
    finally:
        await engine.dispose()


# -- one broadcast --------------------------------------------------------------------------


async def against_simulator(
    run: Run,
    url: str,
    *,
    seed: Callable[[str], Awaitable[dict[str, Any]]],
    child: Callable[[Connection, dict[str, Any]], None],
    params: dict[str, Any],
    timeout_s: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``seed(url)`` (its answer joins ``params``), then ``child`` (a gateway process) against
    the Telegram simulator; returns what each of them answers. Drops the database at the end."""
    sim: common.Child | None = None
    try:
        params = {**params, **await seed(url)}
        sim = common.spawn(simulator_child, run)
        params.update(url=url, run=run, sim_url=sim.ready, timeout_s=timeout_s)
        outbox = common.spawn(child, params).finish(timeout=timeout_s + 60)
        simulated = sim.ask("stop")
        sim.process.join(30)
        sim = None
    finally:
        if sim is not None:
            sim.process.kill()
        await common.drop_database(url)
    return outbox, simulated


async def broadcast(
    run: Run, *, backend: str, secrets: dict[str, str], workdir: Path
) -> dict[str, Any]:
    """One broadcast of ``run.chats`` messages; the simulator's and the outbox's figures."""

    async def seed(url: str) -> dict[str, Any]:
        return {"announcement_id": await _seed(url, run.chats)}

    outbox, simulated = await against_simulator(
        run,
        await common.fresh_database(backend, f"telegram_w{run.workers}", workdir),
        seed=seed,
        child=dispatch_child,
        params={"secrets": secrets},
        timeout_s=run.chats / min(run.rate_per_second, TELEGRAM_BOT_RATE) * 3 + 120,
    )
    span = simulated["last"] - simulated["first"]
    accepted = simulated["accepted"]
    rate = (accepted - 1) / span if accepted > 1 and span > 0 else 0.0
    return {
        "run": run,
        "outbox": outbox,
        "sim": simulated,
        "rate": rate,
        "vs_configured": rate / run.rate_per_second,
    }


# -- the command ----------------------------------------------------------------------------


def add_arguments(parser: Any, *, chats: int = 3000, workers: str = "1,4,8") -> None:
    parser.add_argument("--chats", type=int, default=chats, help="subscribers to broadcast to")
    parser.add_argument(
        "--workers", default=workers, help="comma-separated dispatch.workers_per_channel values"
    )
    parser.add_argument("--claim-batch", type=int, default=500, help="dispatch.claim_batch")
    parser.add_argument(
        "--rate", type=float, default=TELEGRAM_BOT_RATE, help="telegram.rate_per_second"
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite files (default: /tmp)")


def runs(args: Any) -> list[Run]:
    """One ``Run`` per ``--workers`` value."""
    return [
        Run(
            chats=args.chats,
            workers=int(workers),
            claim_batch=args.claim_batch,
            rate_per_second=args.rate,
            latency=(0.01, 0.05),
        )
        for workers in args.workers.split(",")
    ]


async def main(args: Any, command: str) -> None:
    secrets = common.keys()
    common.say_machine(command)
    common.say(
        f"simulator enforces {TELEGRAM_BOT_RATE:g} msg/s per bot (burst {TELEGRAM_BOT_RATE:g})"
        " and 1 msg/s per chat; every message beyond gets HTTP 429"
    )
    common.say()
    rows: list[list[Any]] = []
    with common.work_folder(args.workdir, "tg") as workdir:
        for run in runs(args):
            workers = run.workers
            result = await broadcast(run, backend=args.backend, secrets=secrets, workdir=workdir)
            sim, outbox = result["sim"], result["outbox"]
            rows.append(
                [
                    workers,
                    f"{run.chats:,}",
                    f"{sim['accepted']:,}",
                    f"{result['rate']:.2f}",
                    f"{run.rate_per_second:g}",
                    f"{result['vs_configured']:.1%}",
                    sim["rate_limited"],
                    sim["throttled"],
                    sim["duplicates"],
                    outbox["retried"],
                    f"{outbox['seconds']:.1f}",
                    ", ".join(f"{k} {v:,}" for k, v in sorted(outbox["states"].items())),
                ]
            )
            common.say(f"workers={workers}: {result['rate']:.2f} msg/s, {run.describe()}")
    common.say()
    common.say(
        common.table(
            [
                "workers",
                "chats",
                "accepted",
                "msg/s (simulator)",
                "configured",
                "achieved / configured (target >= 90%)",
                "429 from limits (target 0)",
                "all 429",
                "chats sent twice",
                "deliveries retried",
                "drain s",
                "final states",
            ],
            rows,
        )
    )
