"""What every provider simulator shares: its own port, the requests it keeps hanging, and
its callbacks.

Each simulator (Africa's Talking SMS and voice, the Telegram Bot API, the Graph API, X,
Mastodon) builds an aiohttp ``app`` that can be mounted anywhere, or served on a port of its
own with ``start()``/``stop()``. A request a fault or a canned outcome keeps hanging waits in
``hang`` until its time is up or the simulator stops, so stopping never waits for it. What a
simulator does after answering (delivery reports, status webhooks, calls played) runs on
``LaterWork``, and callbacks are posted as providers post them (``post_until_taken``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, Literal, TypeVar

import aiohttp
from aiohttp import web

from channels.simfaults import FaultSchedule

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        self.faults.release_held()

    async def hang(self, seconds: float) -> None:
        """Answer nothing for ``seconds``, or until the simulator stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)


class LaterWork(Generic[T]):
    """What a simulator owes the gateway after answering (delivery reports, status webhooks,
    calls played): done by ``concurrency`` workers sharing one HTTP session, each item once
    its due time (the loop's clock) has come. ``run`` is the app's ``cleanup_ctx``: the
    workers live as long as the app; ``put`` only while it is ``running``."""

    def __init__(
        self,
        do: Callable[[aiohttp.ClientSession, T], Awaitable[None]],
        *,
        concurrency: int,
        failed: Callable[[T], None],
        what: str,
    ) -> None:
        self._do = do
        self._concurrency = concurrency
        self._failed = failed
        self._what = what
        self._queue: asyncio.Queue[tuple[float, T]] | None = None

    @property
    def running(self) -> bool:
        return self._queue is not None

    def put(self, item: T, *, due: float = 0.0) -> None:
        assert self._queue is not None, "put before the app started"
        self._queue.put_nowait((due, item))

    async def join(self) -> None:
        """Return once everything put so far was done or given up on."""
        if self._queue is not None:
            await self._queue.join()

    async def run(self, _app: web.Application) -> AsyncIterator[None]:
        self._queue = asyncio.Queue()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            workers = [asyncio.create_task(self._worker(session)) for _ in range(self._concurrency)]
            yield
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            due, item = await self._queue.get()
            try:
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._do(session, item)
            except Exception:
                self._failed(item)
                log.exception("%s worker failed", self._what)
            finally:
                self._queue.task_done()


Posted = Literal["delivered", "refused", "failed"]


async def post_until_taken(
    session: aiohttp.ClientSession,
    url: Callable[[], str | None],
    *,
    data: Any,
    headers: Mapping[str, str] | None = None,
    attempts: int,
    backoff: float,
    what: str,
) -> Posted | None:
    """POST a callback the way providers do: again with exponential backoff while the
    receiver errs (5xx, 429) or cannot be reached, not after any other 4xx. None when
    ``url()`` (read before each attempt: a test may change it) gives no URL."""
    for attempt in range(attempts):
        target = url()
        if target is None:
            return None
        try:
            async with session.post(target, data=data, headers=headers) as response:
                await response.read()
                if response.status < 300:
                    return "delivered"
                if response.status < 500 and response.status != 429:
                    log.warning("%s refused with HTTP %d", what, response.status)
                    return "refused"
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("%s attempt failed: %s", what, type(exc).__name__)
        if attempt + 1 < attempts:
            await asyncio.sleep(backoff * 2**attempt)
    return "failed"
