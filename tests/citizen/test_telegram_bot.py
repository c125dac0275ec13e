"""The Telegram bot end to end, on both databases: the real Telegram simulator, the real
channel (python-telegram-bot over HTTP), the gateway's webhook and its dispatcher.

The gateway registers its webhook with the simulator at start-up; a citizen's message is the
simulator POSTing an update there; the bot's answer is what the simulator received in
``sendMessage`` after the dispatcher sent the queued reply.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from channels.telegram.simconfig import SimulatorConfig
from channels.telegram.simulator import TelegramSimulator
from channels.telegram.simupdates import post_webhook_update, text_update
from gateway.app import create_app
from gateway.appkeys import CLOCK, ENGINE
from gateway.citizen import telegram_bot
from gateway.db.schema import deliveries, inbound_messages, subscriber_channels, subscribers
from tests.support.config import make_config
from tests.support.sms import broadcast, wait_for
from tests.support.world import World, seed_agencies

TOKEN = "987654321:AAH-wartaTestToken_abcdefghijklmnopq"
SECRET = "wh-secret_5f0c1d2e3b4a9988"
BOT = "warta_sim_bot"
ANI, BUDI, CITRA = 700_000_111, 700_000_222, 700_000_333
WAIT = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class BotWorld:
    world: World
    sim: TelegramSimulator
    webhook_url: str
    public_url: str
    _seen: Counter[int] = field(default_factory=Counter)

    @property
    def engine(self) -> Any:
        return self.world.engine

    async def says(self, chat_id: int, text: str, *, language_code: str | None = "id") -> None:
        status = await self.sim.citizen_says(chat_id, text, language_code=language_code)
        assert status == 200

    async def reply(self, chat_id: int) -> str:
        """The next message the bot sent to ``chat_id`` (waits for the dispatcher)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            sent = self.sim.accepted(str(chat_id))
            if len(sent) > self._seen[chat_id]:
                self._seen[chat_id] += 1
                return sent[self._seen[chat_id] - 1].params["text"]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no message #{self._seen[chat_id] + 1} for the chat")

    async def ask(self, chat_id: int, text: str, *, language_code: str | None = "id") -> str:
        await self.says(chat_id, text, language_code=language_code)
        return await self.reply(chat_id)

    def link(self, code: str) -> str:
        return f"{self.public_url}/a/{code}"

    async def rows(self, query: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))


