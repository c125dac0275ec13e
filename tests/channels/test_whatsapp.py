"""The WhatsApp channel against the Meta simulator, table by table (real client, real HTTP).

Also: the shared Meta signature check and subscription handshake, the status webhook parser,
signed status webhooks from the simulator end to end, and no secrets or numbers in logs.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import pytest
from aiohttp import web

from channels.base import DeliveryReport
from channels.meta.errors import GraphError, classify
from channels.meta.signature import SIGNATURE_HEADER, sign, verify_signature, verify_subscription
from channels.meta.simulator import MetaSimulator
from channels.whatsapp import (
    WebhookFieldError,
    WhatsAppChannel,
    WhatsAppConfig,
    error_for_code,
    parse_status_webhook,
    parse_status_webhook_body,
    template_parameter_text,
)
from channels.whatsapp.status import ERROR_RULES
from gateway.domain import DeliveryState
from gateway.errors import ConfigError, ConnectionFailed, RecipientStopped, Rejected, Throttled
from tests.support.meta_harness import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    SECRETS,
    VERIFY_TOKEN,
    WA_TOKEN,
    MetaCase,
    Outcome,
    check_case,
    messages,
    run_and_check,
    run_case,
    simulator_config,
    wa_request,
    wamid,
    whatsapp_channel,
)

SENT = DeliveryState.SENT
DELIVERED = DeliveryState.DELIVERED
FAILED = DeliveryState.FAILED
ALERT = "Peringatan banjir: segera mengungsi ke tempat tinggi. Info: https://warta.example/a/K7QX"
N1, N2, N3, N4, N5, N6 = (f"+62811000000{i}" for i in range(1, 7))
NUMBERS = (N1, N2, N3, N4, N5, N6)


def req(to: str, delivery_id: int, text: str = ALERT, language: str = "id") -> Any:
    return wa_request(to, text, key=f"warta-{delivery_id}", language=language)


def sent(delivery_id: int, seq: int) -> Outcome:
    return Outcome(delivery_id, SENT, wamid(seq))


def failed(delivery_id: int, kind: str, reason: str) -> Outcome:
    return Outcome(delivery_id, FAILED, None, None, (kind, reason))


CASES = [
    MetaCase(
        label="one-template-message-sent",
        batch=messages([N1], ALERT),
        expected_requests=[req(N1, 1)],
        expected_results=[sent(1, 1)],
    ),
    MetaCase(
        label="batch-of-three-sent-concurrently",
        batch=messages([N1, N2, N3], ALERT),
        channel={"batch_size": 3},
        expected_requests=[req(N1, 1), req(N2, 2), req(N3, 3)],
        expected_results=[Outcome(i, SENT, ANY) for i in (1, 2, 3)],
    ),
    MetaCase(
        label="whitespace-flattened-for-the-template-parameter",
        batch=messages([N1], "Banjir!\n\nSegera   mengungsi\tsekarang.  "),
        expected_requests=[req(N1, 1, text="Banjir! Segera mengungsi sekarang.")],
        expected_results=[sent(1, 1)],
    ),
    MetaCase(
        label="language-code-from-config-and-default",
        batch=[
            *messages([N1], ALERT, language="en"),
            *messages([N2], ALERT, first_id=2, language="jv"),
        ],
        channel={"batch_size": 2},
        expected_requests=[req(N1, 1, language="en_US"), req(N2, 2, language="id")],
        expected_results=[Outcome(1, SENT, ANY), Outcome(2, SENT, ANY)],
    ),
    MetaCase(
        label="recipient-errors-carried-per-message",
        batch=messages(list(NUMBERS), ALERT),
        channel={"batch_size": 6},
        outcomes={
            N2: "undeliverable",
            N3: "stopped_marketing",
            N4: "outside_window",
            N5: "not_delivered_ecosystem",
            N6: "pair_rate_limit",
        },
        expected_requests=[req(n, i) for i, n in enumerate(NUMBERS, 1)],
        expected_results=[
            Outcome(1, SENT, ANY),
            failed(2, "Rejected", "undeliverable (#131026)"),
            failed(3, "RecipientStopped", "stopped_marketing (#131050)"),
            failed(4, "Rejected", "outside_window (#131047)"),
            failed(5, "Rejected", "not_delivered_ecosystem (#131049)"),
            failed(6, "Throttled", "pair_rate_limit (#131056)"),
        ],
    ),
    MetaCase(
        label="unsupported-message-type",
        batch=messages([N1], ALERT),
        outcomes={N1: "unsupported_message_type"},
        expected_requests=[req(N1, 1)],
        expected_results=[failed(1, "Rejected", "unsupported_message_type (#131051)")],
    ),
    MetaCase(
        label="throughput-limit-raises-throttled",
        batch=messages([N1], ALERT),
        outcomes={N1: "throughput_limit"},
        expected_requests=[req(N1, 1)],
        expected_error=Throttled("throughput_limit (#130429)", retry_after=1.0),
    ),
    MetaCase(
        label="spam-rate-limit-waits-long",
        batch=messages([N1], ALERT),
        outcomes={N1: "spam_rate_limit"},
        expected_requests=[req(N1, 1)],
        expected_error=Throttled("spam_rate_limit (#131048)", retry_after=3600.0),
    ),
    MetaCase(
        label="business-account-rate-limit",
        batch=messages([N1], ALERT),
        outcomes={N1: "waba_rate_limit"},
        expected_requests=[req(N1, 1)],
        expected_error=Throttled("waba_rate_limit (#80007)", retry_after=60.0),
    ),
    MetaCase(
        label="http-429-with-retry-after",
        batch=messages([N1], ALERT),
        outcomes={N1: "throttled"},
        simulator={"retry_after_seconds": 7},
        expected_requests=[req(N1, 1)],
        expected_error=Throttled("app_rate_limit (#4)", retry_after=7.0),
    ),
    MetaCase(
        label="wrong-access-token",
        batch=messages([N1], ALERT),
        channel={"access_token": "EAAnot-the-token"},
        expected_requests=[req(N1, 1)],
        expected_error=ConfigError("access_token_invalid (#190)"),
    ),
    MetaCase(
        label="permission-missing",
        batch=messages([N1], ALERT),
        outcomes={N1: "permission_denied"},
        expected_requests=[req(N1, 1)],
        expected_error=ConfigError("permission (#200)"),
    ),
    MetaCase(
        label="unknown-phone-number-id",
        batch=messages([N1], ALERT),
        channel={"phone_number_id": "999"},
        expected_requests=[("999", req(N1, 1)[1])],
        expected_error=ConfigError("object_not_found (#100)"),
    ),
    MetaCase(
        label="template-language-not-approved",
        batch=messages([N1], ALERT, language="en"),
        channel={"template_languages": {"en": "en_GB"}},
        expected_requests=[req(N1, 1, language="en_GB")],
        # A template is one language's: the message fails for itself, and the channel is not
        # held as it is for an account problem (gateway.outbox.dispatcher).
        expected_results=[failed(1, "ConfigError", "template_missing (#132001)")],
    ),
    MetaCase(
        label="template-paused",
        batch=messages([N1], ALERT),
        outcomes={N1: "template_paused"},
        expected_requests=[req(N1, 1)],
        expected_results=[failed(1, "ConfigError", "template_paused (#132015)")],
    ),
    MetaCase(
        label="whatsapp-policy-block-restricts-the-account",
        batch=messages([N1], ALERT),
        outcomes={N1: "policy_block"},
        expected_requests=[req(N1, 1)],
        expected_error=ConfigError("account_restricted (#368)"),
    ),
    MetaCase(
        label="graph-500-something-went-wrong",
        batch=messages([N1], ALERT),
        outcomes={N1: "internal_error"},
        expected_requests=[req(N1, 1)],
        expected_error=ConnectionFailed("something_went_wrong (#131000)"),
    ),
    MetaCase(
        label="graph-503-service",
        batch=messages([N1], ALERT),
        outcomes={N1: "api_service"},
        expected_requests=[req(N1, 1)],
        expected_error=ConnectionFailed("api_service (#2)"),
    ),
    MetaCase(
        label="bare-502-without-graph-body",
        batch=messages([N1], ALERT),
        outcomes={N1: "server_error"},
        expected_requests=[req(N1, 1)],
        expected_error=ConnectionFailed("http_502"),
    ),
    MetaCase(
        label="timeout",
        batch=messages([N1], ALERT),
        outcomes={N1: "timeout"},
        channel={"request_timeout": 0.3},
        expected_requests=[req(N1, 1)],
        expected_error=ConnectionFailed("timeout"),
    ),
    MetaCase(
        label="one-of-two-fails-on-the-server-the-other-sent",
        batch=messages([N1, N2], ALERT),
        channel={"batch_size": 2},
        outcomes={N1: "server_error"},
        expected_requests=[req(N1, 1), req(N2, 2)],
        expected_results=[failed(1, "ConnectionFailed", "http_502"), Outcome(2, SENT, ANY)],
    ),
    MetaCase(
        label="invalid-number-and-empty-and-long-text-never-leave",
        batch=[
            *messages(["0811000001"], ALERT),
            *messages([N2], " \n ", first_id=2),
            *messages([N3], "x" * 1025, first_id=3),
            *messages([N4], ALERT, first_id=4),
        ],
        channel={"batch_size": 4},
        expected_requests=[req(N4, 4)],
        expected_results=[
            failed(1, "Rejected", "invalid_phone_number"),
            failed(2, "Rejected", "empty_text"),
            failed(3, "Rejected", "text_too_long"),
            sent(4, 1),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_whatsapp_send_table(case: MetaCase) -> None:
    await run_and_check(case, "whatsapp")


async def test_named_template_parameter() -> None:
    _, body = req(N1, 1)
    body["template"]["components"][0]["parameters"][0]["parameter_name"] = "announcement"
    case = MetaCase(
        label="named",
        batch=messages([N1], ALERT),
        channel={"parameter_name": "announcement"},
        expected_requests=[(PHONE_NUMBER_ID, body)],
        expected_results=[sent(1, 1)],
    )
    await run_and_check(case, "whatsapp")


async def test_token_accepted_as_access_token_parameter_by_the_simulator() -> None:
    import aiohttp

    simulator = MetaSimulator(simulator_config())
    base_url = await simulator.start()
    try:
        _, body = req(N1, 1)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base_url}/v23.0/{PHONE_NUMBER_ID}/messages",
                params={"access_token": WA_TOKEN},
                json=body,
            ) as response,
        ):
            assert response.status == 200
    finally:
        await simulator.stop()
    (record,) = simulator.received
    assert record.token_source == "param"


async def test_harness_fails_on_unused_outcome_and_unexpected_request() -> None:
    case = MetaCase(
        label="unused",
        batch=messages([N1, N2], ALERT),
        channel={"batch_size": 2},
        outcomes={N5: "undeliverable"},
        expected_requests=[req(N1, 1)],
    )
    run = await run_case(case, "whatsapp")
    with pytest.raises(AssertionError, match="other requests"):
        check_case(case, run)
    case.expected_requests = [req(N1, 1), req(N2, 2)]
    with pytest.raises(AssertionError, match="never used"):
        check_case(case, run)


# -- error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "reason", "per_message"),
    [
        (GraphError(400, 131026), Rejected, "undeliverable (#131026)", True),
        (GraphError(400, 131050), RecipientStopped, "stopped_marketing (#131050)", True),
        (GraphError(401, 190, 460), ConfigError, "access_token_invalid (#190)", False),
        (GraphError(400, 104), ConfigError, "access_token_missing (#104)", False),
        (GraphError(403, 10), ConfigError, "permission_denied (#10)", False),
        (GraphError(403, 294), ConfigError, "permission (#294)", False),
        (GraphError(400, 100, 33), ConfigError, "object_not_found (#100)", False),
        (GraphError(400, 100), Rejected, "invalid_parameter (#100)", True),
        (GraphError(400, 999999), Rejected, "graph_error (#999999)", True),
        (GraphError(400, 999999, is_transient=True), ConnectionFailed, "http_400 (#999999)", False),
        (GraphError(500), ConnectionFailed, "http_500", False),
        (GraphError(429), Throttled, "http_429", False),
        (GraphError(400, 131000), ConnectionFailed, "something_went_wrong (#131000)", False),
    ],
)
def test_graph_error_classification(
    error: GraphError, kind: type[Exception], reason: str, per_message: bool
) -> None:
    mapped, scope = classify(error, ERROR_RULES)
    assert (type(mapped), mapped.reason, scope) == (kind, reason, per_message)


def test_business_use_case_header_sets_retry_after() -> None:
    from channels.meta.errors import parse_graph_error

    usage = {"200": [{"type": "whatsapp", "call_count": 100, "estimated_time_to_regain_access": 3}]}
    error = parse_graph_error(
        400,
        {"error": {"code": 80007, "message": "x", "type": "OAuthException"}},
        {"X-Business-Use-Case-Usage": json.dumps(usage)},
    )
    mapped, _ = classify(error, ERROR_RULES)
    assert isinstance(mapped, Throttled)
    assert mapped.retry_after == 180.0


def test_error_for_code() -> None:
    assert isinstance(error_for_code(131050), RecipientStopped)
    assert error_for_code(131026).reason == "undeliverable (#131026)"


# -- signature and handshake ---------------------------------------------------------------

BODY = b'{"object":"whatsapp_business_account","entry":[{"id":"1","note":"\\u00e9t\\u00e9"}]}'


@pytest.mark.parametrize(
    ("body", "header", "secret", "ok"),
    [
        (BODY, sign(BODY, APP_SECRET), APP_SECRET, True),
        (BODY, sign(BODY, APP_SECRET).upper().replace("SHA256=", "sha256="), APP_SECRET, True),
        (BODY, sign(BODY, "another-secret"), APP_SECRET, False),
        (BODY, None, APP_SECRET, False),
        (BODY, "", APP_SECRET, False),
        (BODY + b" ", sign(BODY, APP_SECRET), APP_SECRET, False),
        (BODY.replace(b'"1"', b'"2"'), sign(BODY, APP_SECRET), APP_SECRET, False),
        (BODY, sign(BODY, APP_SECRET)[len("sha256=") :], APP_SECRET, False),
        (BODY, "sha1=" + sign(BODY, APP_SECRET)[7:], APP_SECRET, False),
        (BODY, "sha256=" + "z" * 64, APP_SECRET, False),
        (BODY, sign(BODY, ""), "", False),
    ],
    ids=[
        "valid",
        "valid-uppercase-hex",
        "wrong-secret",
        "missing",
        "empty",
        "tampered-appended",
        "tampered-changed",
        "no-prefix",
        "sha1-prefix",
        "not-hex",
        "empty-secret",
    ],
)
def test_verify_signature(body: bytes, header: str | None, secret: str, ok: bool) -> None:
    assert verify_signature(body, header, secret) is ok


def test_signature_is_over_raw_bytes_not_re_encoded_json() -> None:
    header = sign(BODY, APP_SECRET)
    re_encoded = json.dumps(json.loads(BODY), ensure_ascii=False, separators=(",", ":")).encode()
    assert re_encoded != BODY
    assert not verify_signature(re_encoded, header, APP_SECRET)


@pytest.mark.parametrize(
    ("query", "token", "expected"),
    [
        (
            {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
            VERIFY_TOKEN,
            "42",
        ),
        (
            {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"},
            VERIFY_TOKEN,
            None,
        ),
        (
            {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
            VERIFY_TOKEN,
            None,
        ),
        ({"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}, VERIFY_TOKEN, None),
        ({"hub.mode": "subscribe", "hub.challenge": "42"}, VERIFY_TOKEN, None),
        ({"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"}, "", None),
    ],
    ids=["ok", "wrong-token", "wrong-mode", "no-challenge", "no-token", "empty-configured"],
)
def test_verify_subscription(query: dict[str, str], token: str, expected: str | None) -> None:
    assert verify_subscription(query, token) == expected


# -- status webhooks: parser table ---------------------------------------------------------


def webhook(*statuses: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID},
        "statuses": list(statuses),
    }
    change = {"value": value, "field": field}
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}


def status(word: str, *, code: int | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "wamid.X1",
        "status": word,
        "timestamp": "1760000000",
        "recipient_id": N1.lstrip("+"),
    }
    if code is not None:
        entry["errors"] = [{"code": code, "title": "t", "message": "m"}]
    entry.update(extra)
    return entry


@pytest.mark.parametrize(
    ("entry", "state", "reason"),
    [
        (status("sent"), SENT, None),
        (status("delivered"), DELIVERED, None),
        (status("read"), DELIVERED, None),
        (status("played"), DELIVERED, None),
        (status("failed", code=131026), FAILED, "undeliverable (#131026)"),
        (status("failed", code=131050), FAILED, "stopped_marketing (#131050)"),
        (status("failed", code=131049), FAILED, "not_delivered_ecosystem (#131049)"),
        (status("failed", code=131047), FAILED, "outside_window (#131047)"),
        (status("failed", code=123456), FAILED, "graph_error (#123456)"),
        (status("failed"), FAILED, "failed"),
        (status("warning"), SENT, None),
    ],
    ids=lambda v: v["status"] + str(v.get("errors", "")) if isinstance(v, dict) else None,
)
def test_status_webhook_table(
    entry: dict[str, Any], state: DeliveryState, reason: str | None
) -> None:
    (report,) = parse_status_webhook(webhook(entry))
    assert report == DeliveryReport("wamid.X1", state, entry["status"], reason)


def test_status_webhook_many_statuses_and_other_fields() -> None:
    payload = webhook(status("sent"), status("read", id="wamid.X2"))
    payload["entry"].append(webhook(status("failed"), field="account_update")["entry"][0])
    inbound = webhook()
    inbound["entry"][0]["changes"][0]["value"]["messages"] = [{"from": N1, "id": "wamid.IN"}]
    assert [r.provider_message_id for r in parse_status_webhook(payload)] == [
        "wamid.X1",
        "wamid.X2",
    ]
    assert parse_status_webhook(inbound) == []


def _without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


S0 = "entry[0].changes[0].value.statuses[0]"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (json.dumps({"object": "page", "entry": []}).encode(), "object"),
        (json.dumps({"object": "whatsapp_business_account"}).encode(), "entry"),
        (json.dumps({"object": "whatsapp_business_account", "entry": {}}).encode(), "entry"),
        (
            json.dumps({"object": "whatsapp_business_account", "entry": [{}]}).encode(),
            "entry[0].changes",
        ),
        (
            json.dumps(
                {"object": "whatsapp_business_account", "entry": [{"changes": [{}]}]}
            ).encode(),
            "entry[0].changes[0].value",
        ),
        (json.dumps(webhook(_without(status("sent"), "id"))).encode(), f"{S0}.id"),
        (json.dumps(webhook(status(""))).encode(), f"{S0}.status"),
        (json.dumps(webhook(status("Delivered!"))).encode(), f"{S0}.status"),
        (json.dumps(webhook(status("sent", timestamp="yesterday"))).encode(), f"{S0}.timestamp"),
        (
            json.dumps(webhook(status("failed", errors=[{"title": "x"}]))).encode(),
            f"{S0}.errors[0].code",
        ),
        (json.dumps(webhook(status("failed", errors="boom"))).encode(), f"{S0}.errors"),
        (json.dumps(webhook(status("sent", id=int(N1[1:])))).encode(), f"{S0}.id"),
        (json.dumps(webhook(status("sent", id="wamid." + "A" * 123))).encode(), f"{S0}.id"),
    ],
)
def test_malformed_status_webhook_names_the_field(body: bytes, field: str) -> None:
    with pytest.raises(WebhookFieldError) as caught:
        parse_status_webhook_body(body)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert N1[1:] not in str(caught.value)


# -- status webhooks: end to end, signed -------------------------------------------------


class Receiver:
    """A stand-in for the gateway's callback route: checks the signature, then parses."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.reports: list[DeliveryReport] = []
        self.refused = 0

    async def post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify_signature(raw, request.headers.get(SIGNATURE_HEADER), self.secret):
            self.refused += 1
            return web.Response(status=403)
        self.reports.extend(parse_status_webhook_body(raw))
        return web.Response(text="ok")

    async def get(self, request: web.Request) -> web.Response:
        challenge = verify_subscription(request.query, VERIFY_TOKEN)
        return web.Response(text=challenge) if challenge else web.Response(status=403)


