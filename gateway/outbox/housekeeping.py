"""Outbox housekeeping: what no worker's own batch covers, about once a second per process.

One pass, in one transaction after a read: cancel what was stopped in a dead worker's batch
and queue the rest of it again (``late_stops.cancel_stale``, ``claims.reclaim_expired_leases``);
expire what is still queued past its announcement's expiry; queue the stand-ins of failures
that came later than their batch (delivery reports, leases that ran out) and of emergencies
unconfirmed too long (``gateway.outbox.fallback``); move to the morning what became due in
quiet hours; mark ``done`` every sending announcement with nothing pending.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock
from gateway.config import DispatchConfig
from gateway.db.schema import announcements, deliveries
from gateway.domain import CHANNELS, AnnouncementStatus, DeliveryState
from gateway.outbox import claims, fallback, late_stops, quiet
from gateway.outbox.leases import Outages

log = logging.getLogger("warta.dispatch")

# A fresh process looks this far back for failures that still need a stand-in.
FALLBACK_CATCH_UP = timedelta(hours=6)
# For this long after quiet hours begin, every pass defers what became due in them; the
# scheduler's pass (every 30 s) covers the rest of the night.
QUIET_START_GRACE = timedelta(seconds=60)

# The fallback rules for stand-ins of these announcements (their SMS segments priced).
RulesFor = Callable[[set[int]], Awaitable[fallback.FallbackRules]]


@dataclass(frozen=True, slots=True)
class Pass:
    reclaimed: int  # deliveries of dead workers queued again
    fell_back: int  # stand-ins queued


class Housekeeping:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        settings: DispatchConfig,
        quiet_hours: quiet.QuietHours,
        rules_for: RulesFor,
        outages: Outages,
        held: AbstractSet[int] = frozenset(),
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._settings = settings
        self._quiet_hours = quiet_hours  # what an agency without its own follows
        self._rules_for = rules_for
        # Deliveries this process's workers have in hand: never reclaimed from under them.
        self._held = held
        self._outages = outages
        self._told_doubt: datetime | None = None
        self._swept_at: datetime | None = None

    async def run(self) -> Pass:
        try:
            return await self._run()
        except Exception as exc:
            self._outages.saw(exc)
            raise

    async def _run(self) -> Pass:
        now = self._clock.now()
        sweep = self._fallback_sweep(now)
        rules = await self._rules_for(set())
        async with self._engine.connect() as conn:
            concerned: set[int] = set()
            for source in sweep:
                concerned.update(
                    await fallback.source_announcements(conn, source, now=now, rules=rules)
                )
        if concerned:
            rules = await self._rules_for(concerned)
        fell_back = 0
        lease = timedelta(seconds=self._settings.lease_seconds)
        doubted = self._outages.doubt_leases(now, lease)
        async with self._engine.begin() as conn:
            if doubted is None:
                keep = await late_stops.cancel_stale(conn, now=now, held=self._held)
                reclaimed = await claims.reclaim_expired_leases(
                    conn, now=now, max_attempts=self._settings.max_attempts, keep=keep
                )
            else:
                reclaimed = 0
                if doubted != self._told_doubt:
                    log.warning(
                        "the database was unavailable: leases that ran out are not reclaimed"
                        " before %s (their workers may still record them)",
                        doubted.isoformat(timespec="seconds"),
                    )
                    self._told_doubt = doubted
            overdue = sa.select(announcements.c.id).where(
                announcements.c.expires_at.is_not(None), announcements.c.expires_at <= now
            )
            await conn.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.announcement_id.in_(overdue),
                    deliveries.c.channel.in_(CHANNELS),  # as `pending` below
                    deliveries.c.state == DeliveryState.QUEUED.value,
                )
                .values(state=DeliveryState.EXPIRED.value, finished_at=now, error_reason="expired")
            )
            for source in sweep:
                fell_back += await conn.run_sync(
                    fallback.queue_fallbacks, source, now=now, rules=rules
                )
            # To the morning before any worker can claim them, not at the scheduler's next
            # pass (every 30 s): what was queued again at night (a dead worker's batch, a
            # fallback), and, in the first minute of quiet hours, what a broadcast still
            # running or a retry falling due at their start left queued.
            await quiet.defer_queued(
                conn,
                now=now,
                default=self._quiet_hours,
                began_after=None if reclaimed or fell_back else now - QUIET_START_GRACE,
            )
            pending = sa.exists().where(
                deliveries.c.announcement_id == announcements.c.id,
                # Every channel named, so the (announcement, channel, state) index seeks the
                # pending rows of each; without it, a pass read every delivery already
                # finished before a pending one (a whole broadcast at its end).
                deliveries.c.channel.in_(CHANNELS),
                deliveries.c.state.in_([DeliveryState.QUEUED.value, DeliveryState.SENDING.value]),
            )
            await conn.execute(
                sa.update(announcements)
                .where(announcements.c.status == AnnouncementStatus.SENDING.value, ~pending)
                .values(status=AnnouncementStatus.DONE.value, finished_at=now, updated_at=now)
            )
        self._swept_at = now
        return Pass(reclaimed=reclaimed, fell_back=fell_back)

    def _fallback_sweep(self, now: datetime) -> list[fallback.Source]:
        """Failures since the last sweep, and emergencies overdue for confirmation since then.

        The window overlaps the last one by a lease, so a failure recorded by a transaction
        that committed late is still seen; a stand-in already queued is never queued twice.
        """
        overlap = timedelta(seconds=max(60.0, self._settings.lease_seconds))
        since = (self._swept_at or now - FALLBACK_CATCH_UP) - overlap
        patience = timedelta(seconds=self._settings.fallback_unconfirmed_s)
        return [
            fallback.failed_since(since),
            fallback.unconfirmed(sent_after=since - patience, sent_before=now - patience),
        ]
