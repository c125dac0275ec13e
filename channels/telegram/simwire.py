"""The Bot API's wire shapes for the simulator: answer envelopes, chats, parameters, draws.

Envelopes per https://core.telegram.org/bots/api#making-requests: ``{"ok": true, "result":
...}`` on success; ``{"ok": false, "error_code": N, "description": "...", "parameters":
{...}}`` with HTTP status N on failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

JsonObject = dict[str, Any]

_CHAT_ID = re.compile(r"-?\d{1,20}")
# What Telegram's front end sends when the API behind it is down: HTML, not JSON.
BAD_GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def ok(result: object, description: str | None = None) -> web.Response:
    body: JsonObject = {"ok": True, "result": result}
    if description:
        body["description"] = description
    return web.json_response(body)


def error(code: int, description: str, **parameters: int) -> web.Response:
    body: JsonObject = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


def wire(value: object) -> str:
    # Parameters as the Bot API reads them: strings as is, anything else JSON-encoded.
    return value if isinstance(value, str) else json.dumps(value)


def chat_object(chat_id: str, channels: Mapping[str, int]) -> JsonObject | None:
    """The ``Chat`` a message to ``chat_id`` lands in; None when there is no such chat."""
    if chat_id.startswith("@"):
        found = channels.get(chat_id[1:])
        if found is None:
            return None
        return {"id": found, "title": chat_id[1:], "username": chat_id[1:], "type": "channel"}
    if not _CHAT_ID.fullmatch(chat_id) or chat_id.lstrip("-") == "0":
        return None
    number = int(chat_id)
    if number > 0:
        return {"id": number, "first_name": "Warga", "type": "private"}
    if chat_id.startswith("-100"):
        names = {v: k for k, v in channels.items()}
        chat: JsonObject = {"id": number, "title": "Channel", "type": "channel"}
        if number in names:
            chat.update(title=names[number], username=names[number])
        return chat
    return {"id": number, "title": "Group", "type": "group"}
