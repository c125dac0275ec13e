"""The SMS channel: bulk SMS through Africa's Talking's official SDK."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, ClassVar

from channels.africastalking.config import AfricasTalkingConfig
from channels.africastalking.sdk import AfricasTalkingClient
from channels.base import Balance, Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.sms.status import DLR_STATUS, SEND_STATUS, UNKNOWN_SEND_STATUS
from gateway.domain import DeliveryState
from gateway.errors import AccountRefused, ChannelError, ConfigError, ConnectionFailed, Rejected
from gateway.pricing import cost_in

log = logging.getLogger(__name__)

# The SDK's own check; a number it would refuse never leaves Warta.
_E164 = re.compile(r"\+\d{1,3}\d{3,}")
_WORD = re.compile(r"[A-Za-z]{1,64}")
# Words Africa's Talking puts in "Message" when it refuses a whole request with HTTP 201
# and no recipients.
_ACCOUNT_WORDS = frozenset({"InvalidSenderId", "InsufficientBalance", "RiskHold"})


def _safe_word(value: object) -> str:
    """The provider's status word if it is one; anything else could carry personal data."""
    text = str(value)
    return text if _WORD.fullmatch(text) else "unrecognised"


def _digits(number: str) -> str:
    return number.strip().lstrip("+")


def parse_cost(value: object, currency: str | None = None) -> Decimal | None:
    """``"KES 0.8000"`` -> ``Decimal("0.8000")``; None when absent or unreadable.

    With ``currency``, a cost stated in another currency is None too
    (``gateway.pricing.cost_in``).
    """
    if not isinstance(value, str):
        return None
    code, amount = _cost_of(value)
    return cost_in(amount, code, currency, source="Africa's Talking")


@lru_cache(maxsize=256)
def _cost_of(text: str) -> tuple[str | None, Decimal | None]:
    # A bulk answer repeats a handful of prices thousands of times; a Decimal is immutable.
    words = text.split()
    if not words:
        return None, None
    code = words[0].upper() if len(words) > 1 and _WORD.fullmatch(words[0]) else None
    try:
        return code, Decimal(words[-1])
    except InvalidOperation:
        return code, None


