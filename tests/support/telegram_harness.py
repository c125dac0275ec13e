"""Courier-style table harness for the Telegram channels: a batch in, exact Bot API calls out.

Each ``TelegramCase`` runs the real channel (python-telegram-bot's ``Bot`` over real HTTP)
against the real Telegram simulator on 127.0.0.1. A case fails when:

- the simulator received any call not listed in ``expected_requests`` (or missed one);
  calls are compared as (method, exact parameters), in any order, because a batch's messages
  go out concurrently. ``start()`` checks the token, so ``GET_ME`` is listed first;
- a canned per-chat outcome was never used;
- the results or the raised error differ from the expected ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from channels.base import OutgoingMessage, SendResult
from channels.telegram import TelegramChannel, TelegramChannelPost, TelegramConfig
from channels.telegram.simconfig import Outcome as SimOutcome
from channels.telegram.simulator import SimulatorConfig, TelegramSimulator
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, Throttled

TOKEN = "987654321:AAH-wartaTestToken_abcdefghijklmnopq"
WEBHOOK_SECRET = "wh-secret_5f0c1d2e3b4a9988"

Call = tuple[str, Mapping[str, str]]
GET_ME: Call = ("getme", {})


def send_call(chat_id: str, text: str) -> Call:
    """The exact ``sendMessage`` parameters the adapter sends: plain text, no parse mode."""
    return ("sendmessage", {"chat_id": chat_id, "text": text})


class Outcome(NamedTuple):
    """A ``SendResult`` reduced to comparable values."""

    delivery_id: int
    state: DeliveryState
    provider_message_id: Any = None
    url: str | None = None
    error: tuple[str, str] | None = None  # (error class name, reason)


def outcome_of(result: SendResult) -> Outcome:
    error = None
    if result.error is not None:
        error = (type(result.error).__name__, result.error.reason)
    return Outcome(result.delivery_id, result.state, result.provider_message_id, result.url, error)


def messages(chats: Sequence[str], text: str, *, first_id: int = 1) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            delivery_id=first_id + index,
            recipient=chat,
            text=text,
            idempotency_key=f"warta-{first_id + index}",
        )
        for index, chat in enumerate(chats)
    ]


@dataclass
class TelegramCase:
    """One row of the table.

    Attributes:
        label: the pytest id.
        batch: what the dispatcher hands to ``send``.
        expected_requests: every Bot API call the simulator must receive, as
            (lowercased method, parameters).
        expected_results: the results, in any order; None when an error is expected.
        expected_error: the error ``send`` must raise (class, reason and ``retry_after``).
        outcomes: canned per-chat outcomes; each must be used.
        post: use ``TelegramChannelPost`` instead of ``TelegramChannel``.
        simulator: other ``SimulatorConfig`` fields.
        channel: other ``TelegramConfig`` fields.
    """

    label: str
    batch: Sequence[OutgoingMessage]
    expected_requests: Sequence[Call]
    expected_results: Sequence[Outcome] | None = None
    expected_error: ChannelError | None = None
    outcomes: Mapping[str, SimOutcome] = field(default_factory=dict)
    post: bool = False
    simulator: Mapping[str, Any] = field(default_factory=dict)
    channel: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseRun:
    simulator: TelegramSimulator
    channel: TelegramChannel | TelegramChannelPost
    results: list[SendResult] | None
    error: ChannelError | None


def make_channel(
    base_url: str, *, post: bool = False, **settings: Any
) -> TelegramChannel | TelegramChannelPost:
    """A channel on the simulator; pacing off unless ``settings`` ask for it."""
    values: dict[str, Any] = {
        "token": TOKEN,
        "base_url": base_url,
        "per_chat_interval": 0.0,
        "group_interval": 0.0,
        "webhook_secret": WEBHOOK_SECRET,
    }
    values.update(settings)
    config = TelegramConfig(**values)
    return TelegramChannelPost(config) if post else TelegramChannel(config)


async def run_case(case: TelegramCase) -> CaseRun:
    """Run ``case`` and return what happened, without checking it."""
    simulator = TelegramSimulator(
        SimulatorConfig(token=TOKEN, outcomes=case.outcomes, **case.simulator)
    )
    base_url = await simulator.start()
    channel = make_channel(base_url, post=case.post, **case.channel)
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
    return CaseRun(simulator=simulator, channel=channel, results=results, error=error)


def _call_key(call: Call) -> tuple[str, tuple[tuple[str, str], ...]]:
    method, params = call
    return method, tuple(sorted(params.items()))


def check_case(case: TelegramCase, run: CaseRun) -> None:
    """Assert that ``run`` is exactly what ``case`` expects."""
    assert run.simulator.records_dropped == 0, "simulator dropped records: raise max_records"
    received = sorted(_call_key((r.method, r.params)) for r in run.simulator.received)
    expected = sorted(_call_key(call) for call in case.expected_requests)
    assert received == expected, "the Bot API received other calls than expected"

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


async def run_and_check(case: TelegramCase) -> CaseRun:
    run = await run_case(case)
    check_case(case, run)
    return run
