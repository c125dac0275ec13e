"""What one ``GET /metrics`` reading costs the database: ``python -m bench metrics``.

``--deliveries`` rows (default 2,000,000) are written in one statement: ``--per-announcement``
per announcement, 80 % SMS and 10 % each Telegram and WhatsApp, about 1 % failed with an
error kind, 7 % sent and the rest delivered. Then, side by side on each database, the median
of ``--rounds`` runs of:

- Warta's reading, ``gateway.metrics.read_figures`` (counts per channel and state, failures
  per error kind, the newest-deliveries latency sample);
- the single ``GROUP BY channel, state, error_kind`` over the table that one would otherwise
  write (what Warta itself ran before, and still runs on PostgreSQL), with the same sample.

Both read the same snapshot of data; the first run of each warms the page cache.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common
from gateway.db.engine import reading
from gateway.db.types import UtcDateTime
from gateway.metrics import _GROUPED, _RECENT, read_figures

_SEED = """
INSERT INTO deliveries (announcement_id, agency_id, subscriber_id, channel, language, state,
    priority, attempts, next_attempt_at, created_at, sent_at, error_kind)
SELECT i / :per + 1, 1, i,
    CASE i % 10 WHEN 0 THEN 'telegram' WHEN 1 THEN 'whatsapp' ELSE 'sms' END, 'id',
    CASE WHEN i % 97 = 0 THEN 'failed' WHEN i % 13 = 0 THEN 'sent' ELSE 'delivered' END,
    0, 1, :at, :at, :at,
    CASE WHEN i % 97 = 0 THEN (CASE i % 3 WHEN 0 THEN 'rejected' ELSE 'connection' END) END
FROM ({integers}) AS n
"""


def add_arguments(parser: Any) -> None:
    parser.add_argument("--deliveries", type=int, default=2_000_000)
    parser.add_argument("--per-announcement", type=int, default=5_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="SQLite files (default: /tmp)")


async def _grouped_reading(engine: Any) -> int:
    async with reading(engine) as conn:
        grouped = (await conn.execute(_GROUPED)).all()
        recent = (await conn.execute(_RECENT)).all()
    return len(grouped) + len(recent)


async def _measure(backend: str, args: Any, workdir: Path) -> list[Any]:
    url = await common.fresh_database(backend, "metrics", workdir)
    engine = common.engine_for(url)
    try:
        start = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(_SEED.format(integers=common.integers(backend == "sqlite"))).bindparams(
                    sa.bindparam("at", type_=UtcDateTime())
                ),
                {"count": args.deliveries, "per": args.per_announcement, "at": common.now()},
            )
        if backend == "postgres":
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text("VACUUM ANALYZE deliveries"))
        common.say(f"  {backend}: {args.deliveries:,} deliveries seeded in "
                   f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        times: dict[str, list[float]] = {"warta": [], "grouped": []}
        for round_ in range(args.rounds + 1):
            for label in ("warta", "grouped"):
                start = time.perf_counter()
                if label == "warta":
                    figures = await read_figures(engine)
                    assert sum(figures.counts.values()) == args.deliveries
                else:
                    await _grouped_reading(engine)
                if round_:  # round 0 warms the cache
                    times[label].append(time.perf_counter() - start)
        warta, grouped = (statistics.median(times[k]) for k in ("warta", "grouped"))
        common.say(f"  {backend}: warta {[f'{t:.3f}' for t in times['warta']]} s, grouped "
                   f"{[f'{t:.3f}' for t in times['grouped']]} s")  # fmt: skip
        return [backend, f"{args.deliveries:,}", f"{grouped:.3f}", f"{warta:.3f}",
                f"{warta / grouped:.2f}x"]  # fmt: skip
    finally:
        await engine.dispose()
        await common.drop_database(url)


async def main(args: Any, command: str) -> None:
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    common.say_machine(command)
    common.say()
    rows = []
    with common.work_folder(args.workdir, "metrics") as workdir:
        for backend in backends:
            rows.append(await _measure(backend, args, workdir))
    common.say()
    common.say(f"## One /metrics reading, median of {args.rounds} (s)\n")
    header = ["backend", "deliveries", "one GROUP BY over the table", "Warta", "Warta / GROUP BY"]
    common.say(common.table(header, rows))
