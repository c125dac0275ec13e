"""What the Africa's Talking voice simulator does on a run (kept apart from its aiohttp server,
so the CLI, the demo and the benchmarks can build one without importing the server side).

Call request outcomes, per number (first found: ``outcomes[number]``, the longest matching
``suffix_outcomes`` entry, else ``queued``); a whole-request outcome given to any number of a
request applies to the whole request, otherwise one draw from ``request_failure_shares``:

=========================  =================================================================
queued                     entry ``Queued`` with a ``sessionId``; the call is then played
invalid_number             entry ``InvalidPhoneNumber``
destination_not_supported  entry ``DestinationNotSupported``
insufficient_credit        entry ``InsufficientCredit``
server_error               whole request: HTTP 500, plain text
throttled                  whole request: HTTP 429 with ``Retry-After``
timeout                    whole request: no answer for ``timeout_hang`` seconds
=========================  =================================================================

What happens to a queued call: ``call_outcomes[number]``, else a draw from
``call_outcome_shares``, else ``answered``. Any other outcome is a ``hangupCause`` sent in the
final callback of a call nobody answered. ``key_presses[number]`` lists the key pressed at each
``<GetDigits>`` the call meets, in order (``""`` presses nothing and lets it time out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeVar, get_args

from channels.simdraws import Seconds

EntryOutcome = Literal[
    "queued", "invalid_number", "destination_not_supported", "insufficient_credit"
]
RequestOutcome = Literal["server_error", "throttled", "timeout"]
CallOutcome = Literal[
    "answered",
    "NO_ANSWER",
    "USER_BUSY",
    "CALL_REJECTED",
    "UNALLOCATED_NUMBER",
    "SUBSCRIBER_ABSENT",
    "NORMAL_TEMPORARY_FAILURE",
]
OutcomeT = TypeVar("OutcomeT", bound=str)

ENTRY_OUTCOMES: frozenset[str] = frozenset(get_args(EntryOutcome))
REQUEST_OUTCOMES: frozenset[str] = frozenset(get_args(RequestOutcome))
CALL_OUTCOMES: frozenset[str] = frozenset(get_args(CallOutcome))

ENTRY_STATUS: Mapping[str, str] = {
    "queued": "Queued",
    "invalid_number": "InvalidPhoneNumber",
    "destination_not_supported": "DestinationNotSupported",
    "insufficient_credit": "InsufficientCredit",
}

# The actions Africa's Talking documents (docs.africastalking.com/voice/actions); the
# simulator plays Say, Play and GetDigits and reports any other as unsupported.
KNOWN_ACTIONS = frozenset(
    {
        "Say",
        "Play",
        "GetDigits",
        "Dial",
        "Record",
        "Enqueue",
        "Dequeue",
        "Conference",
        "Redirect",
        "Reject",
    }
)
PLAYED_ACTIONS = frozenset({"Say", "Play", "GetDigits"})


def _default_suffix_outcomes() -> dict[str, EntryOutcome | RequestOutcome]:
    return {"0000": "invalid_number"}


@dataclass(frozen=True, slots=True)
class VoiceSimulatorConfig:
    """One run of the voice simulator.

    Attributes:
        username, api_key: the credentials it accepts (anything else gets HTTP 401).
        caller_numbers: the virtual numbers ``from`` may name; empty accepts any. Another
            number gets ``{"entries": [], "errorMessage": "Invalid callerId"}``.
        callback_url: where answer and final callbacks go (the number's callback URL in the
            Africa's Talking dashboard); None places no calls after queuing them.
        latency: seconds before answering each call request, fixed or a (low, high) range.
        request_failure_shares: per request, the chance of each whole-request outcome.
        outcomes, suffix_outcomes: canned call request outcome per number / number suffix.
        call_outcomes: canned outcome per number of a queued call.
        call_outcome_shares: chance of each not-answered outcome.
        key_presses: per number, the key pressed at each successive ``<GetDigits>``.
        answer_delay: seconds from queuing a call to its answer (or final) callback.
        seconds_per_action: simulated speaking time of each ``<Say>``/``<Play>``.
        currency, price_per_minute: the call's ``amount`` is whole started minutes x price.
        retry_after_seconds: ``Retry-After`` sent with HTTP 429.
        timeout_hang: how long a ``timeout`` request hangs (longer than any client timeout).
        call_concurrency: calls played at once.
        callback_attempts, callback_backoff: tries per callback while the receiver errs or is
            down, and seconds before the first retry (doubling).
        max_steps: most documents one call fetches (bounds a call that loops forever).
        max_records: call request records kept in ``received``.
        seed: seeds every draw, so a run repeats exactly; None draws from the OS.
    """

    username: str = "sandbox"
    api_key: str = field(default="warta-simulator-key", repr=False)
    caller_numbers: frozenset[str] = field(default_factory=frozenset, repr=False)
    callback_url: str | None = field(default=None, repr=False)
    latency: Seconds = 0.0
    request_failure_shares: Mapping[RequestOutcome, float] = field(default_factory=dict)
    outcomes: Mapping[str, EntryOutcome | RequestOutcome] = field(default_factory=dict, repr=False)
    suffix_outcomes: Mapping[str, EntryOutcome | RequestOutcome] = field(
        default_factory=_default_suffix_outcomes
    )
    call_outcomes: Mapping[str, CallOutcome] = field(default_factory=dict, repr=False)
    call_outcome_shares: Mapping[CallOutcome, float] = field(default_factory=dict)
    key_presses: Mapping[str, Sequence[str]] = field(default_factory=dict, repr=False)
    answer_delay: Seconds = 0.0
    seconds_per_action: int = 5
    currency: str = "KES"
    price_per_minute: Decimal = Decimal("2.0000")
    retry_after_seconds: int = 1
    timeout_hang: float = 60.0
    call_concurrency: int = 16
    callback_attempts: int = 3
    callback_backoff: float = 0.2
    max_steps: int = 12
    max_records: int = 1000
    seed: int | None = 0

    def __post_init__(self) -> None:
        allowed = ENTRY_OUTCOMES | REQUEST_OUTCOMES
        for name, mapping in (
            ("outcomes", self.outcomes),
            ("suffix_outcomes", self.suffix_outcomes),
        ):
            for outcome in mapping.values():
                if outcome not in allowed:
                    raise ValueError(f"{name}: unknown outcome {outcome!r}")
        for call_outcome in self.call_outcomes.values():
            if call_outcome not in CALL_OUTCOMES:
                raise ValueError(f"call_outcomes: unknown outcome {call_outcome!r}")
        _check_shares("request_failure_shares", self.request_failure_shares, REQUEST_OUTCOMES)
        _check_shares("call_outcome_shares", self.call_outcome_shares, CALL_OUTCOMES)
        for keys in self.key_presses.values():
            for key in keys:
                if key and not all(char in "0123456789*#" for char in key):
                    raise ValueError("key_presses: only phone keys may be pressed")
        if min(self.call_concurrency, self.callback_attempts, self.max_steps) < 1:
            raise ValueError("call_concurrency, callback_attempts and max_steps must be >= 1")


def _check_shares(name: str, shares: Mapping[OutcomeT, float], allowed: frozenset[str]) -> None:
    for key, share in shares.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown outcome {key!r}")
        if share < 0:
            raise ValueError(f"{name}: negative share for {key!r}")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"{name}: shares add up to more than 1")