@pytest.fixture
async def bot(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> AsyncIterator[BotWorld]:
    sim = TelegramSimulator(SimulatorConfig(token=TOKEN, bot_username=BOT))
    base_url = await sim.start()
    port = _free_port()
    public_url = f"http://127.0.0.1:{port}"
    secrets = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    config = make_config(
        database_url,
        {**secrets, "telegram_bot_token": TOKEN, "telegram_webhook_secret": SECRET},
        telegram={
            "base_url": base_url,
            "bot_username": BOT,
            "per_chat_interval_s": 0.01,
            "request_timeout_s": 5.0,
        },
        http={"public_url": public_url},
        dispatch={"idle_poll_s": 0.05, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
    )
    app = create_app(config)
    client = await aiohttp_client(app, server_kwargs={"port": port})
    tokens, ids = await seed_agencies(app)
    world = World(client=client, app=app, tokens=tokens, agency_ids=ids)
    try:
        yield BotWorld(world, sim, telegram_bot.webhook_url(public_url), public_url)
    finally:
        await sim.stop()


async def test_start_registers_the_webhook_and_a_deep_link_subscribes_to_its_area(
    bot: BotWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for name in ("warta", "channels", "telegram", "httpx"):
        caplog.set_level(logging.DEBUG, logger=name)
    assert bot.sim.webhook_url == bot.webhook_url
    assert bot.sim.webhook_secret == SECRET

    welcome = await bot.ask(ANI, "/start 3171")
    assert welcome == (
        "Selamat datang! Anda berlangganan info resmi Agency Alpha untuk wilayah 31.71.\n\n"
        "/terbaru - info terbaru\n"
        "/cek KODE - cek keaslian pesan\n"
        "/bahasa - ganti bahasa\n"
        "/stop - berhenti berlangganan"
    )
    assert (await bot.ask(BUDI, "/start", language_code="en-GB")).startswith(
        "Welcome! You are subscribed to official news from Agency Alpha for all areas."
    )
    people = await bot.rows(
        sa.select(
            subscribers.c.telegram_chat_id,
            subscribers.c.agency_id,
            subscribers.c.language,
            subscribers.c.area_code,
            subscribers.c.phone_index,
            subscribers.c.consent_channel,
            subscribers.c.consent_text,
            subscriber_channels.c.channel,
            subscriber_channels.c.opted_out_at,
        )
        .join(subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id)
        .order_by(subscribers.c.id)
    )
    alpha = bot.world.agency_ids[0]
    assert [tuple(p) for p in people] == [
        (ANI, alpha, "id", "31.71", None, "telegram", welcome, "telegram", None),
        (BUDI, alpha, "en", None, None, "telegram", people[1].consent_text, "telegram", None),
    ]
    # A second /start with another area moves the subscriber; nobody is duplicated.
    assert "wilayah 31.74" in await bot.ask(ANI, "/start 3174")
    areas = await bot.rows(sa.select(subscribers.c.area_code).order_by(subscribers.c.id))
    assert [a for (a,) in areas] == ["31.74", None]

    replies = await bot.rows(
        sa.select(deliveries.c.kind, deliveries.c.reply_key, deliveries.c.priority)
        .where(deliveries.c.channel == "telegram")
        .order_by(deliveries.c.id)
    )
    assert [tuple(r) for r in replies] == [
        ("reply", "tg-1", 2),
        ("reply", "tg-2", 2),
        ("reply", "tg-3", 2),
    ]
    for secret in (str(ANI), str(BUDI), TOKEN, SECRET):
        assert secret not in caplog.text


async def test_cek_answers_genuine_with_its_link_and_unknown_codes(bot: BotWorld) -> None:
    news = await broadcast(bot.world, title="Banjir di Kampung Melayu", channels=["sms"])
    code = news["verification_code"]
    genuine = await bot.ask(ANI, f"/cek {code.lower()}")
    verdict, link = genuine.split("\n")
    assert verdict.startswith(f"ASLI. Kode {code} dari Agency Alpha: Banjir di Kampung Melayu (")
    assert link == f"Selengkapnya: {bot.link(code)}"
    fake = await bot.ask(ANI, "/cek ZZZZZZ")
    assert fake.startswith("TIDAK DIKENAL. Kode ZZZZZZ tidak berasal dari layanan ini.")
    assert await bot.ask(ANI, "/cek") == "Ketik /cek lalu kodenya, misalnya /cek AB3DEF"
    english = await bot.ask(BUDI, f"/check {code}", language_code="en")
    assert english.startswith(f"GENUINE. Code {code} is from Agency Alpha")


async def test_terbaru_lists_the_three_latest_for_the_subscribers_area(bot: BotWorld) -> None:
    assert await bot.ask(ANI, "/terbaru") == "Belum ada info untuk wilayah Anda."
    await bot.ask(ANI, "/start 3171")
    made = []
    for title, areas in [
        ("Satu", ["31"]),
        ("Dua", []),
        ("Tiga", ["32"]),
        ("Empat", ["31.71"]),
        ("Lima", ["31.71"]),
    ]:
        made.append(await broadcast(bot.world, title=title, areas=areas, channels=["sms"]))
    codes = {n["title"]: n["verification_code"] for n in made}
    latest = (await bot.ask(ANI, "/terbaru")).split("\n\n")
    assert latest[0] == "Info terbaru Agency Alpha:"
    assert [entry.split(" (")[0] for entry in latest[1:]] == ["• Lima", "• Empat", "• Dua"]
    assert [entry.split("\n")[1] for entry in latest[1:]] == [
        bot.link(codes["Lima"]),
        bot.link(codes["Empat"]),
        bot.link(codes["Dua"]),
    ]


async def test_bahasa_en_switches_the_reply_language(bot: BotWorld) -> None:
    assert await bot.ask(ANI, "/bahasa en") == "You are not subscribed. Send /start to begin."
    await bot.ask(ANI, "/start")
    assert await bot.ask(ANI, "/bahasa") == (
        "Pilih bahasa / Choose language:\n/bahasa id - Bahasa Indonesia\n/bahasa en - English"
    )
    assert await bot.ask(ANI, "/bahasa EN") == "OK, news and replies will now be in English."
    assert await bot.ask(ANI, "/terbaru") == "No news for your area yet."
    assert (await bot.ask(ANI, "/help")).startswith("Commands:\n/terbaru - latest news")
    language = await bot.rows(sa.select(subscribers.c.language))
    assert [tuple(r) for r in language] == [("en",)]
    assert await bot.ask(ANI, "/bahasa id") == (
        "Baik, info dan balasan selanjutnya dalam Bahasa Indonesia."
    )


async def test_stop_opts_out_at_once_and_cancels_queued_telegram_deliveries(
    bot: BotWorld,
) -> None:
    await bot.ask(ANI, "/start 3171")
    draft = await bot.world.announce(title="Nanti", channels=["telegram"])
    (subscriber_id,) = [r for (r,) in await bot.rows(sa.select(subscribers.c.id))]
    now = bot.world.app[CLOCK].now()
    async with bot.engine.begin() as conn:
        await conn.execute(
            sa.insert(deliveries).values(
                announcement_id=draft["id"],
                agency_id=bot.world.agency_ids[0],
                subscriber_id=subscriber_id,
                channel="telegram",
                language="id",
                state="queued",
                priority=1,
                next_attempt_at=now + timedelta(hours=1),
                created_at=now,
            )
        )
    assert await bot.ask(ANI, "/stop") == (
        "Anda berhenti menerima info Agency Alpha di Telegram. "
        "Ketik /start untuk berlangganan lagi."
    )
    queued = await bot.rows(
        sa.select(deliveries.c.state, deliveries.c.error_kind).where(
            deliveries.c.announcement_id == draft["id"]
        )
    )
    assert [tuple(r) for r in queued] == [("cancelled", "stopped")]
    opted = await bot.rows(sa.select(subscriber_channels.c.opted_out_at))
    assert opted[0][0] is not None

    # The next broadcast to Telegram no longer reaches the chat.
    news = await broadcast(bot.world, title="Sesudah berhenti", channels=["telegram"])
    await wait_for(bot.world, news["id"], lambda _counts, body: body["status"] == "done")
    assert len(bot.sim.accepted(str(ANI))) == 2  # the welcome and the /stop answer

    assert "wilayah 31.71" in await bot.ask(ANI, "/start")  # coming back keeps the area
    opted = await bot.rows(sa.select(subscriber_channels.c.opted_out_at))
    assert opted[0][0] is None
    assert await bot.ask(BUDI, "/stop") == "Anda belum berlangganan. Ketik /start untuk mulai."


async def test_free_text_lands_in_the_inbox_once_even_when_replayed(bot: BotWorld) -> None:
    await bot.ask(ANI, "/start")
    update = text_update(501, 77, ANI, "Kapan air surut di Kampung Melayu?")
    for _ in range(3):
        assert await post_webhook_update(bot.webhook_url, update, SECRET) == 200
    assert await bot.reply(ANI) == "Terima kasih, pesan Anda sudah kami terima."
    stranger = text_update(502, 1, CITRA, "halo", language_code="en")
    assert await post_webhook_update(bot.webhook_url, stranger, SECRET) == 200
    assert await bot.reply(CITRA) == "Thank you, we have received your message."

    inbox = await bot.rows(
        sa.select(
            inbound_messages.c.channel,
            inbound_messages.c.provider_message_id,
            inbound_messages.c.text,
            inbound_messages.c.handled,
            inbound_messages.c.subscriber_id.is_not(None),
            inbound_messages.c.phone_index,
            inbound_messages.c.agency_id,
        )
        .where(inbound_messages.c.handled == "inbox")
        .order_by(inbound_messages.c.id)
    )
    alpha = bot.world.agency_ids[0]
    assert [tuple(r) for r in inbox] == [
        ("telegram", "tg-update-501", update["message"]["text"], "inbox", True, None, alpha),
        ("telegram", "tg-update-502", "halo", "inbox", False, None, alpha),
    ]
    acks = await bot.rows(sa.select(deliveries.c.id).where(deliveries.c.reply_key == "tg-501"))
    assert len(acks) == 1


async def test_a_wrong_or_missing_secret_is_refused_and_changes_nothing(bot: BotWorld) -> None:
    update = text_update(900, 1, ANI, "/start 3171")
    for secret in ("wrong-secret", None, SECRET.upper()):
        assert await post_webhook_update(bot.webhook_url, update, secret) == 401
    for table in (inbound_messages, subscribers, deliveries):
        count = await bot.rows(sa.select(sa.func.count()).select_from(table))
        assert count[0][0] == 0, table.name


async def test_authentic_updates_we_cannot_use_still_get_200(bot: BotWorld) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    for body in ("not json", '{"update_id": "x"}', '{"update_id": 7, "edited_message": {}}'):
        async with bot.world.client.post(
            telegram_bot.WEBHOOK_PATH, data=body, headers=headers
        ) as response:
            assert response.status == 200
    group = text_update(8, 1, -100123, "/start 3171")
    group["message"]["chat"] = {"id": -100123, "title": "Warga RT 05", "type": "group"}
    assert await post_webhook_update(bot.webhook_url, group, SECRET) == 200
    count = await bot.rows(sa.select(sa.func.count()).select_from(inbound_messages))
    assert count[0][0] == 0

    sticker = text_update(9, 2, ANI, "")
    del sticker["message"]["text"]
    sticker["message"]["sticker"] = {"file_id": "CAACAgIAAxkBAAE", "emoji": "👍"}
    assert await post_webhook_update(bot.webhook_url, sticker, SECRET) == 200
    assert await bot.reply(ANI) == "Maaf, kami hanya bisa membaca pesan teks."
    assert (await bot.ask(ANI, "/apaini")).startswith("Perintah yang tersedia:\n/terbaru")
    handled = await bot.rows(sa.select(inbound_messages.c.handled).order_by(inbound_messages.c.id))
    assert [h for (h,) in handled] == ["ignored", "command"]


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionRefusedError(), True),
        (
            sa.exc.OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")),
            True,
        ),
        (
            sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("no such table: x")),
            False,
        ),
        (sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE failed")), False),
        (ValueError("bug"), False),
    ],
)
def test_only_passing_database_trouble_asks_telegram_to_retry(
    error: BaseException, retry: bool
) -> None:
    assert telegram_bot.worth_retrying(error) is retry