@pytest.fixture
async def receiver_url() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(APP_SECRET)
    app = web.Application()
    app.router.add_post("/callbacks/meta/whatsapp", receiver.post)
    app.router.add_get("/callbacks/meta/whatsapp", receiver.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield receiver, f"http://{host}:{port}/callbacks/meta/whatsapp"
    await runner.cleanup()


async def _send_with_webhooks(url: str, outcomes: dict[str, str]) -> MetaSimulator:
    simulator = MetaSimulator(simulator_config(status_webhook_url=url, status_outcomes=outcomes))
    channel = whatsapp_channel(await simulator.start(), batch_size=len(outcomes))
    try:
        results = await channel.send(messages(list(outcomes), ALERT))
        assert {r.state for r in results} == {SENT}
        await simulator.wait_for_webhooks()
    finally:
        await channel.close()
        await simulator.stop()
    return simulator


async def test_signed_status_webhooks_end_to_end(receiver_url: tuple[Receiver, str]) -> None:
    receiver, url = receiver_url
    outcomes = {N1: "read", N2: "failed:131026", N3: "delivered", N4: "failed:131050", N5: "sent"}
    simulator = await _send_with_webhooks(url, outcomes)
    by_message: dict[str, list[tuple[DeliveryState, str, str | None]]] = defaultdict(list)
    for report in receiver.reports:
        by_message[report.provider_message_id].append(
            (report.state, report.status_word, report.reason)
        )
    # Messages may report in any order; each message's own statuses arrive in order.
    assert sorted(map(repr, by_message.values())) == sorted(
        map(
            repr,
            [
                [(SENT, "sent", None), (DELIVERED, "delivered", None), (DELIVERED, "read", None)],
                [(SENT, "sent", None), (FAILED, "failed", "undeliverable (#131026)")],
                [(SENT, "sent", None), (DELIVERED, "delivered", None)],
                [(SENT, "sent", None), (FAILED, "failed", "stopped_marketing (#131050)")],
                [(SENT, "sent", None)],
            ],
        )
    )
    assert (receiver.refused, simulator.webhooks.delivered, simulator.webhooks.failed) == (0, 10, 0)


async def test_webhooks_signed_with_another_secret_are_refused(
    receiver_url: tuple[Receiver, str],
) -> None:
    receiver, url = receiver_url
    receiver.secret = "not-the-app-secret"
    simulator = await _send_with_webhooks(url, {N1: "delivered"})
    assert (receiver.reports, receiver.refused, simulator.webhooks.refused) == ([], 2, 2)


async def test_subscription_handshake_against_a_receiver(
    receiver_url: tuple[Receiver, str],
) -> None:
    _receiver, url = receiver_url
    simulator = MetaSimulator(simulator_config())
    assert await simulator.subscribe(url, VERIFY_TOKEN)
    assert not await simulator.subscribe(url, "guessed-token")


# -- secrets and numbers stay out of logs, errors and reprs -------------------------------

LOGGED_CASES = {
    "recipient-errors-carried-per-message",
    "wrong-access-token",
    "unknown-phone-number-id",
    "http-429-with-retry-after",
    "timeout",
    "invalid-number-and-empty-and-long-text-never-leave",
}


async def test_no_token_secret_or_phone_number_in_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture, receiver_url: tuple[Receiver, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    runs = [await run_case(case, "whatsapp") for case in CASES if case.label in LOGGED_CASES]
    simulator = await _send_with_webhooks(receiver_url[1], {N1: "failed:131026", N2: "read"})
    texts = [caplog.text, repr(simulator), repr(simulator.config)]
    texts += [repr(record) for record in simulator.received]
    for run in runs:
        texts += [repr(run.simulator), repr(run.simulator.config), repr(run.channel)]
        texts += [repr(record) for record in run.simulator.received]
        if run.error is not None:
            texts += [str(run.error), repr(run.error), repr(run.error.args)]
        for result in run.results or []:
            texts.append(repr(result))
            if result.error is not None:
                texts += [str(result.error), repr(result.error.args)]
    config = WhatsAppConfig(
        phone_number_id=PHONE_NUMBER_ID,
        access_token=WA_TOKEN,
        app_secret=APP_SECRET,
        verify_token=VERIFY_TOKEN,
    )
    channel = WhatsAppChannel(config)
    texts += [repr(config), repr(channel), repr(channel._client)]
    forbidden = [*SECRETS, "EAAnot-the-token", "0811000001", *(n[1:] for n in NUMBERS)]
    for text in texts:
        for secret in forbidden:
            assert secret not in text


def test_limits_and_config() -> None:
    assert (WhatsAppChannel.name, WhatsAppChannel.reach, WhatsAppChannel.max_length) == (
        "whatsapp",
        "personal",
        1024,
    )
    assert (WhatsAppChannel.batch_size, WhatsAppChannel.rate_per_second) == (1, 80.0)
    channel = whatsapp_channel("http://127.0.0.1:1", batch_size=20, rate_per_second=20.0)
    assert (channel.batch_size, channel.rate_per_second) == (20, 20.0)
    with pytest.raises(ValueError, match="phone_number_id"):
        WhatsAppConfig(phone_number_id="+628110000001", access_token="t")
    assert template_parameter_text(" a \n\n b\t c      d ") == "a b c d"
