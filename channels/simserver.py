"""What every provider simulator shares: its own port, and the requests it keeps hanging.

Each simulator (Africa's Talking SMS and voice, the Telegram Bot API, the Graph API, X,
Mastodon) builds an aiohttp ``app`` that can be mounted anywhere, or served on a port of its
own with ``start()``/``stop()``. A request a fault or a canned outcome keeps hanging waits in
``hang`` until its time is up or the simulator stops, so stopping never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from channels.simfaults import FaultSchedule


class SimulatorServer:
    app: web.Application
    faults: FaultSchedule

    def __init__(self) -> None:
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); returns the base URL for clients."""
        self._closing.clear()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.faults.bind(self._runner)
        bound_host, bound_port = self._runner.addresses[0][:2]
        return f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Release hanging requests, end the app's background work and close the port."""
        self._closing.set()
        await self.faults.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def release_hanging(self, _app: web.Application) -> None:
        """For ``app.on_shutdown``: a mounted app lets its hanging requests go too."""
        self._closing.set()

    async def hang(self, seconds: float) -> None:
        """Answer nothing for ``seconds``, or until the simulator stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
