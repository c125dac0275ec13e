"""``warta demo``: the gateway, the provider simulators and demo data, on SQLite, in one command.

First run on a data dir: migrate, seed two agencies with role tokens and a few thousand
subscribers, write ``demo-credentials.json``, and send a first broadcast through the
Africa's Talking simulator with a live progress bar. Later runs on the same data dir resume:
same keys, same tokens, same data; nothing is seeded again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from gateway.callbacks import callback_urls
from gateway.citizen.routes import callback_urls as citizen_callback_urls
from gateway.config import WartaConfig, load_config
from gateway.personal import PhoneVault
from gateway.voice_routes import callback_urls as voice_callback_urls

AGENCIES = (
    ("bpbd-dki", "BPBD DKI Jakarta", "Asia/Jakarta", ["31.71", "31.72", "31.73", "31.74", "31.75"]),
    (
        "diskominfo-bandung",
        "Diskominfo Kota Bandung",
        "Asia/Jakarta",
        ["32.73.01", "32.73.02", "32.73.03"],
    ),
)
ROLES = ("author", "approver", "operator", "admin")
DEMO_CHANNELS = (
    "sms",
    "voice",
    "whatsapp",
    "telegram",
    "telegram_channel",
    "facebook",
    "x",
    "mastodon",
)
# Indonesian mobile prefixes (Telkomsel, Indosat, XL, Tri, Smartfren).
PREFIXES = ("812", "813", "821", "852", "856", "857", "817", "818", "895", "896", "881")


def _secrets(data_dir: Path) -> dict[str, str]:
    """Demo keys live in a 0600 file of the data dir, so a resumed demo can decrypt its data."""
    path = data_dir / "demo-secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        if "meta_app_secret" in loaded:
            return loaded
    values = {
        "phone_keys": PhoneVault.generate_key(),
        "blind_index_key": PhoneVault.generate_key(),
        "africastalking_api_key": secrets.token_urlsafe(24),
        "callback_token": secrets.token_urlsafe(24),
        "meta_app_secret": secrets.token_urlsafe(24),
        "meta_verify_token": secrets.token_urlsafe(16),
        "telegram_webhook_secret": secrets.token_urlsafe(24),
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(values, indent=2))
    return values


def all_callback_urls(base_url: str, token: str) -> dict[str, str]:
    """Every provider callback URL, as ``<provider>_<purpose>``."""
    return {
        **callback_urls(base_url, token),
        **citizen_callback_urls(base_url, token),
        **voice_callback_urls(base_url, token),
        "telegram_webhook": f"{base_url}/callbacks/telegram/webhook",
    }


def demo_config(
    data_dir: Path, *, host: str, port: int, settings: dict[str, Any], keys: dict[str, str]
) -> WartaConfig:
    return load_config(
        None,
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "database": {"url": f"sqlite+aiosqlite:///{(data_dir / 'warta.db').resolve()}"},
            "http": {"host": host, "port": port, "public_url": f"http://{host}:{port}"},
            # The demo works at any hour (said on start): with quiet hours, a normal
            # announcement made at night in Jakarta would wait for 06:00.
            "scheduler": {"quiet_hours": "off"},
            **settings,
            "secrets": keys,
        },
    )


def demo_numbers(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    numbers = []
    for i in range(count):
        # Every 500th number ends in 0000, which the simulator treats as invalid: the demo
        # shows failures with their reasons, not only successes.
        tail = "0000" if i % 500 == 499 else f"{rng.randrange(10_000):04d}"
        numbers.append(f"+62{rng.choice(PREFIXES)}{rng.randrange(1000, 10_000)}{tail}")
    return numbers


def _demo_channels(rng: random.Random) -> list[str]:
    draw = rng.random()
    if draw < 0.1:
        return ["whatsapp", "sms"]
    if draw < 0.2:
        return ["telegram", "sms"]
    if draw < 0.26:
        # Voice calls reach citizens without data or who cannot read an SMS.
        return ["voice", "sms"]
    return ["sms"]


async def seed(app: web.Application, *, subscribers_per_agency: int) -> list[dict[str, Any]]:
    """Agencies, one token per role each, and subscribers; returns the credentials."""
    import sqlalchemy as sa

    from gateway.appkeys import CLOCK, ENGINE, VAULT
    from gateway.auth import issue_token
    from gateway.db.schema import agencies
    from gateway.domain import Role
    from gateway.personal import normalise
    from gateway.store.subscribers import NewSubscriber, insert_subscribers

    now = app[CLOCK].now()
    credentials = []
    async with app[ENGINE].begin() as conn:
        for n, (slug, name, tz, areas) in enumerate(AGENCIES):
            agency_id = await conn.scalar(
                sa.insert(agencies)
                .values(slug=slug, name=name, timezone=tz, created_at=now)
                .returning(agencies.c.id)
            )
            assert agency_id is not None
            tokens = {}
            for role in ROLES:
                issued = await issue_token(
                    conn, agency_id=agency_id, role=Role(role), name=f"demo {role}", now=now
                )
                tokens[role] = issued.token
            rng = random.Random(n)
            people = [
                NewSubscriber(
                    phone=normalise(number, "ID"),
                    language="en" if rng.random() < 0.2 else "id",
                    area_code=rng.choice(areas),
                    topics=[],
                    # Most citizens get SMS; some also chose WhatsApp, Telegram or a call.
                    channels=_demo_channels(rng),
                    telegram_chat_id=700_000_000 + n * 100_000 + i,
                    consent_channel="import",
                    consent_text="demo data",
                    consent_at=now,
                )
                for i, number in enumerate(demo_numbers(subscribers_per_agency, seed=n))
            ]
            await insert_subscribers(
                conn, agency_id=agency_id, people=people, vault=app[VAULT], now=now
            )
            credentials.append({"slug": slug, "name": name, "tokens": tokens})
    return credentials


async def _ok(response: aiohttp.ClientResponse) -> None:
    if response.status >= 400:
        body = await response.json()
        raise RuntimeError(f"{response.url.path}: {body['error']['message']}")


async def _first_broadcast(
    base_url: str, tokens: dict[str, str], console: Console, *, channels: list[str]
) -> None:
    async with aiohttp.ClientSession(base_url) as http:
        body = {
            "title": "Peringatan banjir Jakarta",
            "body": "Hujan deras diperkirakan malam ini. Siapkan tas siaga dan pantau info resmi.",
            "language": "id",
            "facts": {
                "what": "Potensi banjir",
                "when": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "where": "Jakarta Utara dan Jakarta Timur",
                "action": "Hindari bantaran sungai",
            },
            "translations": {
                "en": {
                    "title": "Jakarta flood warning",
                    "body": "Heavy rain is expected tonight. Prepare an emergency bag "
                    "and follow official updates.",
                    "facts": {
                        "what": "Possible flooding",
                        "where": "North and East Jakarta",
                        "action": "Stay away from river banks",
                    },
                }
            },
            "channels": channels,
        }
        headers = {"Authorization": f"Bearer {tokens['author']}"}
        async with http.post("/api/v1/announcements", json=body, headers=headers) as r:
            await _ok(r)
            created = await r.json()
        announcement_id = created["id"]
        async with http.post(
            f"/api/v1/announcements/{announcement_id}/submit", headers=headers
        ) as r:
            await _ok(r)
        async with http.get(
            f"/api/v1/announcements/{announcement_id}/preview", headers=headers
        ) as r:
            preview = await r.json()
        balances = "".join(
            f", {'+'.join(b['channels'])} balance {b['currency'] or ''} {b['amount']}"
            for b in preview.get("balances", [])
        )
        console.print(
            f"Preview: {preview['recipients']} recipients, {preview['sms_segments']} SMS segments, "
            f"estimated cost {preview['currency']} {preview['estimated_cost']}{balances}"
        )
        approver = {"Authorization": f"Bearer {tokens['approver']}"}
        async with http.post(
            f"/api/v1/announcements/{announcement_id}/approve", headers=approver
        ) as r:
            await _ok(r)
        await watch_progress(http, announcement_id, headers, console, total=preview["recipients"])


async def watch_progress(
    http: aiohttp.ClientSession,
    announcement_id: int,
    headers: dict[str, str],
    console: Console,
    *,
    total: int,
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            state: progress.add_task(state, total=max(total, 1))
            for state in ("queued", "sent", "delivered", "failed")
        }
        done_polls = 0
        for _ in range(600):
            async with http.get(f"/api/v1/announcements/{announcement_id}", headers=headers) as r:
                data = await r.json()
            counts: dict[str, int] = {}
            for per_channel in data.get("stats") or []:
                for state, n in per_channel["counts"].items():
                    counts[state] = counts.get(state, 0) + n
            for state, task in tasks.items():
                progress.update(
                    task,
                    completed=counts.get(state, 0)
                    + (counts.get("sending", 0) if state == "queued" else 0),
                )
            settled = (
                counts.get("delivered", 0) + counts.get("failed", 0) + counts.get("cancelled", 0)
            )
            # "sent" is final where a provider sends no delivery reports (Telegram); allow
            # the others a few seconds after the last send for their reports.
            if data["status"] == "done":
                done_polls += 1
                if settled >= total or done_polls > 20:
                    break
            await asyncio.sleep(0.5)
    for per_channel in data.get("stats") or []:
        shown = ", ".join(f"{state} {n}" for state, n in per_channel["counts"].items() if n)
        console.print(f"  {per_channel['channel']:<17} {shown}")
    console.print(
        f"Broadcast {announcement_id}: {data['status']} — see /a/{data['verification_code']}"
    )


async def run_demo(
    *, host: str, port: int, data_dir: Path, subscribers_per_agency: int, broadcast: bool
) -> None:
    from gateway.app import create_app, settle_process
    from gateway.cli import stop_signal
    from gateway.db.migrate import upgrade_async
    from gateway.demo_sims import DemoSimulators

    console = Console()
    stop = stop_signal()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    keys = _secrets(data_dir)
    base_url = f"http://{host}:{port}"
    simulators = DemoSimulators()
    pricing = demo_config(data_dir, host=host, port=port, settings={}, keys=keys).pricing
    await simulators.start(base_url, keys, pricing=pricing)
    config = demo_config(
        data_dir,
        host=host,
        port=port,
        settings=simulators.settings,
        keys={**keys, **simulators.secrets},
    )
    await upgrade_async(config.database.url)
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        settle_process()
        creds_path = data_dir / "demo-credentials.json"
        first_run = not creds_path.exists()
        if first_run:
            console.print(
                f"Seeding {len(AGENCIES)} agencies × {subscribers_per_agency} subscribers …"
            )
            agencies = await seed(app, subscribers_per_agency=subscribers_per_agency)
            creds_path.touch(mode=0o600)
            creds_path.write_text(
                json.dumps(
                    {
                        "base_url": base_url,
                        "agencies": agencies,
                        "callbacks": all_callback_urls(base_url, keys["callback_token"]),
                        "simulators": simulators.urls,
                    },
                    indent=2,
                )
            )
        credentials = json.loads(creds_path.read_text())
        credentials["simulators"] = simulators.urls
        # Refreshed on every run, so a data dir from an older demo learns new callbacks.
        credentials["callbacks"] = all_callback_urls(base_url, keys["callback_token"])
        creds_path.write_text(json.dumps(credentials, indent=2))
        author = credentials["agencies"][0]["tokens"]["author"]
        console.print(f"[bold]Warta demo[/bold] on {base_url}")
        console.print(f"Data in {data_dir}, credentials in {creds_path}")
        for note in simulators.notes:
            console.print(f"[yellow]{note}[/yellow]")
        console.print(
            "Quiet hours are off in the demo, so announcements go out at any hour; a real "
            "gateway holds normal ones 21:00-06:00 in each citizen's zone (docs/scheduling.md)."
        )
        console.print("Create an announcement:")
        example = '{"title": "Uji coba", "body": "Pesan uji coba.", "channels": ["sms"]}'
        console.print(
            f"  curl -s -X POST {base_url}/api/v1/announcements "
            f"-H 'Authorization: Bearer {author}' -H 'Content-Type: application/json' "
            f"-d '{example}'",
            soft_wrap=True,
            highlight=False,
        )
        phone_dir = "" if data_dir == Path("warta-demo") else f" --data-dir {data_dir}"
        console.print(
            "Be a citizen with a feature phone (in another terminal): "
            f"[bold]warta phone{phone_dir} ussd[/bold], "
            f'[bold]warta phone{phone_dir} sms "CEK <code>"[/bold] or '
            f'[bold]warta phone{phone_dir} telegram "/start 3171"[/bold]',
            highlight=False,
        )
        if first_run and broadcast:
            sending = asyncio.ensure_future(
                _first_broadcast(
                    base_url,
                    credentials["agencies"][0]["tokens"],
                    console,
                    # Without a voice channel, voice deliveries would wait in the outbox.
                    channels=[c for c in DEMO_CHANNELS if c != "voice" or simulators.voice],
                )
            )
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sending, stopping):
                task.cancel()
            if sending.done() and not sending.cancelled() and sending.exception() is not None:
                console.print(f"[red]The first broadcast failed: {sending.exception()}[/red]")
        console.print("Press Ctrl-C to stop.")
        await stop.wait()
    finally:
        await runner.cleanup()
        await simulators.stop()
        console.print("Warta demo stopped; run it again to resume.")
