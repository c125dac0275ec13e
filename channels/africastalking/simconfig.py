"""What the Africa's Talking simulator does on a run: outcomes, shares, delays, prices.

Kept apart from the server so the CLI, the demo and the benchmarks can build a configuration
without importing aiohttp's server side.

Outcome words (per recipient unless noted) and what the simulator answers for them; codes and
words from Africa's Talking's "Send SMS" documentation (``statusCode`` / ``status``):

=====================  ===========================================================
success                101 Success (also: ``processed`` 100, ``queued`` 102)
risk_hold              401 RiskHold
invalid_sender         402 InvalidSenderId
invalid_number         403 InvalidPhoneNumber
unsupported_number     404 UnsupportedNumberType
insufficient_balance   405 InsufficientBalance
blacklisted            406 UserInBlacklist
could_not_route        407 CouldNotRoute
dnd                    409 DoNotDisturbRejection
internal_error         500 InternalServerError
gateway_error          501 GatewayError
rejected_by_gateway    502 RejectedByGateway
server_error           whole request: HTTP 500, plain text
throttled              whole request: HTTP 429 with ``Retry-After``
timeout                whole request: no answer for ``timeout_hang`` seconds
=====================  ===========================================================

A number's outcome is, first found: ``outcomes[number]``, then the longest matching
``suffix_outcomes`` entry (by default every number ending in ``0000`` is invalid, which the
demo data and tests rely on), then a draw from ``recipient_failure_shares``. A whole-request
outcome given to any number of a request applies to the whole request; otherwise one draw from
``request_failure_shares`` per request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeVar, get_args

from channels.simdraws import Seconds

RecipientOutcome = Literal[
    "success",
    "processed",
    "queued",
    "risk_hold",
    "invalid_sender",
    "invalid_number",
    "unsupported_number",
    "insufficient_balance",
    "blacklisted",
    "could_not_route",
    "dnd",
    "internal_error",
    "gateway_error",
    "rejected_by_gateway",
]
RequestOutcome = Literal["server_error", "throttled", "timeout"]
Outcome = RecipientOutcome | RequestOutcome
OutcomeT = TypeVar("OutcomeT", bound=str)

RECIPIENT_OUTCOMES: frozenset[str] = frozenset(get_args(RecipientOutcome))
REQUEST_OUTCOMES: frozenset[str] = frozenset(get_args(RequestOutcome))

RECIPIENT_STATUS: Mapping[str, tuple[int, str]] = {
    "processed": (100, "Processed"),
    "success": (101, "Success"),
    "queued": (102, "Queued"),
    "risk_hold": (401, "RiskHold"),
    "invalid_sender": (402, "InvalidSenderId"),
    "invalid_number": (403, "InvalidPhoneNumber"),
    "unsupported_number": (404, "UnsupportedNumberType"),
    "insufficient_balance": (405, "InsufficientBalance"),
    "blacklisted": (406, "UserInBlacklist"),
    "could_not_route": (407, "CouldNotRoute"),
    "dnd": (409, "DoNotDisturbRejection"),
    "internal_error": (500, "InternalServerError"),
    "gateway_error": (501, "GatewayError"),
    "rejected_by_gateway": (502, "RejectedByGateway"),
}
ACCEPTED_CODES = frozenset({100, 101, 102})

# Delivery report words (``status``) and reasons (``failureReason``) from Africa's Talking's
# "SMS notifications" documentation.
DLR_STATUSES = frozenset(
    {
        "Sent",
        "Submitted",
        "Buffered",
        "Rejected",
        "Success",
        "Failed",
        "AbsentSubscriber",
        "Expired",
    }
)
DLR_FAILURE_REASONS = frozenset(
    {
        "InsufficientCredit",
        "InvalidLinkId",
        "UserIsInactive",
        "UserInBlackList",
        "UserAccountSuspended",
        "NotNetworkSubscriber",
        "UserNotSubscribedToProduct",
        "UserDoesNotExist",
        "DeliveryFailure",
        "DoNotDisturbRejection",
    }
)


def _default_suffix_outcomes() -> dict[str, Outcome]:
    return {"0000": "invalid_number"}


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """One run of the simulator.

    Attributes:
        username, api_key: the credentials it accepts (anything else gets HTTP 401).
        latency: seconds before answering each request, fixed or a (low, high) range.
        request_failure_shares: per request, the chance of each whole-request outcome.
        recipient_failure_shares: per recipient, the chance of each recipient outcome.
        outcomes: canned outcome per number (E.164 with '+'), applied before any draw.
        suffix_outcomes: canned outcome for numbers ending in a suffix.
        retry_after_seconds: ``Retry-After`` sent with HTTP 429.
        timeout_hang: how long a ``timeout`` request hangs (longer than any client timeout).
        currency, cost_per_segment: price of each accepted message segment.
        balance: the account's credit in ``currency``, or None for no limit. Each accepted
            message takes its price from it; a recipient it can no longer pay for is refused
            with 405 ``InsufficientBalance``, as Africa's Talking does (top it up at
            ``POST /simulator/balance``).
        network_code: sent in delivery reports (99999 is the sandbox network).
        delivery_report_url: where delivery reports go; None sends none.
        delivery_report_delay: seconds from answering a request to reporting on it.
        delivery_report_shares: chance of each non-``Success`` final report, keyed
            ``"Status"`` or ``"Status:FailureReason"`` (e.g. ``"Failed:DeliveryFailure"``).
        delivery_report_outcomes: canned final report per number, keyed as above.
        delivery_report_concurrency: most report POSTs in flight.
        delivery_report_attempts: tries per report while the receiver errs or is down.
        delivery_report_backoff: seconds before the first retry, doubling each time.
        max_records: request records kept in ``received`` (counters are never bounded).
        seed: seeds every draw, so a run repeats exactly; None draws from the OS.
    """

    username: str = "sandbox"
    api_key: str = field(default="warta-simulator-key", repr=False)
    latency: Seconds = 0.0
    request_failure_shares: Mapping[RequestOutcome, float] = field(default_factory=dict)
    recipient_failure_shares: Mapping[RecipientOutcome, float] = field(default_factory=dict)
    outcomes: Mapping[str, Outcome] = field(default_factory=dict, repr=False)
    suffix_outcomes: Mapping[str, Outcome] = field(default_factory=_default_suffix_outcomes)
    retry_after_seconds: int = 1
    timeout_hang: float = 60.0
    currency: str = "KES"
    cost_per_segment: Decimal = Decimal("0.8000")
    balance: Decimal | None = None
    network_code: str = "99999"
    delivery_report_url: str | None = None
    delivery_report_delay: Seconds = 0.0
    delivery_report_shares: Mapping[str, float] = field(default_factory=dict)
    delivery_report_outcomes: Mapping[str, str] = field(default_factory=dict, repr=False)
    delivery_report_concurrency: int = 32
    delivery_report_attempts: int = 4
    delivery_report_backoff: float = 0.2
    max_records: int = 1000
    seed: int | None = 0

    def __post_init__(self) -> None:
        _check_shares("request_failure_shares", self.request_failure_shares, REQUEST_OUTCOMES)
        _check_shares("recipient_failure_shares", self.recipient_failure_shares, RECIPIENT_OUTCOMES)
        for name, mapping in (
            ("outcomes", self.outcomes),
            ("suffix_outcomes", self.suffix_outcomes),
        ):
            for outcome in mapping.values():
                if outcome not in RECIPIENT_OUTCOMES and outcome not in REQUEST_OUTCOMES:
                    raise ValueError(f"{name}: unknown outcome {outcome!r}")
        if sum(self.delivery_report_shares.values()) > 1.0 + 1e-9:
            raise ValueError("delivery_report_shares: shares add up to more than 1")
        for key in (*self.delivery_report_shares, *self.delivery_report_outcomes.values()):
            split_report_outcome(key)
        if self.balance is not None and self.balance < 0:
            raise ValueError("balance: must not be negative")
        if self.delivery_report_concurrency < 1 or self.delivery_report_attempts < 1:
            raise ValueError("delivery_report_concurrency and _attempts must be at least 1")


def _check_shares(name: str, shares: Mapping[OutcomeT, float], allowed: frozenset[str]) -> None:
    for key, share in shares.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown outcome {key!r}")
        if share < 0:
            raise ValueError(f"{name}: negative share for {key!r}")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"{name}: shares add up to more than 1")


def split_report_outcome(key: str) -> tuple[str, str | None]:
    """``"Failed:DeliveryFailure"`` -> ("Failed", "DeliveryFailure"); checks both words."""
    status, _, reason = key.partition(":")
    if status not in DLR_STATUSES:
        raise ValueError(f"unknown delivery report status {status!r}")
    if reason and reason not in DLR_FAILURE_REASONS:
        raise ValueError(f"unknown delivery failure reason {reason!r}")
    return status, reason or None


# GSM 03.38 default alphabet (the escape itself excluded) and its extension table, whose
# characters take two septets. Kept here so the simulator prices messages on its own.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def count_segments(text: str) -> int:
    """SMS segments for ``text``: GSM-7 160/153 septets, else UCS-2 70/67 code units."""
    septets = 0
    for char in text:
        if char in _GSM7_BASIC:
            septets += 1
        elif char in _GSM7_EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return 1 if units <= 70 else math.ceil(units / 67)
    return 1 if septets <= 160 else math.ceil(septets / 153)
