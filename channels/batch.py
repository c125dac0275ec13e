"""One request per message, run concurrently, and what the batch reports (Graph API, X,
Mastodon: their APIs take one message per request)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from channels.base import OutgoingMessage, SendResult
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, ConfigError, Rejected, Throttled


def failed(message: OutgoingMessage, error: ChannelError) -> SendResult:
    return SendResult(delivery_id=message.delivery_id, state=DeliveryState.FAILED, error=error)


def batch_error(errors: Sequence[ChannelError]) -> ChannelError:
    """The error to raise when every request of a batch failed: the one an operator must see."""
    for kind in (ConfigError, Throttled):
        for error in errors:
            if isinstance(error, kind):
                return error
    return errors[0]


async def send_each(
    messages: Sequence[OutgoingMessage],
    send_one: Callable[[OutgoingMessage], Awaitable[SendResult]],
) -> list[SendResult]:
    """Run ``send_one`` for every message concurrently.

    ``send_one`` returns the message's result (per-message errors inside) or raises a
    ``ChannelError``. When every request raised an error that concerns the account or the
    connection, the most telling one is raised for the batch, so the dispatcher can pause or
    stop the channel; otherwise (some went, or the provider refused each message for itself)
    the raised errors are carried in those messages' results.
    """
    if not messages:
        return []
    outcomes = await asyncio.gather(*(send_one(m) for m in messages), return_exceptions=True)
    errors: list[ChannelError] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, ChannelError):
                raise outcome
            errors.append(outcome)
    if len(errors) == len(messages):
        worst = batch_error(errors)
        if not isinstance(worst, Rejected):
            raise worst
    results: list[SendResult] = []
    for message, outcome in zip(messages, outcomes, strict=True):
        if isinstance(outcome, ChannelError):
            results.append(failed(message, outcome))
        elif isinstance(outcome, SendResult):
            results.append(outcome)
    return results
