"""The voice channel: calls a citizen and reads the announcement out (Africa's Talking Voice)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from channels.base import Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.voice.client import VoiceClient
from channels.voice.config import VoiceConfig
from channels.voice.speech import SAY_LANGUAGES, SpeechRenderer, estimated_call_seconds
from channels.voice.status import (
    CALL_ENTRY_STATUS,
    HANGUP_CAUSES,
    REQUEST_ERROR_WORDS,
    UNKNOWN_CALL_ENTRY_STATUS,
    UNKNOWN_REQUEST_ERROR,
)
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected

log = logging.getLogger(__name__)

# The SDK's own check; a number it would refuse never leaves Warta.
_E164 = re.compile(r"\+\d{1,3}\d{3,}")
_WORD = re.compile(r"[A-Za-z]{1,64}")


def _safe_word(value: object) -> str:
    """The provider's status word if it is one; anything else could carry personal data."""
    text = str(value)
    return text if _WORD.fullmatch(text) else "unrecognised"


def _digits(number: str) -> str:
    return number.strip().lstrip("+")


class VoiceChannel(Channel):
    """Outbound calls via Africa's Talking.

    ``send`` places one call per message, in call requests of at most ``batch_size`` numbers
    (run concurrently on the client's thread pool), and matches the answer to deliveries by
    number. A queued call is ``sent`` with its ``sessionId`` as ``provider_message_id``; what
    the call says is decided later, when Africa's Talking POSTs the answer callback and the
    gateway replies with ``answer_document`` (see ``channels.voice.actions``), and its final
    callback makes the delivery ``delivered`` or ``failed`` (``VoiceCallback.delivery_report``).

    ``max_length`` bounds what one call reads out: about 2 minutes of speech at ~150 words a
    minute, since every minute is billed and a citizen can press 1 to hear it again.
    """

    name: ClassVar[str] = "voice"
    reach: ClassVar[Reach] = "personal"
    encoding: ClassVar[Encoding] = "unicode"
    max_length: ClassVar[int] = 1600
    max_segments: ClassVar[int | None] = None
    batch_size = 50
    rate_per_second = 5.0
    supports_links: ClassVar[bool] = False
    status_map: ClassVar[Mapping[str, DeliveryState]] = HANGUP_CAUSES
    call_status_map: ClassVar[Mapping[str, type[ChannelError] | None]] = CALL_ENTRY_STATUS

    def __init__(self, config: VoiceConfig, *, languages: Sequence[str] = ("id", "en")) -> None:
        self._config = config
        self._languages = tuple(languages)
        self.batch_size = config.batch_size
        self.rate_per_second = config.rate_per_second
        self._client = VoiceClient(config)
        # Calls are paid from the application's balance, as its SMS are.
        self.paying_account = f"africastalking:{config.username}"
        self.renderer = SpeechRenderer(
            config.audio_dir,
            config.public_url,
            program=config.espeak_program,
            say_voice=config.say_voice,
            concurrency=config.synthesis_concurrency,
            timeout=config.synthesis_timeout,
        )

    def __repr__(self) -> str:
        return f"<VoiceChannel channel='voice' username={self._config.username!r}>"

    @property
    def config(self) -> VoiceConfig:
        """The settings calls are placed with (the gateway's callback routes read them too)."""
        return self._config

    async def start(self) -> None:
        """Fail at start-up, not mid-call, when a configured language needs espeak-ng.

        Raises:
            ConfigError: espeak-ng is not installed and a language other than English is used.
        """
        if any(language not in SAY_LANGUAGES for language in self._languages):
            self.renderer.executable()

    async def close(self) -> None:
        await self._client.close()

    async def call_seconds(self, text: str, language: str) -> float:
        """How long a call reading ``text`` once lasts (``SpeechRenderer.call_seconds``), with
        this channel's repeat key and wait for it; what the preview and fan-out price."""
        return await self.renderer.call_seconds(
            text,
            language,
            repeat_key=self._config.repeat_key,
            digits_timeout=self._config.digits_timeout,
        )

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Place a call to each message's recipient; see the class docstring.

        Raises:
            ConfigError: credentials refused, or every answered number hit an account problem
                (insufficient credit, caller id).
            Throttled: every request was throttled (HTTP 429).
            ConnectionFailed: every request failed on the network, timed out or got a 5xx.
        """
        results: list[SendResult] = []
        callable_: list[OutgoingMessage] = []
        for message in batch:
            if _E164.fullmatch(message.recipient):
                callable_.append(message)
            else:
                results.append(_failed(message, Rejected("InvalidPhoneNumber")))
        size = self.batch_size
        chunks = [callable_[start : start + size] for start in range(0, len(callable_), size)]
        if not chunks:
            return results
        outcomes = await asyncio.gather(
            *(self._call_chunk(chunk) for chunk in chunks), return_exceptions=True
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for error in errors:
            if not isinstance(error, ChannelError):
                raise error
        if len(errors) == len(chunks):
            raise errors[0]
        answered: list[SendResult] = []
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, ChannelError):
                results.extend(_failed(message, outcome) for message in chunk)
            elif isinstance(outcome, list):
                answered.extend(outcome)
        if not errors and answered and all(isinstance(r.error, ConfigError) for r in answered):
            # Every number refused for an account reason: the batch's problem, so the
            # dispatcher can stop calling on this account until an operator acts.
            first = answered[0].error
            assert first is not None
            raise first
        return results + answered

    async def _call_chunk(self, chunk: list[OutgoingMessage]) -> list[SendResult]:
        log.debug("placing one call request with %d numbers", len(chunk))
        answer = await self._client.call([m.recipient for m in chunk])
        return match_answer(chunk, answer)


def _failed(message: OutgoingMessage, error: ChannelError) -> SendResult:
    return SendResult(delivery_id=message.delivery_id, state=DeliveryState.FAILED, error=error)


def _request_error(message: object) -> ChannelError:
    """Our error for an ``errorMessage`` that came without entries (the text is not kept)."""
    lowered = str(message).lower().replace(" ", "")
    for keyword, kind, word in REQUEST_ERROR_WORDS:
        if keyword in lowered:
            return kind(word)
    kind, word = UNKNOWN_REQUEST_ERROR
    log.warning("call request refused with an unrecognised errorMessage")
    return kind(word)


def match_answer(chunk: list[OutgoingMessage], answer: Mapping[str, Any]) -> list[SendResult]:
    """Pair each entry of a call request's answer with the delivery called at that number.

    Raises:
        ConfigError / ConnectionFailed: the answer lists no entries and its ``errorMessage``
            names an account problem / something else.
        ConnectionFailed: the answer is not shaped like Africa's Talking's.
    """
    entries = answer.get("entries")
    if not isinstance(entries, list):
        raise ConnectionFailed("unexpected response shape")
    if not entries:
        message = answer.get("errorMessage")
        if message in (None, "None", ""):
            raise ConnectionFailed("answer lists no calls")
        raise _request_error(message)
    waiting: dict[str, deque[OutgoingMessage]] = defaultdict(deque)
    for message in chunk:
        waiting[_digits(message.recipient)].append(message)
    results: list[SendResult] = []
    strangers = 0
    for entry in entries:
        queue = waiting.get(_digits(str(entry.get("phoneNumber", ""))))
        if not queue:
            strangers += 1
            continue
        results.append(_result(queue.popleft(), entry))
    if strangers:
        log.warning("answer named %d number(s) that were not in the request", strangers)
    unanswered = [message for queue in waiting.values() for message in queue]
    if unanswered:
        # No word about these: calling again may ring twice, but an alert lost is worse.
        log.warning("answer left %d number(s) without a status", len(unanswered))
        results.extend(_failed(m, ConnectionFailed("no status for number")) for m in unanswered)
    return results


def _result(message: OutgoingMessage, entry: Mapping[str, Any]) -> SendResult:
    word = _safe_word(entry.get("status", ""))
    if word in CALL_ENTRY_STATUS:
        error_kind = CALL_ENTRY_STATUS[word]
    else:
        log.warning("unknown Africa's Talking call status %s; rejecting", word)
        error_kind = UNKNOWN_CALL_ENTRY_STATUS
    if error_kind is not None:
        return _failed(message, error_kind(word))
    session_id = entry.get("sessionId")
    if not isinstance(session_id, str) or session_id in ("", "None"):
        # Queued without a session id: we could never match its callbacks.
        return _failed(message, ConnectionFailed("queued without sessionId"))
    return SendResult(
        delivery_id=message.delivery_id,
        state=DeliveryState.SENT,
        provider_message_id=session_id,
    )


async def call_seconds(channel: Channel | None, text: str, language: str) -> float:
    """A call's length on ``channel`` when it is the configured voice channel, else guessed
    from the text with the default repeat key and wait."""
    if isinstance(channel, VoiceChannel):
        return await channel.call_seconds(text, language)
    return estimated_call_seconds(text, language)
