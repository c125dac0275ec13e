"""Citizens' WhatsApp messages: the webhook parser as a table (one message in, the exact
``InboundMessage`` out, or the exact field named), free-form text replies through the real
channel against the Meta simulator (inside and outside the 24-hour window), and the
simulator's citizen posting a signed webhook that the parser reads back."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from channels.base import OutgoingMessage
from channels.meta.signature import SIGNATURE_HEADER, verify_signature
from channels.whatsapp import InboundMessage, WebhookFieldError, parse_webhook, parse_webhook_body
from gateway.domain import DeliveryState
from tests.support.meta_harness import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    Outcome,
    outcome_of,
    simulator_config,
    wamid,
    whatsapp_channel,
)

ANI = "6281211110001"
M0 = "entry[0].changes[0].value.messages[0]"


def webhook(*messages: dict[str, Any], contacts: Any = None, statuses: Any = None) -> Any:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
        "messages": list(messages),
    }
    if contacts is not None:
        value["contacts"] = contacts
    if statuses is not None:
        value["statuses"] = statuses
    change = {"value": value, "field": "messages"}
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}


def message(kind: str, content: Any = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"from": ANI, "id": "wamid.IN1", "timestamp": "1760000000"}
    entry["type"] = kind
    if content is not None:
        entry[kind] = content
    entry.update(extra)
    return entry


def inbound(kind: str, text: str, **extra: Any) -> InboundMessage:
    settings: dict[str, Any] = {"sent_at": 1760000000}
    settings.update(extra)
    return InboundMessage("wamid.IN1", ANI, kind, text, **settings)


CONTEXT = {"from": "15550000000", "id": "wamid.SIM000000000007"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            message("text", {"body": "Air sudah masuk rumah"}),
            inbound("text", "Air sudah masuk rumah"),
        ),
        (message("text", {"body": "  CEK K7P2QX \n"}), inbound("text", "CEK K7P2QX")),
        (
            message("text", {"body": "Ini banjir?"}, context=CONTEXT),
            inbound("text", "Ini banjir?", context_id="wamid.SIM000000000007"),
        ),
        (message("button", {"payload": "STOP-PAYLOAD", "text": "Stop"}), inbound("button", "Stop")),
        (message("button", {"payload": "STOP"}), inbound("button", "STOP")),
        (
            message(
                "interactive", {"type": "button_reply", "button_reply": {"id": "b1", "title": "Ya"}}
            ),
            inbound("interactive", "Ya"),
        ),
        (
            message(
                "interactive",
                {
                    "type": "list_reply",
                    "list_reply": {"id": "l2", "title": "Banjir", "description": "d"},
                },
            ),
            inbound("interactive", "Banjir"),
        ),
        (message("interactive", {"type": "nfm_reply"}), inbound("interactive", "[interactive]")),
        (
            message("image", {"id": "media1", "mime_type": "image/jpeg"}),
            inbound("image", "[image]"),
        ),
        (
            message("image", {"id": "media1", "caption": "Jalan rusak"}),
            inbound("image", "[image] Jalan rusak"),
        ),
        (message("audio", {"id": "media2", "voice": True}), inbound("audio", "[audio]")),
        (
            message("location", {"latitude": -6.2, "longitude": 106.8}),
            inbound("location", "[location]"),
        ),
        (message("sticker", {"id": "s"}), inbound("sticker", "[sticker]")),
        (
            message("reaction", {"message_id": "wamid.SIM1", "emoji": "👍"}),
            inbound("reaction", "[reaction] 👍"),
        ),
        (
            message("unsupported", errors=[{"code": 131051}]),
            inbound("unsupported", "[unsupported]"),
        ),
        (
            {k: v for k, v in message("text", {"body": "tanpa waktu"}).items() if k != "timestamp"},
            inbound("text", "tanpa waktu", sent_at=None),
        ),
    ],
    ids=lambda v: v.get("type") if isinstance(v, dict) else None,
)
def test_message_table(entry: dict[str, Any], expected: InboundMessage) -> None:
    parsed = parse_webhook(webhook(entry))
    assert parsed.reports == []
    assert parsed.messages == [expected]


def test_contacts_statuses_and_messages_in_one_webhook() -> None:
    contacts = [{"profile": {"name": "Ani"}, "wa_id": ANI}]
    status = {"id": "wamid.OUT1", "status": "read", "timestamp": "1", "recipient_id": ANI}
    second = message("text", {"body": "dua"}, id="wamid.IN2", **{"from": "6281311110002"})
    parsed = parse_webhook(
        webhook(message("text", {"body": "satu"}), second, contacts=contacts, statuses=[status])
    )
    assert [r.provider_message_id for r in parsed.reports] == ["wamid.OUT1"]
    assert [(m.message_id, m.text, m.profile_name) for m in parsed.messages] == [
        ("wamid.IN1", "satu", "Ani"),
        ("wamid.IN2", "dua", None),
    ]
    # Personal data stays out of reprs.
    assert ANI not in repr(parsed) and "Ani" not in repr(parsed) and "satu" not in repr(parsed)


def _without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


TEXT = message("text", {"body": "halo"})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (webhook(_without(TEXT, "from")), f"{M0}.from"),
        (webhook({**TEXT, "from": "+" + ANI}), f"{M0}.from"),
        (webhook({**TEXT, "from": int(ANI)}), f"{M0}.from"),
        (webhook({**TEXT, "from": "0812"}), f"{M0}.from"),
        (webhook(_without(TEXT, "id")), f"{M0}.id"),
        (webhook({**TEXT, "id": "w" * 129}), f"{M0}.id"),
        (webhook(_without(TEXT, "type")), f"{M0}.type"),
        (webhook({**TEXT, "type": "Text!"}), f"{M0}.type"),
        (webhook({**TEXT, "timestamp": "yesterday"}), f"{M0}.timestamp"),
        (webhook(message("text")), f"{M0}.text"),
        (webhook(message("text", {"body": " "})), f"{M0}.text.body"),
        (webhook(message("text", {"body": 7})), f"{M0}.text.body"),
        (webhook(message("button", {})), f"{M0}.button.payload"),
        (webhook(message("interactive", "x")), f"{M0}.interactive"),
        (
            webhook(message("interactive", {"type": "button_reply", "button_reply": {"id": "b"}})),
            f"{M0}.interactive.button_reply.title",
        ),
        (webhook({**TEXT, "from_user_id": "1502576394655843"}), f"{M0}.from_user_id"),
        (webhook({**_without(TEXT, "from"), "from_user_id": "ID."}), f"{M0}.from_user_id"),
        (webhook({**_without(TEXT, "from"), "from_user_id": 7}), f"{M0}.from_user_id"),
        (webhook({**TEXT, "context": "wamid"}), f"{M0}.context"),
        (webhook({**TEXT, "context": {"id": 5}}), f"{M0}.context.id"),
        (webhook("not a message"), M0),
        (webhook(TEXT, contacts={"wa_id": ANI}), "entry[0].changes[0].value.contacts"),
        (
            webhook(TEXT, contacts=[{"wa_id": ANI, "profile": "Ani"}]),
            "entry[0].changes[0].value.contacts[0].profile",
        ),
    ],
)
def test_malformed_message_names_the_field(payload: Any, field: str) -> None:
    with pytest.raises(WebhookFieldError) as caught:
        parse_webhook_body(json.dumps(payload).encode())
    assert caught.value.field == field
    assert ANI not in str(caught.value)


BSUID = "ID.1502576394655843"


def test_a_citizen_who_withholds_their_number_is_known_by_their_business_scoped_id() -> None:
    # WhatsApp usernames (2026): Meta may leave out ``from`` and always sends ``from_user_id``.
    withheld = {**_without(TEXT, "from"), "from_user_id": BSUID}
    both = {**TEXT, "id": "wamid.IN2", "from_user_id": "ID.ENT.118157992128"}
    names = [{"user_id": BSUID, "profile": {"name": "Ani", "username": "@ani"}}]
    parsed = parse_webhook(webhook(withheld, both, contacts=names))
    first, second = parsed.messages
    assert (first.sender, first.user_id, first.text, first.profile_name) == (
        None,
        BSUID,
        "halo",
        None,
    )
    assert (second.sender, second.user_id) == (ANI, "ID.ENT.118157992128")
    assert BSUID not in repr(first) and ANI not in repr(second)


def test_messages_field_must_be_a_list_and_is_bounded() -> None:
    payload = webhook()
    payload["entry"][0]["changes"][0]["value"]["messages"] = {"id": "x"}
    with pytest.raises(WebhookFieldError) as caught:
        parse_webhook(payload)
    assert caught.value.field == "entry[0].changes[0].value.messages"
    many = webhook(*[message("text", {"body": "x"}, id=f"w{i}") for i in range(1001)])
    with pytest.raises(WebhookFieldError) as caught:
        parse_webhook(many)
    assert caught.value.field == "entry[0].changes[0].value.messages"


# -- free-form replies through the real channel ----------------------------------------------


def reply(delivery_id: int, to: str, text: str) -> OutgoingMessage:
    return OutgoingMessage(delivery_id, to, text, f"warta-{delivery_id}", reply=True)


def text_request(to: str, text: str, key: str) -> tuple[str, dict[str, Any]]:
    return PHONE_NUMBER_ID, {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": text},
        "biz_opaque_callback_data": key,
    }


async def test_replies_go_as_text_inside_the_window_only() -> None:
    from channels.meta.simulator import MetaSimulator

    simulator = MetaSimulator(simulator_config())
    base_url = await simulator.start()
    channel = whatsapp_channel(base_url)
    wrote, silent = "+" + ANI, "+6281311110002"
    long_text = "Tim SAR\nsegera datang.     " + "x" * 4000
    try:
        await channel.start()
        _wamid, status = await simulator.citizen_says(wrote, "Tolong")
        assert status is None  # no webhook URL: only the window opens
        results = await channel.send(
            [
                reply(1, wrote, "Tim SAR\nsegera datang."),
                reply(2, silent, "Halo"),
                reply(3, wrote, "x" * 4097),
                reply(4, wrote, " \n "),
            ]
        )
        more = await channel.send([reply(5, wrote, long_text)])
    finally:
        await channel.close()
        await simulator.stop()
    assert sorted(outcome_of(r) for r in results + more) == [
        Outcome(1, DeliveryState.SENT, wamid(2)),
        Outcome(2, DeliveryState.FAILED, None, error=("Rejected", "outside_window (#131047)")),
        Outcome(3, DeliveryState.FAILED, None, error=("Rejected", "text_too_long")),
        Outcome(4, DeliveryState.FAILED, None, error=("Rejected", "empty_text")),
        Outcome(5, DeliveryState.SENT, wamid(4)),
    ]
    received = sorted(json.dumps([r.node_id, r.body], sort_keys=True) for r in simulator.received)
    expected = [
        text_request(wrote, "Tim SAR\nsegera datang.", "warta-1"),
        text_request(silent, "Halo", "warta-2"),
        text_request(wrote, long_text.strip(), "warta-5"),
    ]
    assert received == sorted(json.dumps(list(e), sort_keys=True) for e in expected)
    assert simulator.accepted_texts(wrote) == ["Tim SAR\nsegera datang.", long_text.strip()]


async def test_the_simulated_citizen_posts_a_signed_webhook_the_parser_reads(
    aiohttp_server: Any,
) -> None:
    from channels.meta.simulator import MetaSimulator

    bodies: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify_signature(raw, request.headers.get(SIGNATURE_HEADER), APP_SECRET):
            return web.Response(status=401)
        bodies.append(raw)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app)
    simulator = MetaSimulator(simulator_config(status_webhook_url=str(server.make_url("/hook"))))
    base_url = await simulator.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{base_url}/simulator/phones/{ANI}/say",
                json={"text": "Apakah K7P2QX asli?", "context_id": "wamid.SIM000000000001"},
            ) as answer,
        ):
            said = await answer.json()
    finally:
        await simulator.stop()
    assert said["webhook_status"] == 200
    (parsed,) = [parse_webhook_body(raw) for raw in bodies]
    (one,) = parsed.messages
    assert (one.message_id, one.sender, one.kind, one.text, one.context_id) == (
        said["id"],
        ANI,
        "text",
        "Apakah K7P2QX asli?",
        "wamid.SIM000000000001",
    )
    assert one.profile_name == "Warga"
