"""A claimed batch keeps its lease while its worker still has it in hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from gateway.clock import Clock
from gateway.db.writer import Writer
from gateway.outbox import claims

log = logging.getLogger("warta.dispatch")


class LeaseKeeper:
    """Renews a claimed batch's lease every third of it until its outcomes are recorded.

    A batch is sized to go out within half its lease (``Dispatcher.claim_size``), but 429
    pauses and slow providers can stretch it; without renewal, maintenance would reclaim the
    tail and another worker would send it a second time.
    """

    def __init__(
        self, *, writer: Writer, clock: Clock, lease_seconds: float, ids: Sequence[int]
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._ids = list(ids)
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        lease = self._lease_seconds
        while True:
            try:
                await asyncio.wait_for(self._done.wait(), lease / 3)
                return
            except TimeoutError:
                pass
            asked = self._clock.now()

            def renew(conn: Connection, asked: datetime = asked) -> int:
                # A lease still running when renewal was asked is kept, and runs anew from the
                # time the write lock was had (as in a claim), not from before the wait.
                until = self._clock.now() + timedelta(seconds=lease)
                return claims.renew_leases(conn, self._ids, now=asked, until=until)

            try:
                renewed = await self._writer.run(renew)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not renew a batch's lease: %s", type(exc).__name__)
                continue
            log.debug("renewed the lease of %d deliveries still being sent", renewed)

    async def stop(self) -> None:
        self._done.set()
        await self._task
