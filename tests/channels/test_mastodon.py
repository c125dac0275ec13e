"""The Mastodon channel against the Mastodon simulator, table by table (real aiohttp, HTTP)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from unittest.mock import ANY

import pytest

pytest.register_assert_rewrite("tests.support.social_harness")

from channels.base import Channel, OutgoingMessage  # noqa: E402
from channels.mastodon import MastodonChannel, MastodonConfig, status_length  # noqa: E402
from channels.mastodon.adapter import retry_after_from_reset  # noqa: E402
from channels.mastodon.simulator import MastodonSimulator, MastodonSimulatorConfig  # noqa: E402
from channels.mastodon.textcount import grapheme_count  # noqa: E402
from gateway.domain import DeliveryState  # noqa: E402
from gateway.errors import ConfigError, ConnectionFailed, Throttled  # noqa: E402
from tests.support.social_harness import (  # noqa: E402
    FIXED_NOW,
    Outcome,
    SocialCase,
    post,
    run_and_check,
    run_case,
)

TOKEN = "mastodon-token-3b9e77c1d0"
ACCOUNT = "bpbd"
ALERT = "Peringatan banjir: segera ke tempat tinggi. Info: https://warta.go.id/a/K7QX"
DONE = DeliveryState.DELIVERED
FAILED = DeliveryState.FAILED


class MastodonDriver:
    def simulator(
        self, outcomes: Mapping[str, str], settings: Mapping[str, Any]
    ) -> MastodonSimulator:
        config: dict[str, Any] = {"accounts": {TOKEN: ACCOUNT}, "outcomes": outcomes}
        config.update(settings)
        return MastodonSimulator(MastodonSimulatorConfig(**config))

    def channel(self, base_url: str, settings: Mapping[str, Any]) -> Channel:
        config: dict[str, Any] = {"base_url": base_url, "accounts": {ACCOUNT: TOKEN}}
        config.update(settings)
        return MastodonChannel(MastodonConfig(**config), clock=lambda: FIXED_NOW)

    def requests(self, simulator: MastodonSimulator) -> list[Any]:
        return [(r.account, r.idempotency_key, dict(r.fields)) for r in simulator.received]

    def post_url(self, base_url: str, message: OutgoingMessage, post_id: str) -> str:
        return f"{base_url}/@{message.recipient}/{post_id}"


DRIVER = MastodonDriver()


def sent(delivery_id: int, post_id: Any = ANY) -> Outcome:
    return Outcome(delivery_id, DONE, post_id)


def failed(delivery_id: int, kind: str, reason: str) -> Outcome:
    return Outcome(delivery_id, FAILED, None, (kind, reason))


def req(text: str, key: str = "warta-1", account: str | None = ACCOUNT) -> Any:
    return (account, key, {"status": text, "visibility": "public", "language": "id"})


TEXT_501 = "a" * 501
TEXT_800 = "b" * 800
LINKED_500 = "c" * 476 + " https://warta.go.id/" + "d" * 200  # 476 + 1 + 23 = 500
FAMILIES_500 = "👨\u200d👩\u200d👧\u200d👦" * 500  # 500 grapheme clusters

CASES = [
    SocialCase(
        label="created-with-id-and-url",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        expected_requests=[req(ALERT)],
        expected=[[sent(1)]],
    ),
    SocialCase(
        label="too-long-refused-without-a-request",
        rounds=[[post(1, ACCOUNT, TEXT_501)]],
        expected_requests=[],
        expected=[[failed(1, "Rejected", "too long")]],
    ),
    SocialCase(
        label="links-count-23-and-emoji-families-1",
        rounds=[[post(1, ACCOUNT, LINKED_500)], [post(2, ACCOUNT, FAMILIES_500)]],
        expected_requests=[req(LINKED_500), req(FAMILIES_500, key="warta-2")],
        expected=[[sent(1)], [sent(2)]],
    ),
    SocialCase(
        label="server-limit-read-from-instance",
        rounds=[[post(1, ACCOUNT, TEXT_800)]],
        simulator={"max_characters": 1000},
        expected_requests=[req(TEXT_800)],
        expected=[[sent(1)]],
    ),
    SocialCase(
        label="422-character-limit",
        rounds=[[post(1, ACCOUNT, TEXT_800)]],
        channel={"max_characters": 1000, "discover_limits": False},
        expected_requests=[req(TEXT_800)],
        expected=[[failed(1, "Rejected", "too long")]],
    ),
    SocialCase(
        label="429-retry-after-from-iso-reset",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "throttled"},
        simulator={"reset_at": FIXED_NOW + 42},
        expected_requests=[req(ALERT)],
        expected=[Throttled("HTTP 429", retry_after=42.0)],
    ),
    SocialCase(
        label="401-wrong-token",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        channel={"accounts": {ACCOUNT: "not-the-token"}},
        expected_requests=[req(ALERT, account=None)],
        expected=[ConfigError("authentication refused (HTTP 401)")],
    ),
    SocialCase(
        label="403-forbidden",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "forbidden"},
        expected_requests=[req(ALERT)],
        expected=[ConfigError("authentication refused (HTTP 403)")],
    ),
    SocialCase(
        label="5xx",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "server_error"},
        expected_requests=[req(ALERT)],
        expected=[ConnectionFailed("HTTP 503")],
    ),
    SocialCase(
        label="timeout",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "timeout"},
        channel={"request_timeout": 0.3},
        expected_requests=[req(ALERT)],
        expected=[ConnectionFailed("timeout")],
    ),
    SocialCase(
        label="lost-answer-then-retry-returns-the-same-status",
        rounds=[[post(1, ACCOUNT, ALERT)], [post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "created_then_timeout"},
        channel={"request_timeout": 0.3},
        expected_requests=[req(ALERT), req(ALERT)],
        expected=[ConnectionFailed("timeout"), [sent(1)]],
    ),
    SocialCase(
        label="sent-twice-with-one-key-creates-one-status",
        rounds=[[post(1, ACCOUNT, ALERT)], [post(1, ACCOUNT, ALERT)]],
        expected_requests=[req(ALERT), req(ALERT)],
        expected=[[sent(1)], [sent(1)]],
    ),
    SocialCase(
        label="unconfigured-account",
        rounds=[[post(1, "someone_else", ALERT)]],
        expected_requests=[],
        expected=[ConfigError("no token configured for this Mastodon account")],
    ),
    SocialCase(
        label="blank",
        rounds=[[post(1, ACCOUNT, "\n ")]],
        expected_requests=[],
        expected=[[failed(1, "Rejected", "empty")]],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_mastodon_send_table(case: SocialCase) -> None:
    await run_and_check(DRIVER, case)


@pytest.mark.parametrize(
    "label",
    [
        "lost-answer-then-retry-returns-the-same-status",
        "sent-twice-with-one-key-creates-one-status",
    ],
)
async def test_a_retry_creates_one_status(label: str) -> None:
    run = await run_and_check(DRIVER, next(c for c in CASES if c.label == label))
    assert run.simulator.statuses_by_account[ACCOUNT] == 1
    (status_id,) = run.simulator.statuses
    last = run.answers[-1]
    assert not isinstance(last, Exception)
    assert [r.provider_message_id for r in last] == [status_id]


async def test_a_new_key_creates_a_new_status() -> None:
    case = SocialCase(
        "new-key",
        [[post(1, ACCOUNT, ALERT)], [post(2, ACCOUNT, ALERT)]],
        [req(ALERT), req(ALERT, key="warta-2")],
        [[sent(1)], [sent(2)]],
    )
    run = await run_and_check(DRIVER, case)
    assert run.simulator.statuses_by_account[ACCOUNT] == 2


async def test_discovered_limits_are_kept_on_the_channel() -> None:
    simulator = MastodonSimulator(
        MastodonSimulatorConfig(accounts={TOKEN: ACCOUNT}, max_characters=5000)
    )
    base_url = await simulator.start()
    channel = MastodonChannel(MastodonConfig(base_url=base_url, accounts={ACCOUNT: TOKEN}))
    try:
        await channel.start()
        assert (channel.max_characters, channel.characters_per_url) == (5000, 23)
        assert MastodonChannel.max_length == 500
    finally:
        await channel.close()
        await simulator.stop()


@pytest.mark.parametrize(
    ("value", "retry_after"),
    [
        ("2023-11-14T22:14:02.000Z", 42.0),
        ("2023-11-14T22:13:00+00:00", 0.0),
        ("tomorrow", None),
        ("2023-11-14T22:14:02", None),
        (None, None),
    ],
)
def test_retry_after_from_reset(value: str | None, retry_after: float | None) -> None:
    assert retry_after_from_reset(value, FIXED_NOW) == retry_after


LENGTHS = [
    ("ascii", "Flood warning.", 14),
    ("link-23", "Info: https://warta.go.id/" + "x" * 100, 29),
    ("bare-domain-is-text", "see bnpb.go.id", 14),
    ("cjk-counts-1", "洪水警報", 4),
    ("emoji-family-1", "👨\u200d👩\u200d👧\u200d👦", 1),
    ("flags", "🇮🇩🇯🇵", 2),
    ("combining-marks", "e\u0301q\u0307", 2),
    ("thai-cluster", "น้ำ", 2),
    ("crlf-1", "a\r\nb", 3),
]


@pytest.mark.parametrize(("text", "length"), [x[1:] for x in LENGTHS], ids=[x[0] for x in LENGTHS])
def test_status_length(text: str, length: int) -> None:
    assert status_length(text) == length


def test_grapheme_count_of_keycap_and_skin_tone() -> None:
    assert grapheme_count("1\ufe0f\u20e3👋🏽") == 2


def test_limits_are_declared() -> None:
    assert (MastodonChannel.name, MastodonChannel.reach, MastodonChannel.max_length) == (
        "mastodon",
        "social",
        500,
    )
    assert MastodonChannel.batch_size == 1
    assert MastodonChannel.status_map == {"created": DONE}


async def test_no_token_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    runs = [await run_case(DRIVER, case) for case in CASES]
    texts = [caplog.text]
    for run in runs:
        texts += [repr(run.simulator), repr(run.simulator.config), repr(run.channel)]
        texts += [repr(record) for record in run.simulator.received]
        for answer in run.answers:
            if isinstance(answer, Exception):
                texts += [str(answer), repr(answer), repr(answer.args)]
            else:
                texts += [repr(result) for result in answer]
    config = MastodonConfig(base_url="https://m.example", accounts={ACCOUNT: TOKEN})
    texts += [repr(config), str(config), repr(MastodonChannel(config))]
    for text in texts:
        for secret in (TOKEN, "not-the-token"):
            assert secret not in text