async def test_blocking_the_bot_opts_the_chat_out_at_once(bot: BotWorld) -> None:
    await bot.ask(ANI, "/start 3171")
    await bot.ask(BUDI, "/start 3171")
    assert await bot.sim.citizen_blocks(ANI) == 200
    states = await bot.rows(
        sa.select(subscribers.c.telegram_chat_id, subscriber_channels.c.opted_out_at.is_(None))
        .join(subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id)
        .order_by(subscribers.c.id)
    )
    assert [tuple(s) for s in states] == [(ANI, False), (BUDI, True)]
    handled = await bot.rows(sa.select(inbound_messages.c.handled).order_by(inbound_messages.c.id))
    assert [h for (h,) in handled] == ["command", "command", "blocked"]
    replies = await bot.rows(sa.select(deliveries.c.reply_key).order_by(deliveries.c.id))
    assert [r for (r,) in replies] == ["tg-1", "tg-2"]  # nothing said to a chat that blocked us


async def test_a_telegram_broadcast_reaches_the_subscribed_chats_in_its_area(
    bot: BotWorld,
) -> None:
    await bot.ask(ANI, "/start 3171")
    await bot.ask(BUDI, "/start 3171", language_code="en")
    await bot.ask(CITRA, "/start 3273")
    news = await broadcast(
        bot.world,
        title="Banjir di Kampung Melayu",
        body="Air setinggi 1 meter.",
        areas=["31.71"],
        channels=["telegram"],
    )
    body = await wait_for(bot.world, news["id"], lambda counts, _body: counts.get("sent") == 2)
    assert body["stats"][0]["channel"] == "telegram"
    code = news["verification_code"]
    for chat in (ANI, BUDI):
        text = await bot.reply(chat)
        assert "Banjir di Kampung Melayu" in text
        assert f"Kode verifikasi: {code}" in text
    assert len(bot.sim.accepted(str(CITRA))) == 1  # only its welcome


async def test_webhook_registration_failure_is_logged_and_the_gateway_still_serves(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = TelegramSimulator(SimulatorConfig(token="111111:another-bots-token", bot_username=BOT))
    base_url = await sim.start()
    try:
        secrets = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
        config = make_config(
            database_url,
            {**secrets, "telegram_bot_token": TOKEN, "telegram_webhook_secret": SECRET},
            telegram={"base_url": base_url, "bot_username": BOT},
        )
        app = create_app(config)
        client = await aiohttp_client(app)
        assert sim.webhook_url is None
        assert "Telegram webhook registration failed" in caplog.text
        assert TOKEN not in caplog.text
        async with client.get("/healthz") as response:
            assert response.status == 200
        assert app[ENGINE] is not None
    finally:
        await sim.stop()
