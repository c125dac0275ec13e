"""What citizens send the bot: the webhook's authenticity check and update parser, pure.

Telegram POSTs one JSON ``Update`` per request to the URL given to ``setWebhook``, with the
``secret_token`` we chose in the ``X-Telegram-Bot-Api-Secret-Token`` header; it signs nothing
else, so that header is the whole check (https://core.telegram.org/bots/api#setwebhook).
Telegram repeats a delivery until it gets a 2xx answer, so a route should answer 2xx to any
authentic update, including ones it ignores or cannot parse (and log the field).

Updates we act on (https://core.telegram.org/bots/api#update):

- ``message`` with ``text``: a command (``/start``, ``/stop``, ``/cek CODE``, ...) or free
  text. ``/start PAYLOAD`` is how a deep link ``t.me/<bot>?start=PAYLOAD`` arrives; the
  payload is 1-64 of ``A-Z a-z 0-9 _ -`` (https://core.telegram.org/bots/features#deep-linking).
- ``my_chat_member`` for a private chat: the citizen blocked the bot (new status
  ``kicked``) or unblocked it (``member``), so we can opt them out before the next send fails.

Anything else parses to kind ``other``. Errors name the field, never its value.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name

InboundKind = Literal["message", "blocked", "unblocked", "other"]

# Bot commands: "/" then 1-32 of a-z, 0-9 and _ (Telegram lowercases them in the UI; we accept
# any case), optionally "@botusername" when sent in a group.
_COMMAND = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@([A-Za-z][A-Za-z0-9_]{2,31}))?")
_START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_MAX_ARGS = 16  # more words than any command of ours takes; keeps the tuple small


class UpdateFieldError(ValueError):
    """An update lacks a field or has a bad one; ``field`` names it (dotted path)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{problem} field {field!r}")
        self.field = field


@dataclass(frozen=True, slots=True)
class TelegramInbound:
    """One update, reduced to what Warta acts on. Ids and text are personal: not in ``repr``.

    Attributes:
        update_id: Telegram's update sequence number (deduplicate on it).
        kind: ``message``, ``blocked``, ``unblocked`` or ``other``.
        chat_id: the chat to answer in (for a private chat, the citizen's user id).
        chat_type: ``private``, ``group``, ``supergroup`` or ``channel``.
        user_id: the sender (None for channel posts and anonymous admins).
        language_code: the sender's Telegram UI language (IETF tag), when shared.
        message_id: the message's id in its chat.
        text: the text as sent (None if the message has no text, e.g. a photo).
        command: the command without ``/`` and ``@bot``, lowercased; None for free text.
        args: the words after the command.
        start_payload: the deep-link payload of ``/start PAYLOAD``, when valid.
    """

    update_id: int
    kind: InboundKind
    chat_id: int | None = field(default=None, repr=False)
    chat_type: str | None = None
    user_id: int | None = field(default=None, repr=False)
    language_code: str | None = None
    message_id: int | None = None
    text: str | None = field(default=None, repr=False)
    command: str | None = None
    args: tuple[str, ...] = field(default=(), repr=False)
    start_payload: str | None = field(default=None, repr=False)


def verify_secret_token(headers: Mapping[str, str], expected: str | None) -> bool:
    """True when ``headers`` carry ``expected`` in ``X-Telegram-Bot-Api-Secret-Token``.

    Header names match in any case (a plain dict works as well as aiohttp's headers). The
    comparison takes the same time wherever the values differ. No expected secret, or an
    empty one, accepts nothing.
    """
    if not expected:
        return False
    value = headers.get(SECRET_HEADER)
    if value is None:
        wanted = SECRET_HEADER.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    if value is None:
        return False
    return hmac.compare_digest(value.encode(), expected.encode())


def _object(parent: Mapping[str, Any], name: str, path: str) -> Mapping[str, Any]:
    value = parent.get(name)
    if value is None:
        raise UpdateFieldError(path, "missing")
    if not isinstance(value, Mapping):
        raise UpdateFieldError(path, "malformed")
    return value


def _integer(parent: Mapping[str, Any], name: str, path: str) -> int:
    value = parent.get(name)
    if value is None:
        raise UpdateFieldError(path, "missing")
    # JSON numbers only: bool is an int subclass in Python, and "123" is not an id.
    if isinstance(value, bool) or not isinstance(value, int):
        raise UpdateFieldError(path, "malformed")
    return value


