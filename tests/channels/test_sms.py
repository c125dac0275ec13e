"""The SMS channel against the Africa's Talking simulator, table by table (real SDK, real HTTP)."""

from __future__ import annotations

import logging
from decimal import Decimal
from unittest.mock import ANY

import pytest

from channels.base import OutgoingMessage
from channels.sms import CallbackFieldError, SmsChannel, parse_delivery_report, parse_opt_out
from channels.sms.adapter import parse_cost
from gateway.domain import DeliveryState
from gateway.errors import AccountRefused, ConnectionFailed, Rejected, Throttled
from tests.support.provider_harness import (
    API_KEY,
    Outcome,
    ProviderCase,
    check_case,
    form,
    message_id,
    messages,
    run_and_check,
    run_case,
)

SENT = DeliveryState.SENT
FAILED = DeliveryState.FAILED
ALERT = "Flood warning: move to higher ground now. Info: https://warta.example/a/K7QX"
PRICE = Decimal("0.8000")
N1, N2, N3, N4, N5 = (f"+25471100000{i}" for i in range(1, 6))


def numbers(count: int, *, start: int = 1) -> list[str]:
    # Starting at 1 keeps clear of the simulator's "ends in 0000 is invalid" rule.
    return [f"+2547220{i:05d}" for i in range(start, start + count)]


def sent(delivery_id: int, seq: int, cost: Decimal = PRICE) -> Outcome:
    return Outcome(delivery_id, SENT, message_id(seq), cost)


def failed(delivery_id: int, kind: str, reason: str) -> Outcome:
    return Outcome(delivery_id, FAILED, None, None, (kind, reason))


LONG_GSM = "A" * 200  # 2 segments of 153
SHORT_UNICODE = "Banjir! Segera mengungsi 🌊"  # UCS-2, 1 segment
LONG_UNICODE = "Peringatan banjir 🌊 " * 5  # UCS-2, over 70 code units: 2 segments
BIG = numbers(250)

