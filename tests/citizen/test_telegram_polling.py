"""Telegram updates by long polling (``[telegram] updates = "polling"``), on both databases:
an old webhook is removed, the citizen's /start subscribes and gets its welcome through the
outbox, free text is recorded once, and a process that does not dispatch does not poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from channels.telegram.simconfig import SimulatorConfig
from channels.telegram.simulator import TelegramSimulator
from gateway.app import create_app
from gateway.appkeys import ENGINE
from gateway.db.schema import inbound_messages, subscribers
from tests.support.config import make_config
from tests.support.world import seed_agencies

TOKEN = "987654321:AAH-wartaPollingToken_abcdefghijklmn"
BOT = "warta_poll_bot"
CHAT = 700_000_444
WAIT = 15.0


def _config(database_url: str, keys: dict[str, str], base_url: str, **dispatch: Any) -> Any:
    secrets = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    return make_config(
        database_url,
        {**secrets, "telegram_bot_token": TOKEN},
        telegram={
            "base_url": base_url,
            "bot_username": BOT,
            "updates": "polling",
            "poll_timeout_s": 1,
            "per_chat_interval_s": 0.01,
        },
        dispatch={"idle_poll_s": 0.05, **dispatch},
    )


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[TelegramSimulator, str]]:
    simulator = TelegramSimulator(
        SimulatorConfig(token=TOKEN, bot_username=BOT, webhook_url="http://127.0.0.1:9/old")
    )
    base_url = await simulator.start()
    try:
        yield simulator, base_url
    finally:
        await simulator.stop()


async def _sent(sim: TelegramSimulator, count: int) -> list[str]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sent = sim.accepted(str(CHAT))
        if len(sent) >= count:
            return [m.params["text"] for m in sent]
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} messages to the chat")


async def test_polling_subscribes_answers_and_records_free_text_once(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    telegram: tuple[TelegramSimulator, str],
) -> None:
    sim, base_url = telegram
    assert sim.webhook_url is not None  # an old webhook, which polling must remove
    app = create_app(_config(database_url, keys, base_url))
    await aiohttp_client(app)
    await seed_agencies(app)

    deadline = time.monotonic() + WAIT
    while sim.webhook_url is not None:  # updates queue for getUpdates only without a webhook
        assert time.monotonic() < deadline, "the old webhook was not removed"
        await asyncio.sleep(0.05)
    assert await sim.citizen_says(CHAT, "/start 3171") is None  # queued for getUpdates
    welcome = (await _sent(sim, 1))[0]
    assert welcome.startswith("Selamat datang!")

    await sim.citizen_says(CHAT, "Jalan di depan rumah saya banjir")
    await _sent(sim, 2)  # the acknowledgement
    async with app[ENGINE].connect() as conn:
        areas = (await conn.execute(sa.select(subscribers.c.area_code))).scalars().all()
        recorded = (
            await conn.execute(sa.select(sa.func.count()).select_from(inbound_messages))
        ).scalar()
    assert areas == ["31.71"]
    assert recorded == 2  # /start and the free text, each once


async def test_a_process_that_does_not_dispatch_does_not_poll(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    telegram: tuple[TelegramSimulator, str],
) -> None:
    sim, base_url = telegram
    app = create_app(_config(database_url, keys, base_url, enabled=False))
    await aiohttp_client(app)
    await asyncio.sleep(0.5)

    assert sim.webhook_url is not None  # nobody called deleteWebhook or getUpdates
