"""A claimed batch keeps its lease while its worker still has it in hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from gateway.clock import Clock
from gateway.db.errors import unavailable_reason
from gateway.db.writer import Writer
from gateway.outbox import claims

log = logging.getLogger("warta.dispatch")


class Outages:
    """When this process last found the database unavailable.

    While nobody can reach the database, no worker can renew its lease or record its batch,
    so a lease that ran out then says nothing about whether its worker died. A worker that
    lived through it records its batch within seconds of the database's return (its record is
    retried with a backoff of at most 2 s), so housekeeping reclaims nothing for a lease's
    length after the last failure this process saw. With several processes on one PostgreSQL
    this is what keeps one from reclaiming (and sending again) a batch another still has in
    hand after a restart, a failover or a read-only spell of the database: every process
    polling the database sees such an outage. A process that did not see it (started after
    it, or cut off alone) still reclaims by the lease alone.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last: datetime | None = None

    def saw(self, exc: BaseException) -> str | None:
        """Notes ``exc`` if it says the database is unavailable; returns what it says
        (``gateway.db.errors.unavailable_reason``), None for any other error."""
        reason = unavailable_reason(exc)
        if reason is not None:
            self._last = self._clock.now()
        return reason

    def doubt_leases(self, now: datetime, lease: timedelta) -> datetime | None:
        """Until when leases that ran out prove nothing (None: they can be trusted now)."""
        if self._last is None or now >= self._last + lease:
            return None
        return self._last + lease


class LeaseKeeper:
    """Renews a claimed batch's lease every third of it until its outcomes are recorded.

    A batch is sized to go out within half its lease (``Dispatcher.claim_size``), but 429
    pauses and slow providers can stretch it; without renewal, maintenance would reclaim the
    tail and another worker would send it a second time.
    """

    def __init__(
        self,
        *,
        writer: Writer,
        clock: Clock,
        lease_seconds: float,
        ids: Sequence[int],
        outages: Outages,
    ) -> None:
        self._writer = writer
        self._outages = outages
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
                self._outages.saw(exc)
                log.warning("could not renew a batch's lease: %s", type(exc).__name__)
                continue
            log.debug("renewed the lease of %d deliveries still being sent", renewed)

    async def stop(self) -> None:
        self._done.set()
        await self._task
