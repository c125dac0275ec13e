"""``warta demo`` as a newcomer runs it: every simulator starts, the first broadcast reaches
every channel and finishes, the credentials file names every callback, the terminal phone
works against it by USSD, SMS and Telegram, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import free_port

WARTA = str(Path(sys.executable).with_name("warta"))


def _phone(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [WARTA, "phone", "--data-dir", str(data_dir), *args],
        input="2\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _get(url: str, token: str) -> Any:
    async def get() -> Any:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                return await response.json()

    return asyncio.run(get())


def test_the_demo_broadcasts_to_every_channel_and_answers_the_terminal_phone(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "demo"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARTA_")}
    demo = subprocess.Popen(
        [WARTA, "demo", "--port", str(port), "--data-dir", str(data_dir), "--subscribers", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert demo.stdout is not None
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Broadcast 1: done" in line:
                break
        text = "".join(output)
        assert "Broadcast 1: done" in text, text[-3000:]
        for channel in ("sms", "telegram", "whatsapp", "facebook", "x", "mastodon"):
            assert f"  {channel} " in text, f"{channel} missing from the counts:\n{text[-2000:]}"

        credentials = json.loads((data_dir / "demo-credentials.json").read_text())
        assert credentials["base_url"] == f"http://127.0.0.1:{port}"
        assert len(credentials["agencies"]) == 2
        assert {"author", "approver", "operator", "admin"} <= set(
            credentials["agencies"][0]["tokens"]
        )
        for name in (
            "africastalking_ussd",
            "africastalking_sms_delivery",
            "africastalking_sms_inbound",
            "telegram_webhook",
        ):
            assert credentials["callbacks"][name].startswith(credentials["base_url"])

        # The simulator charges in the gateway's currency and tariff (IDR 350 a segment by
        # default), so the cost so far reads against the estimate, not in KES beside it.
        operator = credentials["agencies"][0]["tokens"]["operator"]
        listed = _get(
            credentials["base_url"] + "/api/v1/announcements/1/deliveries?channel=sms&limit=20",
            operator,
        )
        costs = [(d["cost"], d["segments"]) for d in listed["items"] if d["state"] == "delivered"]
        assert costs, listed
        assert all(Decimal(str(cost)) == 350 * segments for cost, segments in costs), costs

        code = text.split("Broadcast 1: done — see /a/")[1].split()[0]
        assert f"ASLI. Kode {code}" in _phone(data_dir, "sms", f"CEK {code}")
        assert _phone(data_dir, "ussd").startswith("CON ")
        assert "Selamat datang" in _phone(data_dir, "telegram", "/start 3171")
        assert f"ASLI. Kode {code}" in _phone(data_dir, "whatsapp", f"CEK {code}")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    assert demo.returncode in (0, 130, -signal.SIGINT)
