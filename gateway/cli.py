"""The ``warta`` command. It only parses arguments and runs what the modules provide.

    warta demo [--port 8080] [--data-dir ./warta-demo]
    warta serve [--config warta.toml] [--role all|api|worker]
    warta db upgrade [--config warta.toml]
    warta audit verify [--config warta.toml]
    warta keys rotate [--config warta.toml] [--batch 1000]
    warta users add --agency SLUG --email E --role R [--name N]   (password from stdin)
    warta phone [--data-dir warta-demo] {ussd | sms "CEK K7P2QX" | telegram "/cek K7P2QX" |
                                         whatsapp "CEK K7P2QX"}
    warta simulate africastalking [--port 9090] [--report-url URL]
    warta simulate voice [--port 9090] [--report-url URL-of-the-voice-callback]

Secrets never come from the command line: use ``WARTA_SECRETS__*`` variables or ``…_FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigProblem, WartaConfig, load_config

if TYPE_CHECKING:
    from gateway.app import Role

log = logging.getLogger("warta")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warta", description="Post once, reach every citizen.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="gateway + provider simulators + demo data on SQLite")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--data-dir", type=Path, default=Path("warta-demo"))
    demo.add_argument("--subscribers", type=int, default=3000, help="per agency, first run only")
    demo.add_argument("--no-broadcast", action="store_true", help="do not send a first broadcast")

    serve = commands.add_parser("serve", help="run the gateway from a config file / environment")
    serve.add_argument("--config", type=Path, default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument(
        "--role",
        choices=("all", "api", "worker"),
        default="all",
        help="api: HTTP only, no dispatch; worker: dispatch and scheduler, health endpoints "
        "only; all: both (default)",
    )

    db = commands.add_parser("db", help="database commands")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("--config", type=Path, default=None)

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check every agency's hash chain")
    verify.add_argument("--config", type=Path, default=None)

    keys = commands.add_parser("keys", help="encryption keys of personal data")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_commands.add_parser(
        "rotate",
        help="re-encrypt stored phone numbers under the newest phone key and recompute blind "
        "indexes under the newest blind index key (safe while serving)",
    )
    rotate.add_argument("--config", type=Path, default=None)
    rotate.add_argument("--batch", type=int, default=1000, help="rows per statement")

    users = commands.add_parser("users", help="people who sign in to the dashboard")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add_user = users_commands.add_parser(
        "add", help="create a dashboard user; the password is read from the terminal or stdin"
    )
    add_user.add_argument("--config", type=Path, default=None)
    add_user.add_argument("--agency", required=True, help="the agency's slug")
    add_user.add_argument("--email", required=True)
    add_user.add_argument(
        "--role", required=True, choices=["author", "approver", "operator", "admin"]
    )
    add_user.add_argument("--name", default="", help="display name (default: the e-mail)")

    phone = commands.add_parser("phone", help="a feature phone in the terminal, for the demo")
    phone.add_argument("--data-dir", type=Path, default=Path("warta-demo"))
    phone.add_argument("--phone", default=None, help="the caller's number (a demo number)")
    phone_commands = phone.add_subparsers(dest="phone_command", required=True)
    phone_commands.add_parser("ussd", help="dial the USSD menu; one choice per line")
    sms = phone_commands.add_parser("sms", help="text the short code and show the replies")
    sms.add_argument("text", help='e.g. "CEK K7P2QX", "DAFTAR 3171", "STOP"')
    telegram = phone_commands.add_parser("telegram", help="write to the bot, show its answers")
    telegram.add_argument("text", help='e.g. "/start 3171", "/cek K7P2QX", "/terbaru"')
    telegram.add_argument("--chat", type=int, default=None, help="the chat id (a demo one)")
    whatsapp = phone_commands.add_parser(
        "whatsapp", help="write to the agency on WhatsApp, show what comes back"
    )
    whatsapp.add_argument("text", help='e.g. "CEK K7P2QX", "STOP", "Jalan banjir"')

    simulate = commands.add_parser("simulate", help="run one provider simulator standalone")
    simulate.add_argument("provider", choices=sorted(SIMULATORS))
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=9090)
    simulate.add_argument(
        "--report-url",
        default=None,
        help="where to POST delivery reports (voice: the gateway's voice callback URL)",
    )
    simulate.add_argument(
        "--report-delay", type=float, default=1.0, help="seconds before a report (voice: answer)"
    )
    simulate.add_argument("--latency", type=float, default=0.0)
    simulate.add_argument(
        "--currency",
        default=None,
        help="africastalking/voice: the currency of reported costs (default KES, as the "
        "sandbox); give your gateway's [pricing] currency to compare with its estimates",
    )
    simulate.add_argument(
        "--price",
        type=Decimal,
        default=None,
        help="africastalking: price per SMS segment; voice: price per minute",
    )
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _serve(config: WartaConfig, *, role: Role = "all") -> None:
    from aiohttp import web

    from gateway.app import create_app, settle_process

    stop = stop_signal()
    app = create_app(config, role=role)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.http.host, config.http.port).start()
    settle_process()
    log.info("Warta (%s) serving on http://%s:%s", role, config.http.host, config.http.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def stop_signal() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; install it before serving, so no signal is missed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


SIMULATORS = ("africastalking", "voice", "telegram", "meta", "x", "mastodon")


def _prices(args: argparse.Namespace, *, price_field: str) -> dict[str, Any]:
    """The simulator's currency and price options that were given on the command line."""
    given: dict[str, Any] = {}
    if args.currency is not None:
        given["currency"] = args.currency
    if args.price is not None:
        given[price_field] = args.price
    return given


