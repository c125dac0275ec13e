"""Telegram Bot API errors mapped to Warta's error kinds, as plain tables.

The Bot API answers ``{"ok": false, "error_code": N, "description": "...", "parameters":
{...}}``; python-telegram-bot turns the HTTP status into an exception class (403 ->
``Forbidden``, 400 -> ``BadRequest``, 401/404 -> ``InvalidToken``, 409 -> ``Conflict``, other
codes -> ``NetworkError``), and ``parameters`` into ``RetryAfter`` (flood control) or
``ChatMigrated``. Within a class, the description says why; we match known phrases and keep
only our own reason word, because a description is free text we do not control.

Sources: https://core.telegram.org/bots/api#making-requests (response shape),
https://core.telegram.org/bots/api#responseparameters, https://core.telegram.org/bots/faq
(flood limits) and the descriptions Telegram sends in practice (e.g. "Forbidden: bot was
blocked by the user").
"""

from __future__ import annotations

import datetime as dtm
import warnings
from collections.abc import Mapping

from telegram import error as tg
from telegram.warnings import PTBDeprecationWarning

from gateway.domain import DeliveryState
from gateway.errors import (
    ChannelError,
    ConfigError,
    ConnectionFailed,
    RecipientStopped,
    Rejected,
    Throttled,
)

# Telegram sends no delivery reports: a message the Bot API accepted is in the chat, and
# ``sent`` is the last word we will ever have about it (courier, too, stops at "wired").
STATUS_MAP: Mapping[str, DeliveryState] = {"ok": DeliveryState.SENT}

# 403 Forbidden: Telegram will not let this bot write to this chat. For a citizen that is
# their choice (blocked, deleted account, never started the bot, removed it from a group):
# the dispatcher opts them out of Telegram. Unknown 403 words are rejections, never opt-outs.
FORBIDDEN: tuple[tuple[str, type[ChannelError], str], ...] = (
    ("bot was blocked by the user", RecipientStopped, "bot_blocked"),
    ("user is deactivated", RecipientStopped, "user_deactivated"),
    ("bot can't initiate conversation", RecipientStopped, "cannot_initiate"),
    ("bot was kicked", RecipientStopped, "bot_kicked"),
    ("bot is not a member", RecipientStopped, "not_a_member"),
)
UNKNOWN_FORBIDDEN: tuple[type[ChannelError], str] = (Rejected, "forbidden")

# 400 Bad Request: this message to this chat is refused; permanent for this message.
BAD_REQUEST: tuple[tuple[str, type[ChannelError], str], ...] = (
    ("chat not found", Rejected, "chat_not_found"),
    ("chat_id is empty", Rejected, "chat_id_empty"),
    ("message is too long", Rejected, "message_too_long"),
    ("message text is empty", Rejected, "text_empty"),
    ("not enough rights", Rejected, "no_rights"),
    ("have no rights", Rejected, "no_rights"),
    ("need administrator rights", Rejected, "no_rights"),
    ("user not found", Rejected, "chat_not_found"),
)
UNKNOWN_BAD_REQUEST: tuple[type[ChannelError], str] = (Rejected, "bad_request")

# For a post to the agency's own channel, "the recipient" is our account: a refusal about
# the chat means the configuration (channel name, bot's admin rights) is wrong, and no other
# post will do better until an operator fixes it.
ACCOUNT_REASONS = frozenset(
    {
        "bot_blocked",
        "cannot_initiate",
        "bot_kicked",
        "not_a_member",
        "chat_not_found",
        "chat_id_empty",
        "no_rights",
        "chat_migrated",
        "forbidden",
        "invalid_chat_id",
    }
)


def _by_phrase(
    description: str,
    table: tuple[tuple[str, type[ChannelError], str], ...],
    unknown: tuple[type[ChannelError], str],
) -> ChannelError:
    text = description.lower()
    for phrase, kind, reason in table:
        if phrase in text:
            return kind(reason)
    kind, reason = unknown
    return kind(reason)


def retry_after_seconds(exc: tg.RetryAfter) -> float:
    """Seconds to wait, whichever type this PTB version returns (int now, timedelta later)."""
    with warnings.catch_warnings():
        # PTB 22 warns on every read until PTB_TIMEDELTA is set; the value is what we need.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, dtm.timedelta):
        return value.total_seconds()
    return float(value)


def error_for(exc: tg.TelegramError) -> ChannelError:
    """The Warta error kind for a python-telegram-bot exception.

    The result never carries Telegram's description or any part of the request (token, chat
    id, text): only our reason word. Order matters: ``BadRequest`` and ``TimedOut`` are
    subclasses of ``NetworkError`` in python-telegram-bot.
    """
    if isinstance(exc, tg.RetryAfter):
        return Throttled("flood_control", retry_after=retry_after_seconds(exc))
    if isinstance(exc, tg.ChatMigrated):
        return Rejected("chat_migrated")
    if isinstance(exc, tg.Forbidden):
        return _by_phrase(exc.message, FORBIDDEN, UNKNOWN_FORBIDDEN)
    if isinstance(exc, tg.BadRequest):
        return _by_phrase(exc.message, BAD_REQUEST, UNKNOWN_BAD_REQUEST)
    if isinstance(exc, tg.InvalidToken):
        return ConfigError("invalid_token")
    if isinstance(exc, tg.EndPointNotFound):
        return ConfigError("endpoint_not_found")
    if isinstance(exc, tg.Conflict):
        return ConfigError("conflict")
    if isinstance(exc, tg.TimedOut):
        return ConnectionFailed("timeout")
    if isinstance(exc, tg.NetworkError):
        return ConnectionFailed("network_error")
    return ConnectionFailed("telegram_error")


def as_account_error(error: ChannelError) -> ChannelError:
    """``error`` as a channel post sees it: chat refusals become configuration errors."""
    if isinstance(error, RecipientStopped | Rejected) and error.reason in ACCOUNT_REASONS:
        return ConfigError(error.reason)
    return error
