"""``warta phone``: a feature phone in the terminal, for trying the citizen's side of the demo.

It reads ``demo-credentials.json`` (written by ``warta demo``) for the callback URLs and the
Africa's Talking simulator's address, then plays what Africa's Talking would send:

- ``warta phone ussd``: dial the USSD menu and type a choice per line (Ctrl-D hangs up);
- ``warta phone sms "CEK K7P2QX"``: text the agency's short code, then show the SMS replies
  the gateway sent to this number through the simulator (waits a few seconds for them).

The number is a made-up demo number unless ``--phone`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from channels.africastalking.ussd_sim import interactive

DEMO_PHONE = "+6281299000001"
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
