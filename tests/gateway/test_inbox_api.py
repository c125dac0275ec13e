"""The operator inbox through the real HTTP API, on both databases: citizens' free text by SMS
(Africa's Talking callback) and Telegram (webhook) opens threads; an operator's reply goes out
through the outbox on the citizen's channel, to the provider simulator, and is tracked."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from channels.telegram.simconfig import SimulatorConfig as TelegramSimConfig
from channels.telegram.simulator import TelegramSimulator
from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.db.schema import audit_events
from gateway.domain import Role
from gateway.personal import mask
from tests.support.config import make_config
from tests.support.sms import broadcast, sms_world, wait_for
from tests.support.world import World, seed_agencies

INBOX = "/api/v1/inbox"
ANI = "+6281211110001"
UNKNOWN = "+6281311110002"
WAIT = 20.0


async def sms_in(
    world: World, keys: dict[str, str], phone: str, text: str, message_id: str
) -> None:
    form = {
        "from": phone,
        "to": "21234",
        "text": text,
        "date": "2026-01-05 10:00:00",
        "id": message_id,
        "linkId": "",
    }
    path = f"/callbacks/africastalking/{keys['callback_token']}/sms/inbound"
    async with world.client.post(path, data=form) as response:
        assert response.status == 200, await response.text()


async def threads(world: World, query: str = "", agency: int = 0) -> list[dict[str, Any]]:
    answer = await world.call("GET", INBOX + query, role=Role.OPERATOR, agency=agency)
    assert answer.status == 200, answer.body
    items: list[dict[str, Any]] = answer.body["items"]
    return items


async def reply_settled(world: World, thread_id: int, delivery_id: int) -> dict[str, Any]:
    """The thread once the reply ``delivery_id`` has reached the provider."""
    deadline = time.monotonic() + WAIT
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = await world.call("GET", f"{INBOX}/{thread_id}", role=Role.OPERATOR)
        body = answer.body
        out = [m for m in body["messages"] if m["delivery_id"] == delivery_id]
        if out and out[0]["state"] in ("sent", "delivered"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"reply {delivery_id} was not sent: {body}")


async def test_sms_free_text_opens_threads_and_the_reply_goes_back_by_sms(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    clock = ManualClock()
    async with sms_world(aiohttp_client, make_config, database_url, keys, clock=clock) as (
        world,
        sim,
    ):
        ani = await world.subscribe(ANI)
        assert ani.status == 201, ani.body
        approved = await broadcast(world, title="Banjir", body="Air naik di Kali Ciliwung.")
        await wait_for(world, approved["id"], lambda counts, body: body["status"] == "done")

        await sms_in(world, keys, ANI, "Air sudah masuk rumah", "in-1")
        clock.advance(timedelta(seconds=30))
        await sms_in(world, keys, ANI, "Tolong kirim perahu", "in-2")
        await sms_in(world, keys, ANI, "Tolong kirim perahu", "in-2")  # a replayed callback
        code = approved["verification_code"]
        await sms_in(world, keys, UNKNOWN, f"Apakah {code} asli?", "in-3")
        await sms_in(world, keys, ANI, "INFO", "in-4")  # a keyword is answered, not filed

        listed = await threads(world)
        assert [
            (t["channel"], t["phone"], t["subscriber_id"], t["messages_in"], t["status"])
            for t in listed
        ] == [
            ("sms", mask(UNKNOWN), None, 1, "open"),
            ("sms", mask(ANI), ani.body["id"], 2, "open"),
        ]
        # Linked by the code quoted, and by the delivery the subscriber got an hour before.
        assert [t["announcement_id"] for t in listed] == [approved["id"], approved["id"]]
        assert ANI not in json.dumps(listed) and UNKNOWN not in json.dumps(listed)
        assert await threads(world, "?channel=telegram") == []

        thread_id = listed[1]["id"]
        clock.advance(timedelta(seconds=60))
        replied = await world.call(
            "POST",
            f"{INBOX}/{thread_id}/reply",
            role=Role.OPERATOR,
            json={"text": "Tim SAR segera datang."},
        )
        assert replied.status == 202, replied.body
        assert replied.body["channel"] == "sms"
        assert replied.body["thread"]["response_seconds"] == 90
        assert replied.body["thread"]["first_response_at"] is not None

        detail = await reply_settled(world, thread_id, replied.body["delivery_id"])
        assert [(m["direction"], m["text"]) for m in detail["messages"]] == [
            ("in", "Air sudah masuk rumah"),
            ("in", "Tolong kirim perahu"),
            ("out", "Tim SAR segera datang."),
        ]
        sent = [r.recipients for r in sim.received if r.message == "Tim SAR segera datang."]
        assert sent == [(ANI,)]

        # A later reply does not move the time to first response.
        clock.advance(timedelta(seconds=600))
        again = await world.call(
            "POST", f"{INBOX}/{thread_id}/reply", role=Role.OPERATOR, json={"text": "Sabar ya."}
        )
        assert again.body["thread"]["response_seconds"] == 90
        assert again.body["thread"]["replies_out"] == 2


async def test_assign_close_and_what_is_refused(world: World, keys: dict[str, str]) -> None:
    await world.subscribe(ANI)
    await sms_in(world, keys, ANI, "Lampu jalan mati", "m-1")
    await sms_in(world, keys, UNKNOWN, "Halo", "m-2")
    ani_thread, unknown_thread = (await threads(world))[1]["id"], (await threads(world))[0]["id"]
    path = f"{INBOX}/{ani_thread}"

    mine = await world.call("POST", path + "/assign", role=Role.OPERATOR, json={})
    assert mine.status == 200, mine.body
    operator_token = mine.body["assigned_token_id"]
    assert operator_token is not None
    assert [t["id"] for t in await threads(world, "?assigned=me")] == [ani_thread]
    assert [t["id"] for t in await threads(world, "?assigned=none")] == [unknown_thread]
    assert [t["id"] for t in await threads(world, f"?assigned={operator_token}")] == [ani_thread]
    bad = await world.call("POST", path + "/assign", role=Role.OPERATOR, json={"token_id": 987654})
    assert (bad.status, bad.body["error"]["field"]) == (422, "token_id")
    cleared = await world.call(
        "POST", path + "/assign", role=Role.OPERATOR, json={"unassign": True}
    )
    assert cleared.body["assigned_token_id"] is None

    for text, field in (("", "text"), ("   ", "text"), ("x" * 600, "text"), ("x" * 5000, "text")):
        answer = await world.call("POST", path + "/reply", role=Role.OPERATOR, json={"text": text})
        assert (answer.status, answer.body["error"]["field"]) == (422, field), text[:5]
    missing = await world.call("POST", path + "/reply", role=Role.OPERATOR, json={})
    assert (missing.status, missing.body["error"]["field"]) == (422, "text")

    # Another agency's thread does not exist for it; an author may not read the inbox.
    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "/reply", {"text": "hai"}),
        ("POST", "/assign", {}),
        ("POST", "/close", None),
    ):
        answer = await world.call(method, path + suffix, role=Role.OPERATOR, agency=1, json=body)
        assert answer.status == 404, (method, suffix, answer.body)
    assert (await world.call("GET", INBOX, role=Role.AUTHOR)).status == 403
    assert (await world.call("GET", f"{INBOX}/abc", role=Role.OPERATOR)).status == 404
    assert await threads(world, agency=1) == []
    bad_filter = await world.call("GET", INBOX + "?status=pending", role=Role.OPERATOR)
    assert (bad_filter.status, bad_filter.body["error"]["field"]) == (422, "status")

    closed = await world.call("POST", path + "/close", role=Role.OPERATOR)
    assert (closed.status, closed.body["status"]) == (200, "closed")
    again = await world.call("POST", path + "/close", role=Role.OPERATOR)
    assert (again.status, again.body["closed_at"]) == (200, closed.body["closed_at"])
    assert [t["id"] for t in await threads(world, "?status=closed")] == [ani_thread]
    # The citizen writes again: a new conversation, with its own time to first response.
    await sms_in(world, keys, ANI, "Masih mati", "m-3")
    reopened = await threads(world, "?status=open")
    assert [t["id"] for t in reopened if t["id"] not in (ani_thread, unknown_thread)] != []

    # STOP opts the citizen out of SMS: an operator reply cannot be sent that way.
    await sms_in(world, keys, ANI, "STOP", "m-4")
    newest = reopened[0]["id"]
    refused = await world.call(
        "POST", f"{INBOX}/{newest}/reply", role=Role.OPERATOR, json={"text": "Baik"}
    )
    assert refused.status == 409, refused.body

    async with world.engine.connect() as conn:
        actions = list(
            await conn.scalars(
                sa.select(audit_events.c.action)
                .where(audit_events.c.action.like("inbox.%"))
                .order_by(audit_events.c.id)
            )
        )
        afters = list(await conn.scalars(sa.select(audit_events.c.after)))
    assert actions == ["inbox.assign", "inbox.assign", "inbox.close"]
    assert ANI not in json.dumps(afters, default=str)


# -- Telegram -------------------------------------------------------------------------------

TOKEN = "987654321:AAH-wartaTestToken_abcdefghijklmnopq"
SECRET = "wh-secret_5f0c1d2e3b4a9988"
BOT = "warta_sim_bot"
CHAT_ANI, CHAT_STRANGER = 700_000_111, 700_000_999


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def telegram(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> AsyncIterator[tuple[World, TelegramSimulator]]:
    sim = TelegramSimulator(TelegramSimConfig(token=TOKEN, bot_username=BOT))
    base_url = await sim.start()
    port = _free_port()
    secrets = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    config = make_config(
        database_url,
        {**secrets, "telegram_bot_token": TOKEN, "telegram_webhook_secret": SECRET},
        telegram={"base_url": base_url, "bot_username": BOT, "per_chat_interval_s": 0.01},
        http={"public_url": f"http://127.0.0.1:{port}"},
        dispatch={"idle_poll_s": 0.05, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
    )
    app = create_app(config)
    client = await aiohttp_client(app, server_kwargs={"port": port})
    tokens, ids = await seed_agencies(app)
    try:
        yield World(client=client, app=app, tokens=tokens, agency_ids=ids), sim
    finally:
        await sim.stop()


async def sent_to(sim: TelegramSimulator, chat_id: int, count: int) -> list[str]:
    """The first ``count`` texts the bot sent to the chat (waits for the dispatcher)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sent = sim.accepted(str(chat_id))
        if len(sent) >= count:
            return [r.params["text"] for r in sent]
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} messages reached the chat")