async def _simulate(args: argparse.Namespace) -> None:
    """Run one provider simulator until Ctrl-C, with its default (test) credentials."""
    stop = stop_signal()
    if args.provider == "africastalking":
        from channels.africastalking.simconfig import SimulatorConfig as AtConfig
        from channels.africastalking.simulator import AfricasTalkingSimulator

        simulator: Any = AfricasTalkingSimulator(
            AtConfig(
                latency=args.latency,
                delivery_report_url=args.report_url,
                delivery_report_delay=args.report_delay,
                seed=None,
                **_prices(args, price_field="cost_per_segment"),
            )
        )
    elif args.provider == "voice":
        from channels.africastalking.voice_sim import VoiceSimulator
        from channels.voice.simconfig import VoiceSimulatorConfig

        simulator = VoiceSimulator(
            VoiceSimulatorConfig(
                latency=args.latency,
                callback_url=args.report_url,
                answer_delay=args.report_delay,
                seed=None,
                **_prices(args, price_field="price_per_minute"),
            )
        )
    elif args.provider == "telegram":
        from channels.telegram.simconfig import SimulatorConfig as TgConfig
        from channels.telegram.simulator import TelegramSimulator

        simulator = TelegramSimulator(TgConfig(latency=args.latency, seed=None))
    elif args.provider == "meta":
        from channels.meta.simconfig import SimulatorConfig as MetaConfig
        from channels.meta.simulator import MetaSimulator

        simulator = MetaSimulator(
            MetaConfig(latency=args.latency, status_webhook_url=args.report_url, seed=None)
        )
    elif args.provider == "x":
        from channels.x.simulator import XSimulator, XSimulatorConfig

        simulator = XSimulator(XSimulatorConfig(latency=args.latency, seed=None))
    else:
        from channels.mastodon.simulator import MastodonSimulator, MastodonSimulatorConfig

        simulator = MastodonSimulator(MastodonSimulatorConfig(latency=args.latency, seed=None))
    url = await simulator.start(args.host, args.port)
    print(f"{args.provider} simulator on {url} (default test credentials; see its simconfig)")
    try:
        await stop.wait()
    finally:
        await simulator.stop()


async def _audit_verify(config: WartaConfig) -> int:
    """Exit 0 when every chain is intact, 4 (listing the broken events) otherwise."""
    import sqlalchemy as sa

    from gateway.db.engine import create_engine, ensure_migrated
    from gateway.db.schema import audit_events
    from gateway.store.audit import verify_chain

    engine = create_engine(config.database)
    try:
        await ensure_migrated(engine)
        async with engine.connect() as conn:
            problems = await verify_chain(conn)
            events = await conn.scalar(sa.select(sa.func.count()).select_from(audit_events))
    finally:
        await engine.dispose()
    if problems:
        for problem in problems:
            print(f"audit: {problem}", file=sys.stderr)
        print(f"audit chain BROKEN: {len(problems)} problem(s) in {events} events", file=sys.stderr)
        return 4
    print(f"audit chain intact: {events} events")
    return 0


async def _keys_rotate(config: WartaConfig, *, batch: int) -> int:
    from gateway.app import vault_from_config
    from gateway.blind_keys import rotate_blind_index
    from gateway.clock import SystemClock
    from gateway.db.engine import create_engine, ensure_migrated
    from gateway.keys import remaining_under_old_keys, rotate_phone_keys
    from gateway.store.audit import record

    vault = vault_from_config(config)
    engine = create_engine(config.database)
    try:
        await ensure_migrated(engine)
        report = await rotate_phone_keys(engine, vault, batch=batch)
        left = await remaining_under_old_keys(engine, vault)
        # The blind indexes are recomputed from the numbers, so after the re-encryption.
        indexed = await rotate_blind_index(engine, vault, batch=batch)
        index_left = await rotate_blind_index(engine, vault, batch=batch, dry_run=True)
        async with engine.begin() as conn:
            await record(
                conn,
                principal=None,
                actor="cli",
                action="keys.rotate",
                subject=("keys", None),
                after={
                    "re_encrypted": report.total,
                    "re_indexed": indexed.total,
                    "left": sum(left.values()) + index_left.total,
                    "blind_index_keys": vault.index_keys_in_use,
                },
                now=SystemClock().now(),
            )
    finally:
        await engine.dispose()
    for column, count in report.re_encrypted.items():
        print(f"{column}: {count} re-encrypted")
    for column, count in indexed.reindexed.items():
        print(f"{column}: {count} re-indexed")
    if index_left.unrecoverable:
        print(
            f"{index_left.unrecoverable} inbound messages or threads keep their old index "
            "(no number is stored to recompute it from)"
        )
    remaining = sum(left.values())
    remaining_index = index_left.total
    if remaining or remaining_index:
        # Rows written under an old key meanwhile (a gateway not restarted with the new key).
        print(
            f"{remaining} numbers and {remaining_index} blind indexes still under an old key: "
            "run it again",
            file=sys.stderr,
        )
        return 5
    print("every stored number is under the newest key; older phone keys may now be removed")
    if vault.index_keys_in_use > 1:
        print(
            "every blind index is under the newest key; older blind index keys may now be "
            "removed from WARTA_SECRETS__BLIND_INDEX_KEY"
        )
    return 0