class SmsChannel(Channel):
    """Bulk SMS via Africa's Talking.

    Warta keeps SMS short: at most ``max_segments`` = 3 concatenated segments, so
    ``max_length`` is 3 x 153 = 459 GSM-7 characters (3 x 67 = 201 when the text needs UCS-2;
    the renderer counts segments). ``batch_size`` and ``rate_per_second`` come from the
    account's config.

    ``send`` groups messages with identical text into bulk requests of at most ``batch_size``
    recipients (one SDK call each, run concurrently on the client's thread pool) and matches
    the answer to deliveries by phone number. A number the SDK would refuse is rejected
    locally. Per-recipient codes map through ``send_status_map``; any result carrying an
    error has state ``failed`` and the dispatcher decides retries from the error's kind.
    """

    name: ClassVar[str] = "sms"
    reach: ClassVar[Reach] = "personal"
    encoding: ClassVar[Encoding] = "gsm7"
    max_segments: ClassVar[int | None] = 3
    max_length: ClassVar[int] = 3 * 153
    batch_size = 100
    rate_per_second = 200.0
    supports_links: ClassVar[bool] = True
    status_map: ClassVar[Mapping[str, DeliveryState]] = DLR_STATUS
    send_status_map: ClassVar[Mapping[int, type[ChannelError] | None]] = SEND_STATUS

    def __init__(self, config: AfricasTalkingConfig) -> None:
        self._config = config
        # Per-account limits shadow the class defaults.
        self.batch_size = config.batch_size
        self.rate_per_second = config.rate_per_second
        self._client = AfricasTalkingClient(config)
        self.paying_account = f"africastalking:{config.username}"

    def __repr__(self) -> str:
        return f"<SmsChannel channel='sms' username={self._config.username!r}>"

    async def close(self) -> None:
        await self._client.close()

    async def balance(self) -> Balance | None:
        """The Africa's Talking account's balance (``"KES 1785.5000"``); None when its answer
        names none or an unreadable one."""
        text = await self._client.balance()
        code, amount = _cost_of(text.replace(",", "")) if text else (None, None)
        return None if amount is None else Balance(code, amount)

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``batch``; see the class docstring.

        Raises:
            ConfigError: credentials refused, or every answered recipient hit an account
                problem (balance, sender id, risk hold).
            Throttled: every request was throttled (HTTP 429).
            ConnectionFailed: every request failed on the network, timed out or got a 5xx.
        """
        results: list[SendResult] = []
        by_text: dict[str, list[OutgoingMessage]] = defaultdict(list)
        for message in batch:
            if _E164.fullmatch(message.recipient):
                by_text[message.text].append(message)
            else:
                results.append(_failed(message, Rejected("InvalidPhoneNumber")))
        size = self.batch_size
        chunks = [
            (text, messages[start : start + size])
            for text, messages in by_text.items()
            for start in range(0, len(messages), size)
        ]
        if not chunks:
            return results
        outcomes = await asyncio.gather(
            *(self._send_chunk(text, chunk) for text, chunk in chunks), return_exceptions=True
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for error in errors:
            if not isinstance(error, ChannelError):
                raise error
        if len(errors) == len(chunks):
            raise errors[0]
        answered: list[SendResult] = []
        for (_text, chunk), outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, ChannelError):
                results.extend(_failed(message, outcome) for message in chunk)
            elif isinstance(outcome, list):
                answered.extend(outcome)
        if not errors and answered and all(isinstance(r.error, ConfigError) for r in answered):
            # The provider refused every recipient for an account reason: report it as the
            # batch's problem so the dispatcher can stop sending on this account.
            first = answered[0].error
            assert first is not None
            raise first
        return results + answered

    async def _send_chunk(self, text: str, chunk: list[OutgoingMessage]) -> list[SendResult]:
        log.debug("sending one bulk SMS request with %d recipients", len(chunk))
        answer = await self._client.send_sms(text, [m.recipient for m in chunk])
        return _match(chunk, answer, self._config.cost_currency)


def _failed(message: OutgoingMessage, error: ChannelError) -> SendResult:
    return SendResult(delivery_id=message.delivery_id, state=DeliveryState.FAILED, error=error)


def _match(
    chunk: list[OutgoingMessage], answer: Mapping[str, Any], currency: str | None = None
) -> list[SendResult]:
    """Pair each recipient entry of ``answer`` with the delivery sent to that number."""
    data = answer.get("SMSMessageData")
    entries = data.get("Recipients") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ConnectionFailed("unexpected response shape")
    if not entries:
        word = _safe_word(data.get("Message", "") if isinstance(data, Mapping) else "")
        if word in _ACCOUNT_WORDS:
            raise (AccountRefused if word == "InsufficientBalance" else ConfigError)(word)
        raise ConnectionFailed("answer lists no recipients")
    # A number is almost always in a request once: a plain dict for the first message per
    # number, a queue only for the rare repeats (the answer pairs them in request order).
    waiting: dict[str, OutgoingMessage] = {}
    repeats: dict[str, deque[OutgoingMessage]] = {}
    for message in chunk:
        number = _digits(message.recipient)
        if number in waiting:
            repeats.setdefault(number, deque()).append(message)
        else:
            waiting[number] = message
    results: list[SendResult] = []
    strangers = 0
    # A bulk answer repeats a handful of prices: each is read once per answer.
    costs: dict[str, Decimal | None] = {}
    sent = DeliveryState.SENT
    for entry in entries:
        number = entry.get("number", "")
        number = _digits(number if isinstance(number, str) else str(number))
        first = waiting.pop(number, None)
        if first is None:
            queue = repeats.get(number)
            if not queue:
                strangers += 1
                continue
            first = queue.popleft()
        if entry.get("statusCode") == _SENT_CODE:
            # The common case inline (what _result decides for it, without the call).
            message_id = entry.get("messageId")
            text = entry.get("cost")
            cost = None
            if isinstance(text, str):
                if text in costs:
                    cost = costs[text]
                else:
                    cost = costs[text] = parse_cost(text, currency)
            results.append(
                SendResult(first.delivery_id, sent, str(message_id) if message_id else None, cost)
            )
            continue
        results.append(_result(first, entry, currency))
    if strangers:
        log.warning("answer named %d number(s) that were not in the request", strangers)
    unanswered = [*waiting.values(), *(message for queue in repeats.values() for message in queue)]
    if unanswered:
        # No word about these: retrying may duplicate one, but an alert lost is worse.
        log.warning("answer left %d recipient(s) without a status", len(unanswered))
        results.extend(_failed(m, ConnectionFailed("no status for recipient")) for m in unanswered)
    return results


# Africa's Talking's "Success": the status code of nearly every recipient of a broadcast.
_SENT_CODE = 101


def _result(message: OutgoingMessage, entry: Mapping[str, Any], currency: str | None) -> SendResult:
    try:
        code = int(entry.get("statusCode", -1))
    except (TypeError, ValueError):
        code = -1
    error_kind = SEND_STATUS.get(code, UNKNOWN_SEND_STATUS)
    if error_kind is None:
        message_id = entry.get("messageId")
        return SendResult(
            delivery_id=message.delivery_id,
            state=DeliveryState.SENT,
            provider_message_id=str(message_id) if message_id else None,
            cost=parse_cost(entry.get("cost"), currency),
        )
    word = _safe_word(entry.get("status", ""))
    if code not in SEND_STATUS:
        log.warning("unknown Africa's Talking statusCode %d (%s); rejecting", code, word)
    return _failed(message, error_kind(word))
