"""``warta phone``: a feature phone in the terminal, for trying the citizen's side of the demo.

It reads ``demo-credentials.json`` (written by ``warta demo``) for the callback URLs and the
Africa's Talking simulator's address, then plays what Africa's Talking would send:

- ``warta phone ussd``: dial the USSD menu and type a choice per line (Ctrl-D hangs up);
- ``warta phone sms "CEK K7P2QX"``: text the agency's short code, then show the SMS replies
  the gateway sent to this number through the simulator (waits a few seconds for them);
- ``warta phone telegram "/cek K7P2QX"``: write to the bot from a Telegram chat, then show
  what the bot answered (through the Telegram simulator);
- ``warta phone whatsapp "CEK K7P2QX"``: write to the agency's WhatsApp number (the Meta
  simulator signs the webhook and posts it to the gateway), then show what came back on
  WhatsApp: a keyword's answer, or an operator's reply typed within the wait.

The number is a made-up demo number unless ``--phone`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from channels.africastalking.ussd_sim import interactive

DEMO_PHONE = "+6281299000001"
DEMO_CHAT = 700_999_001
SHORT_CODE = "21234"


class DemoNotRunning(Exception):
    pass


def load_credentials(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "demo-credentials.json"
    if not path.is_file():
        raise DemoNotRunning(f"{path} not found: start `warta demo` (or `make demo`) first")
    credentials: dict[str, Any] = json.loads(path.read_text())
    return credentials


async def dial_ussd(
    data_dir: Path,
    phone: str,
    *,
    read: Callable[[], str] = input,
    write: Callable[[str], object] = print,
) -> None:
    url = load_credentials(data_dir)["callbacks"]["africastalking_ussd"]
    await interactive(url, phone, read=read, write=write)


async def send_sms(
    data_dir: Path, phone: str, text: str, *, wait_s: float = 8.0, poll_s: float = 0.3
) -> list[str]:
    """Text the gateway; returns the replies received within ``wait_s`` seconds."""
    credentials = load_credentials(data_dir)
    inbound = credentials["callbacks"]["africastalking_sms_inbound"]
    simulator = credentials["simulators"]["africastalking"].rstrip("/")
    inbox = f"{simulator}/simulator/phones/{phone}/messages"
    async with aiohttp.ClientSession() as http:
        async with http.get(inbox) as answer:
            last = int((await answer.json())["last"])
        form = {
            "from": phone,
            "to": SHORT_CODE,
            "text": text,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "id": uuid.uuid4().hex,
            "linkId": "",
        }
        async with http.post(inbound, data=form) as answer:
            if answer.status != 200:
                raise DemoNotRunning(f"the gateway answered {answer.status} to the SMS")
        replies: list[str] = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            async with http.get(inbox, params={"after": str(last)}) as answer:
                for message in (await answer.json())["messages"]:
                    replies.append(message["text"])
                    last = max(last, int(message["seq"]))
            if replies:
                # A keyword answers with one SMS; give a second one a moment to arrive.
                await asyncio.sleep(poll_s * 2)
                async with http.get(inbox, params={"after": str(last)}) as answer:
                    replies.extend(m["text"] for m in (await answer.json())["messages"])
                return replies
            await asyncio.sleep(poll_s)
        return replies


async def _collect(
    http: aiohttp.ClientSession, url: str, seen: int, *, wait_s: float, poll_s: float
) -> list[str]:
    """Messages after the first ``seen`` at ``url``, waiting up to ``wait_s`` for the first."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        async with http.get(url, params={"after": str(seen)}) as answer:
            messages = list((await answer.json())["messages"])
        if messages:
            await asyncio.sleep(poll_s * 2)  # a second message may follow the first
            async with http.get(url, params={"after": str(seen)}) as answer:
                return list((await answer.json())["messages"])
        await asyncio.sleep(poll_s)
    return []


async def _converse(
    handset: str,
    text: str,
    *,
    refused: Callable[[aiohttp.ClientResponse], Awaitable[str | None]],
    wait_s: float,
    poll_s: float,
) -> list[str]:
    """Say ``text`` from a simulated handset; what reached it within ``wait_s``."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{handset}/messages") as answer:
            seen = int((await answer.json())["count"])
        async with http.post(f"{handset}/say", json={"text": text}) as answer:
            problem = await refused(answer)
        if problem is not None:
            raise DemoNotRunning(problem)
        return await _collect(http, f"{handset}/messages", seen, wait_s=wait_s, poll_s=poll_s)


async def send_telegram(
    data_dir: Path, chat_id: int, text: str, *, wait_s: float = 8.0, poll_s: float = 0.3
) -> list[str]:
    """Write to the bot from ``chat_id``; returns the bot's answers within ``wait_s``."""
    simulator = load_credentials(data_dir)["simulators"]["telegram"].rstrip("/")

    async def refused(answer: aiohttp.ClientResponse) -> str | None:
        if answer.status != 200:
            return f"the Telegram simulator answered {answer.status}"
        return None

    return await _converse(
        f"{simulator}/simulator/chats/{chat_id}",
        text,
        refused=refused,
        wait_s=wait_s,
        poll_s=poll_s,
    )


async def send_whatsapp(
    data_dir: Path, phone: str, text: str, *, wait_s: float = 8.0, poll_s: float = 0.3
) -> list[str]:
    """Write to the agency on WhatsApp from ``phone``; returns what came back within ``wait_s``."""
    simulator = load_credentials(data_dir)["simulators"]["meta"].rstrip("/")

    async def refused(answer: aiohttp.ClientResponse) -> str | None:
        status = (await answer.json()).get("webhook_status") if answer.status == 200 else None
        if status != 200:
            return f"the gateway answered {status} to the WhatsApp message"
        return None

    handset = f"{simulator}/simulator/phones/{phone.lstrip('+')}"
    return await _converse(handset, text, refused=refused, wait_s=wait_s, poll_s=poll_s)
