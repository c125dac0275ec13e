"""The voice channel against the Africa's Talking voice simulator (real SDK, real HTTP, real
espeak-ng): call requests table by table, the XML a call runs, callback parsing, and whole calls
played against a tiny gateway that answers with our own actions builder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from unittest.mock import ANY

import pytest
from aiohttp import web

from channels.africastalking.voice_sim import VoiceSimulator
from channels.base import DeliveryReport, OutgoingMessage, SendResult
from channels.voice import (
    VoiceCallbackError,
    VoiceChannel,
    VoiceConfig,
    VoiceResponder,
    answer_document,
    digits_document,
    hangup_document,
    parse_voice_callback,
)
from channels.voice.actions import CallScript, Say, plays_from_query
from channels.voice.callbacks import final_state
from channels.voice.simconfig import VoiceSimulatorConfig
from channels.voice.speech import SpeechRenderer, audio_name, is_wav
from gateway.domain import DeliveryState
from gateway.errors import AccountRefused, ChannelError, ConfigError, ConnectionFailed, Throttled

USERNAME = "warta-voice"
API_KEY = "at-voice-key-9c1e2f3a4b5d"
CALLER = "+254711082999"
SENT, DELIVERED, FAILED = DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.FAILED
ALERT_ID = "Peringatan banjir. Segera mengungsi ke tempat yang lebih tinggi."
ALERT_EN = "Flood warning. Move to higher ground now."
N1, N2, N3, N4 = (f"+25472212340{i}" for i in range(1, 5))


# Call requests, table by table ---------------------------------------------------------


class Outcome(NamedTuple):
    delivery_id: int
    state: DeliveryState
    provider_message_id: Any = None
    error: tuple[str, str] | None = None


def outcome_of(result: SendResult) -> Outcome:
    error = (type(result.error).__name__, result.error.reason) if result.error else None
    return Outcome(result.delivery_id, result.state, result.provider_message_id, error)


def session(seq: int) -> str:
    return f"ATVId_{seq:032x}"


def call_form(numbers: Sequence[str], caller: str = CALLER) -> dict[str, str]:
    """The exact form the SDK sends for one call request."""
    return {"username": USERNAME, "from": caller, "to": ",".join(numbers)}


def messages(numbers: Sequence[str], text: str = ALERT_ID, language: str = "id") -> list[Any]:
    return [
        OutgoingMessage(i, number, text, f"key-{i}", language)
        for i, number in enumerate(numbers, start=1)
    ]


@dataclass
class CallCase:
    label: str
    batch: Sequence[OutgoingMessage]
    expected_requests: Sequence[Mapping[str, str]]
    expected_results: Sequence[Outcome] | None = None
    expected_error: ChannelError | None = None
    simulator: Mapping[str, Any] = field(default_factory=dict)
    channel: Mapping[str, Any] = field(default_factory=dict)


def voice_config(base_url: str, tmp: Path, **extra: Any) -> VoiceConfig:
    settings: dict[str, Any] = {
        "username": USERNAME,
        "api_key": API_KEY,
        "caller_number": CALLER,
        "base_url": base_url,
        "audio_dir": tmp / "audio",
    }
    settings.update(extra)
    return VoiceConfig(**settings)


@dataclass
class CaseRun:
    simulator: VoiceSimulator
    channel: VoiceChannel
    results: list[SendResult] | None
    error: ChannelError | None


async def run_case(case: CallCase, tmp: Path) -> CaseRun:
    simulator = VoiceSimulator(
        VoiceSimulatorConfig(
            username=USERNAME,
            api_key=API_KEY,
            caller_numbers=frozenset({CALLER}),
            **case.simulator,
        )
    )
    channel = VoiceChannel(voice_config(await simulator.start(), tmp, **case.channel))
    results, error = None, None
    try:
        results = await channel.send(case.batch)
    except ChannelError as exc:
        error = exc
    finally:
        await channel.close()
        await simulator.stop()
    return CaseRun(simulator, channel, results, error)


def check_case(case: CallCase, run: CaseRun) -> None:
    received = sorted(sorted(r.fields.items()) for r in run.simulator.received)
    assert received == sorted(sorted(f.items()) for f in case.expected_requests)
    assert not run.simulator.unused_outcomes(), "a canned outcome was never used"
    if case.expected_error is None:
        assert run.error is None, repr(run.error)
    else:
        assert run.error is not None
        assert (type(run.error), run.error.reason) == (
            type(case.expected_error),
            case.expected_error.reason,
        )
        if isinstance(case.expected_error, Throttled):
            assert isinstance(run.error, Throttled)
            assert run.error.retry_after == case.expected_error.retry_after
    if case.expected_results is not None:
        assert run.results is not None
        got = sorted((outcome_of(r) for r in run.results), key=lambda o: o.delivery_id)
        assert got == sorted(case.expected_results, key=lambda o: o.delivery_id)


BIG = [f"+2547330{i:05d}" for i in range(1, 121)]

CALL_CASES = [
    CallCase(
        label="three-numbers-queued-with-session-ids",
        batch=messages([N1, N2, N3]),
        expected_requests=[call_form([N1, N2, N3])],
        expected_results=[Outcome(i, SENT, session(i)) for i in (1, 2, 3)],
    ),
    CallCase(
        label="invalid-and-unsupported-numbers-rejected",
        batch=messages([N1, N2, N3]),
        simulator={"outcomes": {N2: "invalid_number", N3: "destination_not_supported"}},
        expected_requests=[call_form([N1, N2, N3])],
        expected_results=[
            Outcome(1, SENT, session(1)),
            Outcome(2, FAILED, None, ("Rejected", "InvalidPhoneNumber")),
            Outcome(3, FAILED, None, ("Rejected", "DestinationNotSupported")),
        ],
    ),
    CallCase(
        label="suffix-0000-is-invalid-by-default",
        batch=messages([N1, "+254722120000"]),
        expected_requests=[call_form([N1, "+254722120000"])],
        expected_results=[
            Outcome(1, SENT, session(1)),
            Outcome(2, FAILED, None, ("Rejected", "InvalidPhoneNumber")),
        ],
    ),
    CallCase(
        label="insufficient-credit-for-one-number",
        batch=messages([N1, N2]),
        simulator={"outcomes": {N2: "insufficient_credit"}},
        expected_requests=[call_form([N1, N2])],
        expected_results=[
            Outcome(1, SENT, session(1)),
            Outcome(2, FAILED, None, ("AccountRefused", "InsufficientCredit")),
        ],
    ),
    CallCase(
        label="insufficient-credit-for-every-number-raises",
        batch=messages([N1, N2]),
        simulator={"outcomes": {N1: "insufficient_credit", N2: "insufficient_credit"}},
        expected_requests=[call_form([N1, N2])],
        expected_error=AccountRefused("InsufficientCredit"),
    ),
    CallCase(
        label="caller-number-not-ours",
        batch=messages([N1]),
        channel={"caller_number": "+254711000111"},
        expected_requests=[call_form([N1], caller="+254711000111")],
        expected_error=ConfigError("InvalidCallerId"),
    ),
    CallCase(
        label="wrong-api-key",
        batch=messages([N1]),
        channel={"api_key": "not-the-voice-key"},
        expected_requests=[call_form([N1])],
        expected_error=AccountRefused("authentication refused (HTTP 401)"),
    ),
    CallCase(
        label="whole-request-500",
        batch=messages([N1, N2]),
        simulator={"request_failure_shares": {"server_error": 1.0}},
        expected_requests=[call_form([N1, N2])],
        expected_error=ConnectionFailed("HTTP 500"),
    ),
    CallCase(
        label="429-with-retry-after",
        batch=messages([N1]),
        simulator={"outcomes": {N1: "throttled"}, "retry_after_seconds": 9},
        expected_requests=[call_form([N1])],
        expected_error=Throttled("HTTP 429", retry_after=9.0),
    ),
    CallCase(
        label="timeout",
        batch=messages([N1]),
        simulator={"outcomes": {N1: "timeout"}},
        channel={"request_timeout": 0.3},
        expected_requests=[call_form([N1])],
        expected_error=ConnectionFailed("timeout"),
    ),
    CallCase(
        label="120-numbers-in-requests-of-50",
        batch=messages(BIG),
        expected_requests=[call_form(BIG[:50]), call_form(BIG[50:100]), call_form(BIG[100:])],
        # The requests run concurrently, so which session ids each got is not fixed.
        expected_results=[Outcome(i, SENT, ANY) for i in range(1, 121)],
    ),
    CallCase(
        label="one-request-of-two-fails-the-other-queued",
        batch=messages([N1, N2]),
        simulator={"outcomes": {N1: "server_error"}},
        channel={"batch_size": 1},
        expected_requests=[call_form([N1]), call_form([N2])],
        expected_results=[
            Outcome(1, FAILED, None, ("ConnectionFailed", "HTTP 500")),
            Outcome(2, SENT, session(1)),
        ],
    ),
    CallCase(
        label="number-the-sdk-refuses-never-leaves",
        batch=messages(["0722123401", N2]),
        expected_requests=[call_form([N2])],
        expected_results=[
            Outcome(1, FAILED, None, ("Rejected", "InvalidPhoneNumber")),
            Outcome(2, SENT, session(1)),
        ],
    ),
]


@pytest.mark.parametrize("case", CALL_CASES, ids=[c.label for c in CALL_CASES])
async def test_call_request_table(case: CallCase, tmp_path: Path) -> None:
    check_case(case, await run_case(case, tmp_path))


def test_limits_are_declared_and_configurable(tmp_path: Path) -> None:
    assert (VoiceChannel.name, VoiceChannel.reach, VoiceChannel.encoding) == (
        "voice",
        "personal",
        "unicode",
    )
    assert (VoiceChannel.batch_size, VoiceChannel.rate_per_second) == (50, 5.0)
    assert VoiceChannel.supports_links is False
    channel = VoiceChannel(voice_config("http://127.0.0.1:1", tmp_path, batch_size=10))
    assert channel.batch_size == 10
    assert VoiceChannel.status_map["USER_BUSY"] is FAILED


# The XML a call runs ---------------------------------------------------------------------

DIGITS_URL = "https://warta.example/callbacks/africastalking/SECRET/voice/digits"


def parse_xml(document: str) -> ET.Element:
    return ET.fromstring(document)  # noqa: S314 - our own documents, built by the code under test


def english_script() -> CallScript:
    return CallScript(
        message=Say(ALERT_EN, voice="woman"),
        prompt=Say("Press 1 to hear this message again.", voice="woman"),
        goodbye=Say("Goodbye.", voice="woman"),
        digits_url=DIGITS_URL,
    )


def test_english_answer_uses_say_and_the_repeat_prompt() -> None:
    assert answer_document(english_script()) == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Response><Say voice="woman">Flood warning. Move to higher ground now.</Say>'
        f'<GetDigits numDigits="1" timeout="10" callbackUrl="{DIGITS_URL}?played=1">'
        '<Say voice="woman">Press 1 to hear this message again.</Say></GetDigits>'
        '<Say voice="woman">Goodbye.</Say></Response>'
    )


def test_text_and_urls_are_escaped() -> None:
    script = CallScript(
        message=Say("Rain & wind <strong>"),
        prompt=Say("p"),
        goodbye=Say("g"),
        digits_url="https://w.example/d?token=a&b=1",
    )
    root = parse_xml(answer_document(script))
    assert root[0].text == "Rain & wind <strong>"
    assert root[1].get("callbackUrl") == "https://w.example/d?token=a&b=1&played=1"


@pytest.mark.parametrize(
    ("digits", "plays", "expected_tags", "next_played"),
    [
        ("1", 1, ["Say", "GetDigits", "Say"], "2"),
        ("1", 2, ["Say", "Say"], None),  # third play is the last: no prompt
        ("1", 3, ["Say"], None),  # heard enough: goodbye
        ("9", 1, ["Say"], None),  # another key: goodbye
        (None, 1, ["Say"], None),
    ],
)
def test_digits_document(
    digits: str | None, plays: int, expected_tags: list[str], next_played: str | None
) -> None:
    root = parse_xml(digits_document(english_script(), digits, plays=plays))
    assert [child.tag for child in root] == expected_tags
    if next_played is not None:
        assert root[1].get("callbackUrl", "").endswith(f"played={next_played}")
    if expected_tags == ["Say"]:
        assert root[0].text == "Goodbye."


@pytest.mark.parametrize(
    ("value", "plays"), [("1", 1), ("2", 2), ("7", 3), (None, 3), ("x", 3), ("0", 1)]
)
def test_plays_from_query_is_bounded(value: str | None, plays: int) -> None:
    assert plays_from_query(value, max_plays=3) == plays


def test_hangup_document_is_empty() -> None:
    assert parse_xml(hangup_document()).tag == "Response"
    assert len(parse_xml(hangup_document())) == 0


async def test_indonesian_call_plays_real_espeak_audio(espeak: str, tmp_path: Path) -> None:
    renderer = SpeechRenderer(tmp_path / "audio", "https://warta.example/")
    script = await renderer.script(ALERT_ID, "id", digits_url=DIGITS_URL)
    root = parse_xml(answer_document(script))
    assert [child.tag for child in root] == ["Play", "GetDigits", "Play"]
    assert [child.tag for child in root[1]] == ["Play"]
    message_name = audio_name(ALERT_ID, "id")
    prompt_name = audio_name("Tekan 1 untuk mendengar pesan ini lagi.", "id")
    assert root[0].get("url") == f"https://warta.example/audio/{message_name}"
    assert root[1][0].get("url") == f"https://warta.example/audio/{prompt_name}"
    path = renderer.audio_path(message_name)
    assert path is not None and is_wav(path.read_bytes())
    assert path.stat().st_size > 10_000  # seconds of speech, not an empty header
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == sorted(
        {message_name, prompt_name, audio_name("Terima kasih. Sampai jumpa.", "id")}
    )
    # Cached: rendering again runs nothing and returns the same file.
    before = path.stat().st_mtime_ns
    assert await renderer.render(ALERT_ID, "id") == path
    assert path.stat().st_mtime_ns == before


async def test_missing_espeak_is_a_config_error_naming_it(tmp_path: Path) -> None:
    renderer = SpeechRenderer(tmp_path, "https://w.example", program="espeak-ng-not-here")
    with pytest.raises(ConfigError, match="espeak-ng-not-here not found"):
        await renderer.render(ALERT_ID, "id")
    assert isinstance(await renderer.speech(ALERT_EN, "en"), Say)  # English needs no espeak
    channel = VoiceChannel(
        voice_config("http://127.0.0.1:1", tmp_path, espeak_program="espeak-ng-not-here")
    )
    with pytest.raises(ConfigError, match="espeak-ng-not-here"):
        await channel.start()
    await VoiceChannel(
        voice_config("http://127.0.0.1:1", tmp_path, espeak_program="espeak-ng-not-here"),
        languages=("en",),
    ).start()
    await channel.close()


async def test_language_without_a_voice_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'xx'"):
        await SpeechRenderer(tmp_path, "https://w.example").render("text", "xx")


@pytest.mark.parametrize("name", ["../etc/passwd", "abc.wav", "A" * 32 + ".wav", ""])
def test_audio_path_refuses_foreign_names(name: str, tmp_path: Path) -> None:
    assert SpeechRenderer(tmp_path, "https://w.example").audio_path(name) is None


# Callback parsing ------------------------------------------------------------------------

ANSWER = {
    "isActive": "1",
    "sessionId": "ATVId_abc123",
    "direction": "Outbound",
    "callerNumber": N1,
    "destinationNumber": CALLER,
    "callSessionState": "Active",
}


def _final(**fields: str) -> dict[str, str]:
    base = {**ANSWER, "isActive": "0", "durationInSeconds": "0", "amount": "0"}
    base["currencyCode"] = "KES"
    return {**base, **fields}


CALLBACK_TABLE: list[tuple[str, dict[str, str], tuple[Any, ...]]] = [
    ("answer", ANSWER, (True, None, None, None, None)),
    ("dtmf", {**ANSWER, "dtmfDigits": "1"}, (True, "1", None, None, None)),
    (
        "final-answered",
        _final(
            callSessionState="Completed",
            status="Success",
            hangupCause="NORMAL_CLEARING",
            durationInSeconds="47",
            amount="1.6000",
        ),
        (False, None, 47, Decimal("1.6000"), (DELIVERED, "Completed", None)),
    ),
    (
        "final-busy",
        _final(callSessionState="NotAnswered", status="NotAnswered", hangupCause="USER_BUSY"),
        (False, None, 0, Decimal(0), (FAILED, "USER_BUSY", "USER_BUSY")),
    ),
    (
        "final-no-answer",
        _final(callSessionState="NotAnswered", hangupCause="NO_ANSWER", dtmfDigits="None"),
        (False, None, 0, Decimal(0), (FAILED, "NO_ANSWER", "NO_ANSWER")),
    ),
]


@pytest.mark.parametrize(
    ("form", "expected"), [(f, e) for _, f, e in CALLBACK_TABLE], ids=[c[0] for c in CALLBACK_TABLE]
)
def test_parse_voice_callback(form: dict[str, str], expected: tuple[Any, ...]) -> None:
    callback = parse_voice_callback(form)
    active, digits, duration, cost, report = expected
    assert callback.session_id == "ATVId_abc123"
    assert (callback.active, callback.digits, callback.duration_seconds, callback.cost) == (
        active,
        digits,
        duration,
        cost,
    )
    got = callback.delivery_report()
    if report is None:
        assert got is None
    else:
        assert got == DeliveryReport("ATVId_abc123", report[0], report[1], report[2], cost=cost)
    assert N1 not in repr(callback)


@pytest.mark.parametrize(
    ("form", "field_name"),
    [
        ({"isActive": "1"}, "sessionId"),
        ({"sessionId": "ATVId_1"}, "isActive"),
        ({"sessionId": "ATVId_1", "isActive": "yes"}, "isActive"),
        ({"sessionId": N1 + " x", "isActive": "1"}, "sessionId"),
        ({**ANSWER, "dtmfDigits": "1a"}, "dtmfDigits"),
        ({**ANSWER, "durationInSeconds": "-3"}, "durationInSeconds"),
        ({**ANSWER, "amount": "lots"}, "amount"),
        ({**ANSWER, "currencyCode": "kes"}, "currencyCode"),
        ({**ANSWER, "hangupCause": "busy " + N1}, "hangupCause"),
        ({**ANSWER, "callSessionState": N1}, "callSessionState"),
    ],
)
def test_malformed_callbacks_name_the_field(form: dict[str, str], field_name: str) -> None:
    with pytest.raises(VoiceCallbackError) as caught:
        parse_voice_callback(form)
    assert caught.value.field == field_name
    assert isinstance(caught.value, ValueError)
    assert N1 not in str(caught.value)


@pytest.mark.parametrize(
    ("state", "status", "cause", "expected"),
    [
        ("Completed", "Success", "NORMAL_CLEARING", (DELIVERED, "Completed")),
        (None, None, "NORMAL_CLEARING", (DELIVERED, "NORMAL_CLEARING")),
        ("NotAnswered", "NotAnswered", "NO_ANSWER", (FAILED, "NO_ANSWER")),
        ("NotAnswered", None, "CALL_REJECTED", (FAILED, "CALL_REJECTED")),
        (None, None, "UNALLOCATED_NUMBER", (FAILED, "UNALLOCATED_NUMBER")),
        ("NotAnswered", None, None, (FAILED, "NotAnswered")),
        ("Mystery", None, "NEW_CAUSE", (FAILED, "NEW_CAUSE")),
    ],
)
def test_final_state_table(
    state: str | None, status: str | None, cause: str | None, expected: tuple[Any, ...]
) -> None:
    assert final_state(state, status, cause) == expected


# Whole calls: the simulator plays them against a tiny gateway -----------------------------


@dataclass
class TinyGateway:
    """Stands in for the gateway's voice routes, answering with our own actions builder."""

    renderer: SpeechRenderer
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)  # sessionId -> text, lang
    reports: list[DeliveryReport] = field(default_factory=list)
    costs: list[Decimal | None] = field(default_factory=list)
    responder: VoiceResponder | None = None

    recorded: asyncio.Event = field(default_factory=asyncio.Event)

    def record_sessions(self, texts: Mapping[str, tuple[str, str]]) -> None:
        """What the dispatcher does after ``send``: store each call's session id."""
        self.texts.update(texts)
        self.recorded.set()

    async def look_up(self, session_id: str) -> tuple[str | None, str]:
        # A call may be answered before its session id is stored (the real gateway's race
        # too): wait for the dispatcher's write, boundedly, then treat the session as unknown.
        if session_id not in self.texts:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recorded.wait(), timeout=5)
        text, language = self.texts.get(session_id, (None, "en"))
        return text, language

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/voice", self.callback)
        app.router.add_post("/voice/digits", self.callback)
        app.router.add_get("/audio/{name}", self.audio)
        return app

    async def callback(self, request: web.Request) -> web.Response:
        assert self.responder is not None
        form = {key: str(value) for key, value in (await request.post()).items()}
        try:
            callback = parse_voice_callback(form)
        except VoiceCallbackError as exc:
            return web.Response(status=400, text=str(exc))
        if callback.is_final:
            report = callback.delivery_report()
            assert report is not None
            self.reports.append(report)
            self.costs.append(callback.cost)
            return web.Response(text=hangup_document(), content_type="application/xml")
        text, language = await self.look_up(callback.session_id)
        played = request.query.get("played") if request.path.endswith("/digits") else None
        xml = await self.responder.respond(callback, text, language, played=played)
        return web.Response(text=xml, content_type="application/xml")

    async def audio(self, request: web.Request) -> web.StreamResponse:
        path = self.renderer.audio_path(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


@pytest.fixture
async def gateway_url(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    renderer = SpeechRenderer(tmp_path / "audio", "http://placeholder")
    gateway = TinyGateway(renderer=renderer)
    server = await aiohttp_server(gateway.app())
    base = str(server.make_url("")).rstrip("/")
    renderer.public_url = base
    gateway.responder = VoiceResponder(renderer, f"{base}/voice/digits")
    yield base, gateway


async def play_calls(
    gateway_url: tuple[str, TinyGateway], tmp_path: Path, batch: list[Any], **simulated: Any
) -> tuple[VoiceSimulator, list[SendResult], TinyGateway]:
    base, gateway = gateway_url
    simulator = VoiceSimulator(
        VoiceSimulatorConfig(
            username=USERNAME, api_key=API_KEY, callback_url=f"{base}/voice", **simulated
        )
    )
    channel = VoiceChannel(voice_config(await simulator.start(), tmp_path))
    try:
        results = await channel.send(batch)
        texts = {
            result.provider_message_id: (message.text, message.language)
            for result, message in zip(
                sorted(results, key=lambda r: r.delivery_id), batch, strict=True
            )
            if result.provider_message_id
        }
        gateway.record_sessions(texts)
        await simulator.wait_for_calls()
    finally:
        await channel.close()
        await simulator.stop()
    return simulator, results, gateway


async def test_indonesian_call_repeated_once_then_delivered(
    espeak: str, gateway_url: tuple[str, TinyGateway], tmp_path: Path
) -> None:
    simulator, results, gateway = await play_calls(
        gateway_url,
        tmp_path,
        messages([N1]),
        key_presses={N1: ["1", ""]},  # press 1 once, then let the prompt time out
        answer_delay=0.05,
    )
    (result,) = results
    call = simulator.calls[result.provider_message_id or ""]
    assert call.problems == []
    assert call.documents == [["Play", "GetDigits", "Play"], ["Play", "GetDigits", "Play"]]
    assert call.digits_sent == ["1"]
    message_url = f"{gateway_url[0]}/audio/{audio_name(ALERT_ID, 'id')}"
    # The message was heard twice; the gateway rendered it once (3 files: message, prompt, bye).
    assert simulator.audio_fetches[message_url] == 2
    assert len(list((tmp_path / "audio").iterdir())) == 3
    assert gateway.reports == [
        DeliveryReport(
            result.provider_message_id or "", DELIVERED, "Completed", None, cost=Decimal("2.0000")
        )
    ]
    assert gateway.costs == [Decimal("2.0000")]  # 5 plays x 5 s = 25 s: one started minute
    assert not simulator.unused_outcomes()


async def test_english_say_call_and_a_busy_number(
    gateway_url: tuple[str, TinyGateway], tmp_path: Path
) -> None:
    simulator, results, gateway = await play_calls(
        gateway_url,
        tmp_path,
        messages([N1, N2], text=ALERT_EN, language="en"),
        call_outcomes={N2: "USER_BUSY"},
        key_presses={N1: ["1", "1", "1"]},  # more presses than plays allowed
    )
    by_id = {r.delivery_id: r.provider_message_id or "" for r in results}
    answered, busy = simulator.calls[by_id[1]], simulator.calls[by_id[2]]
    assert answered.problems == [] and busy.problems == []
    # max_plays=3: the third play has no prompt, so the third key is never pressed.
    assert answered.documents == [["Say", "GetDigits", "Say"]] * 2 + [["Say", "Say"]]
    assert answered.spoken.count(ALERT_EN) == 3
    assert answered.digits_sent == ["1", "1"]
    assert busy.documents == [] and busy.callbacks[0]["isActive"] == "0"
    assert sorted((r.provider_message_id, r.state, r.reason) for r in gateway.reports) == sorted(
        [(by_id[1], DELIVERED, None), (by_id[2], FAILED, "USER_BUSY")]
    )
    assert simulator.audio_fetches == {}


async def test_no_number_or_key_in_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture,
    gateway_url: tuple[str, TinyGateway],
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    runs = [
        await run_case(case, tmp_path)
        for case in CALL_CASES
        if case.label
        in {
            "invalid-and-unsupported-numbers-rejected",
            "caller-number-not-ours",
            "wrong-api-key",
            "timeout",
            "number-the-sdk-refuses-never-leaves",
        }
    ]
    simulator, results, gateway = await play_calls(
        gateway_url,
        tmp_path,
        messages([N1, N2], text=ALERT_EN, language="en"),
        call_outcomes={N2: "NO_ANSWER"},
    )
    texts = [caplog.text, repr(simulator), repr(simulator.config), repr(simulator.calls_placed)]
    texts += [repr(call) for call in simulator.calls.values()]
    texts += [repr(r) for r in results] + [repr(r) for r in gateway.reports]
    texts.append(repr(gateway.responder))
    for run in runs:
        texts += [repr(run.channel), repr(run.channel._config), repr(run.channel._client)]
        texts += [repr(record) for record in run.simulator.received]
        if run.error is not None:
            texts += [str(run.error), repr(run.error)]
        for result in run.results or []:
            texts += [repr(result), str(result.error)]
    secrets = [API_KEY, "not-the-voice-key", "0722123401"]
    secrets += [n.lstrip("+")[-9:] for n in (N1, N2, N3, CALLER, "+254711000111")]
    for text in texts:
        for secret in secrets:
            assert secret not in text


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            "<Response><Dial phoneNumbers='+254711000111'/></Response>",
            "action 'Dial' is not simulated",
        ),
        ("<Response><Speak>hi</Speak></Response>", "unknown action 'Speak'"),
        ("<Response><Play url='{base}/not-audio'/></Response>", "Play url is not WAV audio"),
        ("<Reply><Say>hi</Say></Reply>", "root element is 'Reply', not 'Response'"),
        ("Say hello", "the answer is not XML"),
    ],
)
async def test_simulator_reports_answers_it_cannot_play(
    aiohttp_server: Any, document: str, problem: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        base = str(request.url.origin())
        return web.Response(text=document.replace("{base}", base), content_type="application/xml")

    async def not_audio(_request: web.Request) -> web.Response:
        return web.Response(body=b"<html>not audio</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/voice", answer)
    app.router.add_get("/not-audio", not_audio)
    server = await aiohttp_server(app)
    simulator = VoiceSimulator(
        VoiceSimulatorConfig(
            username=USERNAME, api_key=API_KEY, callback_url=str(server.make_url("/voice"))
        )
    )
    channel = VoiceChannel(voice_config(await simulator.start(), Path("unused")))
    try:
        (result,) = await channel.send(messages([N1]))
        await simulator.wait_for_calls()
    finally:
        await channel.close()
        await simulator.stop()
    call = simulator.calls[result.provider_message_id or ""]
    assert call.problems == [problem]
    assert call.final_delivered  # the call still ends with its final callback


def test_config_from_settings() -> None:
    @dataclass
    class Section:
        base_url: str = "https://voice.africastalking.com"
        caller_number: str = CALLER
        audio_dir: str = "/var/lib/warta/audio"
        espeak_program: str = "espeak-ng"
        say_voice: str = "man"
        batch_size: int = 20
        rate_per_second: float = 2.0
        request_timeout_s: float = 5.0
        executor_workers: int = 2

    config = VoiceConfig.from_settings(
        Section(), username=USERNAME, api_key=API_KEY, public_url="https://warta.example"
    )
    assert (config.caller_number, config.batch_size, config.say_voice) == (CALLER, 20, "man")
    assert config.audio_dir == Path("/var/lib/warta/audio")
    assert API_KEY not in repr(config) and CALLER not in repr(config)
    with pytest.raises(ValueError, match="max_plays"):
        VoiceConfig(username="u", api_key="k", caller_number=CALLER, max_plays=0)


def test_a_call_cost_in_another_currency_stays_out_of_the_report() -> None:
    final = {
        "sessionId": "ATVId_cost",
        "isActive": "0",
        "callSessionState": "Completed",
        "status": "Success",
        "amount": "KES 2.0000",
        "currencyCode": "KES",
    }
    callback = parse_voice_callback(final)
    assert callback.delivery_report() is not None
    assert callback.delivery_report().cost == Decimal("2.0000")  # type: ignore[union-attr]
    assert callback.delivery_report("kes").cost == Decimal("2.0000")  # type: ignore[union-attr]
    kept_in_idr = callback.delivery_report("IDR")
    assert kept_in_idr is not None
    assert (kept_in_idr.state, kept_in_idr.cost) == (DeliveryState.DELIVERED, None)
    no_code = parse_voice_callback({k: v for k, v in final.items() if k != "currencyCode"})
    assert no_code.delivery_report("IDR").cost == Decimal("2.0000")  # type: ignore[union-attr]