CASES = [
    ProviderCase(
        label="three-recipients-sent-with-cost-and-ids",
        batch=messages([N1, N2, N3], ALERT),
        expected_requests=[form([N1, N2, N3], ALERT)],
        expected_results=[sent(1, 1), sent(2, 2), sent(3, 3)],
    ),
    ProviderCase(
        label="mixed-invalid-blacklisted-dnd-unroutable",
        batch=messages([N1, N2, N3, N4, N5], ALERT),
        outcomes={
            N2: "invalid_number",
            N3: "blacklisted",
            N4: "dnd",
            N5: "could_not_route",
        },
        expected_requests=[form([N1, N2, N3, N4, N5], ALERT)],
        expected_results=[
            sent(1, 1),
            failed(2, "Rejected", "InvalidPhoneNumber"),
            failed(3, "RecipientStopped", "UserInBlacklist"),
            failed(4, "Rejected", "DoNotDisturbRejection"),
            failed(5, "Rejected", "CouldNotRoute"),
        ],
    ),
    ProviderCase(
        label="suffix-0000-is-invalid-by-default",
        batch=messages([N1, "+254711110000"], ALERT),
        expected_requests=[form([N1, "+254711110000"], ALERT)],
        expected_results=[sent(1, 1), failed(2, "Rejected", "InvalidPhoneNumber")],
    ),
    ProviderCase(
        label="account-problems-per-recipient",
        batch=messages([N1, N2, N3, N4], ALERT),
        outcomes={N2: "insufficient_balance", N3: "invalid_sender", N4: "risk_hold"},
        expected_requests=[form([N1, N2, N3, N4], ALERT)],
        expected_results=[
            sent(1, 1),
            failed(2, "AccountRefused", "InsufficientBalance"),
            failed(3, "ConfigError", "InvalidSenderId"),
            failed(4, "ConfigError", "RiskHold"),
        ],
    ),
    ProviderCase(
        label="every-recipient-account-problem-raises",
        batch=messages([N1, N2], ALERT),
        outcomes={N1: "insufficient_balance", N2: "insufficient_balance"},
        expected_requests=[form([N1, N2], ALERT)],
        expected_error=AccountRefused("InsufficientBalance"),
    ),
    ProviderCase(
        label="provider-side-recipient-errors-are-retryable",
        batch=messages([N1, N2, N3], ALERT),
        outcomes={N1: "internal_error", N2: "gateway_error", N3: "rejected_by_gateway"},
        expected_requests=[form([N1, N2, N3], ALERT)],
        expected_results=[
            failed(1, "ConnectionFailed", "InternalServerError"),
            failed(2, "ConnectionFailed", "GatewayError"),
            failed(3, "ConnectionFailed", "RejectedByGateway"),
        ],
    ),
    ProviderCase(
        label="whole-request-500",
        batch=messages([N1, N2], ALERT),
        simulator={"request_failure_shares": {"server_error": 1.0}},
        expected_requests=[form([N1, N2], ALERT)],
        expected_error=ConnectionFailed("HTTP 500"),
    ),
    ProviderCase(
        label="429-with-retry-after",
        batch=messages([N1], ALERT),
        outcomes={N1: "throttled"},
        simulator={"retry_after_seconds": 7},
        expected_requests=[form([N1], ALERT)],
        expected_error=Throttled("HTTP 429", retry_after=7.0),
    ),
    ProviderCase(
        label="wrong-api-key",
        batch=messages([N1], ALERT),
        channel={"api_key": "not-the-key"},
        expected_requests=[form([N1], ALERT)],
        expected_error=AccountRefused("authentication refused (HTTP 401)"),
    ),
    ProviderCase(
        label="timeout",
        batch=messages([N1], ALERT),
        outcomes={N1: "timeout"},
        channel={"request_timeout": 0.3},
        expected_requests=[form([N1], ALERT)],
        expected_error=ConnectionFailed("timeout"),
    ),
    ProviderCase(
        label="250-recipients-in-requests-of-100",
        batch=messages(BIG, ALERT),
        channel={"batch_size": 100},
        expected_requests=[
            form(BIG[:100], ALERT),
            form(BIG[100:200], ALERT),
            form(BIG[200:], ALERT),
        ],
        # The three requests run concurrently, so which ids each got is not fixed.
        expected_results=[Outcome(i, SENT, ANY, PRICE) for i in range(1, 251)],
    ),
    ProviderCase(
        label="two-texts-two-requests",
        batch=[*messages([N1, N2], ALERT), *messages([N3], "All clear.", first_id=3)],
        expected_requests=[form([N1, N2], ALERT), form([N3], "All clear.")],
        expected_results=[
            Outcome(1, SENT, ANY, PRICE),
            Outcome(2, SENT, ANY, PRICE),
            Outcome(3, SENT, ANY, PRICE),
        ],
    ),
    ProviderCase(
        label="segments-priced-gsm-and-unicode",
        batch=[
            *messages([N1], LONG_GSM),
            *messages([N2], SHORT_UNICODE, first_id=2),
            *messages([N3], LONG_UNICODE, first_id=3),
        ],
        expected_requests=[
            form([N1], LONG_GSM),
            form([N2], SHORT_UNICODE),
            form([N3], LONG_UNICODE),
        ],
        expected_results=[
            Outcome(1, SENT, ANY, Decimal("1.6000")),
            Outcome(2, SENT, ANY, Decimal("0.8000")),
            Outcome(3, SENT, ANY, Decimal("1.6000")),
        ],
    ),
    ProviderCase(
        label="one-request-of-two-fails-the-other-sent",
        batch=[*messages([N1], ALERT), *messages([N2], "All clear.", first_id=2)],
        outcomes={N1: "server_error"},
        expected_requests=[form([N1], ALERT), form([N2], "All clear.")],
        expected_results=[
            failed(1, "ConnectionFailed", "HTTP 500"),
            sent(2, 1),
        ],
    ),
    ProviderCase(
        label="number-the-sdk-refuses-never-leaves",
        batch=[*messages(["0711000001"], ALERT), *messages([N2], ALERT, first_id=2)],
        expected_requests=[form([N2], ALERT)],
        expected_results=[failed(1, "Rejected", "InvalidPhoneNumber"), sent(2, 1)],
    ),
    ProviderCase(
        label="nothing-valid-no-request",
        batch=messages(["254711000001"], ALERT),
        expected_requests=[],
        expected_results=[failed(1, "Rejected", "InvalidPhoneNumber")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
async def test_sms_send_table(case: ProviderCase) -> None:
    await run_and_check(case)


async def test_harness_fails_on_a_canned_outcome_nobody_used() -> None:
    case = ProviderCase(
        label="unused",
        batch=messages([N1], ALERT),
        outcomes={N1: "success", N5: "invalid_number"},
        expected_requests=[form([N1], ALERT)],
        expected_results=[sent(1, 1)],
    )
    run = await run_case(case)
    with pytest.raises(AssertionError, match="never used"):
        check_case(case, run)


async def test_harness_fails_on_an_unexpected_request() -> None:
    case = ProviderCase(
        label="unexpected",
        batch=messages([N1, N2], ALERT),
        expected_requests=[form([N1], ALERT)],
    )
    run = await run_case(case)
    with pytest.raises(AssertionError, match="other requests"):
        check_case(case, run)


async def test_no_phone_number_or_api_key_in_logs_errors_or_reprs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    runs = [
        await run_case(case)
        for case in CASES
        if case.label
        in {
            "mixed-invalid-blacklisted-dnd-unroutable",
            "whole-request-500",
            "429-with-retry-after",
            "wrong-api-key",
            "timeout",
            "number-the-sdk-refuses-never-leaves",
        }
    ]
    texts = [caplog.text]
    for run in runs:
        texts += [repr(run.simulator), repr(run.simulator.config), repr(run.simulator.sent_count)]
        texts += [repr(record) for record in run.simulator.received]
        if run.error is not None:
            texts += [str(run.error), repr(run.error), repr(run.error.args)]
        for result in run.results or []:
            texts.append(repr(result))
            if result.error is not None:
                texts += [str(result.error), repr(result.error.args)]
    from channels.africastalking.config import AfricasTalkingConfig

    channel = SmsChannel(AfricasTalkingConfig(username="u", api_key=API_KEY))
    texts += [repr(channel), repr(channel._config), repr(channel._client)]
    await channel.close()
    secrets = [API_KEY, "not-the-key", "0711000001", *(n.lstrip("+")[-9:] for n in CASES_NUMBERS)]
    for text in texts:
        for secret in secrets:
            assert secret not in text


CASES_NUMBERS = [N1, N2, N3, N4, N5]


async def test_unknown_send_status_is_rejected_and_logged_without_numbers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from channels.sms.adapter import _match

    caplog.set_level(logging.DEBUG)
    batch = messages([N1], ALERT)
    answer = {
        "SMSMessageData": {
            "Message": "Sent to 0/1",
            "Recipients": [{"statusCode": 499, "number": N1, "status": "Mystery", "cost": "0"}],
        }
    }
    (result,) = _match(batch, answer)
    assert result.state == FAILED
    assert isinstance(result.error, Rejected)
    assert result.error.reason == "Mystery"
    assert "499" in caplog.text
    assert N1.lstrip("+") not in caplog.text


def test_answers_pair_with_recipients_however_the_number_is_written() -> None:
    from channels.sms.adapter import _match

    batch = messages([N1, N2, N3, N3, N4], ALERT)
    entries = [
        {"number": f" {N4} ", "statusCode": 101, "messageId": "m4", "cost": "KES 0.8000"},
        {"number": N3, "statusCode": 101, "messageId": "m3a", "cost": "KES 0.8000"},
        {"number": N1.lstrip("+"), "statusCode": 101, "messageId": "m1", "cost": "KES 0.8000"},
        {"number": int(N3.lstrip("+")), "statusCode": 101, "messageId": "m3b", "cost": "KES 1"},
        {"number": N5, "statusCode": 101, "messageId": "stranger", "cost": "KES 0.8000"},
    ]
    results = _match(batch, {"SMSMessageData": {"Recipients": entries}})
    by_id = {r.delivery_id: r for r in results}
    # Repeats of one number pair in request order; N2 got no answer and is left for a retry.
    assert {i: by_id[i].provider_message_id for i in (1, 3, 4, 5)} == {
        1: "m1", 3: "m3a", 4: "m3b", 5: "m4"
    }  # fmt: skip
    assert by_id[4].cost == Decimal("1") and by_id[5].cost == Decimal("0.8000")
    assert by_id[2].state == FAILED and isinstance(by_id[2].error, ConnectionFailed)
    assert len(results) == 5


def test_limits_are_declared_and_configurable() -> None:
    from channels.africastalking.config import AfricasTalkingConfig

    assert (SmsChannel.max_segments, SmsChannel.max_length, SmsChannel.batch_size) == (3, 459, 100)
    channel = SmsChannel(
        AfricasTalkingConfig(username="u", api_key="k", batch_size=250, rate_per_second=50.0)
    )
    assert (channel.batch_size, channel.rate_per_second) == (250, 50.0)
    assert SmsChannel.batch_size == 100


@pytest.mark.parametrize(
    ("text", "cost"),
    [("KES 0.8000", Decimal("0.8000")), ("0", Decimal(0)), ("", None), ("KES abc", None)],
)
def test_parse_cost(text: str, cost: Decimal | None) -> None:
    assert parse_cost(text) == cost


@pytest.mark.parametrize(
    ("text", "cost"),
    [
        ("IDR 350.0000", Decimal("350.0000")),
        ("idr 350", Decimal(350)),
        ("KES 0.8000", None),  # another currency: not added to an IDR total
        ("0", Decimal(0)),  # no currency stated: taken as is
    ],
)
def test_parse_cost_keeps_only_the_gateways_currency(text: str, cost: Decimal | None) -> None:
    assert parse_cost(text, "IDR") == cost


DLR_TABLE = [
    ("Sent", DeliveryState.SENT),
    ("Submitted", DeliveryState.SENT),
    ("Buffered", DeliveryState.SENT),
    ("Success", DeliveryState.DELIVERED),
    ("Rejected", DeliveryState.FAILED),
    ("Failed", DeliveryState.FAILED),
    ("AbsentSubscriber", DeliveryState.FAILED),
    ("Expired", DeliveryState.EXPIRED),
    ("SomethingNew", DeliveryState.SENT),
]


@pytest.mark.parametrize(("word", "state"), DLR_TABLE)
def test_delivery_report_words(word: str, state: DeliveryState) -> None:
    report = parse_delivery_report(
        {"id": "ATXid_1", "status": word, "phoneNumber": N1, "networkCode": "63902"}
    )
    assert (report.provider_message_id, report.state, report.status_word) == (
        "ATXid_1",
        state,
        word,
    )
    assert (report.reason, report.network_code) == (None, "63902")


def test_delivery_report_failure_reason() -> None:
    form_fields = {
        "id": "ATXid_2",
        "status": "Failed",
        "phoneNumber": N1,
        "failureReason": "UserInBlackList",
        "retryCount": "0",
    }
    report = parse_delivery_report(form_fields)
    assert (report.state, report.reason, report.network_code) == (
        FAILED,
        "UserInBlackList",
        None,
    )


@pytest.mark.parametrize(
    ("form_fields", "field"),
    [
        ({"status": "Success", "phoneNumber": N1}, "id"),
        ({"id": "ATXid_1", "phoneNumber": N1}, "status"),
        ({"id": " ", "status": "Success"}, "id"),
        ({"id": "ATXid_1", "status": N1}, "status"),
        ({"id": "ATXid_1", "status": "Failed", "retryCount": "x"}, "retryCount"),
        # Longer than any message id Warta stores (PostgreSQL refused the group commit).
        ({"id": "A" * 129, "status": "Success"}, "id"),
    ],
)
def test_delivery_report_errors_name_the_field(form_fields: dict[str, str], field: str) -> None:
    with pytest.raises(CallbackFieldError) as caught:
        parse_delivery_report(form_fields)
    assert caught.value.field == field
    assert repr(field) in str(caught.value)
    assert N1 not in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("number", "expected"), [(N1, N1), ("254711000001", "+254711000001"), (" +254 711000001", N1)]
)
def test_opt_out(number: str, expected: str) -> None:
    assert parse_opt_out({"senderId": "WARTA", "phoneNumber": number}) == expected


@pytest.mark.parametrize("form_fields", [{"senderId": "WARTA"}, {"phoneNumber": "call me"}])
def test_opt_out_errors_name_the_field(form_fields: dict[str, str]) -> None:
    with pytest.raises(CallbackFieldError) as caught:
        parse_opt_out(form_fields)
    assert caught.value.field == "phoneNumber"
    assert "call me" not in str(caught.value)


def test_outgoing_message_repr_hides_recipient() -> None:
    (message,) = messages([N1], ALERT)
    assert isinstance(message, OutgoingMessage)
    assert N1 not in repr(message)
    assert N1 not in str(message) and N1 not in f"{[message]}"
    assert repr(message).startswith(f"OutgoingMessage(delivery_id={message.delivery_id}")


def test_the_longest_message_id_is_the_stored_one() -> None:
    from channels.base import MESSAGE_ID_LENGTH
    from gateway.db.schema import deliveries, delivery_reports

    assert parse_delivery_report({"id": "A" * 128, "status": "Success"}).provider_message_id
    for table in (deliveries, delivery_reports):
        assert table.c.provider_message_id.type.length == MESSAGE_ID_LENGTH


def test_the_common_success_answer_is_read_as_the_general_rule_reads_it() -> None:
    """``_match`` reads a plain "Success" (statusCode 101) inline; every other entry goes
    through ``_result``. Both must decide the same for any entry a provider may send."""
    from channels.sms.adapter import _match, _result

    entries: list[dict[str, object]] = [
        {"statusCode": 101, "cost": "KES 0.8000", "messageId": "ATX-1"},
        {"statusCode": 101, "cost": "KES 0.8000", "messageId": "ATX-2"},  # the same price
        {"statusCode": "101", "cost": "KES 0.8000", "messageId": "ATX-3"},  # code as text
        {"statusCode": 101.0, "cost": "USD 0.0100", "messageId": "ATX-4"},  # another currency
        {"statusCode": 101, "cost": None, "messageId": None},
        {"statusCode": 101, "cost": {"odd": 1}, "messageId": 77},  # not text: no cost
        {"statusCode": 101, "messageId": ""},
        {"statusCode": 101, "cost": "KES"},  # unreadable amount
        {"statusCode": 403, "status": "InvalidPhoneNumber", "cost": "0"},
        {"statusCode": True, "status": "Success", "cost": "KES 0.8000"},
    ]
    messages = [
        OutgoingMessage(i, f"+2547{i:08d}", "text", f"warta-{i}", "id") for i in range(len(entries))
    ]
    for entry, message in zip(entries, messages, strict=True):
        entry["number"] = message.recipient
    answer = {"SMSMessageData": {"Recipients": entries}}

    def plain(result: object) -> tuple[object, ...]:
        # Errors are exceptions, equal only to themselves: compare their kind and words.
        assert isinstance(result, tuple)
        return tuple((type(v), str(v)) if isinstance(v, Exception) else v for v in result)

    inline = [plain(r) for r in _match(messages, answer, "KES")]
    general = [plain(_result(m, e, "KES")) for m, e in zip(messages, entries, strict=True)]
    assert inline == general
    assert [r[1] for r in inline].count(DeliveryState.SENT) == 8
