"""Courier-style table harness: a batch in, the exact provider requests and results out.

Each ``ProviderCase`` runs the real channel (real SDK, real HTTP) against the real provider
simulator on 127.0.0.1. A case fails when:

- the simulator received any request not listed in ``expected_requests`` (or missed one);
  requests are compared as exact form fields, in any order, because a channel may send its
  bulk requests concurrently;
- a canned per-number outcome was never used (the case did not test what it claims);
- the results or the raised error differ from the expected ones.

Results are compared as ``Outcome`` tuples, because exceptions compare by identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from channels.africastalking.config import AfricasTalkingConfig
from channels.africastalking.simconfig import Outcome as SimOutcome
from channels.africastalking.simulator import AfricasTalkingSimulator, SimulatorConfig
from channels.base import OutgoingMessage, SendResult
from channels.sms import SmsChannel
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, Throttled

USERNAME = "warta-test"
API_KEY = "at-test-key-5f0c1d2e3b4a"
SENDER_ID = "WARTA"


class Outcome(NamedTuple):
    """A ``SendResult`` reduced to comparable values."""

    delivery_id: int
    state: DeliveryState
    provider_message_id: Any = None
    cost: Decimal | None = None
    error: tuple[str, str] | None = None  # (error class name, reason)


def outcome_of(result: SendResult) -> Outcome:
    error = None
    if result.error is not None:
        error = (type(result.error).__name__, result.error.reason)
    return Outcome(result.delivery_id, result.state, result.provider_message_id, result.cost, error)


def message_id(seq: int) -> str:
    """The simulator's ``seq``-th message id (it numbers accepted messages from 1)."""
    return f"ATXid_{seq:032x}"


def form(to: Sequence[str], message: str, **extra: str) -> dict[str, str]:
    """The exact form the SDK sends for one bulk request with the harness's settings."""
    fields = {
        "username": USERNAME,
        "to": ",".join(to),
        "message": message,
        "bulkSMSMode": "1",
        "enqueue": "1",
        "from": SENDER_ID,
    }
    fields.update(extra)
    return fields


def messages(numbers: Sequence[str], text: str, *, first_id: int = 1) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            delivery_id=first_id + index,
            recipient=number,
            text=text,
            idempotency_key=f"key-{first_id + index}",
        )
        for index, number in enumerate(numbers)
    ]


@dataclass
class ProviderCase:
    """One row of a channel's table.

    Attributes:
        label: the pytest id.
        batch: what the dispatcher hands to ``send``.
        expected_requests: exact form fields of every request the simulator must receive.
        expected_results: the results, in any order; None when an error is expected or when
            only ``expected_error`` / a test's own checks matter.
        expected_error: the error ``send`` must raise (class, reason and ``retry_after``).
        outcomes: canned per-number outcomes; each must be used.
        simulator: other ``SimulatorConfig`` fields.
        channel: other ``AfricasTalkingConfig`` fields (e.g. ``batch_size``, ``api_key``).
    """

    label: str
    batch: Sequence[OutgoingMessage]
    expected_requests: Sequence[Mapping[str, str]]
    expected_results: Sequence[Outcome] | None = None
    expected_error: ChannelError | None = None
    outcomes: Mapping[str, SimOutcome] = field(default_factory=dict)
    simulator: Mapping[str, Any] = field(default_factory=dict)
    channel: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseRun:
    """What happened, for tests that check more than the table does."""

    simulator: AfricasTalkingSimulator
    results: list[SendResult] | None
    error: ChannelError | None


async def run_case(case: ProviderCase) -> CaseRun:
    """Run ``case`` and return what happened, without checking it."""
    simulator = AfricasTalkingSimulator(
        SimulatorConfig(
            username=USERNAME, api_key=API_KEY, outcomes=case.outcomes, **case.simulator
        )
    )
    base_url = await simulator.start()
    settings: dict[str, Any] = {
        "username": USERNAME,
        "api_key": API_KEY,
        "base_url": base_url,
        "sender_id": SENDER_ID,
    }
    settings.update(case.channel)
    channel = SmsChannel(AfricasTalkingConfig(**settings))
    results: list[SendResult] | None = None
    error: ChannelError | None = None
    try:
        await channel.start()
        results = await channel.send(case.batch)
    except ChannelError as exc:
        error = exc
    finally:
        await channel.close()
        await simulator.stop()
    return CaseRun(simulator=simulator, results=results, error=error)


def _request_key(fields: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(fields.items()))


def check_case(case: ProviderCase, run: CaseRun) -> None:
    """Assert that ``run`` is exactly what ``case`` expects."""
    received = sorted(_request_key(r.fields) for r in run.simulator.received)
    expected = sorted(_request_key(fields) for fields in case.expected_requests)
    assert run.simulator.records_dropped == 0, "simulator dropped records: raise max_records"
    assert received == expected, "the provider received other requests than expected"

    unused = run.simulator.unused_outcomes()
    assert not unused, f"{len(unused)} canned outcome(s) were never used"

    if case.expected_error is not None:
        want = case.expected_error
        assert run.error is not None, "expected an error, send returned results"
        assert type(run.error) is type(want), repr(run.error)
        assert run.error.reason == want.reason
        if isinstance(want, Throttled):
            assert isinstance(run.error, Throttled)
            assert run.error.retry_after == want.retry_after
    else:
        assert run.error is None, f"unexpected error {run.error!r}"
    if case.expected_results is not None:
        assert run.results is not None
        got = sorted((outcome_of(r) for r in run.results), key=lambda o: o.delivery_id)
        assert got == sorted(case.expected_results, key=lambda o: o.delivery_id)


async def run_and_check(case: ProviderCase) -> CaseRun:
    run = await run_case(case)
    check_case(case, run)
    return run
