"""A broadcast cancelled mid-way on a paced channel, and the correction sent right after
(``python -m bench cancel``).

An operator who cancels a wrong broadcast sends the correct one next. On a paced channel each
worker holds a claimed batch whose requests wait for their turns at the rate (up to half a
lease: 30 s of Telegram's 30 messages a second). What this measures is how soon the
correction reaches its first citizen after the cancel, and how many messages of the
cancelled broadcast still leave after it.

Warta's real ``Dispatcher`` with the real ``TelegramChannel`` (python-telegram-bot over HTTP)
against the Telegram simulator enforcing Telegram's limits (``bench.telegram``), on SQLite or
PostgreSQL. The first broadcast goes to ``chats`` subscribers; ``cancel_after`` seconds after
the workers start, one transaction cancels it as the API does (the announcement cancelled,
its queued deliveries with it) and approves the correction, to the same subscribers.

Figures, from the simulator's record of what reached it (told apart by the verification code
each message carries; times on the machine's monotonic clock, shared by its processes): the
seconds from the cancel's commit to the correction's first and last message, and the
messages of the cancelled broadcast that arrived after that commit (those already handed to
the provider, at most one request per worker, may).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common, telegram
from bench.telegram import TELEGRAM_BOT_RATE, Run, _seed, gateway_of, runs
from gateway.db.schema import announcements, deliveries

# -- the child that runs the gateway ---------------------------------------------------------


def dispatch_child(pipe: Connection, params: dict[str, Any]) -> None:
    pipe.send("ready")
    pipe.send(asyncio.run(_dispatch(params)))


async def _dispatch(params: dict[str, Any]) -> dict[str, Any]:
    from gateway.outbox.fanout import cancel_pending

    engine, dispatcher = gateway_of(params)
    first, correction = params["announcement_id"], params["correction_id"]
    assert await dispatcher.start_due() == 1
    await dispatcher.start()
    try:
        await asyncio.sleep(params["cancel_after"])
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.id == first)
                .values(status="cancelled")
            )
            await cancel_pending(conn, announcement_id=first, now=datetime.now(UTC))
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.id == correction)
                .values(status="approved")
            )
        cancelled_at = time.monotonic()
        await dispatcher.start_due()
        deadline = time.perf_counter() + params["timeout_s"]
        pending = sa.exists().where(
            deliveries.c.announcement_id.in_((first, correction)),
            deliveries.c.state.in_(("queued", "sending")),
        )
        while time.perf_counter() < deadline:
            async with engine.connect() as conn:
                if not await conn.scalar(sa.select(pending)):
                    break
            await asyncio.sleep(0.05)
    finally:
        await dispatcher.stop()  # closes the channels too
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.announcement_id, deliveries.c.state, sa.func.count())
            .where(deliveries.c.announcement_id.in_((first, correction)))
            .group_by(deliveries.c.announcement_id, deliveries.c.state)
        )
        states = {
            ("first" if a == first else "correction", str(s)): int(n) for a, s, n in rows.all()
        }
        codes = dict(
            (
                await conn.execute(
                    sa.select(announcements.c.id, announcements.c.verification_code).where(
                        announcements.c.id.in_((first, correction))
                    )
                )
            ).all()
        )
    await engine.dispose()
    return {
        "states": states,
        "cancelled_at": cancelled_at,
        "codes": {"first": codes[first], "correction": codes[correction]},
    }


# -- seeding ---------------------------------------------------------------------------------


async def _add_correction(url: str, first: int) -> int:
    """A draft to the same subscribers as ``first``, approved at the cancel."""
    engine = common.engine_for(url)
    try:
        async with engine.begin() as conn:
            row = (
                (await conn.execute(sa.select(announcements).where(announcements.c.id == first)))
                .mappings()
                .one()
            )
            values = {k: v for k, v in row.items() if k != "id"}
            values.update(
                status="draft",
                title="Ralat: " + str(row["title"]),
                verification_code=str(row["verification_code"])[::-1],
            )
            return int(
                await conn.scalar(
                    sa.insert(announcements).values(values).returning(announcements.c.id)
                )
            )
    finally:
        await engine.dispose()


# -- one run ---------------------------------------------------------------------------------


async def cancel_and_correct(
    run: Run, *, cancel_after: float, backend: str, secrets: dict[str, str], workdir: Path
) -> dict[str, Any]:
    async def seed(url: str) -> dict[str, Any]:
        first = await _seed(url, run.chats)
        return {"announcement_id": first, "correction_id": await _add_correction(url, first)}

    outbox, simulated = await telegram.against_simulator(
        run,
        await common.fresh_database(backend, f"cancel_w{run.workers}", workdir),
        seed=seed,
        child=dispatch_child,
        params={"secrets": secrets, "cancel_after": cancel_after},
        timeout_s=2 * run.chats / min(run.rate_per_second, TELEGRAM_BOT_RATE) * 3 + 120,
    )
    # What reached the provider, by which announcement's verification code it carries.
    cancelled_at, codes = outbox["cancelled_at"], outbox["codes"]
    first_late = [t for t, text in simulated["arrivals"]
                  if codes["first"] in text and t > cancelled_at]  # fmt: skip
    corrections = sorted(t for t, text in simulated["arrivals"] if codes["correction"] in text)
    return {
        "outbox": outbox,
        "sim": simulated,
        "late": len(first_late),
        "correction_first_s": corrections[0] - cancelled_at if corrections else None,
        "correction_last_s": corrections[-1] - cancelled_at if corrections else None,
        "corrections": len(corrections),
    }


# -- the command -----------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    telegram.add_arguments(parser, chats=1500, workers="4")
    parser.add_argument("--cancel-after", type=float, default=5.0, help="seconds of sending")
    parser.add_argument("--rounds", type=int, default=1)


async def main(args: Any, command: str) -> None:
    secrets = common.keys()
    common.say_machine(command)
    common.say()
    rows: list[list[Any]] = []
    with common.work_folder(args.workdir, "cancel") as workdir:
        for run in runs(args):
            for _ in range(args.rounds):
                result = await cancel_and_correct(
                    run, cancel_after=args.cancel_after, backend=args.backend,
                    secrets=secrets, workdir=workdir,
                )  # fmt: skip
                outbox, sim = result["outbox"], result["sim"]
                states = outbox["states"]
                row = [
                    args.backend,
                    run.workers,
                    f"{args.cancel_after:g}",
                    f"{states.get(('first', 'sent'), 0) + states.get(('first', 'delivered'), 0):,}",
                    f"{states.get(('first', 'cancelled'), 0):,}",
                    result["late"],
                    _seconds(result["correction_first_s"]),
                    _seconds(result["correction_last_s"]),
                    f"{result['corrections']:,}",
                    sim["rate_limited"],
                ]
                common.say(" | ".join(str(cell) for cell in row))
                rows.append(row)
    common.say()
    common.say(
        common.table(
            [
                "backend",
                "workers",
                "cancelled after s",
                "first broadcast sent",
                "cancelled",
                "sent after the cancel",
                "correction's first message, s after the cancel",
                "its last, s",
                "corrections at the provider",
                "429 from limits",
            ],
            rows,
        )
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.cancel")
    add_arguments(parser)
    asyncio.run(main(parser.parse_args(), " ".join(["python -m bench.cancel", *sys.argv[1:]])))
