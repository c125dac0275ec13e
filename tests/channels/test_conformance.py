"""One conformance test over every registered channel (after apprise's plugin-wide tests).

For each channel ``channel_classes()`` lists, a ``Rig`` below says how to start its simulator
(with a failure injected when asked) and how to configure the gateway for it. Every channel
then has to:

- build from configuration through ``build_channels``, as ``warta serve`` builds it;
- keep its secrets (tokens, API keys, app secrets) and recipients' phone numbers out of its
  repr, its errors and every log line it emits while sending, at DEBUG;
- render a long announcement within its declared limits in every language, with the real
  templates;
- report connection refused, a 5xx, a 429 (with ``retry_after`` where the provider sends one)
  and a permanent rejection as the right error kind;
- round-trip a send with its simulator and, where the provider has them, a status callback.

A channel registered without a rig fails loudly: add its row to ``RIGS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from channels.base import Channel, OutgoingMessage, SendResult
from channels.registry import build_channels, channel_classes
from gateway.domain import DeliveryState
from gateway.errors import (
    ChannelError,
    ConfigError,
    ConnectionFailed,
    Rejected,
    Throttled,
)
from gateway.renditions import AnnouncementContent, Facts, Renderer
from tests.support.config import make_config

LANGUAGES = ("id", "en")
FAILURES = ("connection_refused", "server_error", "throttled", "rejected")
TEXT = "Uji coba Warta: pemadaman listrik Senin 10.00-14.00 di Kecamatan Gambir. Kode K7P2QX."
PHONE_A = "+6281234567891"
PHONE_B = "+6281234567892"
CALLER_NUMBER = "+62215550100"
CALLBACK_WAIT_S = 5.0
CALL_SCRIPT = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Uji coba.</Say></Response>'

# Secrets: distinctive values, so a leak is found wherever it lands.
AT_KEY = "atkey-conformance-5f0c1d2e3b4a99887766"
TG_TOKEN = "987654321:AAH-conformanceToken_abcdefghijklmn"
TG_WEBHOOK_SECRET = "tg-wh-secret_conformance_1234"
WA_TOKEN = "EAAwaConformanceAccessToken0123456789"
META_APP_SECRET = "meta-app-secret-conformance-abcdef"
META_VERIFY_TOKEN = "meta-verify-token-conformance-1234"
FB_PAGE = "300000000000001"
FB_TOKEN = "EAAfbConformancePageToken0123456789"
X_TOKEN = "x-bearer-conformance-0123456789abcdef"
MASTODON_TOKEN = "mastodon-conformance-0123456789abcdef"
ACCOUNT = "warta_demo"


def _dead_url() -> str:
    """A loopback URL nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class Rig:
    """How one channel meets its simulator.

    Attributes:
        recipient: where the test sends (a phone number, chat id, Page id or account).
        simulator: builds the (unstarted) simulator from keyword overrides.
        failures: per failure word, simulator overrides that make the provider answer so
            (``text`` is the message text: some simulators key canned outcomes by text).
        expected: per failure word, the error kind and, for ``throttled``, the expected
            ``retry_after`` as (low, high) or None when the provider sends none.
        settings: gateway configuration sections for a simulator at a base URL.
        secrets: ``WARTA_SECRETS__…`` values the channel needs.
        phones: phone numbers the channel sees (never to be logged).
        sent: how many messages the simulator accepted.
        callback: simulator overrides that send status callbacks to a URL, or None.
        parse_callback: turns one received callback (headers, raw body) into reports.
        rejected_text: the text to send in the ``rejected`` case, when the rejection is the
            provider's answer to the text itself.
    """

    recipient: str
    simulator: Callable[..., Any]
    failures: Callable[[str, str, str], dict[str, Any]]
    expected: Mapping[str, tuple[type[ChannelError], tuple[float, float] | None]]
    settings: Callable[[str], dict[str, Any]]
    secrets: Mapping[str, str]
    phones: tuple[str, ...] = ()
    sent: Callable[[Any], int] = lambda sim: 0
    callback: Callable[[str], dict[str, Any]] | None = None
    parse_callback: Callable[[Mapping[str, str], bytes], list[Any]] | None = None
    rejected_text: str | None = None


# -- one rig per channel --------------------------------------------------------------------


