"""Courier-style table harness for social channels (one post per account).

A ``SocialCase`` is a list of rounds, each a batch handed to ``send`` in order (a round is a
dispatcher attempt, so a retry is a second round with the same messages). The real channel
talks over real HTTP to the real simulator on 127.0.0.1. A case fails when:

- the simulator received any request not listed in ``expected_requests`` (or missed one);
  requests are compared as the driver's exact view of them, in any order;
- a canned outcome was never used;
- a round's results (in any order) or raised error differ from what the case expects;
- a created post's ``url`` is not the one the driver derives from its id.

Each channel supplies a ``SocialDriver`` that builds its simulator and channel and says how
a received request looks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from channels.base import Channel, OutgoingMessage, SendResult
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, Throttled

FIXED_NOW = 1_700_000_000.0


class Outcome(NamedTuple):
    """A ``SendResult`` reduced to comparable values."""

    delivery_id: int
    state: DeliveryState
    post_id: Any = None
    error: tuple[str, str] | None = None  # (error class name, reason)


def outcome_of(result: SendResult) -> Outcome:
    error = None
    if result.error is not None:
        error = (type(result.error).__name__, result.error.reason)
    return Outcome(result.delivery_id, result.state, result.provider_message_id, error)


def post(
    delivery_id: int, account: str, text: str, *, key: str | None = None, language: str = "id"
) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=delivery_id,
        recipient=account,
        text=text,
        idempotency_key=key or f"warta-{delivery_id}",
        language=language,
    )


Expected = Sequence[Outcome] | ChannelError


class SocialDriver(Protocol):
    def simulator(self, outcomes: Mapping[str, str], settings: Mapping[str, Any]) -> Any: ...

    def channel(self, base_url: str, settings: Mapping[str, Any]) -> Channel: ...

    def requests(self, simulator: Any) -> list[Any]:
        """Every request the simulator received, each as a comparable value."""

    def post_url(self, base_url: str, message: OutgoingMessage, post_id: str) -> str: ...


@dataclass
class SocialCase:
    """One row of a social channel's table.

    Attributes:
        label: the pytest id.
        rounds: batches handed to ``send`` one after another.
        expected_requests: every request the simulator must receive, as the driver shows them.
        expected: per round, the results (any order) or the error ``send`` must raise.
        outcomes: canned simulator outcomes by post text; each must be used.
        simulator, channel: other settings for the driver.
    """

    label: str
    rounds: Sequence[Sequence[OutgoingMessage]]
    expected_requests: Sequence[Any]
    expected: Sequence[Expected]
    outcomes: Mapping[str, str] = field(default_factory=dict)
    simulator: Mapping[str, Any] = field(default_factory=dict)
    channel: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseRun:
    simulator: Any
    base_url: str
    channel: Channel
    answers: list[list[SendResult] | ChannelError]


async def run_case(driver: SocialDriver, case: SocialCase) -> CaseRun:
    """Run ``case`` and return what happened, without checking it."""
    simulator = driver.simulator(case.outcomes, case.simulator)
    base_url = await simulator.start()
    channel = driver.channel(base_url, case.channel)
    answers: list[list[SendResult] | ChannelError] = []
    try:
        await channel.start()
        for batch in case.rounds:
            try:
                answers.append(await channel.send(batch))
            except ChannelError as exc:
                answers.append(exc)
    finally:
        await channel.close()
        await simulator.stop()
    return CaseRun(simulator, base_url, channel, answers)


def _same_error(got: ChannelError, want: ChannelError) -> None:
    assert type(got) is type(want), repr(got)
    assert got.reason == want.reason
    if isinstance(want, Throttled):
        assert isinstance(got, Throttled)
        assert got.retry_after == want.retry_after


def check_case(driver: SocialDriver, case: SocialCase, run: CaseRun) -> None:
    """Assert that ``run`` is exactly what ``case`` expects."""
    assert run.simulator.records_dropped == 0, "simulator dropped records: raise max_records"
    received = sorted(map(repr, driver.requests(run.simulator)))
    expected = sorted(map(repr, case.expected_requests))
    assert received == expected, "the provider received other requests than expected"
    unused = run.simulator.unused_outcomes()
    assert not unused, f"{len(unused)} canned outcome(s) were never used"
    assert len(run.answers) == len(case.expected)
    messages = {m.delivery_id: m for batch in case.rounds for m in batch}
    for answer, want in zip(run.answers, case.expected, strict=True):
        if isinstance(want, ChannelError):
            assert isinstance(answer, ChannelError), f"expected {want!r}, got results"
            _same_error(answer, want)
            continue
        assert not isinstance(answer, ChannelError), f"unexpected error {answer!r}"
        got = sorted((outcome_of(r) for r in answer), key=lambda o: o.delivery_id)
        assert got == sorted(want, key=lambda o: o.delivery_id)
        for result in answer:
            if result.provider_message_id is None:
                assert result.url is None
                continue
            message = messages[result.delivery_id]
            assert result.url == driver.post_url(run.base_url, message, result.provider_message_id)


async def run_and_check(driver: SocialDriver, case: SocialCase) -> CaseRun:
    run = await run_case(driver, case)
    check_case(driver, case, run)
    return run
