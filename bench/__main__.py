"""``python -m bench outbox [--recipients N] [--backend sqlite|postgres|both]``,
``python -m bench telegram [--chats N] [--workers 1,4,8]``,
``python -m bench cancel [--chats N] [--cancel-after S] [--backend sqlite|postgres]``,
``python -m bench ussd [--sessions N] [--postgres URL]``,
``python -m bench priority [--recipients N] [--backend sqlite|postgres|both]``,
``python -m bench scale [--recipients N] [--workers 1,2,4]``,
``python -m bench load [--recipients N] [--seconds S] [--backend sqlite|postgres|both]``,
``python -m bench metrics [--deliveries N] [--backend sqlite|postgres|both]``.

Prints the machine, the versions, the command, then one Markdown table per measurement with
the ratios measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import (
    cancel,
    common,
    load_during_broadcast,
    metrics,
    outbox,
    priority,
    scale,
    telegram,
    ussd,
)

SECTIONS = ("fanout", "dispatch", "reports", "kannel")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("outbox", help="the durable outbox against its floors")
    run.add_argument("--recipients", type=int, default=200_000, help="dispatch throughput N")
    run.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    run.add_argument("--fanout-recipients", type=int, default=1_000_000)
    run.add_argument(
        "--rss-recipients",
        type=int,
        default=1_000_000,
        help="an extra SQLite dispatch of this many for peak RSS (0: none)",
    )
    run.add_argument(
        "--invalid-share",
        type=float,
        default=0.05,
        help="dispatch again with this share of numbers refused by the simulator (0: skip)",
    )
    run.add_argument("--loop-recipients", type=int, default=300)
    run.add_argument("--latency-recipients", type=int, default=20_000)
    run.add_argument("--report-seconds", type=int, default=10)
    run.add_argument("--report-connections", type=int, default=256)
    run.add_argument(
        "--report-rounds",
        type=int,
        default=3,
        help="report ingestion: bare and Warta alternate this many times (the machine drifts)",
    )
    run.add_argument(
        "--kannel-rounds",
        type=int,
        default=3,
        help="Kannel and Warta dispatch alternate this many times (section 5)",
    )
    run.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    run.add_argument("--claim-batch", type=int, default=outbox.Knobs.claim_batch)
    run.add_argument("--workers", type=int, default=outbox.Knobs.workers_per_channel)
    run.add_argument("--executor-workers", type=int, default=outbox.Knobs.executor_workers)
    run.add_argument("--workdir", type=Path, default=None, help="SQLite files (default: /tmp)")
    telegram.add_arguments(
        commands.add_parser("telegram", help="a Telegram broadcast at Telegram's limits")
    )
    cancel.add_arguments(
        commands.add_parser("cancel", help="a paced broadcast cancelled, then the correction")
    )
    ussd.add_arguments(
        commands.add_parser("ussd", help="USSD callback latency against a bare aiohttp floor")
    )
    priority.add_arguments(
        commands.add_parser("priority", help="an emergency during a big broadcast, lane or not")
    )
    scale.add_arguments(
        commands.add_parser("scale", help="one broadcast, 1, 2 and 4 worker processes")
    )
    load_during_broadcast.add_arguments(
        commands.add_parser("load", help="/verify and USSD load while a broadcast sends")
    )
    metrics.add_arguments(commands.add_parser("metrics", help="what one /metrics reading costs"))
    return parser


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


def _print_dispatch(result: dict[str, Any], knobs: outbox.Knobs) -> None:
    floor = result["floor"]["rate"]
    rows: list[list[Any]] = [
        [
            "floor: bare aiohttp client -> simulator, no database",
            f"{result['floor']['accepted']:,}",
            f"{floor:,.0f}",
            "1.00x",
            "",
        ]
    ]
    kannel = result["kannel"]
    if isinstance(kannel, dict):
        rows.append(
            [
                "Kannel 1.4.5 sendsms -> bearerbox -> fakesmsc (100/request)",
                f"{kannel['messages']:,}",
                f"{kannel['rate']:,.0f}",
                _ratio(kannel["rate"], floor),
                "",
            ]
        )
    else:
        rows.append(["Kannel", "-", "-", "-", kannel])
    channel = result.get("channel")
    if channel:
        rows.append(
            [
                "Warta's SMS channel alone: official SDK on its threads -> simulator, no database",
                f"{channel['sent']:,}",
                f"{channel['rate']:,.0f}",
                _ratio(channel["rate"], floor),
                f"{channel['cpu_s'] / max(channel['sent'], 1) * 1e6:.0f} us CPU/recipient; "
                "the most one process sends through the SDK",
            ]
        )
    for backend, w in result["warta"].items():
        note = "" if w["drained"] and w["states"] == {"sent": w["n"]} else f"{w['states']}"
        if channel and not note:
            note = f"target >= 0.5x; {_ratio(w['rate'], channel['rate'])} the channel alone"
        rows.append(
            [
                f"Warta on {backend} (fan-out {w['fanout_s']:.1f} s not counted)",
                f"{w['n']:,}",
                f"{w['rate']:,.0f}",
                _ratio(w["rate"], floor),
                note or "target >= 0.5x",
            ]
        )
    for backend, w in result["invalid"].items():
        rows.append(
            [
                f"Warta on {backend}, {w['share']:.0%} of numbers refused as invalid",
                f"{w['n']:,}",
                f"{w['rate']:,.0f}",
                _ratio(w["rate"], floor),
                f"{w['states']}" + ("" if w["drained"] else ", NOT drained"),
            ]
        )
    common.say(
        common.table(
            ["end-to-end SMS dispatch", "recipients", "deliveries/s", "vs floor", "note"], rows
        )
    )
    loop, lat = result["loop_rate"], result["latency"]
    common.say()
    common.say(
        common.table(
            ["simulator answering after 100 ms", "recipients", "deliveries/s", "vs loop"],
            [
                [
                    "per-recipient loop: one SDK send per number, sequential",
                    "-",
                    f"{loop:.1f}",
                    "1x",
                ],
                [
                    f"Warta on {lat.get('backend', 'first backend')} (executor_workers raised to "
                    f"{max(knobs.executor_workers, 32)})",
                    f"{lat['n']:,}",
                    f"{lat['rate']:,.0f}",
                    f"{lat['rate'] / loop:,.0f}x (target >= 20x)",
                ],
            ],
        )
    )
    common.say(f"\nknobs: {knobs.describe()}")
    sim = result["simulator"]
    common.say(
        f"simulator: {sim['requests']:,} requests, {sim['accepted']:,} messages accepted, "
        f"{sim['duplicates']} numbers sent twice"
    )
    refusing = result.get("refusing_simulator")
    if refusing:
        common.say(
            f"simulator refusing a share: {refusing['requests']:,} requests, "
            f"{refusing['accepted']:,} messages accepted, "
            f"{refusing['duplicates']} numbers sent twice"
        )


def _print_rss(result: dict[str, Any]) -> None:
    runs = [(f"dispatch {backend}", w) for backend, w in result["warta"].items()]
    if "rss" in result:
        runs.append(("dispatch sqlite (RSS run)", result["rss"]))
    rows = [
        [
            label,
            f"{w['n']:,}",
            f"{w['peak_rss_mib']:.0f}",
            f"{w['fanout_s']:.1f}",
            f"{w['seconds']:.1f}",
            f"{w['rate']:,.0f}",
        ]
        for label, w in runs
    ]
    rows.append(["bare floor client", "-", f"{result['floor']['peak_rss_mib']:.0f}", "-", "-", "-"])
    common.say(
        common.table(
            [
                "gateway process (fan-out + dispatch)",
                "recipients",
                "peak RSS MiB (VmHWM)",
                "fan-out s",
                "dispatch s",
                "deliveries/s",
            ],
            rows,
        )
    )


def _print_reports(rows: list[dict[str, Any]]) -> None:
    bare_by_round = {r["round"]: r for r in rows if r["label"] == "bare"}
    table = []
    for r in rows:
        durable = (
            ""
            if r["label"] == "bare"
            else (f"{r.get('stored', 0):,} stored, {r.get('delivered', 0):,} deliveries finished")
        )
        table.append(
            [
                r["round"],
                r["label"] if r["label"] == "bare" else f"Warta on {r['label']}",
                f"{r.get('requests', 0):,}",
                f"{r.get('rate', 0):,.0f}",
                _ratio(r.get("rate", 0), bare_by_round[r["round"]].get("rate", 0)),
                r.get("p50", "?"),
                r.get("p99", "?"),
                r.get("errors", 0),
                durable,
            ]
        )
    common.say(
        common.table(
            [
                "round",
                "delivery reports",
                "requests",
                "callbacks/s",
                "vs bare (same round)",
                "p50",
                "p99",
                "non-2xx",
                "durable",
            ],
            table,
        )
    )
    summary = []
    for label in dict.fromkeys(r["label"] for r in rows if r["label"] != "bare"):
        runs = [r for r in rows if r["label"] == label]
        ratios = [
            r.get("rate", 0) / max(bare_by_round[r["round"]].get("rate", 0), 1e-9) for r in runs
        ]
        summary.append(
            [
                f"Warta on {label}",
                len(runs),
                f"{statistics.median(r.get('rate', 0) for r in runs):,.0f}",
                f"{statistics.median(ratios):.2f}x",
                f"{min(ratios):.2f}x - {max(ratios):.2f}x",
            ]
        )
    common.say()
    common.say(
        common.table(
            ["", "rounds", "median callbacks/s", "median vs bare (target >= 0.5x)", "range"],
            summary,
        )
    )


def _print_against_kannel(rounds: list[dict[str, float]], backends: list[str]) -> None:
    """Each round's rates and ratios, then the median ratio per backend."""
    if not rounds:
        return  # Kannel was not measured: bench_against_kannel said why
    rows = [
        [
            str(i + 1),
            f"{r['kannel']:,.0f}",
            *(f"{r[b]:,.0f} ({r[b] / r['kannel']:.2f}x)" for b in backends),
        ]
        for i, r in enumerate(rounds)
    ]
    common.say(
        common.table(
            ["round", "Kannel msg/s", *(f"Warta on {b}/s (vs Kannel)" for b in backends)],
            rows,
        )
    )
    common.say()
    summary = []
    for b in backends:
        ratios = sorted(r[b] / r["kannel"] for r in rounds)
        summary.append(
            [
                f"Warta on {b}",
                str(len(ratios)),
                f"{statistics.median(ratios):.2f}x",
                f"{ratios[0]:.2f}x - {ratios[-1]:.2f}x",
            ]
        )
    common.say(common.table(["", "rounds", "median vs Kannel (target >= 1.0x)", "range"], summary))