def _sms_rig() -> Rig:
    from channels.africastalking.simconfig import SimulatorConfig
    from channels.africastalking.simulator import AfricasTalkingSimulator
    from channels.sms.callbacks import parse_delivery_report

    words = {"server_error": "server_error", "throttled": "throttled", "rejected": "invalid_number"}

    def simulator(**overrides: Any) -> Any:
        config: dict[str, Any] = {
            "username": "warta-conf",
            "api_key": AT_KEY,
            "retry_after_seconds": 7,
        }
        return AfricasTalkingSimulator(SimulatorConfig(**(config | overrides)))

    def parse(_headers: Mapping[str, str], body: bytes) -> list[Any]:
        from urllib.parse import parse_qsl

        return [parse_delivery_report(dict(parse_qsl(body.decode())))]

    return Rig(
        recipient=PHONE_A,
        simulator=simulator,
        failures=lambda word, recipient, _text: {"outcomes": {recipient: words[word]}},
        expected={
            "server_error": (ConnectionFailed, None),
            "throttled": (Throttled, (7.0, 7.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {"africastalking": {"base_url": url, "username": "warta-conf"}},
        secrets={"africastalking_api_key": AT_KEY},
        phones=(PHONE_A, PHONE_B),
        sent=lambda sim: sim.sent_count.total(),
        callback=lambda url: {"delivery_report_url": url, "delivery_report_delay": 0.01},
        parse_callback=parse,
    )


def _voice_rig() -> Rig:
    from urllib.parse import parse_qsl

    from channels.africastalking.voice_sim import VoiceSimulator
    from channels.voice import parse_voice_callback
    from channels.voice.simconfig import VoiceSimulatorConfig

    words = {"server_error": "server_error", "throttled": "throttled", "rejected": "invalid_number"}

    def simulator(**overrides: Any) -> Any:
        config: dict[str, Any] = {
            "username": "warta-conf",
            "api_key": AT_KEY,
            "retry_after_seconds": 7,
        }
        return VoiceSimulator(VoiceSimulatorConfig(**(config | overrides)))

    def parse(_headers: Mapping[str, str], body: bytes) -> list[Any]:
        report = parse_voice_callback(dict(parse_qsl(body.decode()))).delivery_report()
        return [] if report is None else [report]

    return Rig(
        recipient=PHONE_A,
        simulator=simulator,
        failures=lambda word, recipient, _text: {"outcomes": {recipient: words[word]}},
        expected={
            "server_error": (ConnectionFailed, None),
            "throttled": (Throttled, (7.0, 7.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {
            "africastalking": {"username": "warta-conf"},
            "voice": {
                "enabled": True,
                "base_url": url,
                "caller_number": CALLER_NUMBER,
                "audio_dir": str(Path(tempfile.gettempdir()) / "warta-conformance-audio"),
            },
        },
        secrets={"africastalking_api_key": AT_KEY},
        phones=(PHONE_A, PHONE_B, CALLER_NUMBER),
        sent=lambda sim: len(sim.calls),
        callback=lambda url: {"callback_url": url},
        parse_callback=parse,
    )


def _telegram_rig(*, post: bool) -> Rig:
    from channels.telegram.simconfig import SimulatorConfig
    from channels.telegram.simulator import TelegramSimulator

    recipient = f"@{ACCOUNT}" if post else "123456789"
    words = {"server_error": "server_error", "throttled": "throttled"}
    if not post:
        words["rejected"] = "chat_not_found"

    def simulator(**overrides: Any) -> Any:
        config: dict[str, Any] = {"token": TG_TOKEN, "retry_after_seconds": 5}
        return TelegramSimulator(SimulatorConfig(**(config | overrides)))

    def failures(word: str, chat: str, _text: str) -> dict[str, Any]:
        # A channel post's "recipient" is our own account, so a refusal about the chat is a
        # configuration error there; the provider refusing the text itself (too long) is the
        # permanent rejection both channels share.
        return {"outcomes": {chat: words[word]}} if word in words else {}

    return Rig(
        recipient=recipient,
        simulator=simulator,
        failures=failures,
        expected={
            "server_error": (ConnectionFailed, None),
            "throttled": (Throttled, (5.0, 5.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {
            "telegram": {
                "base_url": url,
                "register_webhook": False,
                "channels": [f"@{ACCOUNT}"],
                "request_timeout_s": 5.0,
            }
        },
        secrets={"telegram_bot_token": TG_TOKEN, "telegram_webhook_secret": TG_WEBHOOK_SECRET},
        sent=lambda sim: sim.sent_count.total(),
        rejected_text="x" * 4097 if post else None,
    )


def _meta_simulator(**overrides: Any) -> Any:
    from channels.meta.simconfig import SimulatorConfig
    from channels.meta.simulator import MetaSimulator

    config: dict[str, Any] = {
        "whatsapp_token": WA_TOKEN,
        "app_secret": META_APP_SECRET,
        "page_tokens": {FB_PAGE: FB_TOKEN},
        "retry_after_seconds": 7,
    }
    return MetaSimulator(SimulatorConfig(**(config | overrides)))


def _whatsapp_rig() -> Rig:
    from channels.meta.signature import verify_signature
    from channels.meta.simconfig import SimulatorConfig
    from channels.whatsapp.webhooks import parse_status_webhook_body

    words = {"server_error": "server_error", "throttled": "throttled", "rejected": "undeliverable"}
    number_id = SimulatorConfig().phone_number_id

    def parse(headers: Mapping[str, str], body: bytes) -> list[Any]:
        assert verify_signature(body, headers.get("X-Hub-Signature-256"), META_APP_SECRET)
        return parse_status_webhook_body(body)

    return Rig(
        recipient=PHONE_B,
        simulator=_meta_simulator,
        failures=lambda word, recipient, _text: {"outcomes": {recipient: words[word]}},
        expected={
            "server_error": (ConnectionFailed, None),
            "throttled": (Throttled, (7.0, 7.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {"whatsapp": {"phone_number_id": number_id, "base_url": url}},
        secrets={
            "whatsapp_access_token": WA_TOKEN,
            "meta_app_secret": META_APP_SECRET,
            "meta_verify_token": META_VERIFY_TOKEN,
        },
        phones=(PHONE_A, PHONE_B),
        sent=lambda sim: sim.messages_accepted,
        callback=lambda url: {"status_webhook_url": url, "status_webhook_delay": 0.01},
        parse_callback=parse,
    )


def _facebook_rig() -> Rig:
    words = {"server_error": "server_error", "throttled": "throttled", "rejected": "policy_block"}
    return Rig(
        recipient=FB_PAGE,
        simulator=_meta_simulator,
        failures=lambda word, recipient, _text: {"outcomes": {recipient: words[word]}},
        expected={
            "server_error": (ConnectionFailed, None),
            "throttled": (Throttled, (7.0, 7.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {"facebook": {"base_url": url}},
        secrets={"facebook_page_tokens": json.dumps({FB_PAGE: FB_TOKEN})},
        sent=lambda sim: sim.posts_created,
    )


def _x_rig() -> Rig:
    from channels.x.simulator import XSimulator, XSimulatorConfig

    words = {
        "server_error": "server_error",
        "throttled": "throttled",
        "rejected": "invalid_request",
    }

    def simulator(**overrides: Any) -> Any:
        config: dict[str, Any] = {"accounts": {X_TOKEN: ACCOUNT}, "retry_after_seconds": 60}
        return XSimulator(XSimulatorConfig(**(config | overrides)))

    return Rig(
        recipient=ACCOUNT,
        simulator=simulator,
        failures=lambda word, _recipient, text: {"outcomes": {text: words[word]}},
        expected={
            "server_error": (ConnectionFailed, None),
            # From x-rate-limit-reset (epoch seconds, 60 s ahead) against the wall clock.
            "throttled": (Throttled, (55.0, 61.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {"x": {"base_url": url}},
        secrets={"x_tokens": json.dumps({ACCOUNT: X_TOKEN})},
        sent=lambda sim: len([r for r in sim.received if r.http_status == 201]),
    )


def _mastodon_rig() -> Rig:
    from channels.mastodon.simulator import MastodonSimulator, MastodonSimulatorConfig

    def simulator(**overrides: Any) -> Any:
        config: dict[str, Any] = {"accounts": {MASTODON_TOKEN: ACCOUNT}, "retry_after_seconds": 60}
        return MastodonSimulator(MastodonSimulatorConfig(**(config | overrides)))

    def failures(word: str, _recipient: str, text: str) -> dict[str, Any]:
        if word == "rejected":
            # The server's own limit is lower than the one Warta was configured with: the
            # server answers 422, a rejection of this text.
            return {"max_characters": 40}
        return {"outcomes": {text: word}}

    return Rig(
        recipient=ACCOUNT,
        simulator=simulator,
        failures=failures,
        expected={
            "server_error": (ConnectionFailed, None),
            "throttled": (Throttled, (55.0, 61.0)),
            "rejected": (Rejected, None),
        },
        settings=lambda url: {"mastodon": {"base_url": url, "discover_limits": False}},
        secrets={"mastodon_tokens": json.dumps({ACCOUNT: MASTODON_TOKEN})},
        sent=lambda sim: sum(sim.statuses_by_account.values()),
    )


RIGS: dict[str, Callable[[], Rig]] = {
    "sms": _sms_rig,
    "voice": _voice_rig,
    "telegram": lambda: _telegram_rig(post=False),
    "telegram_channel": lambda: _telegram_rig(post=True),
    "whatsapp": _whatsapp_rig,
    "facebook": _facebook_rig,
    "x": _x_rig,
    "mastodon": _mastodon_rig,
}

REGISTERED = sorted(channel_classes())


def rig_for(name: str) -> Rig:
    if name not in RIGS:
        pytest.fail(
            f"channel {name!r} is registered in channels/registry.py but has no conformance "
            "rig: add one to RIGS in tests/channels/test_conformance.py"
        )
    return RIGS[name]()


# -- running a channel against its simulator -------------------------------------------------


@dataclass
class Callbacks:
    """A loopback receiver for a simulator's status callbacks."""

    url: str
    received: list[tuple[dict[str, str], bytes]]

    async def wait_for(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CALLBACK_WAIT_S
        while len(self.received) < count and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.received) >= count, f"got {len(self.received)} of {count} callbacks"


@asynccontextmanager
async def callback_receiver() -> AsyncIterator[Callbacks]:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        # A voice call asks its callback what to play; the other providers ignore the body.
        return web.Response(text=CALL_SCRIPT, content_type="application/xml")

    app = web.Application()
    app.router.add_post("/callback", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Callbacks(f"http://{host}:{port}/callback", received)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running(
    name: str, rig: Rig, *, base_url: str | None = None, **simulator: Any
) -> AsyncIterator[tuple[Channel, Any]]:
    """The channel built by ``build_channels`` against a started simulator (or ``base_url``)."""
    sim = rig.simulator(**simulator)
    url = await sim.start()
    channel: Channel | None = None
    try:
        config = make_config(
            "sqlite+aiosqlite:///unused.db",
            dict(rig.secrets),
            **rig.settings(base_url or url),
        )
        channels = build_channels(config)
        assert name in channels, f"build_channels did not build {name!r} from its config"
        channel = channels[name]
        for other in channels.values():
            if other is not channel:
                await other.close()
        await channel.start()
        yield channel, sim
    finally:
        if channel is not None:
            await channel.close()
        await sim.stop()


def message(rig: Rig, text: str = TEXT, delivery_id: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=delivery_id,
        recipient=rig.recipient,
        text=text,
        idempotency_key=f"warta-conf-{delivery_id}",
        language="id",
    )


async def send_for_error(channel: Channel, batch: list[OutgoingMessage]) -> ChannelError:
    """The error of a one-message batch, raised for the batch or carried in its result."""
    try:
        results = await channel.send(batch)
    except ChannelError as exc:
        return exc
    assert len(results) == 1
    assert results[0].state == DeliveryState.FAILED, results
    assert results[0].error is not None
    return results[0].error


def assert_nothing_leaks(rig: Rig, channel: Channel, caplog: Any, *extra: object) -> None:
    secrets = [value for value in rig.secrets.values() if value]
    for raw in rig.secrets.values():
        # A JSON map of account -> token: each token is a secret on its own.
        if raw.startswith("{"):
            secrets.extend(json.loads(raw).values())
    private = [*secrets, *rig.phones]
    texts = [repr(channel), str(channel), *(repr(e) for e in extra), *(str(e) for e in extra)]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    for text in texts:
        for value in private:
            assert value not in text, f"a secret or phone number leaked into: {text[:200]!r}"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


# -- the conformance cases --------------------------------------------------------------------


@pytest.mark.parametrize("name", REGISTERED)
async def test_builds_from_config_and_masks_secrets(
    name: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    rig = rig_for(name)
    async with running(name, rig) as (channel, _sim):
        assert isinstance(channel, channel_classes()[name])
        assert channel.name == name
        assert channel.batch_size >= 1 and channel.rate_per_second > 0
        results = await channel.send([message(rig)])
    assert all(r.error is None for r in results), results
    assert debug_logs.records, "the send logged nothing at DEBUG: this check would prove nothing"
    assert_nothing_leaks(rig, channel, debug_logs, *results)


def long_announcement(language: str) -> AnnouncementContent:
    paragraph = (
        "Perbaikan jaringan listrik tegangan menengah dilakukan bertahap di seluruh kelurahan, "
        "dan warga diminta menyiapkan penerangan darurat serta mencabut peralatan elektronik. "
        if language == "id"
        else "Repairs to the medium-voltage network go ahead street by street in every ward; "
        "residents should prepare emergency lighting and unplug electronic equipment. "
    )
    return AnnouncementContent(
        title=(
            "Pemadaman listrik terencana untuk perbaikan jaringan di Kecamatan Gambir dan sekitar"
            if language == "id"
            else "Planned power cut for network repairs in Gambir district and surroundings"
        ),
        body="\n\n".join([paragraph * 3] * 8),
        facts=Facts(
            what="Pemadaman listrik" if language == "id" else "Power cut",
            when=datetime(2025, 3, 3, 10, 0, tzinfo=timezone(timedelta(hours=7))),
            where="Kecamatan Gambir",
            action="Siapkan senter" if language == "id" else "Prepare a torch",
            link="https://pln.example.id/info/gambir-2025-03",
        ),
        verification_code="K7P2QX",
        public_url="https://warta.example.id/a/K7P2QX",
        agency_name="BPBD DKI Jakarta",
        language=language,
        urgency="emergency",
    )


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", REGISTERED)
def test_renders_within_limits(name: str, language: str) -> None:
    rig_for(name)
    cls = channel_classes()[name]
    content = long_announcement(language)
    rendition = Renderer().render(cls, content)
    assert rendition.fits, rendition.problems
    assert rendition.characters <= cls.max_length
    assert cls.text_length(rendition.text) <= cls.max_length
    if cls.max_segments is not None:
        assert rendition.segments <= cls.max_segments
    assert rendition.missing_facts == ()
    if len(content.body) > cls.max_length:
        assert rendition.level > 0, "a body longer than the limit must have been shortened"


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("name", REGISTERED)
async def test_maps_failures_to_error_kinds(
    name: str, failure: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    rig = rig_for(name)
    text = TEXT
    if failure == "rejected" and rig.rejected_text is not None:
        text = rig.rejected_text
    batch = [message(rig, text)]
    if failure == "connection_refused":
        async with running(name, rig, base_url=_dead_url()) as (channel, _sim):
            error = await send_for_error(channel, batch)
        assert type(error) is ConnectionFailed, repr(error)
        assert_nothing_leaks(rig, channel, debug_logs, error)
        return
    overrides = rig.failures(failure, rig.recipient, text)
    async with running(name, rig, **overrides) as (channel, sim):
        error = await send_for_error(channel, batch)
        assert rig.sent(sim) == 0, "the provider accepted a message it was told to refuse"
    kind, retry_after = rig.expected[failure]
    assert type(error) is kind, f"{failure} -> {error!r}, expected {kind.__name__}"
    assert error.kind == kind.kind
    assert not isinstance(error, ConfigError)
    if isinstance(error, Throttled):
        if retry_after is None:
            assert error.retry_after is None
        else:
            assert error.retry_after is not None
            assert retry_after[0] <= error.retry_after <= retry_after[1], error.retry_after
    assert_nothing_leaks(rig, channel, debug_logs, error)


@pytest.mark.parametrize("name", REGISTERED)
async def test_round_trips_with_its_simulator(name: str) -> None:
    rig = rig_for(name)
    async with callback_receiver() as callbacks:
        overrides = rig.callback(callbacks.url) if rig.callback is not None else {}
        async with running(name, rig, **overrides) as (channel, sim):
            results: list[SendResult] = await channel.send([message(rig)])
            assert len(results) == 1
            result = results[0]
            assert result.error is None, result
            assert result.state in (DeliveryState.SENT, DeliveryState.DELIVERED)
            assert result.provider_message_id
            assert rig.sent(sim) == 1
            if rig.parse_callback is None:
                assert callbacks.received == []
                return
            # WhatsApp: "sent", then "delivered"; voice: the answer, then the hang-up.
            await callbacks.wait_for(2 if name in ("whatsapp", "voice") else 1)
    reports = [r for h, body in callbacks.received for r in rig.parse_callback(h, body)]
    assert reports, "the status callback carried no report"
    assert {r.provider_message_id for r in reports} == {result.provider_message_id}
    assert reports[-1].state == DeliveryState.DELIVERED
    assert set(channel.status_map.values()) >= {r.state for r in reports}
