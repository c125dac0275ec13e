"""The X channel against the X simulator, table by table (real aiohttp, real HTTP)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from unittest.mock import ANY

import pytest

pytest.register_assert_rewrite("tests.support.social_harness")

from channels.base import Channel, OutgoingMessage  # noqa: E402
from channels.x import XChannel, XConfig, weighted_length  # noqa: E402
from channels.x.adapter import retry_after_from_headers  # noqa: E402
from channels.x.simulator import XSimulator, XSimulatorConfig  # noqa: E402
from gateway.domain import DeliveryState  # noqa: E402
from gateway.errors import ConfigError, ConnectionFailed, Throttled  # noqa: E402
from tests.support.social_harness import (  # noqa: E402
    FIXED_NOW,
    Outcome,
    SocialCase,
    check_case,
    post,
    run_and_check,
    run_case,
)

TOKEN = "x-user-token-7d2c41ab90"
OTHER_TOKEN = "x-user-token-other-5e8f"
ACCOUNT, OTHER = "bnpb_indonesia", "bpbd_jakarta"
ALERT = "Peringatan banjir: segera ke tempat tinggi. Info: https://warta.go.id/a/K7QX"
DONE = DeliveryState.DELIVERED
FAILED = DeliveryState.FAILED


class XDriver:
    def simulator(self, outcomes: Mapping[str, str], settings: Mapping[str, Any]) -> XSimulator:
        accounts = {TOKEN: ACCOUNT, OTHER_TOKEN: OTHER}
        config: dict[str, Any] = {"accounts": accounts, "outcomes": outcomes}
        config.update(settings)
        return XSimulator(XSimulatorConfig(**config))

    def channel(self, base_url: str, settings: Mapping[str, Any]) -> Channel:
        config: dict[str, Any] = {
            "accounts": {ACCOUNT: TOKEN, OTHER: OTHER_TOKEN},
            "base_url": base_url,
        }
        config.update(settings)
        return XChannel(XConfig(**config), clock=lambda: FIXED_NOW)

    def requests(self, simulator: XSimulator) -> list[Any]:
        return [(r.username, dict(r.body)) for r in simulator.received]

    def post_url(self, base_url: str, message: OutgoingMessage, post_id: str) -> str:
        return f"https://x.com/{message.recipient}/status/{post_id}"


DRIVER = XDriver()


def sent(delivery_id: int) -> Outcome:
    return Outcome(delivery_id, DONE, ANY)


def failed(delivery_id: int, kind: str, reason: str) -> Outcome:
    return Outcome(delivery_id, FAILED, None, (kind, reason))


def req(text: str, account: str = ACCOUNT) -> tuple[str | None, dict[str, str]]:
    return (account, {"text": text})


TOO_LONG = "a" * 281
CJK_280 = "洪" * 140  # weight 2 each: exactly 280
CJK_282 = "洪" * 141
LONG_LINK = "Info: https://warta.go.id/" + "a" * 300  # 6 + 23 = 29 weighted
EMOJI_280 = "🌊" * 140

CASES = [
    SocialCase(
        label="created-with-post-id-and-url",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        expected_requests=[req(ALERT)],
        expected=[[sent(1)]],
    ),
    SocialCase(
        label="too-long-refused-without-a-request",
        rounds=[[post(1, ACCOUNT, TOO_LONG)]],
        expected_requests=[],
        expected=[[failed(1, "Rejected", "too long")]],
    ),
    SocialCase(
        label="cjk-counts-double",
        rounds=[[post(1, ACCOUNT, CJK_280)], [post(2, ACCOUNT, CJK_282)]],
        expected_requests=[req(CJK_280)],
        expected=[[sent(1)], [failed(2, "Rejected", "too long")]],
    ),
    SocialCase(
        label="a-long-link-counts-23",
        rounds=[[post(1, ACCOUNT, LONG_LINK)], [post(2, ACCOUNT, EMOJI_280)]],
        expected_requests=[req(LONG_LINK), req(EMOJI_280)],
        expected=[[sent(1)], [sent(2)]],
    ),
    SocialCase(
        label="duplicate-content",
        rounds=[[post(1, ACCOUNT, ALERT)], [post(2, ACCOUNT, ALERT)]],
        expected_requests=[req(ALERT), req(ALERT)],
        expected=[[sent(1)], [failed(2, "Rejected", "duplicate")]],
    ),
    SocialCase(
        label="same-text-on-two-accounts-is-no-duplicate",
        rounds=[[post(1, ACCOUNT, ALERT), post(2, OTHER, ALERT)]],
        expected_requests=[req(ALERT), req(ALERT, OTHER)],
        expected=[[sent(1), sent(2)]],
    ),
    SocialCase(
        label="429-retry-after-from-reset-header",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "throttled"},
        simulator={"reset_at": int(FIXED_NOW) + 42},
        expected_requests=[req(ALERT)],
        expected=[Throttled("HTTP 429", retry_after=42.0)],
    ),
    SocialCase(
        label="window-limit-gives-a-natural-429",
        rounds=[[post(1, ACCOUNT, ALERT)], [post(2, ACCOUNT, "All clear.")]],
        simulator={"window_limit": 1, "reset_at": int(FIXED_NOW) + 900},
        expected_requests=[req(ALERT), req("All clear.")],
        expected=[[sent(1)], Throttled("HTTP 429", retry_after=900.0)],
    ),
    SocialCase(
        label="401-wrong-token",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        channel={"accounts": {ACCOUNT: "not-the-token"}},
        expected_requests=[(None, {"text": ALERT})],
        expected=[ConfigError("authentication refused (HTTP 401)")],
    ),
    SocialCase(
        label="403-app-not-allowed",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "forbidden"},
        expected_requests=[req(ALERT)],
        expected=[ConfigError("not allowed to post (HTTP 403)")],
    ),
    SocialCase(
        label="400-invalid-request",
        rounds=[[post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "invalid_request"},
        expected_requests=[req(ALERT)],
        expected=[[failed(1, "Rejected", "invalid request")]],
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
        label="lost-answer-then-retry-meets-the-duplicate-check",
        rounds=[[post(1, ACCOUNT, ALERT)], [post(1, ACCOUNT, ALERT)]],
        outcomes={ALERT: "created_then_timeout"},
        channel={"request_timeout": 0.3},
        expected_requests=[req(ALERT), req(ALERT)],
        expected=[ConnectionFailed("timeout"), [failed(1, "Rejected", "duplicate")]],
    ),
    SocialCase(
        label="unconfigured-account",
        rounds=[[post(1, "someone_else", ALERT)]],
        expected_requests=[],
        expected=[ConfigError("no token configured for this X account")],
    ),
    SocialCase(
        label="empty-text",
        rounds=[[post(1, ACCOUNT, "  ")]],
        expected_requests=[],
        expected=[[failed(1, "Rejected", "empty")]],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_x_send_table(case: SocialCase) -> None:
    await run_and_check(DRIVER, case)


async def test_created_post_is_in_the_simulator_under_its_id() -> None:
    run = await run_and_check(DRIVER, CASES[0])
    (answer,) = run.answers
    assert not isinstance(answer, Exception)
    (result,) = answer
    assert run.simulator.posts == {result.provider_message_id: (ACCOUNT, ALERT)}


async def test_lost_answer_posts_once() -> None:
    case = next(c for c in CASES if c.label.startswith("lost-answer"))
    run = await run_and_check(DRIVER, case)
    assert run.simulator.posts_by_account[ACCOUNT] == 1


async def test_harness_fails_on_an_unexpected_request() -> None:
    case = SocialCase("unexpected", [[post(1, ACCOUNT, ALERT)]], [], [[sent(1)]])
    run = await run_case(DRIVER, case)
    with pytest.raises(AssertionError, match="other requests"):
        check_case(DRIVER, case, run)


async def test_harness_fails_on_a_canned_outcome_nobody_used() -> None:
    case = SocialCase(
        "unused",
        [[post(1, ACCOUNT, ALERT)]],
        [req(ALERT)],
        [[sent(1)]],
        outcomes={"never posted": "server_error"},
    )
    run = await run_case(DRIVER, case)
    with pytest.raises(AssertionError, match="never used"):
        check_case(DRIVER, case, run)


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"x-rate-limit-reset": str(int(FIXED_NOW) + 30)}, 30.0),
        ({"x-rate-limit-reset": str(int(FIXED_NOW) - 5)}, 0.0),
        (
            {
                "x-rate-limit-reset": str(int(FIXED_NOW) + 30),
                "x-user-limit-24hour-remaining": "0",
                "x-user-limit-24hour-reset": str(int(FIXED_NOW) + 7200),
            },
            7200.0,
        ),
        ({"x-rate-limit-reset": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], retry_after: float | None) -> None:
    assert retry_after_from_headers(headers, FIXED_NOW) == retry_after


WEIGHTS = [
    ("ascii", "Flood warning.", 14),
    ("empty", "", 0),
    ("url-with-scheme", "https://warta.go.id/a/K7QX", 23),
    ("long-url", "https://warta.go.id/" + "x" * 200, 23),
    ("bare-domain", "see bnpb.go.id now", 31),
    ("bare-short-cctld-is-not-a-link", "foo.jp", 6),
    ("t.co-is-a-link", "t.co", 23),
    ("trailing-full-stop-outside-the-link", "https://warta.go.id/a.", 24),
    ("email-is-not-a-link", "info@bnpb.go.id", 15),
    ("two-links", "a https://x.com b https://y.org", 51),
    ("unknown-tld-with-scheme-counts-at-least-23", "https://a.zz", 23),
    ("unknown-tld-long", "https://warta.example/a/K7QX", 28),
    ("cjk", "洪水警報", 8),
    ("hangul", "홍수", 4),
    ("arabic-weighs-1", "فيضان", 5),
    ("thai-with-marks", "น้ำท่วม", 7),
    ("emoji", "🌊", 2),
    ("emoji-skin-tone", "👋🏽", 2),
    ("emoji-zwj-family", "👨\u200d👩\u200d👧\u200d👦", 2),
    ("flag", "🇮🇩", 2),
    ("keycap", "1\ufe0f\u20e3", 2),
    ("copyright-text-style", "©", 1),
    ("combining-acute-nfc", "e\u0301", 1),
    ("combining-without-precomposed", "q\u0307", 2),
    ("nfc-expands-hebrew", "A\ufb2c", 4),
    ("general-punctuation-ellipsis-weighs-2", "\u2014\u201c\u2026", 4),
    ("mixed", "H🐱☺👨\u200d👩\u200d👧\u200d👦", 7),
]


@pytest.mark.parametrize(("text", "weight"), [w[1:] for w in WEIGHTS], ids=[w[0] for w in WEIGHTS])
def test_weighted_length(text: str, weight: int) -> None:
    assert weighted_length(text) == weight


def test_limits_are_declared() -> None:
    assert (XChannel.name, XChannel.reach, XChannel.max_length, XChannel.batch_size) == (
        "x",
        "social",
        280,
        1,
    )
    assert XChannel.status_map == {"created": DONE}


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
    config = XConfig(accounts={ACCOUNT: TOKEN})
    texts += [repr(config), str(config), repr(XChannel(config))]
    for text in texts:
        for secret in (TOKEN, OTHER_TOKEN, "not-the-token"):
            assert secret not in text
