"""Bot settings for Telegram, shared by the personal channel and the channel-post channel."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

PRODUCTION_BASE_URL = "https://api.telegram.org"

# setWebhook's secret_token: 1-256 characters, only A-Z, a-z, 0-9, _ and -.
SECRET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class TelegramSettings(Protocol):
    """What ``TelegramConfig.from_settings`` reads: the lead's ``[telegram]`` config section."""

    @property
    def base_url(self) -> str: ...
    @property
    def bot_username(self) -> str | None: ...
    @property
    def request_timeout_s(self) -> float: ...
    @property
    def connection_pool_size(self) -> int: ...
    @property
    def rate_per_second(self) -> float: ...
    @property
    def per_chat_interval_s(self) -> float: ...
    @property
    def group_interval_s(self) -> float: ...
    @property
    def max_chat_wait_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    """How to reach one Telegram bot.

    Attributes:
        token: the bot token from @BotFather (``123456:ABC...``); never shown in ``repr``.
            It is part of every Bot API URL, which is why ``channels.telegram.redact`` keeps it
            out of third-party log lines.
        base_url: scheme and host of the Bot API, without ``/bot`` (the adapter adds
            ``/bot<token>`` and ``/file/bot<token>``), so a simulator's ``start()`` result
            can be passed as is.
        bot_username: the bot's @username without ``@``; lets ``parse_update`` ignore
            commands addressed to other bots in groups. None learns it from ``getMe``.
        webhook_secret: the ``secret_token`` given to ``setWebhook``; Telegram sends it back in
            ``X-Telegram-Bot-Api-Secret-Token``. None when updates are not received by webhook.
        request_timeout: seconds for connecting, writing and reading each request.
        connection_pool_size: most Bot API requests in flight at once.
        rate_per_second: messages per second for the whole bot (Telegram: "about 30"); the
            dispatcher's token bucket enforces it.
        per_chat_interval: seconds between two messages to one private chat (Telegram: about
            one per second); the adapter enforces it.
        group_interval: the same for groups and channels (Telegram: 20 per minute).
        max_chat_wait: the longest the adapter waits for a chat's turn; a message that would
            wait longer is handed back as ``Throttled`` so the dispatcher re-queues it
            instead of holding a worker.
    """

    token: str = field(repr=False)
    base_url: str = PRODUCTION_BASE_URL
    bot_username: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    request_timeout: float = 10.0
    connection_pool_size: int = 64
    rate_per_second: float = 30.0
    per_chat_interval: float = 1.0
    group_interval: float = 3.0
    max_chat_wait: float = 2.0

    def __post_init__(self) -> None:
        # Messages name the setting, never its value.
        if not self.token or any(c.isspace() or c == "/" for c in self.token):
            raise ValueError("token is empty or malformed")
        if self.webhook_secret is not None and not SECRET_TOKEN_PATTERN.fullmatch(
            self.webhook_secret
        ):
            raise ValueError("webhook_secret must be 1-256 of A-Z, a-z, 0-9, _ and -")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        if self.rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if min(self.per_chat_interval, self.group_interval, self.max_chat_wait) < 0:
            raise ValueError("per_chat_interval, group_interval and max_chat_wait must be >= 0")

    @property
    def api_url(self) -> str:
        """``base_url`` + ``/bot``: what ``telegram.Bot(base_url=...)`` expects."""
        return f"{self.base_url.rstrip('/')}/bot"

    @property
    def file_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/file/bot"

    @classmethod
    def from_settings(
        cls, section: TelegramSettings, token: str, webhook_secret: str | None = None
    ) -> TelegramConfig:
        """Build from the ``[telegram]`` settings and the secrets read from the environment."""
        return cls(
            token=token,
            base_url=section.base_url,
            bot_username=section.bot_username,
            webhook_secret=webhook_secret,
            request_timeout=section.request_timeout_s,
            connection_pool_size=section.connection_pool_size,
            rate_per_second=section.rate_per_second,
            per_chat_interval=section.per_chat_interval_s,
            group_interval=section.group_interval_s,
            max_chat_wait=section.max_chat_wait_s,
        )
