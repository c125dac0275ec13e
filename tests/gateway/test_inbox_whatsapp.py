"""Citizens' WhatsApp messages in the operator inbox, through the real HTTP API on both
databases: the Meta simulator plays the citizen (a signed Cloud API webhook to the gateway),
the outbox sends announcements and replies to the same simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from channels.meta.signature import SIGNATURE_HEADER, sign
from channels.meta.simconfig import SimulatorConfig
from channels.meta.simulator import MetaSimulator
from gateway.appkeys import CONFIG, DISPATCHER
from gateway.clock import ManualClock
from gateway.db.schema import deliveries, inbound_messages, subscriber_channels
from gateway.domain import Role
from gateway.outbox.dispatcher import Dispatcher
from gateway.personal import mask
from gateway.phone import send_whatsapp
from tests.support.config import make_config
from tests.support.sms import broadcast
from tests.support.world import World

INBOX = "/api/v1/inbox"
WEBHOOK = "/callbacks/meta/whatsapp"
WA_PHONE_ID = "106540352242922"
WA_TOKEN = "EAAwa-inbox-token-5b1c"
APP_SECRET = "app-secret-inbox-0c4d7e"
TEMPLATE = "warta_announcement"
ANI = "+6281211110001"
BUDI = "+6281311110002"


@dataclass
class Gateway:
    world: World
    clock: ManualClock
    dispatcher: Dispatcher
    meta: MetaSimulator

    async def send_all(self) -> None:
        while await self.dispatcher.run_once("whatsapp"):
            pass

    async def says(self, phone: str, text: str, **options: Any) -> str:
        wamid, status = await self.meta.citizen_says(phone, text, **options)
        assert status == 200
        return wamid

    async def post(self, payload: bytes, *, secret: str = APP_SECRET) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(payload, secret)}
        async with self.world.client.post(WEBHOOK, data=payload, headers=headers) as response:
            text = await response.text()
            return response.status, json.loads(text) if response.status != 200 else text

    async def threads(self) -> list[dict[str, Any]]:
        answer = await self.world.call("GET", INBOX, role=Role.OPERATOR)
        assert answer.status == 200, answer.body
        items: list[dict[str, Any]] = answer.body["items"]
        return items

    async def rows(self, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
        async with self.world.engine.connect() as conn:
            query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
            result = await conn.execute(query)
            return [dict(row) for row in result.mappings()]


@asynccontextmanager
async def gateway(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    tmp_path: Path,
    *,
    agency: str | None = None,
) -> AsyncIterator[Gateway]:
    meta = MetaSimulator(
        SimulatorConfig(
            phone_number_id=WA_PHONE_ID,
            whatsapp_token=WA_TOKEN,
            app_secret=APP_SECRET,
            templates=frozenset({(TEMPLATE, "id")}),
        )
    )
    base_url = await meta.start()
    clock = ManualClock()
    config = make_config(
        database_url,
        {
            **keys,
            "whatsapp_access_token": WA_TOKEN,
            "meta_app_secret": APP_SECRET,
            "meta_verify_token": "verify-inbox",
        },
        data_dir=str(tmp_path),
        whatsapp={
            "phone_number_id": WA_PHONE_ID,
            "base_url": base_url,
            "template_name": TEMPLATE,
            "template_languages": {"id": "id"},
            "agency": agency,
        },
        dispatch={"enabled": False},
    )
    world = await World.start(aiohttp_client, config, clock=clock)
    meta.webhooks.url = str(world.client.make_url(WEBHOOK))
    dispatcher = world.app[DISPATCHER]
    await dispatcher.channels["whatsapp"].start()
    try:
        yield Gateway(world, clock, dispatcher, meta)
    finally:
        # Status webhooks still on their way would hit a gateway shutting down.
        await asyncio.wait_for(meta.wait_for_webhooks(), timeout=30)
        await dispatcher.channels["whatsapp"].close()
        await meta.stop()


@pytest.fixture
async def gw(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> AsyncIterator[Gateway]:
    async with gateway(aiohttp_client, database_url, keys, tmp_path) as running:
        yield running


async def announce_on_whatsapp(gw: Gateway, **fields: Any) -> dict[str, Any]:
    approved = await broadcast(gw.world, channels=["whatsapp"], **fields)
    assert await gw.dispatcher.start_due() == 1
    await gw.send_all()
    return approved


async def test_messages_thread_link_and_the_reply_goes_back_as_text(gw: Gateway) -> None:
    ani = await gw.world.subscribe(ANI, channels=["whatsapp"])
    assert ani.status == 201, ani.body
    first = await announce_on_whatsapp(gw, title="Banjir", body="Air naik di Kali Ciliwung.")
    gw.clock.advance(timedelta(hours=2))
    second = await announce_on_whatsapp(gw, title="Listrik", body="Pemadaman bergilir.")
    (to_ani_first,) = [
        r["provider_message_id"]
        for r in await gw.rows(deliveries, deliveries.c.announcement_id == first["id"])
    ]

    # A reply to the first announcement's message: context.id links it, not the later one.
    gw.clock.advance(timedelta(minutes=5))
    await gw.says(ANI, "Air sudah masuk rumah", context_id=to_ani_first)
    gw.clock.advance(timedelta(seconds=30))
    await gw.says(ANI, "Tolong kirim perahu")
    code = second["verification_code"]
    await gw.says(BUDI, f"Apakah {code} asli?")

    listed = await gw.threads()
    assert [
        (t["channel"], t["phone"], t["subscriber_id"], t["messages_in"], t["announcement_id"])
        for t in listed
    ] == [
        ("whatsapp", mask(BUDI), None, 1, second["id"]),
        ("whatsapp", mask(ANI), ani.body["id"], 2, first["id"]),
    ]
    assert ANI not in json.dumps(listed) and BUDI not in json.dumps(listed)
    stored = await gw.rows(inbound_messages)
    assert [(m["channel"], m["phone_masked"], m["announcement_id"]) for m in stored] == [
        ("whatsapp", mask(ANI), first["id"]),
        ("whatsapp", mask(ANI), second["id"]),
        ("whatsapp", mask(BUDI), second["id"]),
    ]
    assert all(ANI[1:] not in json.dumps(m, default=str) for m in stored)

    thread_id = listed[1]["id"]
    gw.clock.advance(timedelta(seconds=60))
    replied = await gw.world.call(
        "POST", f"{INBOX}/{thread_id}/reply", role=Role.OPERATOR, json={"text": "Tim SAR\nOTW."}
    )
    assert replied.status == 202, replied.body
    assert (replied.body["channel"], replied.body["thread"]["response_seconds"]) == ("whatsapp", 90)
    await gw.send_all()
    detail = await gw.world.call("GET", f"{INBOX}/{thread_id}", role=Role.OPERATOR)
    assert [(m["direction"], m["text"]) for m in detail.body["messages"]] == [
        ("in", "Air sudah masuk rumah"),
        ("in", "Tolong kirim perahu"),
        ("out", "Tim SAR\nOTW."),
    ]
    # The simulator's status webhooks may have moved it on to delivered already.
    assert detail.body["messages"][-1]["state"] in ("sent", "delivered")
    texts = [r.body for r in gw.meta.received if r.body.get("type") == "text"]
    assert [(t["to"], t["text"]["body"]) for t in texts] == [(ANI, "Tim SAR\nOTW.")]


async def test_a_reply_after_the_24_hour_window_is_refused_not_queued(gw: Gateway) -> None:
    await gw.says(BUDI, "Halo, ada info banjir?")
    (thread,) = await gw.threads()
    path = f"{INBOX}/{thread['id']}/reply"
    gw.clock.advance(timedelta(hours=23, minutes=59))
    inside = await gw.world.call("POST", path, role=Role.OPERATOR, json={"text": "Belum ada."})
    assert inside.status == 202, inside.body
    gw.clock.advance(timedelta(minutes=2))
    late = await gw.world.call("POST", path, role=Role.OPERATOR, json={"text": "Sekarang ada."})
    assert late.status == 409, late.body
    error = late.body["error"]
    assert (error["code"], error["field"]) == ("outside_window", "channel")
    assert "24 hours" in error["message"]
    replies = await gw.rows(deliveries, deliveries.c.kind == "reply")
    assert [r["body"] for r in replies] == ["Belum ada."]
    too_long = await gw.world.call("POST", path, role=Role.OPERATOR, json={"text": "x" * 4097})
    assert too_long.status == 422 and too_long.body["error"]["field"] == "text"

    # Writing again opens the window again.
    await gw.says(BUDI, "Halo?")
    again = await gw.world.call("POST", path, role=Role.OPERATOR, json={"text": "Sekarang ada."})
    assert again.status == 202, again.body


async def test_a_subscriber_keyword_also_opens_the_window(gw: Gateway) -> None:
    ani = await gw.world.subscribe(ANI, channels=["whatsapp"])
    assert ani.status == 201, ani.body
    await gw.says(ANI, "Air naik")
    (thread,) = await gw.threads()
    path = f"{INBOX}/{thread['id']}/reply"
    gw.clock.advance(timedelta(hours=30))
    assert (await gw.world.call("POST", path, role=Role.OPERATOR, json={"text": "A"})).status == 409
    await gw.says(ANI, "CEK ABC-234")  # answered automatically, not filed in the thread
    assert (await gw.world.call("POST", path, role=Role.OPERATOR, json={"text": "B"})).status == 202


async def test_keywords_stop_and_check_are_answered_once_and_not_filed(gw: Gateway) -> None:
    ani = await gw.world.subscribe(ANI, channels=["whatsapp", "sms"])
    assert ani.status == 201, ani.body
    approved = await broadcast(gw.world, channels=["whatsapp"], title="Banjir", body="Air naik.")
    assert await gw.dispatcher.start_due() == 1
    queued = await gw.rows(deliveries, deliveries.c.announcement_id == approved["id"])
    assert [r["state"] for r in queued] == ["queued"]

    code = approved["verification_code"]
    await gw.says(BUDI, f"cek {code}")
    stopped = await gw.says(ANI, "BERHENTI")
    replay = gw.meta.webhooks.message_payload(stopped, ANI[1:], "BERHENTI", profile_name="Ani")
    assert (await gw.post(replay))[0] == 200

    # Opted out of WhatsApp at once (SMS kept); the queued WhatsApp delivery cancelled.
    channels = {
        r["channel"]: r["opted_out_at"] is not None
        for r in await gw.rows(
            subscriber_channels, subscriber_channels.c.subscriber_id == ani.body["id"]
        )
    }
    assert channels == {"whatsapp": True, "sms": False}
    (cancelled,) = await gw.rows(deliveries, deliveries.c.announcement_id == approved["id"])
    assert (cancelled["state"], cancelled["error_kind"]) == ("cancelled", "stopped")

    await gw.send_all()
    replies = await gw.rows(deliveries, deliveries.c.kind == "reply")
    assert [(r["channel"], r["state"] in ("sent", "delivered")) for r in replies] == [
        ("whatsapp", True)
    ] * 2
    assert len(gw.meta.accepted_texts(BUDI)) == 1
    assert code in gw.meta.accepted_texts(BUDI)[0]
    assert gw.meta.accepted_texts(ANI) == [
        "Anda tidak akan lagi menerima pesan WhatsApp dari Agency Alpha."
    ]
    assert await gw.threads() == []  # keywords are answered, not filed
    handled = [(m["handled"], m["thread_id"]) for m in await gw.rows(inbound_messages)]
    assert handled == [("keyword", None), ("keyword", None)]


async def test_replays_and_malformed_webhooks_change_nothing(gw: Gateway) -> None:
    payload = gw.meta.webhooks.message_payload(
        "wamid.IN-REPLAY", BUDI[1:], "Jembatan putus", profile_name="Budi"
    )
    for _replay in range(3):
        assert (await gw.post(payload))[0] == 200
    (thread,) = await gw.threads()
    assert thread["messages_in"] == 1

    good = json.loads(payload)
    value = good["entry"][0]["changes"][0]["value"]
    status = {"id": "wamid.X", "status": "read", "timestamp": "1", "recipient_id": BUDI[1:]}
    original = value["messages"][0]
    bad_sender = {**original, "id": "wamid.NEW", "from": "62abc"}
    no_body = {**original, "id": "wamid.NEW2", "text": {}}
    m0 = "entry[0].changes[0].value.messages[0]"
    for message, field in ((bad_sender, f"{m0}.from"), (no_body, f"{m0}.text.body")):
        value.update(messages=[message], statuses=[status])
        answer = await gw.post(json.dumps(good).encode())
        assert answer[0] == 400, answer
        assert answer[1]["error"]["field"] == field
        assert BUDI[1:] not in json.dumps(answer[1])
    # A number WhatsApp would not send (a valid pattern, no such number plan).
    value.update(messages=[{**original, "id": "wamid.NEW3", "from": "999999999"}])
    unplanned = await gw.post(json.dumps(good).encode())
    assert (unplanned[0], unplanned[1]["error"]["field"]) == (400, f"{m0}.from")

    unsigned = await gw.post(json.dumps(good).encode(), secret="another-secret")
    assert unsigned[0] == 401
    assert len(await gw.rows(inbound_messages)) == 1
    (thread,) = await gw.threads()
    assert thread["messages_in"] == 1


async def test_a_sender_who_withholds_their_number_does_not_cost_the_rest_of_the_webhook(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    # Since WhatsApp usernames Meta may send a message without ``from``, only ``from_user_id``.
    # Refusing the webhook would lose the statuses and messages beside it (Meta retries it
    # for days); it is acknowledged, the rest is processed, and that one message is not
    # filed, since Warta files and answers WhatsApp messages by number.
    assert (await gw.world.subscribe(ANI, channels=["whatsapp"])).status == 201
    approved = await announce_on_whatsapp(gw)
    await gw.meta.wait_for_webhooks()
    (sent,) = await gw.rows(deliveries, deliveries.c.announcement_id == approved["id"])
    bsuid = "ID.1502576394655843"
    payload = json.loads(
        gw.meta.webhooks.message_payload(
            "wamid.IN-PHONE", BUDI[1:], "Jalan banjir", profile_name="Budi"
        )
    )
    value = payload["entry"][0]["changes"][0]["value"]
    phone_message = value["messages"][0]
    withheld = {k: v for k, v in phone_message.items() if k != "from"} | {
        "id": "wamid.IN-USERNAME",
        "from_user_id": bsuid,
    }
    value["messages"] = [withheld, phone_message]
    value["statuses"] = [
        {
            "id": sent["provider_message_id"],
            "status": "read",
            "timestamp": "1760000000",
            "recipient_id": ANI[1:],
        }
    ]
    assert (await gw.post(json.dumps(payload).encode()))[0] == 200
    filed = await gw.rows(inbound_messages)
    assert [row["provider_message_id"] for row in filed] == ["wamid.IN-PHONE"]
    (thread,) = await gw.threads()
    assert thread["messages_in"] == 1
    (after,) = await gw.rows(deliveries, deliveries.c.id == sent["id"])
    assert after["state"] == "delivered"
    said = [r.getMessage() for r in caplog.records if "withhold their number" in r.getMessage()]
    assert said and all(bsuid not in line for line in said)
    assert all(bsuid not in r.getMessage() for r in caplog.records)


async def test_the_terminal_phone_writes_on_whatsapp_and_reads_the_answer(
    gw: Gateway, tmp_path: Path
) -> None:
    approved = await broadcast(gw.world, channels=["whatsapp"], title="Banjir", body="Air naik.")
    code = approved["verification_code"]
    base = gw.world.app[CONFIG].whatsapp.base_url
    (tmp_path / "demo-credentials.json").write_text(json.dumps({"simulators": {"meta": base}}))
    phone = asyncio.create_task(send_whatsapp(tmp_path, ANI, f"CEK {code}", poll_s=0.05))
    while not phone.done():
        await gw.send_all()
        await asyncio.sleep(0.05)
    (answer,) = phone.result()
    assert f"ASLI. Kode {code}" in answer
    free_text = await send_whatsapp(tmp_path, ANI, "Jalan depan rumah banjir", wait_s=0.3)
    assert free_text == []
    (thread,) = await gw.threads()
    assert thread["messages_in"] == 1


async def test_erasure_blanks_whatsapp_messages_and_cancels_their_answers(gw: Gateway) -> None:
    ani = await gw.world.subscribe(ANI, channels=["whatsapp"])
    await gw.says(ANI, "Rumah saya di Jl. Melati 5")
    await gw.says(ANI, "CEK ABC-234")
    erased = await gw.world.call("DELETE", f"/api/v1/subscribers/{ani.body['id']}")
    assert erased.status == 204, erased.body
    assert [(m["text"], m["phone_masked"]) for m in await gw.rows(inbound_messages)] == [
        ("", None),
        ("", None),
    ]
    (answer,) = await gw.rows(deliveries, deliveries.c.kind == "reply")
    assert (answer["state"], answer["recipient_ciphertext"]) == ("cancelled", None)


async def test_many_new_senders_each_get_a_thread(gw: Gateway) -> None:
    # More than five: asyncpg's prepared INSERT of a thread goes generic from the sixth run on
    # a connection, which once broke the partial-index ON CONFLICT on PostgreSQL.
    senders = [f"+62812{n:08d}" for n in range(1, 13)]
    for n, sender in enumerate(senders):
        await gw.says(sender, f"Pesan {n}")
    listed = await gw.threads()
    assert sorted(t["phone"] for t in listed) == sorted(mask(s) for s in senders)
    assert {t["messages_in"] for t in listed} == {1}


async def test_the_number_serves_the_configured_agency(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    async with gateway(aiohttp_client, database_url, keys, tmp_path, agency="beta") as gw:
        await gw.says(BUDI, "Halo dari Bandung")
        beta = await gw.world.call("GET", INBOX, role=Role.OPERATOR, agency=1)
        alpha = await gw.world.call("GET", INBOX, role=Role.OPERATOR, agency=0)
        assert [t["messages_in"] for t in beta.body["items"]] == [1]
        assert alpha.body["items"] == []