async def _main(args: argparse.Namespace) -> None:
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    only = set(args.only.split(","))
    knobs = outbox.Knobs(
        claim_batch=args.claim_batch,
        workers_per_channel=args.workers,
        executor_workers=args.executor_workers,
    )
    secrets = common.keys()
    command = ".venv/bin/python -m bench " + shlex.join(sys.argv[1:])
    common.say_machine(command)
    if "postgres" in backends:
        await common.say_postgres()
    common.say()
    with common.work_folder(args.workdir, "outbox") as workdir:
        if "fanout" in only:
            common.say(f"## 1. Fan-out of {args.fanout_recipients:,} recipients\n")
            rows = [
                await outbox.bench_fanout(b, args.fanout_recipients, secrets, workdir)
                for b in backends
            ]
            common.say(
                common.table(
                    [
                        "backend",
                        "recipients",
                        "floor s (plain table)",
                        "same indexes, no ON CONFLICT s",
                        "Warta fan_out s",
                        "Warta / floor (target <= 1.3x)",
                        "Warta / indexed",
                    ],
                    rows,
                )
            )
            common.say()
        if "dispatch" in only:
            common.say(f"## 2. End-to-end SMS dispatch of {args.recipients:,} recipients\n")
            result = await outbox.bench_dispatch(
                backends,
                args.recipients,
                knobs=knobs,
                secrets=secrets,
                workdir=workdir,
                loop_n=args.loop_recipients,
                latency_n=args.latency_recipients,
                rss_n=args.rss_recipients,
                invalid_share=args.invalid_share,
            )
            result["latency"]["backend"] = backends[0]
            common.say()
            _print_dispatch(result, knobs)
            common.say("\n## 4. Peak RSS of the gateway process (target <= 300 MB)\n")
            _print_rss(result)
            common.say()
        if "reports" in only:
            common.say(
                f"## 3. Delivery-report ingestion ({args.report_seconds} s of wrk, "
                f"{args.report_connections} connections, one thread)\n"
            )
            rows2 = await outbox.bench_reports(
                backends,
                seconds=args.report_seconds,
                rounds=args.report_rounds,
                connections=args.report_connections,
                secrets=secrets,
                workdir=workdir,
                knobs=knobs,
            )
            _print_reports(rows2)
        if "kannel" in only and args.kannel_rounds > 0:
            common.say(
                f"\n## 5. Warta against Kannel, {args.kannel_rounds} alternating rounds of "
                f"{args.recipients:,} recipients\n"
            )
            rounds = await outbox.bench_against_kannel(
                backends,
                args.recipients,
                rounds=args.kannel_rounds,
                knobs=knobs,
                secrets=secrets,
                workdir=workdir,
            )
            _print_against_kannel(rounds, backends)


def main() -> None:
    args = _parser().parse_args()
    command = ".venv/bin/python -m bench " + shlex.join(sys.argv[1:])
    if args.command == "telegram":
        asyncio.run(telegram.main(args, command))
        return
    if args.command == "cancel":
        asyncio.run(cancel.main(args, command))
        return
    if args.command == "ussd":
        asyncio.run(ussd.main(args, command))
        return
    if args.command == "priority":
        asyncio.run(priority.main(args, command))
        return
    if args.command == "scale":
        asyncio.run(scale.main(args, command))
        return
    if args.command == "load":
        asyncio.run(load_during_broadcast.main(args, command))
        return
    if args.command == "metrics":
        asyncio.run(metrics.main(args, command))
        return
    if shutil.which("wrk") is None and "reports" in args.only:
        raise SystemExit("wrk is not installed: apt-get install wrk (or --only fanout,dispatch)")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