def _chat(parent: Mapping[str, Any], prefix: str) -> tuple[int, str]:
    chat = _object(parent, "chat", f"{prefix}.chat")
    chat_id = _integer(chat, "id", f"{prefix}.chat.id")
    chat_type = chat.get("type")
    if not isinstance(chat_type, str) or not chat_type:
        problem = "missing" if chat_type is None else "malformed"
        raise UpdateFieldError(f"{prefix}.chat.type", problem)
    return chat_id, chat_type


def _sender(parent: Mapping[str, Any], prefix: str) -> tuple[int | None, str | None]:
    sender = parent.get("from")
    if sender is None:
        return None, None
    if not isinstance(sender, Mapping):
        raise UpdateFieldError(f"{prefix}.from", "malformed")
    user_id = _integer(sender, "id", f"{prefix}.from.id")
    language = sender.get("language_code")
    if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
        language = None  # optional and informative only: ignore what we cannot read
    return user_id, language


def split_command(
    text: str, *, bot_username: str | None = None
) -> tuple[str | None, tuple[str, ...], str | None]:
    """``text`` -> (command, args, start payload). Free text gives (None, (), None).

    A command addressed to another bot (``/start@other_bot``) is free text when
    ``bot_username`` is given.
    """
    words = text.split(maxsplit=_MAX_ARGS + 1)
    match = _COMMAND.fullmatch(words[0]) if words else None
    if match is None:
        return None, (), None
    addressed = match.group(2)
    if addressed and bot_username and addressed.lower() != bot_username.lstrip("@").lower():
        return None, (), None
    command = match.group(1).lower()
    args = tuple(words[1 : _MAX_ARGS + 1])
    payload = None
    if command == "start" and len(args) == 1 and _START_PAYLOAD.fullmatch(args[0]):
        payload = args[0]
    return command, args, payload


def parse_update(update: object, *, bot_username: str | None = None) -> TelegramInbound:
    """Turn one decoded webhook (or ``getUpdates``) update into a ``TelegramInbound``.

    Raises:
        UpdateFieldError: the update is not an object, or ``update_id``, a message's
            ``message_id``/``chat``/``chat.id``/``chat.type``/``from.id``/``text``, or a
            ``my_chat_member``'s ``chat``/``new_chat_member.status`` is missing or malformed.
    """
    if not isinstance(update, Mapping):
        raise UpdateFieldError("update", "malformed")
    update_id = _integer(update, "update_id", "update_id")

    if "message" in update:
        message = _object(update, "message", "message")
        message_id = _integer(message, "message_id", "message.message_id")
        chat_id, chat_type = _chat(message, "message")
        user_id, language = _sender(message, "message")
        text = message.get("text")
        if text is not None and not isinstance(text, str):
            raise UpdateFieldError("message.text", "malformed")
        command: str | None = None
        args: tuple[str, ...] = ()
        payload: str | None = None
        if text:
            command, args, payload = split_command(text, bot_username=bot_username)
        return TelegramInbound(
            update_id=update_id,
            kind="message",
            chat_id=chat_id,
            chat_type=chat_type,
            user_id=user_id,
            language_code=language,
            message_id=message_id,
            text=text,
            command=command,
            args=args,
            start_payload=payload,
        )

    if "my_chat_member" in update:
        member = _object(update, "my_chat_member", "my_chat_member")
        chat_id, chat_type = _chat(member, "my_chat_member")
        user_id, language = _sender(member, "my_chat_member")
        new = _object(member, "new_chat_member", "my_chat_member.new_chat_member")
        status = new.get("status")
        if not isinstance(status, str):
            raise UpdateFieldError("my_chat_member.new_chat_member.status", "missing")
        kind: InboundKind = "other"
        if chat_type == "private" and status == "kicked":
            kind = "blocked"
        elif chat_type == "private" and status == "member":
            kind = "unblocked"
        return TelegramInbound(
            update_id=update_id,
            kind=kind,
            chat_id=chat_id,
            chat_type=chat_type,
            user_id=user_id,
            language_code=language,
        )

    return TelegramInbound(update_id=update_id, kind="other")
