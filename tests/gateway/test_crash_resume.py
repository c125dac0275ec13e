"""Nothing lost, nothing sent twice beyond the stated bound: SIGKILL (or SIGTERM)
mid-broadcast, restart.

The gateway runs as a separate ``warta serve`` process on a real database; the Africa's
Talking simulator runs in this test's process, so its record of what reached the provider
survives the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.domain import Role
from tests.support.processes import free_port, seed_tokens
from tests.support.sms import csv_of, numbers

RECIPIENTS = 20_000
WORKERS = 2
CLAIM_BATCH = 200


class Gateway:
    """``warta serve`` in a child process."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        self.env = env
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"], env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log_path.read_text()[-2000:]
                try:
                    async with http.get(self.base + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("gateway did not start: " + self.log_path.read_text()[-2000:])

    async def kill(self, how: signal.Signals = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(how)
        # Off the event loop: the simulator in this process must keep answering the requests
        # a stopping gateway is still waiting for.
        await asyncio.to_thread(self.process.wait, 30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_stopped_mid_broadcast_loses_nothing(
    database_url: str, keys: dict[str, str], tmp_path: Path, how: signal.Signals
) -> None:
    """SIGKILL: duplicates within the README's bound. SIGTERM (a deploy, a restart): the
    workers finish the batches in their hands first, and nothing is sent twice."""
    sim = AfricasTalkingSimulator(
        SimulatorConfig(api_key=keys["africastalking_api_key"], latency=0.01, seed=1)
    )
    sim_url = await sim.start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WARTA_")},
        "WARTA_DATABASE__URL": database_url,
        "WARTA_HTTP__PORT": str(port),
        "WARTA_HTTP__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WARTA_AFRICASTALKING__BASE_URL": sim_url,
        "WARTA_AFRICASTALKING__RATE_PER_SECOND": "100000",
        "WARTA_DISPATCH__WORKERS_PER_CHANNEL": str(WORKERS),
        "WARTA_DISPATCH__CLAIM_BATCH": str(CLAIM_BATCH),
        "WARTA_DISPATCH__LEASE_SECONDS": "2",
        "WARTA_DISPATCH__IDLE_POLL_S": "0.05",
        "WARTA_LOG_LEVEL": "WARNING",
        # At any hour: at night in Jakarta a normal broadcast would wait for 06:00.
        "WARTA_SCHEDULER__QUIET_HOURS": "off",
        **{f"WARTA_SECRETS__{k.upper()}": v for k, v in keys.items()},
    }
    tokens = await seed_tokens(database_url, slug="crash")
    gateway = Gateway(env, tmp_path / "gateway.log", port)
    phones = [n for n in numbers(RECIPIENTS) if not n.endswith("0000")]
    try:
        await gateway.start()
        async with aiohttp.ClientSession(gateway.base) as http:

            async def call(method: str, path: str, role: Role, **kwargs: Any) -> Any:
                headers = {"Authorization": f"Bearer {tokens[role]}", **kwargs.pop("headers", {})}
                async with http.request(method, "/api/v1" + path, headers=headers, **kwargs) as r:
                    body = await r.json()
                    assert r.status < 300, body
                    return body

            report = await call(
                "POST",
                "/subscribers/import",
                Role.OPERATOR,
                data=csv_of(phones),
                headers={"Content-Type": "text/csv"},
            )
            assert report["imported"] == len(phones)
            created = await call(
                "POST",
                "/announcements",
                Role.AUTHOR,
                json={"title": "Uji ketahanan", "body": "Pesan uji.", "channels": ["sms"]},
            )
            await call("POST", f"/announcements/{created['id']}/submit", Role.AUTHOR)
            await call("POST", f"/announcements/{created['id']}/approve", Role.APPROVER)

            deadline = time.monotonic() + 60
            while sim.sent_count.total() < len(phones) // 4:
                assert time.monotonic() < deadline, "the broadcast did not get going"
                await asyncio.sleep(0.02)
            await gateway.kill(how)
            reached_at_kill = sim.sent_count.total()
            assert reached_at_kill < len(phones), "the kill came too late to test anything"

        await gateway.start()
        async with aiohttp.ClientSession(gateway.base) as http:
            deadline = time.monotonic() + 120
            while True:
                headers = {"Authorization": f"Bearer {tokens[Role.OPERATOR]}"}
                async with http.get(f"/api/v1/announcements/{created['id']}", headers=headers) as r:
                    body = await r.json()
                if body["status"] == "done":
                    break
                assert time.monotonic() < deadline, f"did not finish after restart: {body['stats']}"
                await asyncio.sleep(0.2)
    finally:
        gateway.stop()
        await sim.stop()

    reached = dict(sim.sent_count.items())
    assert set(reached) == set(phones), "every recipient reached"
    duplicates = sum(n - 1 for n in reached.values())
    # The README's bound: at most the batches in flight at the kill, workers × claim batch.
    assert duplicates <= (WORKERS * CLAIM_BATCH if how == signal.SIGKILL else 0)
    counts = {c["channel"]: c["counts"] for c in body["stats"]}
    assert counts["sms"]["sent"] + counts["sms"]["delivered"] == len(phones)
