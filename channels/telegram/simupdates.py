"""Citizens' side of the Telegram simulator: updates as Telegram sends them, and their POST.

The JSON shapes follow https://core.telegram.org/bots/api#update: a ``message`` update for a
text (``/start``, ``/stop``, ``/cek CODE``, free text), a ``my_chat_member`` update when a
citizen blocks or unblocks the bot. ``post_webhook_update`` POSTs one to a webhook the way
Telegram does, with the ``X-Telegram-Bot-Api-Secret-Token`` header.
"""

from __future__ import annotations

import time

import aiohttp

from channels.telegram.simwire import JsonObject
from channels.telegram.webhook import SECRET_HEADER


def _user(chat_id: int, language_code: str | None, first_name: str) -> JsonObject:
    user: JsonObject = {"id": chat_id, "is_bot": False, "first_name": first_name}
    if language_code:
        user["language_code"] = language_code
    return user


def text_update(
    update_id: int,
    message_id: int,
    chat_id: int,
    text: str,
    *,
    language_code: str | None = "id",
    first_name: str = "Warga",
) -> JsonObject:
    """A private-chat ``message`` update: the citizen ``chat_id`` sent ``text``.

    Command entities are included as Telegram adds them (``bot_command`` at offset 0).
    """
    message: JsonObject = {
        "message_id": message_id,
        "from": _user(chat_id, language_code, first_name),
        "chat": {"id": chat_id, "first_name": first_name, "type": "private"},
        "date": int(time.time()),
        "text": text,
    }
    if text.startswith("/"):
        length = len(text.split(maxsplit=1)[0]) if text.split() else 1
        message["entities"] = [{"offset": 0, "length": length, "type": "bot_command"}]
    return {"update_id": update_id, "message": message}


def member_update(
    update_id: int,
    chat_id: int,
    bot_user: JsonObject,
    *,
    blocked: bool,
    first_name: str = "Warga",
) -> JsonObject:
    """A ``my_chat_member`` update: the citizen blocked (``kicked``) or unblocked the bot."""
    old, new = ("member", "kicked") if blocked else ("kicked", "member")
    now = int(time.time())
    new_member: JsonObject = {"user": bot_user, "status": new}
    if blocked:
        new_member["until_date"] = 0
    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": {"id": chat_id, "first_name": first_name, "type": "private"},
            "from": _user(chat_id, None, first_name),
            "date": now,
            "old_chat_member": {"user": bot_user, "status": old},
            "new_chat_member": new_member,
        },
    }


async def post_webhook_update(
    url: str,
    update: JsonObject,
    secret_token: str | None,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 10.0,
) -> int:
    """POST ``update`` to ``url`` as Telegram does; returns the HTTP status of the answer.

    ``secret_token`` None sends no secret header (as when ``setWebhook`` was given none).
    """
    headers = {SECRET_HEADER: secret_token} if secret_token is not None else {}
    own = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
    try:
        async with client.post(url, json=update, headers=headers) as response:
            await response.read()
            return response.status
    finally:
        if own:
            await client.close()
