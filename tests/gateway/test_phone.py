"""``warta phone``: the terminal phone of the demo texts the gateway and reads its SMS replies
from the Africa's Talking simulator, and dials the USSD menu."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.appkeys import CONFIG
from gateway.demo import all_callback_urls
from gateway.phone import DemoNotRunning, dial_ussd, send_sms
from tests.conftest import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world


async def test_the_terminal_phone_checks_a_code_by_sms_and_dials_ussd(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    tmp_path: Path,
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _):
        await import_numbers(world, numbers(2))
        announced = await broadcast(world, title="Banjir di Cawang")
        base_url = str(world.client.make_url("")).rstrip("/")
        (tmp_path / "demo-credentials.json").write_text(
            json.dumps(
                {
                    "callbacks": all_callback_urls(base_url, keys["callback_token"]),
                    "simulators": {"africastalking": world.app[CONFIG].africastalking.base_url},
                }
            )
        )

        replies = await send_sms(
            tmp_path, "+6281299000001", f"cek  {announced['verification_code'].lower()}"
        )
        assert len(replies) == 1
        assert announced["verification_code"] in replies[0]

        typed = iter(["2"])  # whatever the second screen is, it must be a screen

        def read() -> str:
            try:
                return next(typed)
            except StopIteration:
                raise EOFError from None

        screens: list[str] = []
        await dial_ussd(tmp_path, "+6281299000001", read=read, write=screens.append)
        assert screens and all(s.startswith(("CON ", "END ")) for s in screens)


async def test_without_a_running_demo_it_says_what_to_do(tmp_path: Path) -> None:
    try:
        await send_sms(tmp_path, "+6281299000001", "INFO")
    except DemoNotRunning as exc:
        assert "warta demo" in str(exc)
    else:
        raise AssertionError("expected DemoNotRunning")


async def test_the_terminal_phone_talks_to_the_telegram_bot(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    from channels.telegram.simconfig import SimulatorConfig as TelegramSimConfig
    from channels.telegram.simulator import TelegramSimulator
    from gateway.app import create_app
    from gateway.phone import send_telegram
    from tests.citizen.test_telegram_polling import BOT, TOKEN, _config
    from tests.support.world import seed_agencies

    sim = TelegramSimulator(TelegramSimConfig(token=TOKEN, bot_username=BOT))
    base_url = await sim.start()
    try:
        app = create_app(_config(database_url, keys, base_url))
        await aiohttp_client(app)
        await seed_agencies(app)
        (tmp_path / "demo-credentials.json").write_text(
            json.dumps({"simulators": {"telegram": base_url}})
        )

        welcome = await send_telegram(tmp_path, 700_999_001, "/start 3171")
        bulletins = await send_telegram(tmp_path, 700_999_001, "/terbaru")

        assert len(welcome) == 1 and welcome[0].startswith("Selamat datang!")
        assert len(bulletins) == 1
    finally:
        await sim.stop()
