"""The Telegram channels: personal messages to subscribers, and posts to the agency's channel.

Both talk to the Bot API through python-telegram-bot's ``Bot`` (its own HTTPX transport),
pointed at ``config.base_url`` so the simulator can stand in. Texts go out plain (no
``parse_mode``): a rendition is never parsed as Markdown or HTML, so a stray ``*`` or ``<``
cannot make Telegram refuse an alert.

Limits, and who enforces them:

- about 30 messages per second per bot: ``rate_per_second``, read by the dispatcher, whose
  arrival pacer (``paced_by_arrival``) keeps network jitter and stalls from bunching requests
  into a burst Telegram refuses (PTB's ``AIORateLimiter`` only works inside a PTB
  ``Application``, and has no per-chat limit anyway);
- about one message per second per chat, 20 per minute per group or channel: enforced here by
  ``ChatPacer`` (see ``channels.telegram.pacing``);
- 4096 characters per message: ``max_length``.

The Bot API accepts no idempotency key, so ``OutgoingMessage.idempotency_key`` is not sent; a
retry after a timeout may deliver a message twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import ClassVar

from telegram import Bot, Message
from telegram import error as tg
from telegram.request import HTTPXRequest

from channels.base import Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.telegram import redact
from channels.telegram.config import TelegramConfig
from channels.telegram.pacing import ChatBusy, ChatPacer
from channels.telegram.status import STATUS_MAP, as_account_error, error_for
from gateway.domain import DeliveryState
from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected, Throttled

log = logging.getLogger(__name__)

_CHAT_ID = re.compile(r"-?[1-9]\d{0,19}")
# Public usernames: 5-32 characters, a letter first, then letters, digits and underscores.
_CHANNEL_USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_PUBLIC_POST_URL = "https://t.me/{username}/{message_id}"


def _failed(message: OutgoingMessage, error: ChannelError) -> SendResult:
    return SendResult(delivery_id=message.delivery_id, state=DeliveryState.FAILED, error=error)


class _TelegramBot(Channel):
    """What both Telegram channels share: the bot, its start-up check and the per-chat pacing.

    ``send`` sends each message of the batch with its own ``sendMessage`` call (concurrently;
    ``batch_size`` is 1, so the dispatcher's bucket paces every call). Per-message refusals
    (blocked, chat not found, too long) come back in that message's result. When every
    message of the batch failed on the bot's side (bad token, flood control, network), ``send``
    raises that error instead, so the dispatcher can pause the channel.
    """

    reach: ClassVar[Reach] = "personal"
    max_length: ClassVar[int] = 4096
    max_segments: ClassVar[int | None] = None
    encoding: ClassVar[Encoding] = "unicode"
    batch_size = 1
    rate_per_second = 30.0
    supports_links: ClassVar[bool] = True
    # Telegram's flood control counts messages as they arrive: see Channel.
    paced_by_arrival: ClassVar[bool] = True
    status_map: ClassVar[Mapping[str, DeliveryState]] = STATUS_MAP

    def __init__(self, config: TelegramConfig) -> None:
        self._config = config
        self.bot_username: str | None = config.bot_username
        redact.install(config.token)
        timeout = config.request_timeout
        request = HTTPXRequest(
            connection_pool_size=config.connection_pool_size,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        self._bot = Bot(
            config.token, base_url=config.api_url, base_file_url=config.file_url, request=request
        )
        self._pacer = ChatPacer(
            interval=config.per_chat_interval,
            group_interval=config.group_interval,
            max_wait=config.max_chat_wait,
        )
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def __repr__(self) -> str:
        bot = f"@{self.bot_username}" if self.bot_username else "unknown"
        return f"<{type(self).__name__} channel={self.name!r} bot={bot}>"

    async def start(self) -> None:
        """Check the token with ``getMe``; if Telegram is unreachable, ``send`` tries again."""
        try:
            await self._ensure_ready()
        except ChannelError as exc:
            log.warning("Telegram bot check failed at start (%s: %s)", exc.kind, exc.reason)

    async def close(self) -> None:
        await self._bot.shutdown()
        self._ready = False

    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            await self._call(self._bot.initialize())
            self._ready = True
            self.bot_username = self.bot_username or self._bot.username
            log.info("Telegram bot @%s ready", self.bot_username)

    async def register_webhook(self, url: str) -> None:
        """Ask Telegram to POST updates to ``url`` with our ``webhook_secret`` in the header.

        Raises:
            ConfigError: no ``webhook_secret`` configured, or Telegram refused the token.
            ConnectionFailed: Telegram could not be reached.
        """
        if self._config.webhook_secret is None:
            raise ConfigError("webhook_secret is not configured")
        await self._call(
            self._bot.set_webhook(
                url=url,
                secret_token=self._config.webhook_secret,
                allowed_updates=["message", "my_chat_member"],
            )
        )

    async def delete_webhook(self) -> None:
        await self._call(self._bot.delete_webhook())

    async def get_updates(self, offset: int | None, *, timeout: int) -> list[dict[str, object]]:
        """Long-poll ``getUpdates`` (for deployments without a public URL for the webhook).

        Returns the updates as the Bot API's JSON objects, for ``webhook.parse_update``.

        Raises:
            ConfigError: the token was refused, or a webhook is still set (409).
            ConnectionFailed: Telegram could not be reached or the poll timed out.
        """
        await self._ensure_ready()
        found: list[dict[str, object]] = []

        async def poll() -> None:
            updates = await self._bot.get_updates(
                offset=offset,
                timeout=timeout,
                read_timeout=timeout + self._config.request_timeout,
                allowed_updates=["message", "my_chat_member"],
            )
            found.extend(update.to_dict() for update in updates)

        await self._call(poll())
        return found

    @staticmethod
    async def _call(call: Awaitable[object]) -> None:
        """Await a Bot API call; a failure becomes our error kind, with no trace of PTB's.

        PTB's messages can hold the token (a refused token is quoted whole), so the error is
        raised outside the ``except`` block: neither ``__cause__`` nor ``__context__`` keeps
        the original.
        """
        failure: ChannelError | None = None
        try:
            await call
        except tg.TelegramError as exc:
            failure = error_for(exc)
        if failure is not None:
            raise failure

    def _valid_recipient(self, recipient: str) -> bool:
        return _CHAT_ID.fullmatch(recipient) is not None

    def _classify(self, error: ChannelError) -> ChannelError:
        return error

    def _url(self, recipient: str, sent: Message) -> str | None:
        return None

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``batch``; see the class docstring.

        Raises:
            ConfigError: the token was refused (or, for a channel post, the channel is wrong).
            Throttled: Telegram's flood control answered every message (``retry_after`` set).
            ConnectionFailed: every message failed on the network, timed out or got a 5xx.
        """
        if not batch:
            return []
        await self._ensure_ready()
        answers = await asyncio.gather(*(self._send_one(message) for message in batch))
        bot_errors = [error for _, error in answers if error is not None]
        if answers and len(bot_errors) == len(answers):
            raise bot_errors[0]
        return [result for result, _ in answers]

    def _refused(
        self, message: OutgoingMessage, error: ChannelError
    ) -> tuple[SendResult, ChannelError | None]:
        error = self._classify(error)
        bot_side = isinstance(error, ConfigError | ConnectionFailed)
        # A citizen's refusal is routine at scale (blocked bots); the bot's own is not.
        level = logging.WARNING if bot_side else logging.INFO
        log.log(level, "Telegram message refused (%s: %s)", error.kind, error.reason)
        return _failed(message, error), error if bot_side else None

    async def _send_one(self, message: OutgoingMessage) -> tuple[SendResult, ChannelError | None]:
        """The message's result, and the error again when it concerns the bot, not the chat."""
        chat = message.recipient
        if not self._valid_recipient(chat):
            return self._refused(message, Rejected("invalid_chat_id"))
        try:
            async with self._pacer.turn(chat):
                sent = await self._bot.send_message(chat_id=chat, text=message.text)
        except ChatBusy as busy:
            # Our own pacing, not Telegram's answer: re-queue this message only.
            return _failed(message, Throttled("chat_busy", retry_after=busy.wait)), None
        except tg.TelegramError as exc:
            return self._refused(message, error_for(exc))
        log.debug("Telegram accepted message %s", sent.message_id)
        result = SendResult(
            delivery_id=message.delivery_id,
            state=DeliveryState.SENT,
            provider_message_id=str(sent.message_id),
            url=self._url(chat, sent),
        )
        return result, None


class TelegramChannel(_TelegramBot):
    """Personal messages to every subscriber who started the bot.

    ``recipient`` is the subscriber's chat id as a string (a private chat id is the user's
    id). A 403 from Telegram (blocked the bot, deleted account, never started it) is
    ``RecipientStopped``: the dispatcher opts the citizen out of Telegram at once.
    """

    name: ClassVar[str] = "telegram"
    reach: ClassVar[Reach] = "personal"

    def __init__(self, config: TelegramConfig) -> None:
        super().__init__(config)
        # The bot's own limit shadows the class default.
        self.rate_per_second = config.rate_per_second


class TelegramChannelPost(_TelegramBot):
    """One post per announcement to the agency's Telegram channel.

    ``recipient`` is the channel's ``@username`` or its numeric id (``-100...``); the bot must
    be an administrator allowed to post. The result carries the post's ``message_id`` and, when
    the channel has a public username, its URL ``https://t.me/<username>/<message_id>``.

    Refusals about the chat (not found, bot not admin, removed) are ``ConfigError`` here, not
    ``RecipientStopped``: the recipient is our own account. ``rate_per_second`` is 1: posts are
    few, and each channel is also paced at ``group_interval`` (20 per minute).
    """

    name: ClassVar[str] = "telegram_channel"
    reach: ClassVar[Reach] = "social"
    rate_per_second = 1.0

    def _valid_recipient(self, recipient: str) -> bool:
        return (
            _CHANNEL_USERNAME.fullmatch(recipient) is not None
            or _CHAT_ID.fullmatch(recipient) is not None
        )

    def _classify(self, error: ChannelError) -> ChannelError:
        return as_account_error(error)

    def _url(self, recipient: str, sent: Message) -> str | None:
        username = sent.chat.username
        if not username and recipient.startswith("@"):
            username = recipient[1:]
        if not username:
            return None
        return _PUBLIC_POST_URL.format(username=username, message_id=sent.message_id)