def _phone(args: argparse.Namespace) -> int:
    from gateway.phone import (
        DEMO_CHAT,
        DEMO_PHONE,
        DemoNotRunning,
        dial_ussd,
        send_sms,
        send_telegram,
        send_whatsapp,
    )

    number = args.phone or DEMO_PHONE
    try:
        if args.phone_command == "ussd":
            asyncio.run(dial_ussd(args.data_dir, number))
            return 0
        if args.phone_command == "telegram":
            chat = args.chat or DEMO_CHAT
            for answer in asyncio.run(send_telegram(args.data_dir, chat, args.text)):
                print(f"Bot: {answer}")
            return 0
        if args.phone_command == "whatsapp":
            answers = asyncio.run(send_whatsapp(args.data_dir, number, args.text))
            for answer in answers:
                print(f"WhatsApp: {answer}")
            if not answers:
                print("(no answer; free text goes to the operator inbox)")
            return 0
        replies = asyncio.run(send_sms(args.data_dir, number, args.text))
    except DemoNotRunning as exc:
        print(f"warta: {exc}", file=sys.stderr)
        return 1
    except OSError:  # aiohttp's connection errors are OSErrors; their text may hold the token
        print("warta: cannot reach the demo; is `warta demo` running?", file=sys.stderr)
        return 1
    for reply in replies:
        print(f"SMS: {reply}")
    if not replies:
        print("(no SMS reply; free text goes to the operator inbox)")
    return 0


def _read_password() -> str:
    """From the terminal (asked twice, not echoed) or, when piped, the first line of stdin.

    Never from the command line, where other users of the machine could read it."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def _users_add(config: WartaConfig, args: argparse.Namespace) -> int:
    from gateway.clock import SystemClock
    from gateway.db.engine import create_engine, ensure_migrated
    from gateway.domain import Role
    from gateway.store import users
    from gateway.store.audit import record

    try:
        password = _read_password()
        users.check_password_rules(password)
    except ValueError as exc:
        print(f"warta: {exc}", file=sys.stderr)
        return 2
    password_hash = await asyncio.to_thread(users.hash_password, password)
    engine = create_engine(config.database)
    try:
        await ensure_migrated(engine)
        async with engine.begin() as conn:
            user = await users.create_user(
                conn,
                agency_slug=args.agency,
                email=args.email,
                display_name=args.name,
                role=Role(args.role),
                password_hash=password_hash,
                now=SystemClock().now(),
            )
            await record(
                conn,
                principal=None,
                agency_id=user.agency_id,
                actor="cli",
                action="user.create",
                subject=("user", user.id),
                after={"email": user.email, "role": user.role.value},
                now=SystemClock().now(),
            )
    except users.UserProblem as exc:
        print(f"warta: {exc}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    print(f"user {user.id} created: {user.email} ({user.role.value}) in {user.agency_slug}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from gateway.demo import run_demo

            _configure_logging("WARNING")
            asyncio.run(
                run_demo(
                    host=args.host,
                    port=args.port,
                    data_dir=args.data_dir,
                    subscribers_per_agency=args.subscribers,
                    broadcast=not args.no_broadcast,
                )
            )
            return 0
        if args.command == "phone":
            return _phone(args)
        if args.command == "simulate":
            _configure_logging("INFO")
            asyncio.run(_simulate(args))
            return 0
        overrides = {"http": {"port": args.port}} if getattr(args, "port", None) else None
        config = load_config(args.config, overrides=overrides)
        _configure_logging(config.log_level)
        if args.command == "db":
            from gateway.db.migrate import upgrade

            upgrade(config.database.url)
            print("database is at the latest schema")
            return 0
        if args.command == "audit":
            return asyncio.run(_audit_verify(config))
        if args.command == "users":
            return asyncio.run(_users_add(config, args))
        if args.command == "keys":
            return asyncio.run(_keys_rotate(config, batch=args.batch))
        asyncio.run(_serve(config, role=args.role))
        return 0
    except ConfigProblem as exc:
        print(f"warta: configuration problem: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"warta: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from gateway.db.engine import DatabaseNotReady

        if isinstance(exc, DatabaseNotReady):
            print(f"warta: {exc}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    raise SystemExit(main())
