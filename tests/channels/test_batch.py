"""``channels.batch.send_each``: one request per message (Graph API, X, Mastodon), and what
the batch as a whole reports to the dispatcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from channels.base import OutgoingMessage, SendResult
from channels.batch import send_each
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected, Throttled

MESSAGES = [OutgoingMessage(i, f"@account{i}", "Jalan ditutup", f"k{i}") for i in range(3)]


def answering(
    errors: dict[int, ChannelError],
) -> Callable[[OutgoingMessage], Awaitable[SendResult]]:
    async def send_one(message: OutgoingMessage) -> SendResult:
        if message.delivery_id in errors:
            raise errors[message.delivery_id]
        return SendResult(message.delivery_id, DeliveryState.SENT, f"post-{message.delivery_id}")

    return send_one


async def test_some_went_and_the_errors_of_the_others_are_their_own_results() -> None:
    results = await send_each(MESSAGES, answering({1: ConnectionFailed("timeout")}))
    assert [r.state for r in results] == [
        DeliveryState.SENT,
        DeliveryState.FAILED,
        DeliveryState.SENT,
    ]
    assert isinstance(results[1].error, ConnectionFailed)


async def test_every_request_failing_for_the_account_raises_the_most_telling_error() -> None:
    errors: dict[int, ChannelError] = {
        0: ConnectionFailed("timeout"),
        1: Throttled("HTTP 429", retry_after=30),
        2: ConfigError("authentication refused (HTTP 401)"),
    }
    with pytest.raises(ConfigError):
        await send_each(MESSAGES, answering(errors))
    del errors[2]
    with pytest.raises(Throttled):
        await send_each(MESSAGES[:2], answering(errors))


async def test_every_message_refused_for_itself_keeps_each_reason() -> None:
    """Refusals are about each message (too long, a duplicate post), not the channel: the
    dispatcher records each with its own reason and does not pause the channel."""
    errors: dict[int, ChannelError] = {i: Rejected(f"HTTP 40{i}") for i in range(3)}
    results = await send_each(MESSAGES, answering(errors))
    assert [r.error.reason if r.error else None for r in results] == [
        "HTTP 400",
        "HTTP 401",
        "HTTP 402",
    ]