async def test_telegram_free_text_opens_threads_and_the_reply_goes_back_by_telegram(
    telegram: tuple[World, TelegramSimulator],
) -> None:
    world, sim = telegram
    assert await sim.citizen_says(CHAT_ANI, "/start 3171") == 200
    await sent_to(sim, CHAT_ANI, 1)
    assert await sim.citizen_says(CHAT_ANI, "Ada pohon tumbang di Jl. Sudirman") == 200
    assert await sim.citizen_says(CHAT_STRANGER, "Halo, ini siapa?") == 200
    await sent_to(sim, CHAT_ANI, 2)  # the automatic acknowledgement
    await sent_to(sim, CHAT_STRANGER, 1)

    listed = await threads(world, "?channel=telegram")
    assert [(t["channel"], t["phone"], t["messages_in"]) for t in listed] == [
        ("telegram", None, 1),
        ("telegram", None, 1),
    ]
    stranger, ani = listed
    assert stranger["subscriber_id"] is None and ani["subscriber_id"] is not None
    assert ani["first_response_at"] is None  # the acknowledgement is not an operator's answer

    for thread, chat, text in (
        (ani, CHAT_ANI, "Terima kasih, petugas kami menuju lokasi."),
        (stranger, CHAT_STRANGER, "Ini kanal resmi Agency Alpha."),
    ):
        replied = await world.call(
            "POST", f"{INBOX}/{thread['id']}/reply", role=Role.OPERATOR, json={"text": text}
        )
        assert replied.status == 202, replied.body
        assert replied.body["channel"] == "telegram"
        detail = await reply_settled(world, thread["id"], replied.body["delivery_id"])
        assert detail["first_response_at"] is not None
        assert detail["response_seconds"] is not None and detail["response_seconds"] >= 0
        assert (await sent_to(sim, chat, 3 if chat == CHAT_ANI else 2))[-1] == text

    # After /stop, the citizen opted out of Telegram: no operator reply that way.
    assert await sim.citizen_says(CHAT_ANI, "/stop") == 200
    await sent_to(sim, CHAT_ANI, 4)
    refused = await world.call(
        "POST", f"{INBOX}/{ani['id']}/reply", role=Role.OPERATOR, json={"text": "Halo?"}
    )
    assert refused.status == 409, refused.body
