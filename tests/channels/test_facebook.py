"""The Facebook Page channel against the Meta simulator, table by table (real client, real HTTP)."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest

from channels.facebook import FacebookChannel, FacebookConfig, first_link
from channels.meta.simulator import MetaSimulator
from gateway.domain import DeliveryState
from gateway.errors import ConfigError, ConnectionFailed, Throttled
from tests.support.meta_harness import (
    PAGE2_ID,
    PAGE2_TOKEN,
    PAGE_ID,
    PAGE_TOKEN,
    SECRETS,
    MetaCase,
    Outcome,
    fb_request,
    messages,
    run_and_check,
    run_case,
    simulator_config,
)

DELIVERED = DeliveryState.DELIVERED
FAILED = DeliveryState.FAILED
LINK = "https://warta.example/a/K7QX"
ALERT = f"Peringatan banjir di Kecamatan Utara. Segera mengungsi. Info: {LINK}."
PLAIN = "Listrik padam pukul 10.00-14.00 di wilayah timur."


def posted(delivery_id: int, seq: int, page_id: str = PAGE_ID) -> Outcome:
    post = 100000 + seq
    return Outcome(
        delivery_id,
        DELIVERED,
        f"{page_id}_{post}",
        f"https://www.facebook.com/{page_id}/posts/{post}",
    )


def failed(delivery_id: int, kind: str, reason: str) -> Outcome:
    return Outcome(delivery_id, FAILED, None, None, (kind, reason))


def one(outcome: str, error: Any, **extra: Any) -> MetaCase:
    """A single post to PAGE_ID whose request gets ``outcome`` and must raise ``error``."""
    return MetaCase(
        label=outcome,
        batch=messages([PAGE_ID], PLAIN),
        outcomes={PAGE_ID: outcome},
        expected_requests=[fb_request(PAGE_ID, PLAIN)],
        expected_error=error,
        **extra,
    )


CASES = [
    MetaCase(
        label="post-with-link-gives-post-id-and-url",
        batch=messages([PAGE_ID], ALERT),
        expected_requests=[fb_request(PAGE_ID, ALERT, LINK)],
        expected_results=[posted(1, 1)],
    ),
    MetaCase(
        label="post-without-link",
        batch=messages([PAGE_ID], PLAIN),
        expected_requests=[fb_request(PAGE_ID, PLAIN)],
        expected_results=[posted(1, 1)],
    ),
    MetaCase(
        label="attach-link-off",
        batch=messages([PAGE_ID], ALERT),
        channel={"attach_link": False},
        expected_requests=[fb_request(PAGE_ID, ALERT)],
        expected_results=[posted(1, 1)],
    ),
    MetaCase(
        label="two-pages-in-one-batch",
        batch=messages([PAGE_ID, PAGE2_ID], PLAIN),
        channel={"batch_size": 2},
        expected_requests=[fb_request(PAGE_ID, PLAIN), fb_request(PAGE2_ID, PLAIN)],
        expected_results=[Outcome(1, DELIVERED, ANY, ANY), Outcome(2, DELIVERED, ANY, ANY)],
    ),
    MetaCase(
        label="policy-block-368-rejects-this-post",
        batch=messages([PAGE_ID], PLAIN),
        outcomes={PAGE_ID: "policy_block"},
        expected_requests=[fb_request(PAGE_ID, PLAIN)],
        expected_results=[failed(1, "Rejected", "policy_block (#368)")],
    ),
    MetaCase(
        label="duplicate-post-506",
        batch=messages([PAGE_ID], PLAIN),
        outcomes={PAGE_ID: "duplicate_post"},
        expected_requests=[fb_request(PAGE_ID, PLAIN)],
        expected_results=[failed(1, "Rejected", "duplicate_post (#506)")],
    ),
    one("token_invalid", ConfigError("access_token_invalid (#190)")),
    one("permission_denied", ConfigError("permission (#200)")),
    one("app_rate_limit", Throttled("app_rate_limit (#4)", retry_after=60.0)),
    one("user_rate_limit", Throttled("user_rate_limit (#17)", retry_after=60.0)),
    one("page_rate_limit", Throttled("page_rate_limit (#32)", retry_after=60.0)),
    one("custom_rate_limit", Throttled("custom_rate_limit (#613)", retry_after=60.0)),
    one(
        "throttled",
        Throttled("app_rate_limit (#4)", retry_after=5.0),
        simulator={"retry_after_seconds": 5},
    ),
    one("api_service", ConnectionFailed("api_service (#2)")),
    one("server_error", ConnectionFailed("http_502")),
    one("timeout", ConnectionFailed("timeout"), channel={"request_timeout": 0.3}),
    MetaCase(
        label="wrong-page-token-is-a-permission-error",
        batch=messages([PAGE_ID], PLAIN),
        channel={"page_tokens": {PAGE_ID: PAGE2_TOKEN}},
        expected_requests=[fb_request(PAGE_ID, PLAIN)],
        expected_error=ConfigError("permission (#200)"),
    ),
    MetaCase(
        label="unknown-token",
        batch=messages([PAGE_ID], PLAIN),
        channel={"page_tokens": {PAGE_ID: "EAAnot-a-page-token"}},
        expected_requests=[fb_request(PAGE_ID, PLAIN)],
        expected_error=ConfigError("access_token_invalid (#190)"),
    ),
    MetaCase(
        label="page-unknown-to-graph",
        batch=messages(["310000000000009"], PLAIN),
        channel={"page_tokens": {"310000000000009": PAGE_TOKEN}},
        expected_requests=[fb_request("310000000000009", PLAIN)],
        expected_error=ConfigError("object_not_found (#100)"),
    ),
    MetaCase(
        label="one-page-fails-the-other-posts",
        batch=messages([PAGE_ID, PAGE2_ID], PLAIN),
        channel={"batch_size": 2},
        outcomes={PAGE_ID: "server_error"},
        expected_requests=[fb_request(PAGE_ID, PLAIN), fb_request(PAGE2_ID, PLAIN)],
        expected_results=[failed(1, "ConnectionFailed", "http_502"), posted(2, 1, PAGE2_ID)],
    ),
    MetaCase(
        label="local-refusals-never-leave",
        batch=[
            *messages(["warta.official"], PLAIN),
            *messages(["310000000000777"], PLAIN, first_id=2),
            *messages([PAGE_ID], "x" * 63_207, first_id=3),
            *messages([PAGE2_ID], "   ", first_id=4),
        ],
        channel={"batch_size": 4},
        expected_requests=[],
        expected_results=[
            failed(1, "Rejected", "invalid_page_id"),
            failed(2, "ConfigError", "no_page_token"),
            failed(3, "Rejected", "text_too_long"),
            failed(4, "Rejected", "empty_text"),
        ],
    ),
    MetaCase(
        label="longest-post-allowed",
        batch=messages([PAGE_ID], "x" * 63_206),
        expected_requests=[fb_request(PAGE_ID, "x" * 63_206)],
        expected_results=[posted(1, 1)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_facebook_send_table(case: MetaCase) -> None:
    await run_and_check(case, "facebook")


async def test_simulator_takes_json_and_access_token_parameter() -> None:
    simulator = MetaSimulator(simulator_config())
    base_url = await simulator.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base_url}/v23.0/{PAGE_ID}/feed",
                params={"access_token": PAGE_TOKEN},
                json={"message": PLAIN},
            ) as response,
        ):
            assert (response.status, await response.json()) == (200, {"id": f"{PAGE_ID}_100001"})
    finally:
        await simulator.stop()
    (record,) = simulator.received
    assert (record.token_source, dict(record.body)) == ("param", {"message": PLAIN})


@pytest.mark.parametrize(
    ("text", "link"),
    [
        (ALERT, LINK),
        ("See (https://a.example/x?y=1), then http://b.example", "https://a.example/x?y=1"),
        (PLAIN, None),
    ],
)
def test_first_link(text: str, link: str | None) -> None:
    assert first_link(text) == link


def test_post_url() -> None:
    channel = FacebookChannel(FacebookConfig(page_tokens={PAGE_ID: PAGE_TOKEN}))
    assert channel.post_url(f"{PAGE_ID}_42") == f"https://www.facebook.com/{PAGE_ID}/posts/42"
    assert channel.post_url("42") == "https://www.facebook.com/42"


def test_limits_and_config() -> None:
    assert (FacebookChannel.name, FacebookChannel.reach, FacebookChannel.max_length) == (
        "facebook",
        "social",
        63_206,
    )
    assert FacebookChannel.batch_size == 1
    with pytest.raises(ValueError, match="page_tokens"):
        FacebookConfig(page_tokens={"warta.official": PAGE_TOKEN})


async def test_no_page_token_in_logs_errors_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    labels = {"token_invalid", "unknown-token", "timeout", "throttled", "server_error"}
    runs = [await run_case(case, "facebook") for case in CASES if case.label in labels]
    texts = [caplog.text]
    for run in runs:
        texts += [repr(run.simulator), repr(run.simulator.config), repr(run.channel)]
        texts += [repr(record) for record in run.simulator.received]
        if run.error is not None:
            texts += [str(run.error), repr(run.error), repr(run.error.args)]
        for result in run.results or []:
            texts.append(repr(result))
    config = FacebookConfig(page_tokens={PAGE_ID: PAGE_TOKEN, PAGE2_ID: PAGE2_TOKEN})
    texts += [repr(config), repr(FacebookChannel(config))]
    for text in texts:
        for secret in (*SECRETS, "EAAnot-a-page-token"):
            assert secret not in text
