"""What was stopped after a batch was claimed, looked up again before its requests leave.

An opt-out, an erasure or a cancelled announcement cancels the deliveries still *queued*, in
the same transaction (``gateway.store.subscribers.opt_out``, ``fanout.cancel_pending``). A
worker's claimed batch is no longer queued, and on a paced channel it may take up to half a
lease to go out (``Dispatcher.claim_size``): 30 s of Telegram at 30/s, of SMS at an agency's
contracted rate. Without a second look, a citizen who sent STOP, or an operator who cancelled
a wrong broadcast, would see those messages leave for that long afterwards.

So each request of a batch asks ``LateStops`` just before it is handed to the channel. When the
batch's last look is older than ``LOOK_EVERY_S`` it reads, in one statement, which of the
batch's deliveries not yet sent now belong to a cancelled announcement, to a subscriber who
opted out of the channel, or to a person erased. Those are not sent: they are recorded as
cancelled (or expired, for an announcement whose expiry passed while the batch waited, which
needs no reading), with the claim's attempt given back. The worker that holds the lease is the
only writer of its batch's rows, so the record stays true to what left.

A batch that goes out at once (an unpaced channel: 2,000 deliveries in a fraction of a second)
is never looked at again: the look costs nothing where there is nothing to catch.

While requests of a batch wait for their turn at the rate, a watcher looks for them every
``LOOK_EVERY_S`` (``watch``), and a look that finds a new stop wakes them (``news``), as does
an announcement of the batch expiring: what was stopped or expired leaves its request at once,
and its share of the rate goes back to the channel. A cancelled broadcast so frees its worker,
and the rate it had taken, within a look rather than after its batch's last turn; the
correction sent next does not wait behind it.

A claimed delivery can also go back to the queue: a retry, a request held for quiet hours or
handed back in a provider's pause (``cancel_requeued``, in the transaction that records it),
or a dead worker's batch whose lease ran out (``cancel_stale``, before maintenance reclaims
it). The stop's own UPDATE passed it by, as it was not queued then; these cancel it there.

On PostgreSQL a stop may still be on its way when they look: its transaction changed the
subscriber's channel row (opt-out, erasure) or the announcement row (cancel), then passed the
claimed rows by, and has not committed. Nothing would see it again. So before they look, they
take a share lock on those rows, skipping any that a transaction holds (``_undecided``); never
waiting, they cannot deadlock with a stop that waits for their own row locks (an erasure
unlinks every delivery). What they skip is left ``sending`` under a lease long run out, for the
next pass of housekeeping to decide once the stop has committed or rolled back. A stop that
comes after their lock waits for their commit, and its own UPDATE then finds the rows queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.dialect import dialect_name, id_in
from gateway.db.schema import announcements, deliveries, subscriber_channels
from gateway.domain import AnnouncementStatus, DeliveryState
from gateway.outbox.claims import _AMONG, Claimed, Outcome, _ids

log = logging.getLogger("warta.dispatch")

# How stale a batch's knowledge of stops may be when one of its requests leaves.
LOOK_EVERY_S = 0.5

CANCELLED = "cancelled"  # as fanout.cancel_pending words it
OPTED_OUT = "opted out"  # as store.subscribers.opt_out words it
ERASED = "erased"  # as store.subscribers.erase words it
EXPIRED = "expired before it could be sent"  # as the dispatcher words it at the claim too

_d, _a, _sc = deliveries, announcements, subscriber_channels
_CANCELLED = (
    sa.exists()
    .where(_a.c.id == _d.c.announcement_id, _a.c.status == AnnouncementStatus.CANCELLED.value)
    .correlate(_d)
)
# Replies are not stopped by an opt-out: the confirmation of that very opt-out is one.
_OPTED_OUT = sa.and_(
    _d.c.kind == "announcement",
    sa.exists()
    .where(
        _sc.c.subscriber_id == _d.c.subscriber_id,
        _sc.c.channel == _d.c.channel,
        _sc.c.opted_out_at.is_not(None),
    )
    .correlate(_d),
)
# Erasure unlinks the person from every delivery: nothing is left to address.
_ERASED = sa.and_(
    _d.c.subscriber_id.is_(None), _d.c.recipient_ciphertext.is_(None), _d.c.account.is_(None)
)
_STOPPED_NOW = sa.or_(_CANCELLED, _OPTED_OUT, _ERASED)
_REASON = sa.case((_CANCELLED, CANCELLED), (_ERASED, ERASED), else_=OPTED_OUT)

_STOPPED = {
    dialect: sa.select(_d.c.id, _REASON).where(among, _STOPPED_NOW)
    for dialect, among in _AMONG.items()
}
# What a stop writes, in the words of the stop itself (see the constants above).
_CANCEL = {
    "state": DeliveryState.CANCELLED.value,
    "error_kind": sa.case((_CANCELLED, sa.null()), else_="stopped"),
    "error_reason": _REASON,
    "finished_at": sa.bindparam("now", type_=_d.c.finished_at.type),
}
_CANCEL_REQUEUED = {
    dialect: sa.update(_d)
    .where(among, _d.c.state == DeliveryState.QUEUED.value, _STOPPED_NOW)
    .values(_CANCEL)
    for dialect, among in _AMONG.items()
}


# A dead worker's batch (its lease run out): what was stopped meanwhile is not queued again.
_CANCEL_STALE = (
    sa.update(_d)
    .where(
        _d.c.state == DeliveryState.SENDING.value,
        _d.c.lease_until < sa.bindparam("now", type_=_d.c.lease_until.type),
        _STOPPED_NOW,
    )
    .values({**_CANCEL, "lease_until": None})
)


# What ``_undecided`` needs to know of a delivery.
_CONCERNING = (_d.c.id, _d.c.announcement_id, _d.c.subscriber_id, _d.c.channel, _d.c.kind)
_STALE = sa.select(*_CONCERNING).where(
    _d.c.state == DeliveryState.SENDING.value,
    _d.c.lease_until < sa.bindparam("now", type_=_d.c.lease_until.type),
)
# PostgreSQL only (``_undecided``): SQLite's writers take turns, so no stop is ever half done.
_CONCERNED = sa.select(*_CONCERNING).where(_AMONG["postgresql"])
_ANNOUNCEMENTS = (
    sa.select(_a.c.id)
    .where(id_in(_a.c.id, "announcement_ids")["postgresql"])
    .with_for_update(read=True, skip_locked=True)  # FOR SHARE SKIP LOCKED
)
_CHOICES = sa.select(_sc.c.subscriber_id, _sc.c.channel).where(
    id_in(_sc.c.subscriber_id, "subscriber_ids")["postgresql"],
    _sc.c.channel == sa.any_(sa.bindparam("channels", type_=postgresql.ARRAY(sa.String))),
)
_LOCKED_CHOICES = _CHOICES.with_for_update(read=True, skip_locked=True)
# A delivery whose stop may be in flight: housekeeping decides it once the stop is over. Its
# lease ran out a day ago, so no renewal of the batch's lease under way can keep it.
_LEAVE_TO_HOUSEKEEPING = (
    sa.update(_d)
    .where(_AMONG["postgresql"], _d.c.state == DeliveryState.QUEUED.value)
    .values(
        state=DeliveryState.SENDING.value,
        lease_until=sa.bindparam("long_ago", type_=_d.c.lease_until.type),
    )
)


def _undecided(conn: Connection, rows: Sequence[sa.Row[*tuple[Any, ...]]]) -> list[int]:
    """Of the deliveries in ``rows`` (``_CONCERNING``), about to go back to the queue, the
    ids of those a stop may be deciding now.

    Share-locks, on PostgreSQL, the announcement row and the subscriber's channel row of
    each; the ones a transaction holds are skipped, and their deliveries returned. Run before
    the look for stops, which then sees every stop that committed before the lock.
    """
    busy_announcements: set[int] = set()
    announcement_ids = sorted({r.announcement_id for r in rows if r.announcement_id is not None})
    if announcement_ids:
        locked = set(conn.scalars(_ANNOUNCEMENTS, {"announcement_ids": announcement_ids}))
        busy_announcements = set(announcement_ids) - locked
    # Replies are not stopped by an opt-out (``_OPTED_OUT``).
    pairs = {
        (r.subscriber_id, r.channel)
        for r in rows
        if r.kind == "announcement" and r.subscriber_id is not None
    }
    busy_choices: set[tuple[int, str]] = set()
    if pairs:
        params = {
            "subscriber_ids": sorted({subscriber for subscriber, _ in pairs}),
            "channels": sorted({channel for _, channel in pairs}),
        }
        held = {(int(s), str(c)) for s, c in conn.execute(_LOCKED_CHOICES, params)}
        busy_choices = {(int(s), str(c)) for s, c in conn.execute(_CHOICES, params)} - held
    return [
        int(r.id)
        for r in rows
        if r.announcement_id in busy_announcements
        or (r.kind == "announcement" and (r.subscriber_id, r.channel) in busy_choices)
    ]


async def cancel_stale(
    conn: AsyncConnection, *, now: datetime, held: AbstractSet[int] = frozenset()
) -> list[int]:
    """Before leases that ran out are reclaimed (``claims.reclaim_expired_leases``): cancel
    their deliveries stopped since the claim, as ``cancel_requeued`` does for a live worker.

    Returns the ones to leave out of this cancel and of the reclaim: those in ``held`` (a
    worker of this process still has them and will record them, its lease run out while the
    database could not renew it) and, on PostgreSQL, those a stop may be deciding right now
    (``_undecided``). A later pass decides them.
    """
    stale = (await conn.execute(_STALE, {"now": now})).all()
    if not stale:
        return []
    kept = [int(row.id) for row in stale if row.id in held]
    undecided: list[int] = []
    if dialect_name(conn) == "postgresql":
        loose = [row for row in stale if row.id not in held]
        if loose:
            undecided = await conn.run_sync(_undecided, loose)
    keep = kept + undecided
    if keep:
        cancel = _CANCEL_STALE.where(sa.not_(_AMONG[dialect_name(conn)]))
        await conn.execute(cancel, {"now": now, **_ids(conn, keep)})
    else:
        await conn.execute(_CANCEL_STALE, {"now": now})
    if undecided:
        log.info("%d deliveries wait for a stop in progress before they are reclaimed",
                 len(undecided))  # fmt: skip
    return keep


def cancel_requeued(conn: Connection, delivery_ids: Sequence[int], *, now: datetime) -> int:
    """Of ``delivery_ids``, just put back in the queue by the worker that held them (a retry,
    quiet hours), cancel those stopped meanwhile; returns how many.

    An opt-out or a cancellation while they were claimed cancelled only what was queued then;
    without this, a retry would send them later all the same. Run in the transaction that
    queues them again. On SQLite writers take turns, so nothing slips between. On PostgreSQL
    those whose stop is still in flight (``_undecided``) are left to housekeeping instead.
    """
    if not delivery_ids:
        return 0
    undecided: list[int] = []
    if dialect_name(conn) == "postgresql":  # its locks first: the look must come after
        concerned = conn.execute(_CONCERNED, {"among_ids": list(delivery_ids)}).all()
        undecided = _undecided(conn, concerned)
    result = conn.execute(
        _CANCEL_REQUEUED[dialect_name(conn)], {**_ids(conn, delivery_ids), "now": now}
    )
    if undecided:
        conn.execute(
            _LEAVE_TO_HOUSEKEEPING, {"among_ids": undecided, "long_ago": now - timedelta(days=1)}
        )
        log.info("%d deliveries wait for a stop in progress before they are queued again",
                 len(undecided))  # fmt: skip
    return int(result.rowcount or 0)


class LateStops:
    """One batch's look at stops that came after its claim."""

    __slots__ = ("_announcement_of", "_batch", "_engine", "_expires", "_first_expiry", "_gone",
                 "_looked_at", "_looking", "_news", "_stopped", "_watcher")  # fmt: skip

    def __init__(self, engine: AsyncEngine, batch: Sequence[Claimed]) -> None:
        self._engine = engine
        # The claim itself took only queued deliveries: it is the batch's first look.
        self._looked_at = time.monotonic()
        self._batch = batch
        # The ids of the requests that left: what is still unsent is worked out only at a look.
        self._gone: list[Sequence[int]] = []
        self._stopped: dict[int, str] = {}
        self._looking: asyncio.Future[None] | None = None
        # announcement id -> when it expires, for those of the batch that do
        self._expires: dict[int, datetime] = {}
        self._first_expiry: datetime | None = None
        self._announcement_of: dict[int, int | None] | None = None
        self._news = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def news(self) -> asyncio.Event:
        """Set when a look finds a stop it had not seen before (then replaced by a new one):
        a request waiting for its turn takes it before it sleeps, and wakes on it."""
        return self._news

    def watch(self, now: Callable[[], datetime]) -> None:
        """Look every ``LOOK_EVERY_S`` while requests of the batch wait (until ``close``); an
        expiry of the batch's that passes (by ``now``) is news too."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(now))

    def close(self) -> None:
        """The batch's requests are done: stop watching."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self, now: Callable[[], datetime]) -> None:
        expiry_told = False
        while True:
            await asyncio.sleep(max(0.0, self._looked_at + LOOK_EVERY_S - time.monotonic()))
            if time.monotonic() - self._looked_at >= LOOK_EVERY_S:
                await self._look()
            if not expiry_told and self._first_expiry is not None and self._first_expiry <= now():
                expiry_told = True
                self._tell()

    def _tell(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    def found(self, delivery_ids: Sequence[int], now: datetime) -> dict[int, Outcome]:
        """Of ``delivery_ids``, waiting for their turn, those that must not leave, found by
        a look already (or expired): with what to record. They count as gone."""
        found = self._found(delivery_ids, now)
        if found:
            self._gone.append(list(found))
        return found

    def expires(self, announcement_id: int, at: datetime) -> None:
        """The batch's deliveries of ``announcement_id`` are not sent from ``at`` on."""
        self._expires[announcement_id] = at
        if self._first_expiry is None or at < self._first_expiry:
            self._first_expiry = at

    async def outcomes(self, delivery_ids: Sequence[int], now: datetime) -> dict[int, Outcome]:
        """Of ``delivery_ids``, about to leave, those that must not: with what to record.

        The rest count as gone: a later look does not ask about them again.
        """
        if time.monotonic() - self._looked_at >= LOOK_EVERY_S:
            await self._look()
        self._gone.append(delivery_ids)
        return self._found(delivery_ids, now)

    def _found(self, delivery_ids: Sequence[int], now: datetime) -> dict[int, Outcome]:
        """Of ``delivery_ids``, those stopped (by what the looks found) or expired."""
        expiring = self._first_expiry is not None and self._first_expiry <= now
        if not self._stopped and not expiring:
            return {}  # nearly always: a request costs no work per delivery
        found: dict[int, Outcome] = {}
        for delivery_id in delivery_ids:
            reason = self._stopped.get(delivery_id)
            if reason is not None:
                found[delivery_id] = self._stopped_outcome(delivery_id, reason)
                continue
            if not expiring:
                continue
            if self._announcement_of is None:
                self._announcement_of = {item.id: item.announcement_id for item in self._batch}
            announcement_id = self._announcement_of.get(delivery_id)
            expiry = None if announcement_id is None else self._expires.get(announcement_id)
            if expiry is not None and expiry <= now:
                found[delivery_id] = Outcome(
                    delivery_id,
                    DeliveryState.EXPIRED,
                    error_reason=EXPIRED,
                    refund=True,
                )
        return found

    @staticmethod
    def _stopped_outcome(delivery_id: int, reason: str) -> Outcome:
        return Outcome(
            delivery_id,
            DeliveryState.CANCELLED,
            error_kind=None if reason == CANCELLED else "stopped",
            error_reason=reason,
            refund=True,
        )

    async def _look(self) -> None:
        # One reading serves every request of the batch that leaves meanwhile.
        if self._looking is None:
            self._looking = asyncio.ensure_future(self._read())
        looking = self._looking
        try:
            await asyncio.shield(looking)
        finally:
            if self._looking is looking and looking.done():
                self._looking = None

    async def _read(self) -> None:
        started = time.monotonic()
        gone = set().union(*self._gone)
        ids = sorted(item.id for item in self._batch if item.id not in gone)
        try:
            if ids:
                async with self._engine.connect() as conn:
                    found = await conn.execute(_STOPPED[dialect_name(conn)], _ids(conn, ids))
                    new = {int(i): str(why) for i, why in found}.items() - self._stopped.items()
                    if new:
                        self._stopped.update(new)
                        self._tell()
        except Exception as exc:
            # The requests go as claimed: failing them here would send again, after the
            # lease, those of the batch already gone. The next look tries again.
            log.warning("could not look for stops after a claim: %s", type(exc).__name__)
        self._looked_at = started
