"""The Telegram channels against the Bot API simulator (real python-telegram-bot, real HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from telegram import error as tg

pytest.register_assert_rewrite("tests.support.telegram_harness")

from channels.telegram import (  # noqa: E402
    SECRET_HEADER,
    TelegramChannel,
    TelegramChannelPost,
    TelegramConfig,
    UpdateFieldError,
    parse_update,
    verify_secret_token,
)
from channels.telegram.pacing import ChatBusy, ChatPacer  # noqa: E402
from channels.telegram.simconfig import SimulatorConfig  # noqa: E402
from channels.telegram.simulator import TelegramSimulator  # noqa: E402
from channels.telegram.status import as_account_error, error_for  # noqa: E402
from gateway.domain import DeliveryState  # noqa: E402
from gateway.errors import (  # noqa: E402
    ConfigError,
    ConnectionFailed,
    RecipientStopped,
    Rejected,
    Throttled,
)
from gateway.ratelimit import ArrivalPacer  # noqa: E402
from tests.support.telegram_harness import (  # noqa: E402
    GET_ME,
    TOKEN,
    WEBHOOK_SECRET,
    Outcome,
    TelegramCase,
    check_case,
    make_channel,
    messages,
    run_and_check,
    run_case,
    send_call,
)

SENT = DeliveryState.SENT
FAILED = DeliveryState.FAILED
ALERT = "Peringatan banjir: segera ke tempat tinggi. Info: https://warta.example/a/K7QX"
# Chat ids long enough that finding one in a log line is never a coincidence.
C1, C2, C3, C4 = "7301234561", "7301234562", "7301234563", "7301234564"
GROUP = "-4801234567"


def sent(delivery_id: int, message_id: int, url: str | None = None) -> Outcome:
    return Outcome(delivery_id, SENT, str(message_id), url)


def failed(delivery_id: int, kind: str, reason: str) -> Outcome:
    return Outcome(delivery_id, FAILED, None, None, (kind, reason))


CASES = [
    TelegramCase(
        label="one-message-sent",
        batch=messages([C1], ALERT),
        expected_requests=[GET_ME, send_call(C1, ALERT)],
        expected_results=[sent(1, 1)],
    ),
    TelegramCase(
        label="three-chats-sent-concurrently",
        batch=messages([C1, C2, C3], ALERT),
        expected_requests=[GET_ME, *(send_call(c, ALERT) for c in (C1, C2, C3))],
        expected_results=[sent(1, 1), sent(2, 1), sent(3, 1)],
    ),
    TelegramCase(
        label="blocked-deactivated-never-started-kicked-stop-the-citizen",
        batch=messages([C1, C2, C3, GROUP], ALERT),
        outcomes={C1: "blocked", C2: "deactivated", C3: "cannot_initiate", GROUP: "kicked"},
        expected_requests=[GET_ME, *(send_call(c, ALERT) for c in (C1, C2, C3, GROUP))],
        expected_results=[
            failed(1, "RecipientStopped", "bot_blocked"),
            failed(2, "RecipientStopped", "user_deactivated"),
            failed(3, "RecipientStopped", "cannot_initiate"),
            failed(4, "RecipientStopped", "bot_kicked"),
        ],
    ),
    TelegramCase(
        label="chat-not-found-and-migrated-are-rejected-others-sent",
        batch=messages([C1, C2, GROUP], ALERT),
        outcomes={C1: "chat_not_found", GROUP: "migrated"},
        expected_requests=[GET_ME, *(send_call(c, ALERT) for c in (C1, C2, GROUP))],
        expected_results=[
            failed(1, "Rejected", "chat_not_found"),
            sent(2, 1),
            failed(3, "Rejected", "chat_migrated"),
        ],
    ),
    TelegramCase(
        label="429-with-retry-after-raises-throttled",
        batch=messages([C1], ALERT),
        outcomes={C1: "throttled"},
        simulator={"retry_after_seconds": 7},
        expected_requests=[GET_ME, send_call(C1, ALERT)],
        expected_error=Throttled("flood_control", retry_after=7.0),
    ),
    TelegramCase(
        label="429-for-one-of-two-stays-in-its-result",
        batch=messages([C1, C2], ALERT),
        outcomes={C1: "throttled"},
        expected_requests=[GET_ME, send_call(C1, ALERT), send_call(C2, ALERT)],
        expected_results=[failed(1, "Throttled", "flood_control"), sent(2, 1)],
    ),
    TelegramCase(
        label="401-bad-token-is-a-config-error",
        batch=messages([C1], ALERT),
        channel={"token": "987654321:AAH-not-the-token"},
        # start() checks the token, and send() checks it again before sending anything.
        expected_requests=[GET_ME, GET_ME],
        expected_error=ConfigError("invalid_token"),
    ),
    TelegramCase(
        label="500-is-a-connection-failure",
        batch=messages([C1], ALERT),
        outcomes={C1: "server_error"},
        expected_requests=[GET_ME, send_call(C1, ALERT)],
        expected_error=ConnectionFailed("network_error"),
    ),
    TelegramCase(
        label="502-html-page-is-a-connection-failure",
        batch=messages([C1], ALERT),
        outcomes={C1: "bad_gateway"},
        expected_requests=[GET_ME, send_call(C1, ALERT)],
        expected_error=ConnectionFailed("network_error"),
    ),
    TelegramCase(
        label="timeout",
        batch=messages([C1], ALERT),
        outcomes={C1: "timeout"},
        channel={"request_timeout": 0.3},
        expected_requests=[GET_ME, send_call(C1, ALERT)],
        expected_error=ConnectionFailed("timeout"),
    ),
    TelegramCase(
        label="too-long-is-rejected",
        batch=messages([C1], "x" * 4097),
        expected_requests=[GET_ME, send_call(C1, "x" * 4097)],
        expected_results=[failed(1, "Rejected", "message_too_long")],
    ),
    TelegramCase(
        label="malformed-chat-id-never-leaves",
        batch=[*messages(["not-a-chat"], ALERT), *messages([C2], ALERT, first_id=2)],
        expected_requests=[GET_ME, send_call(C2, ALERT)],
        expected_results=[failed(1, "Rejected", "invalid_chat_id"), sent(2, 1)],
    ),
    TelegramCase(
        label="channel-post-by-username-has-its-url",
        batch=messages(["@warta_demo"], ALERT),
        post=True,
        expected_requests=[GET_ME, send_call("@warta_demo", ALERT)],
        expected_results=[sent(1, 1, "https://t.me/warta_demo/1")],
    ),
    TelegramCase(
        label="channel-post-by-id-learns-the-username",
        batch=messages(["-1001000000001"], ALERT),
        post=True,
        expected_requests=[GET_ME, send_call("-1001000000001", ALERT)],
        expected_results=[sent(1, 1, "https://t.me/warta_demo/1")],
    ),
    TelegramCase(
        label="private-channel-post-has-no-public-url",
        batch=messages(["-1002000000002"], ALERT),
        post=True,
        expected_requests=[GET_ME, send_call("-1002000000002", ALERT)],
        expected_results=[sent(1, 1)],
    ),
    TelegramCase(
        label="channel-post-unknown-channel-is-a-config-error",
        batch=messages(["@nobody_here"], ALERT),
        post=True,
        expected_requests=[GET_ME, send_call("@nobody_here", ALERT)],
        expected_error=ConfigError("chat_not_found"),
    ),
    TelegramCase(
        label="channel-post-bot-not-admin-is-a-config-error",
        batch=messages(["@warta_demo"], ALERT),
        outcomes={"@warta_demo": "not_member"},
        post=True,
        expected_requests=[GET_ME, send_call("@warta_demo", ALERT)],
        expected_error=ConfigError("not_a_member"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_telegram_send_table(case: TelegramCase) -> None:
    await run_and_check(case)


async def test_harness_fails_on_unused_outcome_and_unexpected_call() -> None:
    unused = TelegramCase(
        label="unused",
        batch=messages([C1], ALERT),
        outcomes={C2: "blocked"},
        expected_requests=[GET_ME, send_call(C1, ALERT)],
    )
    with pytest.raises(AssertionError, match="never used"):
        check_case(unused, await run_case(unused))
    unexpected = TelegramCase(
        label="unexpected", batch=messages([C1, C2], ALERT), expected_requests=[GET_ME]
    )
    with pytest.raises(AssertionError, match="other calls"):
        check_case(unexpected, await run_case(unexpected))


async def test_unreachable_telegram_start_survives_send_fails() -> None:
    simulator = TelegramSimulator(SimulatorConfig(token=TOKEN))
    base_url = await simulator.start()
    await simulator.stop()  # nothing listens there any more
    channel = make_channel(base_url, request_timeout=0.5)
    try:
        await channel.start()
        with pytest.raises(ConnectionFailed) as caught:
            await channel.send(messages([C1], ALERT))
        assert caught.value.reason == "network_error"
    finally:
        await channel.close()


# -- per-chat pacing -------------------------------------------------------------------------


async def test_per_chat_interval_holds_at_the_simulator() -> None:
    interval = 0.05
    simulator = TelegramSimulator(
        SimulatorConfig(token=TOKEN, enforce_chat_limits=True, chat_interval=interval)
    )
    channel = make_channel(await simulator.start(), per_chat_interval=interval, max_chat_wait=5)
    try:
        # Three alerts to C1 in three concurrent sends (as three dispatcher requests), plus C2.
        batches = [messages([C1], f"alert {n}", first_id=n) for n in range(1, 4)]
        batches.append(messages([C2], ALERT, first_id=4))
        answers = await asyncio.gather(*(channel.send(batch) for batch in batches))
    finally:
        await channel.close()
        await simulator.stop()
    assert all(result.state is SENT for answer in answers for result in answer)
    assert simulator.rate_limited_total == 0
    arrivals = [r.received_at for r in simulator.accepted(C1)]
    assert len(arrivals) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) >= interval


async def test_without_pacing_the_simulator_enforces_the_chat_limit() -> None:
    simulator = TelegramSimulator(
        SimulatorConfig(token=TOKEN, enforce_chat_limits=True, chat_interval=10.0)
    )
    channel = make_channel(await simulator.start(), per_chat_interval=0.0)
    try:
        first = await channel.send(messages([C1], ALERT))
        second = await channel.send(messages([C1, C2], ALERT, first_id=2))
    finally:
        await channel.close()
        await simulator.stop()
    assert first[0].state is SENT
    by_id = {r.delivery_id: r for r in second}
    assert isinstance(by_id[2].error, Throttled)
    assert by_id[2].error.retry_after == 10.0
    assert by_id[3].state is SENT
    assert simulator.rate_limited_total == 1


async def test_a_chat_busy_beyond_max_wait_is_handed_back_unsent() -> None:
    simulator = TelegramSimulator(SimulatorConfig(token=TOKEN))
    channel = make_channel(await simulator.start(), per_chat_interval=10.0, max_chat_wait=0.5)
    try:
        results = await channel.send(messages([C1, C1], ALERT))
    finally:
        await channel.close()
        await simulator.stop()
    states = sorted((r.state, type(r.error).__name__) for r in results)
    assert states == [(FAILED, "Throttled"), (SENT, "NoneType")]
    busy = next(r.error for r in results if r.error is not None)
    assert isinstance(busy, Throttled)
    assert busy.reason == "chat_busy"
    assert busy.retry_after is not None and busy.retry_after > 0.5
    assert len(simulator.accepted()) == 1


async def _broadcast(chats: list[str], *, rate: float, paced: bool) -> TelegramSimulator:
    """Send one message to each chat, concurrently, paced like the dispatcher or not at all."""
    # The simulator's strict reading: a bucket of ``rate`` with a burst of one second.
    simulator = TelegramSimulator(SimulatorConfig(token=TOKEN, enforce_bot_rate=rate))
    channel = make_channel(await simulator.start())
    pacer = ArrivalPacer(rate, rate)  # what the dispatcher builds for Telegram

    async def one(delivery_id: int, chat: str) -> None:
        if paced:
            await pacer.acquire(1)
        try:
            with contextlib.suppress(Throttled):
                await channel.send(messages([chat], ALERT, first_id=delivery_id))
        finally:
            if paced:
                pacer.release(1)

    try:
        await channel.start()
        await asyncio.gather(*(one(i, chat) for i, chat in enumerate(chats, start=1)))
    finally:
        await channel.close()
        await simulator.stop()
    return simulator


async def test_dispatcher_style_pacing_gives_zero_429s() -> None:
    chats = [f"73{n:08d}" for n in range(1, 41)]
    paced = await _broadcast(chats, rate=20.0, paced=True)
    assert (paced.rate_limited_total, len(paced.accepted())) == (0, len(chats))


async def test_without_a_bucket_the_simulator_enforces_the_bot_rate() -> None:
    unpaced = await _broadcast([f"73{n:08d}" for n in range(1, 41)], rate=2.0, paced=False)
    assert unpaced.rate_limited_total > 0
    assert unpaced.rate_limited_total + len(unpaced.accepted()) == 40


async def test_pacer_forgets_idle_chats() -> None:
    now = 100.0
    pacer = ChatPacer(interval=1.0, group_interval=3.0, max_wait=0.0, clock=lambda: now)
    for n in range(200):
        async with pacer.turn(str(n)):
            pass
        now += 1.0  # each chat's interval has passed by the next call
    assert len(pacer) <= 2
    async with pacer.turn("@chan"):
        pass
    with pytest.raises(ChatBusy):
        async with pacer.turn("@chan"):
            pass
    assert pacer.interval_for("@chan") == 3.0
    assert pacer.interval_for(GROUP) == 3.0
    assert pacer.interval_for(C1) == 1.0


# -- error mapping, limits, config ---------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (tg.Forbidden("Forbidden: bot was blocked by the user"), RecipientStopped("bot_blocked")),
        (tg.Forbidden("Forbidden: user is deactivated"), RecipientStopped("user_deactivated")),
        (tg.Forbidden("Forbidden: something new"), Rejected("forbidden")),
        (tg.BadRequest("Bad Request: chat not found"), Rejected("chat_not_found")),
        (tg.BadRequest("Bad Request: can't parse entities"), Rejected("bad_request")),
        (tg.ChatMigrated(-1001000000099), Rejected("chat_migrated")),
        (tg.RetryAfter(3), Throttled("flood_control", retry_after=3.0)),
        (tg.InvalidToken("Unauthorized"), ConfigError("invalid_token")),
        (tg.EndPointNotFound("Not Found"), ConfigError("endpoint_not_found")),
        (tg.Conflict("Conflict: terminated by other getUpdates"), ConfigError("conflict")),
        (tg.TimedOut(), ConnectionFailed("timeout")),
        (tg.NetworkError("Internal Server Error"), ConnectionFailed("network_error")),
    ],
)
def test_error_table(exc: tg.TelegramError, expected: Any) -> None:
    error = error_for(exc)
    assert (type(error), error.reason) == (type(expected), expected.reason)
    if isinstance(expected, Throttled):
        assert isinstance(error, Throttled)
        assert error.retry_after == expected.retry_after


def test_channel_post_turns_chat_refusals_into_config_errors() -> None:
    assert repr(as_account_error(RecipientStopped("bot_kicked"))) == "ConfigError('bot_kicked')"
    assert repr(as_account_error(Rejected("message_too_long"))) == "Rejected('message_too_long')"


def test_limits_are_declared() -> None:
    for cls in (TelegramChannel, TelegramChannelPost):
        assert (cls.max_length, cls.max_segments, cls.encoding, cls.batch_size) == (
            4096,
            None,
            "unicode",
            1,
        )
    assert (TelegramChannel.name, TelegramChannel.reach, TelegramChannel.rate_per_second) == (
        "telegram",
        "personal",
        30.0,
    )
    assert (TelegramChannelPost.name, TelegramChannelPost.reach) == ("telegram_channel", "social")
    channel = TelegramChannel(TelegramConfig(token=TOKEN, rate_per_second=25.0))
    assert channel.rate_per_second == 25.0


@pytest.mark.parametrize(
    ("settings", "word"),
    [
        ({"token": ""}, "token"),
        ({"token": "1:a b"}, "token"),
        ({"token": TOKEN, "webhook_secret": "has space!"}, "webhook_secret"),
        ({"token": TOKEN, "request_timeout": 0}, "request_timeout"),
        ({"token": TOKEN, "per_chat_interval": -1}, "per_chat_interval"),
    ],
)
def test_config_errors_name_the_setting_not_the_value(settings: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word) as caught:
        TelegramConfig(**settings)
    assert "has space!" not in str(caught.value)


# -- webhook: authenticity and updates -----------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected", "ok"),
    [
        ({SECRET_HEADER: WEBHOOK_SECRET}, WEBHOOK_SECRET, True),
        ({SECRET_HEADER.lower(): WEBHOOK_SECRET}, WEBHOOK_SECRET, True),
        (CIMultiDict({SECRET_HEADER.upper(): WEBHOOK_SECRET}), WEBHOOK_SECRET, True),
        ({SECRET_HEADER: WEBHOOK_SECRET + "x"}, WEBHOOK_SECRET, False),
        ({SECRET_HEADER: ""}, WEBHOOK_SECRET, False),
        ({}, WEBHOOK_SECRET, False),
        ({SECRET_HEADER: ""}, "", False),
        ({SECRET_HEADER: WEBHOOK_SECRET}, None, False),
    ],
)
def test_verify_secret_token(headers: Any, expected: str | None, ok: bool) -> None:
    assert verify_secret_token(headers, expected) is ok


def _message(text: str | None, /, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": 42,
        "from": {"id": 7301234561, "is_bot": False, "first_name": "A", "language_code": "id"},
        "chat": {"id": 7301234561, "type": "private", "first_name": "A"},
        "date": 1700000000,
    }
    if text is not None:
        message["text"] = text
    message.update(extra)
    return {"update_id": 9001, "message": message}


def _member(status: str, chat_type: str = "private") -> dict[str, Any]:
    bot = {"id": 987654321, "is_bot": True, "first_name": "Warta"}
    return {
        "update_id": 9002,
        "my_chat_member": {
            "chat": {"id": 7301234561, "type": chat_type},
            "from": {"id": 7301234561, "is_bot": False, "first_name": "A"},
            "date": 1700000000,
            "old_chat_member": {"user": bot, "status": "member"},
            "new_chat_member": {"user": bot, "status": status},
        },
    }


@pytest.mark.parametrize(
    ("update", "kind", "command", "args", "payload"),
    [
        (_message("/start"), "message", "start", (), None),
        (_message("/start agency-31_71"), "message", "start", ("agency-31_71",), "agency-31_71"),
        (_message("/start not/a/payload"), "message", "start", ("not/a/payload",), None),
        (_message("/start@warta_sim_bot"), "message", "start", (), None),
        (_message("/start@other_bot"), "message", None, (), None),
        (_message("/STOP"), "message", "stop", (), None),
        (_message("/cek K7QX"), "message", "cek", ("K7QX",), None),
        (_message("/cek\nK7QX  extra"), "message", "cek", ("K7QX", "extra"), None),
        (_message("Banjir di RT 5?"), "message", None, (), None),
        (_message(None, photo=[]), "message", None, (), None),
        (_member("kicked"), "blocked", None, (), None),
        (_member("member"), "unblocked", None, (), None),
        (_member("kicked", "group"), "other", None, (), None),
        ({"update_id": 9003, "edited_message": {}}, "other", None, (), None),
    ],
)
def test_parse_update(
    update: dict[str, Any], kind: str, command: str | None, args: tuple[str, ...], payload: Any
) -> None:
    inbound = parse_update(update, bot_username="warta_sim_bot")
    assert (inbound.kind, inbound.command, inbound.args, inbound.start_payload) == (
        kind,
        command,
        args,
        payload,
    )
    if kind in {"message", "blocked", "unblocked"}:
        assert (inbound.chat_id, inbound.chat_type) == (7301234561, update_chat_type(update))
    assert "7301234561" not in repr(inbound)


def update_chat_type(update: dict[str, Any]) -> str:
    body = update.get("message") or update["my_chat_member"]
    return str(body["chat"]["type"])


def test_parse_update_reads_message_fields() -> None:
    inbound = parse_update(_message("/cek K7QX"))
    assert (inbound.update_id, inbound.message_id, inbound.user_id) == (9001, 42, 7301234561)
    assert (inbound.language_code, inbound.text) == ("id", "/cek K7QX")


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ([], "update"),
        ({"message": {}}, "update_id"),
        ({"update_id": "9001"}, "update_id"),
        ({"update_id": True}, "update_id"),
        ({"update_id": 1, "message": "hi"}, "message"),
        ({"update_id": 1, "message": {"chat": {"id": 1, "type": "private"}}}, "message.message_id"),
        ({"update_id": 1, "message": {"message_id": 1}}, "message.chat"),
        (_message("x", chat={"id": "7301234561", "type": "private"}), "message.chat.id"),
        (_message("x", chat={"id": 7301234561}), "message.chat.type"),
        (_message("x", **{"from": {"first_name": "A"}}), "message.from.id"),
        (_message(None, **{"text": 7301234561}), "message.text"),
        ({"update_id": 1, "my_chat_member": {"chat": {"id": 1, "type": "private"}}}, None),
    ],
)
def test_parse_update_errors_name_the_field(update: Any, field: str | None) -> None:
    field = field or "my_chat_member.new_chat_member"
    with pytest.raises(UpdateFieldError) as caught:
        parse_update(update)
    assert caught.value.field == field
    assert repr(field) in str(caught.value)
    assert "7301234561" not in str(caught.value)


# -- the simulator's wire format, webhook and polling --------------------------------------


async def test_simulator_speaks_the_bot_api_envelopes() -> None:
    simulator = TelegramSimulator(
        SimulatorConfig(token=TOKEN, outcomes={C1: "blocked", C2: "throttled"})
    )
    base = await simulator.start()
    bodies: dict[str, tuple[int, Any]] = {}
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "ok-json": (f"/bot{TOKEN}/sendMessage", {"json": {"chat_id": int(C3), "text": "hi"}}),
        "ok-form": (f"/bot{TOKEN}/SENDMESSAGE", {"data": {"chat_id": C4, "text": "hi"}}),
        "blocked": (f"/bot{TOKEN}/sendMessage", {"data": {"chat_id": C1, "text": "hi"}}),
        "throttled": (f"/bot{TOKEN}/sendMessage", {"data": {"chat_id": C2, "text": "hi"}}),
        "empty": (f"/bot{TOKEN}/sendMessage", {"data": {"chat_id": C3, "text": " "}}),
        "wrong-token": ("/bot987654321:AAH-wrong/getMe", {}),
        "malformed-token": ("/botnot-a-token/getMe", {}),
        "unknown-method": (f"/bot{TOKEN}/sendTelepathy", {}),
    }
    try:
        async with aiohttp.ClientSession(base) as session:
            for label, (path, kwargs) in calls.items():
                async with session.post(path, **kwargs) as response:
                    bodies[label] = (response.status, await response.json())
    finally:
        await simulator.stop()
    assert bodies["ok-json"][0] == 200
    assert bodies["ok-json"][1]["result"]["chat"] == {
        "id": int(C3),
        "first_name": "Warga",
        "type": "private",
    }
    assert bodies["ok-form"][1]["result"]["message_id"] == 1
    assert bodies["blocked"] == (
        403,
        {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
    )
    assert bodies["throttled"] == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 5",
            "parameters": {"retry_after": 5},
        },
    )
    assert bodies["empty"][1]["description"] == "Bad Request: message text is empty"
    assert bodies["wrong-token"] == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert bodies["malformed-token"][0] == bodies["unknown-method"][0] == 404
    assert simulator.accepted(C3)[0].params == {"chat_id": C3, "text": "hi"}
    assert simulator.sent_count == {C3: 1, C4: 1}


async def test_citizens_reach_a_webhook_with_the_secret_header() -> None:
    seen: list[Any] = []

    async def webhook(request: web.Request) -> web.Response:
        if not verify_secret_token(request.headers, WEBHOOK_SECRET):
            return web.Response(status=401)
        seen.append(parse_update(await request.json(), bot_username="warta_sim_bot"))
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/callbacks/telegram/webhook", webhook)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    hook_url = f"http://{host}:{port}/callbacks/telegram/webhook"
    simulator = TelegramSimulator(SimulatorConfig(token=TOKEN))
    channel = make_channel(await simulator.start())
    try:
        await channel.register_webhook(hook_url)
        assert simulator.webhook_url == hook_url
        statuses = [
            await simulator.citizen_says(int(C1), "/start agency-31"),
            await simulator.citizen_says(int(C1), "/cek K7QX", language_code="en"),
            await simulator.citizen_blocks(int(C1)),
        ]
        simulator.webhook_secret = "not-the-secret"
        statuses.append(await simulator.citizen_says(int(C1), "forged"))
        await channel.delete_webhook()
    finally:
        await channel.close()
        await simulator.stop()
        await runner.cleanup()
    assert statuses == [200, 200, 200, 401]
    assert [(i.kind, i.command, i.args, i.language_code) for i in seen] == [
        ("message", "start", ("agency-31",), "id"),
        ("message", "cek", ("K7QX",), "en"),
        ("blocked", None, (), None),
    ]
    assert seen[0].start_payload == "agency-31"
    assert simulator.webhook_url is None
    set_call = next(r for r in simulator.received if r.method == "setwebhook")
    assert set_call.params["secret_token"] == WEBHOOK_SECRET


async def test_polling_with_getupdates_and_conflict_while_a_webhook_is_set() -> None:
    from telegram import Bot

    simulator = TelegramSimulator(SimulatorConfig(token=TOKEN))
    base = await simulator.start()
    bot = Bot(TOKEN, base_url=f"{base}/bot")
    try:
        async with bot:
            assert await simulator.citizen_says(int(C1), "/stop") is None  # queued: no webhook
            updates = await bot.get_updates(timeout=0)
            inbound = [parse_update(u.to_dict()) for u in updates]
            assert [(i.kind, i.command, i.chat_id) for i in inbound] == [
                ("message", "stop", int(C1))
            ]
            assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()
            await bot.set_webhook("https://warta.example/callbacks/telegram/webhook")
            with pytest.raises(tg.Conflict) as caught:
                await bot.get_updates(timeout=0)
            assert repr(error_for(caught.value)) == "ConfigError('conflict')"
    finally:
        await simulator.stop()


async def test_no_token_secret_or_chat_id_in_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    labels = {
        "blocked-deactivated-never-started-kicked-stop-the-citizen",
        "429-with-retry-after-raises-throttled",
        "401-bad-token-is-a-config-error",
        "timeout",
        "malformed-chat-id-never-leaves",
        "channel-post-unknown-channel-is-a-config-error",
    }
    runs = [await run_case(case) for case in CASES if case.label in labels]
    texts = [caplog.text]
    for run in runs:
        texts += [repr(run.simulator), repr(run.simulator.config), repr(run.channel)]
        texts += [repr(run.channel._config), repr(run.channel._pacer)]
        texts += [repr(record) for record in run.simulator.received]
        for error in [run.error, *(r.error for r in run.results or [])]:
            if error is not None:
                texts += [str(error), repr(error), repr(error.args)]
                assert (error.__cause__, error.__context__) == (None, None)
        texts += [repr(result) for result in run.results or []]
    secrets = [TOKEN, TOKEN.split(":")[1], "AAH-not-the-token", WEBHOOK_SECRET, C1, C2, C3]
    secrets += [GROUP.lstrip("-"), "not-a-chat"]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "bot<redacted>" in caplog.text  # httpx's request lines were seen, and cleaned
