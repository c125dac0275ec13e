"""Telegram: personal messages from the bot, posts to the agency's channel, citizens' updates.

``adapter`` holds the two channels (``TelegramChannel``, ``TelegramChannelPost``), ``config``
the bot settings, ``status`` the error tables, ``pacing`` the per-chat limit, ``webhook`` the
pure webhook check and update parser, and ``simulator`` a real aiohttp server speaking the Bot
API, used by ``warta demo``, ``warta simulate telegram``, the tests and the benchmarks.
"""

from channels.telegram.adapter import TelegramChannel, TelegramChannelPost
from channels.telegram.config import TelegramConfig
from channels.telegram.webhook import (
    SECRET_HEADER,
    TelegramInbound,
    UpdateFieldError,
    parse_update,
    verify_secret_token,
)

__all__ = [
    "SECRET_HEADER",
    "TelegramChannel",
    "TelegramChannelPost",
    "TelegramConfig",
    "TelegramInbound",
    "UpdateFieldError",
    "parse_update",
    "verify_secret_token",
]
