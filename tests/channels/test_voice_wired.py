"""The voice channel wired into the gateway: an approved announcement reaches voice subscribers
through the real app, the real outbox, the official SDK and the Africa's Talking voice
simulator, whose calls fetch our XML and audio, press keys and report their outcome. Both
databases."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import unused_port

from channels.africastalking.voice_sim import SimulatedCall, VoiceSimulator
from channels.registry import build_channels
from channels.voice import VoiceChannel
from channels.voice.simconfig import VoiceSimulatorConfig
from channels.voice.speech import audio_name, is_wav
from gateway.app import create_app
from gateway.appkeys import CONFIG
from gateway.config import ConfigProblem
from gateway.db.schema import deliveries, delivery_reports
from gateway.domain import Role
from tests.support.config import make_config
from tests.support.sms import broadcast, wait_for
from tests.support.world import World, seed_agencies

CALLER = "+62215550100"
ID_LISTENER = "+6281200000001"  # Bahasa Indonesia: espeak-ng audio, presses 1 once
EN_LISTENER = "+6281200000002"  # English: <Say>, presses 1 every time
BUSY = "+6281200000003"
PHONES = (ID_LISTENER, EN_LISTENER, BUSY)

ANNOUNCEMENT: dict[str, Any] = {
    "title": "Peringatan banjir",
    "body": "Hujan deras malam ini. Siapkan tas siaga.",
    "language": "id",
    "facts": {
        "what": "Potensi banjir",
        "when": datetime(2030, 1, 15, 19, 0, tzinfo=UTC).isoformat(),
        "where": "Jakarta Utara",
        "action": "Hindari bantaran sungai",
    },
    "translations": {
        "en": {
            "title": "Flood warning",
            "body": "Heavy rain tonight. Prepare an emergency bag.",
            "facts": {
                "what": "Possible flooding",
                "where": "North Jakarta",
                "action": "Stay away from river banks",
            },
        }
    },
    "channels": ["voice"],
}


def phone_forms(number: str) -> list[str]:
    """Ways a number could leak: E.164, without '+', national with 0, the last 9 digits."""
    national = number[3:]
    return [number, number[1:], "0" + national, national[-9:]]


@asynccontextmanager
async def voice_world(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    tmp_path: Path,
    *,
    play_calls: bool = True,
    pricing: dict[str, Any] | None = None,
    **simulated: Any,
) -> AsyncIterator[tuple[World, VoiceSimulator]]:
    """The gateway with voice on, pointed at a voice simulator whose calls call it back."""
    port = unused_port()
    public_url = f"http://127.0.0.1:{port}"
    callback_url = f"{public_url}/callbacks/africastalking/{keys['callback_token']}/voice"
    simulator = VoiceSimulator(
        VoiceSimulatorConfig(
            username="sandbox",
            api_key=keys["africastalking_api_key"],
            caller_numbers=frozenset({CALLER}),
            callback_url=callback_url if play_calls else None,
            answer_delay=0.05,
            # Charges in the gateway's [pricing] currency, as in `warta demo`.
            **({"currency": "IDR"} | simulated),
        )
    )
    sim_url = await simulator.start()
    config = make_config(
        database_url,
        keys,
        data_dir=str(tmp_path),
        http={"public_url": public_url},
        africastalking={"username": "sandbox", "base_url": sim_url},
        voice={
            "enabled": True,
            "base_url": sim_url,
            "caller_number": CALLER,
            "audio_dir": "audio",
            "request_timeout_s": 2.0,
        },
        scheduler={"quiet_hours": "off"},
        dispatch={"idle_poll_s": 0.05, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
        pricing=pricing or {},
    )
    app = create_app(config)
    client = await aiohttp_client(app, server_kwargs={"port": port})
    tokens, agency_ids = await seed_agencies(app)
    world = World(client=client, app=app, tokens=tokens, agency_ids=agency_ids)
    try:
        yield world, simulator
    finally:
        await simulator.stop()


async def subscribe(world: World, phone: str, language: str) -> int:
    answer = await world.subscribe(phone, language=language, channels=["voice"])
    assert answer.status == 201, answer.body
    subscriber_id: int = answer.body["id"]
    return subscriber_id


async def voice_rows(world: World, announcement_id: int) -> dict[int, dict[str, Any]]:
    """Each voice delivery of the announcement, by subscriber id."""
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(
                deliveries.c.subscriber_id,
                deliveries.c.state,
                deliveries.c.error_reason,
                deliveries.c.provider_message_id,
                deliveries.c.cost,
            ).where(
                deliveries.c.announcement_id == announcement_id, deliveries.c.channel == "voice"
            )
        )
        return {row.subscriber_id: dict(row._mapping) for row in rows}


def settled(total: int) -> Any:
    def check(counts: dict[str, int], _body: dict[str, Any]) -> bool:
        return counts.get("delivered", 0) + counts.get("failed", 0) >= total

    return check


async def test_announcement_is_called_played_repeated_and_reported(
    espeak: str,
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with voice_world(
        aiohttp_client,
        database_url,
        keys,
        tmp_path,
        key_presses={ID_LISTENER: ["1", ""], EN_LISTENER: ["1", "1", "1"]},
        call_outcomes={BUSY: "USER_BUSY"},
    ) as (world, simulator):
        ids = {
            ID_LISTENER: await subscribe(world, ID_LISTENER, "id"),
            EN_LISTENER: await subscribe(world, EN_LISTENER, "en"),
            BUSY: await subscribe(world, BUSY, "id"),
        }
        approved = await broadcast(world, **ANNOUNCEMENT)
        await wait_for(world, approved["id"], settled(3), timeout=60)
        await simulator.wait_for_calls()
        rows = await voice_rows(world, approved["id"])

        calls: dict[str, SimulatedCall] = {c.number: c for c in simulator.calls.values()}
        assert sorted(calls) == sorted(PHONES)
        for call in calls.values():
            assert call.problems == [] and call.final_delivered

        # Bahasa Indonesia: espeak-ng audio served by the gateway, played twice (key 1 once).
        heard = calls[ID_LISTENER]
        assert heard.documents == [["Play", "GetDigits", "Play"], ["Play", "GetDigits", "Play"]]
        assert heard.digits_sent == ["1"]
        audio_prefix = f"{world.app[CONFIG].http.public_url}/audio/"
        assert heard.audio_fetched and all(u.startswith(audio_prefix) for u in heard.audio_fetched)
        message_url = heard.audio_fetched[0]
        assert heard.audio_fetched.count(message_url) == 2
        async with world.client.get("/audio/" + message_url.rsplit("/", 1)[1]) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "audio/wav"
            assert is_wav(await response.read())
        assert heard.spoken == []

        # English: <Say> with the voice rendition; max_plays=3 ends the repeats.
        english = calls[EN_LISTENER]
        assert english.documents == [["Say", "GetDigits", "Say"]] * 2 + [["Say", "Say"]]
        assert english.digits_sent == ["1", "1"]
        message = english.spoken[0]
        assert message.startswith("This is an official message from Agency Alpha")
        assert "Stay away from river banks" in message
        assert english.spoken.count(message) == 3
        assert english.audio_fetched == []

        busy = calls[BUSY]
        assert busy.documents == [] and busy.callbacks[0]["isActive"] == "0"

        assert rows[ids[ID_LISTENER]]["state"] == "delivered"
        assert rows[ids[EN_LISTENER]]["state"] == "delivered"
        assert (rows[ids[BUSY]]["state"], rows[ids[BUSY]]["error_reason"]) == (
            "failed",
            "USER_BUSY",
        )
        assert {row["provider_message_id"] for row in rows.values()} == set(simulator.calls)
        assert not simulator.unused_outcomes()

        # What each call cost, from its final callback's amount, is kept on the delivery and
        # counts in the announcement's actual cost (a busy line costs nothing).
        charged = {
            number: Decimal(call.callbacks[-1]["amount"].split()[-1])
            for number, call in calls.items()
        }
        assert charged[ID_LISTENER] > 0 and charged[BUSY] == 0
        for number, subscriber_id in ids.items():
            assert rows[subscriber_id]["cost"] == charged[number]
        shown = await world.call("GET", f"/api/v1/announcements/{approved['id']}")
        assert Decimal(str(shown.body["actual_cost"])) == sum(charged.values())

    leaked = [
        form
        for record in caplog.records
        for phone in PHONES
        for form in phone_forms(phone)
        if form in record.getMessage()
    ]
    assert leaked == []
    token_leaks = [
        r.name
        for r in caplog.records
        if r.name != "aiohttp.access" and keys["callback_token"] in r.getMessage()
    ]
    assert token_leaks == []


def xml_of(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 - our own documents


async def test_callbacks_checked_field_by_field_and_key_presses_bounded(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    # The simulator queues the call but does not play it: this test plays Africa's Talking.
    async with voice_world(aiohttp_client, database_url, keys, tmp_path, play_calls=False) as (
        world,
        _simulator,
    ):
        subscriber_id = await subscribe(world, EN_LISTENER, "en")
        approved = await broadcast(world, **ANNOUNCEMENT)
        await wait_for(world, approved["id"], lambda counts, _b: counts.get("sent", 0) == 1)
        (row,) = (await voice_rows(world, approved["id"])).values()
        session = row["provider_message_id"]
        token = keys["callback_token"]
        base = f"/callbacks/africastalking/{token}/voice"
        public_digits = f"{world.app[CONFIG].http.public_url}{base}/digits"
        answer = {"isActive": "1", "sessionId": session, "direction": "Outbound"}
        answer |= {"callerNumber": EN_LISTENER, "destinationNumber": CALLER}
        final = answer | {
            "isActive": "0",
            "callSessionState": "Completed",
            "status": "Success",
            "hangupCause": "NORMAL_CLEARING",
            "durationInSeconds": "42",
            "amount": "IDR 2000.0000",
            "currencyCode": "IDR",
        }

        async def post(path: str, form: dict[str, str]) -> tuple[int, str, str]:
            async with world.client.post(path, data=form) as response:
                return response.status, response.content_type, await response.text()

        async def report_count() -> int:
            async with world.engine.connect() as conn:
                count = await conn.scalar(sa.select(sa.func.count()).select_from(delivery_reports))
                return int(count or 0)

        # Wrong token: refused, nothing stored, the delivery untouched.
        for path in (
            "/callbacks/africastalking/not-the-token/voice",
            "/callbacks/africastalking/not-the-token/voice/digits?played=1",
        ):
            status, content_type, _ = await post(path, final)
            assert (status, content_type) == (401, "application/json")
        assert await report_count() == 0
        assert (await voice_rows(world, approved["id"]))[subscriber_id]["state"] == "sent"

        # Bad fields: 400 naming the field, never a 500.
        for form, field_name in (
            ({k: v for k, v in answer.items() if k != "sessionId"}, "sessionId"),
            (answer | {"isActive": "maybe"}, "isActive"),
            (answer | {"dtmfDigits": "1; DROP"}, "dtmfDigits"),
            (final | {"durationInSeconds": "forever"}, "durationInSeconds"),
        ):
            async with world.client.post(base, data=form) as response:
                assert response.status == 400
                assert (await response.json())["error"]["field"] == field_name

        # Answered: the English message with <Say>, then the repeat prompt, then goodbye.
        status, content_type, text = await post(base, answer)
        assert (status, content_type) == (200, "application/xml")
        document = xml_of(text)
        assert [a.tag for a in document] == ["Say", "GetDigits", "Say"]
        assert document[0].text is not None and "Flood warning" in document[0].text
        assert document[1].get("callbackUrl") == f"{public_digits}?played=1"

        async def digits(query: str, key: str) -> list[str]:
            status, content_type, text = await post(
                f"{base}/digits{query}", answer | {"dtmfDigits": key}
            )
            assert (status, content_type) == (200, "application/xml")
            return [action.tag for action in xml_of(text)]

        assert await digits("?played=1", "1") == ["Say", "GetDigits", "Say"]
        assert await digits("?played=2", "1") == ["Say", "Say"]  # third and last play
        assert await digits("?played=3", "1") == ["Say"]  # heard enough: goodbye
        assert await digits("?played=1", "9") == ["Say"]  # another key: goodbye
        assert await digits("", "1") == ["Say"]  # no count: never a fresh start
        assert await digits("?played=-5", "1") == ["Say"]

        # The final callback delivers; a replay stores nothing new.
        for _ in range(2):
            status, content_type, text = await post(base, final)
            assert (status, content_type) == (200, "application/xml")
            assert len(xml_of(text)) == 0
        assert await report_count() == 1
        assert (await voice_rows(world, approved["id"]))[subscriber_id]["state"] == "delivered"

        # Audio: only names the renderer made; no way out of the audio directory.
        (tmp_path / "secret.wav").write_bytes(b"RIFF0000WAVE")
        for path in (
            "/audio/../secret.wav",
            "/audio/..%2Fsecret.wav",
            "/audio/%2e%2e%2fsecret.wav",
            "/audio/..%5Csecret.wav",
            "/audio/" + "0" * 32 + ".wav",
            "/audio/" + audio_name("never rendered", "id"),
            "/audio/" + "A" * 32 + ".wav",
            "/audio/secret.wav",
            "/audio/%00.wav",
        ):
            async with world.client.get(path) as response:
                assert response.status == 404, path
                assert response.content_type in ("application/json", "text/plain"), path


async def test_voice_routes_answer_404_when_voice_is_off(world: World) -> None:
    secret = world.app[CONFIG].secrets.callback_token
    assert secret is not None
    token = secret.get_secret_value()
    form = {"isActive": "1", "sessionId": "ATVId_1"}
    async with world.client.post(f"/callbacks/africastalking/{token}/voice", data=form) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"
    async with world.client.get("/audio/" + audio_name("x", "id")) as r:
        assert r.status == 404
    answer = await world.call("GET", "/api/v1/announcements", role=Role.OPERATOR)
    assert answer.status == 200


# Building the channel from configuration ---------------------------------------------------


def voice_settings(keys: dict[str, str], tmp_path: Path, **voice: Any) -> Any:
    return make_config(
        "sqlite+aiosqlite:///unused.db",
        keys,
        data_dir=str(tmp_path),
        voice={"enabled": True, "caller_number": CALLER, **voice},
    )


def test_voice_is_built_with_audio_under_the_data_dir(
    espeak: str, keys: dict[str, str], tmp_path: Path
) -> None:
    channel = build_channels(voice_settings(keys, tmp_path))["voice"]
    assert isinstance(channel, VoiceChannel)
    assert channel.config.audio_dir == tmp_path / "warta-audio"
    assert channel.config.caller_number == CALLER
    assert keys["africastalking_api_key"] not in repr(channel)
    absolute = build_channels(voice_settings(keys, tmp_path, audio_dir="/var/lib/warta/a"))
    assert absolute["voice"].config.audio_dir == Path("/var/lib/warta/a")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("voice", "message"),
    [
        ({"caller_number": ""}, "voice.caller_number: required"),
        ({"caller_number": "0215550100"}, "voice.caller_number: must be E.164"),
        ({"espeak_program": "espeak-ng-not-here"}, "voice.espeak_program: espeak-ng-not-here"),
    ],
)
def test_voice_config_problems_stop_the_start(
    voice: dict[str, str], message: str, keys: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigProblem, match=message) as raised:
        build_channels(voice_settings(keys, tmp_path, **voice))
    assert keys["africastalking_api_key"] not in str(raised.value)


def test_voice_off_or_without_an_account_builds_no_voice(
    keys: dict[str, str], tmp_path: Path
) -> None:
    assert "voice" not in build_channels(voice_settings(keys, tmp_path, enabled=False))
    no_key = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    assert "voice" not in build_channels(voice_settings(no_key, tmp_path))
