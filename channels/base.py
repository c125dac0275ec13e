"""The small interface every channel adapter implements.

An adapter declares its provider's limits as plain class attributes, so the renderer, the
preview and the dispatcher all read them from one place. It turns a batch of outgoing
messages into per-message results, or raises one of the error kinds in ``gateway.errors``
for the whole batch. It never touches the database and never decides retries.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal, NamedTuple

from gateway.domain import DeliveryState
from gateway.errors import ChannelError

Encoding = Literal["gsm7", "unicode"]
Reach = Literal["personal", "social"]


class OutgoingMessage(NamedTuple):
    """One rendition to one recipient. ``recipient`` is a phone number or chat id: never log it.

    ``reply`` marks an answer to something the citizen sent (a keyword answer, an operator's
    reply) rather than an announcement; a channel may send it another way (WhatsApp: as
    free-form text inside the customer-service window instead of a template).

    A named tuple rather than a frozen dataclass: immutable all the same, and a dispatcher
    makes one per recipient, where a frozen dataclass's ``__init__`` cost 1.8 µs against
    about 0.4 µs.
    """

    delivery_id: int
    recipient: str
    text: str
    idempotency_key: str
    language: str = "id"
    reply: bool = False

    def __repr__(self) -> str:  # the recipient is personal data
        return (
            f"OutgoingMessage(delivery_id={self.delivery_id!r}, text={self.text!r}, "
            f"idempotency_key={self.idempotency_key!r}, language={self.language!r}, "
            f"reply={self.reply!r})"
        )


class Balance(NamedTuple):
    """A provider account's balance; ``currency`` None when the provider did not name one."""

    currency: str | None
    amount: Decimal


class SendResult(NamedTuple):
    """What the provider said about one message of a batch (a named tuple, as above)."""

    delivery_id: int
    state: DeliveryState
    provider_message_id: str | None = None
    cost: Decimal | None = None
    error: ChannelError | None = None
    url: str | None = None  # where a social post can be seen


# The longest provider message id Warta stores (``deliveries`` and ``delivery_reports``); a
# callback naming a longer one is refused, as no message Warta sent can carry it.
MESSAGE_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A provider's later word about a message, already mapped to our state."""

    provider_message_id: str
    state: DeliveryState
    status_word: str
    reason: str | None = None
    network_code: str | None = None
    # What the provider charged, when the report carries it (a voice call's ``amount``).
    cost: Decimal | None = None


class Channel(abc.ABC):
    """Base class of every adapter.

    Limits (override in each adapter):
        name: the channel's stable word, stored on deliveries.
        reach: ``personal`` (one delivery per subscriber) or ``social`` (one post per account).
        max_length: the longest text the provider accepts, in characters.
        reply_max_length: the longest reply (``OutgoingMessage.reply``), when not max_length.
        max_segments: for SMS, the most concatenated segments we allow (None elsewhere).
        encoding: ``gsm7`` when GSM 03.38 segment rules apply, else ``unicode``.
        batch_size: recipients per provider request.
        rate_per_second: messages per second the provider allows us.
        supports_links: whether a link in the text is useful to the reader.
        status_map: provider status word -> our delivery state.
        paced_by_arrival: the provider counts our requests as they arrive and refuses any
            beyond its rate (HTTP 429), so the dispatcher also bounds the requests in flight
            and takes the rate as requests really leave (``gateway.ratelimit.ArrivalPacer``).
    """

    name: ClassVar[str]
    reach: ClassVar[Reach] = "personal"
    max_length: ClassVar[int] = 4096
    reply_max_length: ClassVar[int | None] = None
    max_segments: ClassVar[int | None] = None
    encoding: ClassVar[Encoding] = "unicode"
    # Plain attributes: an instance may set its own from configuration.
    batch_size: int = 1
    rate_per_second: float = 10.0
    # For a social channel: the accounts (pages, usernames) one announcement is posted to.
    accounts: tuple[str, ...] = ()
    # The provider account this channel's messages are paid from, when others pay from it
    # too (SMS and voice calls draw on one Africa's Talking balance); None: its own.
    paying_account: str | None = None
    supports_links: ClassVar[bool] = True
    status_map: ClassVar[Mapping[str, DeliveryState]] = {}
    paced_by_arrival: ClassVar[bool] = False

    @classmethod
    def text_length(cls, text: str) -> int:
        """Length as the provider counts it against ``max_length`` (plain characters here)."""
        return len(text)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before the first send."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once at shutdown."""

    async def balance(self) -> Balance | None:
        """What is left on the provider account this channel pays from, if the provider
        says (None: it does not, or the channel is free). Raises a ``ChannelError``."""
        return None

    @abc.abstractmethod
    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``batch`` (at most ``batch_size`` messages).

        Returns one result per message, in any order. Raises a ``ChannelError`` subclass
        when the whole batch failed (connection, throttling, configuration).
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} channel={self.name!r}>"
