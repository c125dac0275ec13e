"""The dispatcher: starts due announcements, and per channel claims, sends and records.

Per channel, ``workers_per_channel`` tasks each loop: claim a batch under a lease, send it in
provider-sized requests (at most the channel's rate), record every outcome in one statement.
Retry decisions are made here from the error kinds of ``gateway.errors``; channels only report.

Fallback (``gateway.outbox.fallback``): the failures of a batch queue their stand-ins on the
subscriber's next channel in the transaction that records them; housekeeping catches failures
that came later (delivery reports, leases that ran out) and unconfirmed emergencies.

Beside it: ``texts`` renders what each channel sends (once per announcement and language),
``leases`` keeps a batch's lease while its worker has it, ``late_stops`` and ``quiet`` hold
back what must not leave, and ``housekeeping`` does what no batch covers.

Crash safety: a delivery is ``sending`` with a lease while in flight. If the process dies, the
lease expires and the delivery is queued again, so at most the batches in flight at the kill
can go out twice (``workers_per_channel × claim_batch`` per channel); nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from channels.base import Channel, OutgoingMessage, SendResult
from gateway.clock import Clock
from gateway.config import WartaConfig
from gateway.db.schema import announcements
from gateway.db.writer import Writer
from gateway.domain import PERSONAL_CHANNELS, AnnouncementStatus, DeliveryState, Urgency
from gateway.errors import (
    AccountHeld,
    AccountRefused,
    ChannelError,
    ConfigError,
    HandedBack,
    RecipientStopped,
    Throttled,
)
from gateway.outbox import claims, fallback, fanout, holds, late_stops, quiet
from gateway.outbox.accounts import agency_accounts
from gateway.outbox.fanout import fan_out
from gateway.outbox.housekeeping import Housekeeping
from gateway.outbox.leases import LeaseKeeper, Outages
from gateway.outbox.shared_rate import Booking, SharedRateLimit, shared_rate_limit
from gateway.outbox.texts import AnnouncementTexts, SentAnnouncement
from gateway.personal import PhoneVault
from gateway.pricing import Tariff
from gateway.ratelimit import SEND_BY, ArrivalPacer, TokenBucket, leave_by_deadline
from gateway.renditions import Renderer

log = logging.getLogger("warta.dispatch")

# How long an agency's quiet hours are kept before the send gate reads them again.
QUIET_HOURS_KEPT_S = 30.0
# A record the storage could not take is tried again after this, doubling up to the most.
RECORD_RETRY_FIRST_S = 0.05
RECORD_RETRY_MAX_S = 2.0


class Dispatcher:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        config: WartaConfig,
        vault: PhoneVault,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        writer: Writer | None = None,
    ) -> None:
        self.engine = engine
        # Claims, records and lease renewals: on SQLite each whole in one thread, so the write
        # lock is held for the database's work, not while the loop sends.
        self.writer = (
            writer
            if writer is not None
            else Writer(engine, busy_timeout_ms=config.database.busy_timeout_ms)
        )
        self._owns_writer = writer is None
        self.clock = clock
        self.config = config
        self.vault = vault
        self.channels = dict(channels)
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_starter = asyncio.Event()
        self._wake_channel = {name: asyncio.Event() for name in self.channels}
        self._buckets = {
            name: TokenBucket(ch.rate_per_second, max(ch.rate_per_second, ch.batch_size))
            for name, ch in self.channels.items()
        }
        # Providers that count requests as they arrive (Telegram) are paced for arrival.
        self._arrivals = {
            name: _arrival_pacer(ch) for name, ch in self.channels.items() if ch.paced_by_arrival
        }
        self._stopping = False
        # Loop time at which stop()'s grace ends: until then a stopping worker still records.
        self._grace_ends: float | None = None
        # Set by stop(): ends every wait for the rate, so a stopping worker hands back at once.
        self._stop_requested = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        # PostgreSQL (unless [dispatch] shared_rate_limit = false): rates hold across processes.
        self._shared_rate = shared_rate_limit(engine, config.dispatch, sleep=self._nap)
        # The default an agency without its own quiet hours follows.
        self._quiet_hours = config.scheduler.default_quiet_hours()
        # agency id -> (loop time until which it holds, its quiet hours): for the send gate.
        self._agency_quiet: dict[int, tuple[float, quiet.QuietHours]] = {}
        # channel -> loop time until which it sends nothing: a 429's Retry-After, or an
        # account problem's hold (then the provider's word for it is in _held_for).
        self._paused_until: dict[str, float] = {}
        self._held_for: dict[str, str] = {}
        # channel -> the channel whose refused account holds it too (they pay from one).
        self._held_with: dict[str, str] = {}
        # Holds to store for the API and dashboard (gateway.outbox.holds): channel -> the
        # provider's word, or None once it accepts the account again.
        self._hold_news: dict[str, str | None] = {}
        # What an SMS segment and a minute of a call cost: priced at fan-out and fallback.
        self._tariff = Tariff.from_config(config.pricing)
        self._call_tariff = Tariff.for_calls(config.pricing)
        self.texts = AnnouncementTexts(
            engine=engine,
            renderer=renderer,
            public_url=config.http.public_url,
            sms=self.channels.get("sms"),
            voice=self.channels.get("voice"),
            call_billing_s=config.pricing.voice_billing_s,
        )
        # The deliveries this process's workers have claimed and not yet recorded.
        self._held: set[int] = set()
        # When the database last failed us: leases that ran out then are not reclaimed yet.
        self._outages = Outages(clock)
        self._housekeeping = Housekeeping(
            engine=engine,
            clock=clock,
            settings=config.dispatch,
            quiet_hours=self._quiet_hours,
            rules_for=self._fallback_rules,
            outages=self._outages,
            held=self._held,
        )

    @classmethod
    def from_app(cls, app: web.Application) -> Dispatcher:
        from channels.registry import build_channels
        from gateway.appkeys import CLOCK, CONFIG, ENGINE, RENDERER, VAULT, WRITER

        return cls(
            engine=app[ENGINE],
            clock=app[CLOCK],
            config=app[CONFIG],
            vault=app[VAULT],
            renderer=app[RENDERER],
            channels=build_channels(app[CONFIG]),
            writer=app[WRITER],
        )

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for channel in self.channels.values():
            await channel.start()
        self._tasks.append(asyncio.create_task(self._starter_loop(), name="warta-starter"))
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name="warta-maintenance"))
        for name in self.channels:
            for n in range(self.config.dispatch.workers_per_channel):
                worker = asyncio.create_task(self._worker_loop(name), name=f"warta-{name}-{n}")
                self._workers.append(worker)
                self._tasks.append(worker)

    async def stop(self) -> None:
        """Stop dispatching, leaving nothing to be sent twice where time allows.

        No worker claims again. One with a batch in hand gets ``[dispatch] stop_grace_s`` to
        finish it: requests still waiting for the rate are queued again unsent (no attempt
        spent, due at once, for the next process or this one restarted), those with the
        provider are awaited, and the batch is recorded. What is still running after the
        grace is cancelled, as a kill would end it (the README's bound).
        """
        grace = self.config.dispatch.stop_grace_s
        self._grace_ends = asyncio.get_running_loop().time() + grace
        self._stopping = True
        self._stop_requested.set()
        self._wake_workers()
        busy = [task for task in self._workers if not task.done()]
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            if late:
                log.warning(
                    "%d workers did not finish their batch in time; stopping them", len(late)
                )
        # A cancellation that lands inside a database call can come back
        # as a driver error (asyncpg: "another operation is in progress"), which the loops
        # would log and retry forever; so the loops also end on any error once stopping.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._workers.clear()
        for channel in self.channels.values():
            await channel.close()
        if self._owns_writer:
            self.writer.close()

    def wake_starter(self) -> None:
        self._wake_starter.set()

    def wake_channel(self, name: str) -> None:
        event = self._wake_channel.get(name)
        if event is not None:
            event.set()

    def _wake_workers(self) -> None:
        for event in self._wake_channel.values():
            event.set()

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    # -- starting announcements -------------------------------------------------------------

    async def _starter_loop(self) -> None:
        while not self._stopping:
            try:
                started = await self.start_due()
                if started:
                    self._wake_workers()
            except Exception as exc:
                self._outages.saw(exc)
                if self._stopping:
                    return  # cancelled inside a database call: see stop()
                log.exception("starting due announcements failed; retrying")
            await self._wait(self._wake_starter, self.config.dispatch.idle_poll_s)

    async def start_due(self) -> int:
        """Start every approved announcement whose time has come; returns how many started.

        Each start is a conditional update (approved -> sending) and the fan-out, in one
        transaction: with many processes, exactly one wins each announcement.
        """
        now = self.clock.now()
        async with self.engine.connect() as conn:
            due = (
                await conn.execute(
                    sa.select(announcements.c.id, announcements.c.channels).where(
                        announcements.c.status == AnnouncementStatus.APPROVED.value,
                        sa.or_(announcements.c.send_at.is_(None), announcements.c.send_at <= now),
                    )
                )
            ).all()
        started = 0
        for announcement_id, channels in due:
            # Measured before the transaction: espeak-ng must not run under SQLite's write lock.
            call_minutes = (
                await self.texts.call_minutes_of(announcement_id) if "voice" in channels else {}
            )
            async with self.engine.begin() as conn:
                won = await conn.execute(
                    sa.update(announcements)
                    .where(
                        announcements.c.id == announcement_id,
                        announcements.c.status == AnnouncementStatus.APPROVED.value,
                    )
                    .values(status=AnnouncementStatus.SENDING.value, started_at=now, updated_at=now)
                )
                if won.rowcount != 1:
                    continue
                row = dict(
                    (
                        await conn.execute(
                            sa.select(announcements).where(announcements.c.id == announcement_id)
                        )
                    )
                    .mappings()
                    .one()
                )
                segments = await self.texts.segments_at_start(conn, row)
                added = await fan_out(
                    conn,
                    announcement=row,
                    now=now,
                    segments_by_channel=segments,
                    tariff=self._tariff,
                    accounts=await agency_accounts(
                        conn, self.channels, self.config, row["agency_id"]
                    ),
                    call_minutes=call_minutes,
                    call_tariff=self._call_tariff,
                )
                # Deferred in the same transaction: no worker may claim a delivery of a
                # normal announcement started at night before it is moved to the morning.
                waiting = await quiet.defer_announcement(
                    conn, announcement_id=announcement_id, now=now, default=self._quiet_hours
                )
                await fanout.refresh_statistics(conn, sum(added.values()))
                log.info(
                    "announcement %s started: %s; %d wait for the end of quiet hours",
                    announcement_id,
                    added,
                    waiting,
                )
                started += 1
        return started

    # -- sending ----------------------------------------------------------------------------

    async def _worker_loop(self, channel_name: str) -> None:
        event = self._wake_channel[channel_name]
        while not self._stopping:
            try:
                handled = await self.run_once(channel_name)
            except Exception as exc:
                self._outages.saw(exc)
                if self._stopping:
                    return  # cancelled inside a database call: see stop()
                log.exception("dispatch on %s failed; retrying", channel_name)
                handled = 0
            if handled == 0:
                await self._wait(event, self.config.dispatch.idle_poll_s)

    def claim_size(self, channel: Channel) -> int:
        """How many deliveries one worker claims at once on ``channel``.

        Every worker of a channel may hold a batch while all share the channel's rate, so a
        batch must go out well within its lease, or maintenance would reclaim the tail while
        it still waits for its turn and it would go out twice (30/s Telegram with 4 workers of
        500 needs 67 s for 2,000, past a 60 s lease). Half the lease leaves room for slow
        providers and 429 pauses.
        """
        settings = self.config.dispatch
        fits = int(
            channel.rate_per_second * settings.lease_seconds * 0.5 / settings.workers_per_channel
        )
        return max(1, min(settings.claim_batch, fits))

    async def run_once(self, channel_name: str) -> int:
        """Claim, send and record one batch; returns how many deliveries it handled."""
        loop = asyncio.get_running_loop()
        paused = self._paused_until.get(channel_name, 0.0) - loop.time()
        if paused > 0:
            await self._nap(paused)
        if self._stopping:
            return 0
        channel = self.channels[channel_name]
        limit = self.claim_size(channel)
        lease = timedelta(seconds=self.config.dispatch.lease_seconds)

        def take(conn: Connection) -> list[claims.Claimed]:
            # Read inside the transaction: on SQLite BEGIN IMMEDIATE may have waited for the
            # write lock (or, anywhere, the pool for a connection), and a lease counted from
            # before that wait could run out before the batch is even sent.
            now = self.clock.now()
            return claims.claim(
                conn, channel=channel_name, limit=limit, now=now, lease_until=now + lease
            )

        batch = await self.writer.run(take, undo=claims.give_back)
        if not batch:
            return 0
        # The lease is kept until the outcomes are recorded, not only while sending: a record
        # that waits (for the write lock, for the report lock) past the lease would otherwise
        # find the batch reclaimed, record nothing, and leave it to be sent again.
        ids = [item.id for item in batch]
        keeper = LeaseKeeper(
            writer=self.writer,
            clock=self.clock,
            lease_seconds=self.config.dispatch.lease_seconds,
            ids=ids,
            outages=self._outages,
        )
        self._held.update(ids)
        try:
            outcomes = await self._send_batch(channel, batch)
            fell_back = await self._record(channel_name, batch, outcomes)
        finally:
            self._held.difference_update(ids)
            await keeper.stop()
        if self._hold_news:
            await self._store_holds()
        if fell_back:
            log.info(
                "%d failed %s deliveries fall back to another channel", fell_back, channel_name
            )
            self._wake_workers()
        return len(batch)

    async def _record(
        self, channel_name: str, batch: Sequence[claims.Claimed], outcomes: Sequence[claims.Outcome]
    ) -> int:
        """One transaction: the batch's outcomes, early reports, stops and fallbacks.

        Returns:
            how many fallbacks were queued.
        """
        stopped = [o.id for o in outcomes if o.error_kind == RecipientStopped.kind]
        requeued = [o.id for o in outcomes if o.state is DeliveryState.QUEUED]
        sent = [(o.id, o.provider_message_id) for o in outcomes if o.state is DeliveryState.SENT]
        failed = [o.id for o in outcomes if o.state is DeliveryState.FAILED]
        rules = None
        if failed and self.channels[channel_name].reach == "personal":
            rules = await self._fallback_rules(
                {item.announcement_id for item in batch if item.announcement_id is not None}
            )
        # Made before the transaction: on SQLite it holds the one write lock, which bounds
        # how fast every worker can claim and record.
        prepared = claims.prepare_outcomes(outcomes, dialect=self.engine.dialect.name)

        def write(conn: Connection) -> int:
            if sent:
                claims.lock_reports(conn, [channel_name])
            now = self.clock.now()
            claims.write_outcomes(conn, prepared, now=now)
            claims.apply_early_reports(conn, channel=channel_name, sent=sent)
            claims.stop_recipients(conn, channel=channel_name, delivery_ids=stopped, now=now)
            late_stops.cancel_requeued(conn, requeued, now=now)
            if rules is None:
                return 0
            return fallback.queue_fallbacks_among(conn, failed, now=now, rules=rules)

        return await self._until_recorded(write, len(outcomes))

    async def _until_recorded(self, write: Callable[[Connection], int], count: int) -> int:
        """Run the record's transaction until it commits, while the storage is unavailable.

        What the provider answered is known only here: a record given up on leaves the batch
        ``sending``, its lease runs out, and every message of it goes out a second time. So a
        busy lock, a dropped connection, a read-only or full database is waited out (with
        backoff; the batch keeps its lease meanwhile), not turned into a resend, and a stop
        waits for it within its grace. Any other error is raised as before.
        """
        delay = RECORD_RETRY_FIRST_S
        tries = 0
        while True:
            try:
                written = await self.writer.run(write)
            except Exception as exc:
                reason = self._outages.saw(exc)
                left = self._grace_left()
                if reason is None or left <= 0:
                    raise
                tries += 1
                if tries == 1:
                    log.warning(
                        "could not record %d outcomes (%s: %s); trying again until it can",
                        count,
                        type(exc).__name__,
                        reason,
                    )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, RECORD_RETRY_MAX_S)
                continue
            if tries:
                log.warning("recorded %d outcomes after %d failed tries", count, tries)
            return written

    def _grace_left(self) -> float:
        """Seconds a worker may still spend on its batch: unbounded until stop() is called."""
        if self._grace_ends is None:
            return math.inf
        return self._grace_ends - asyncio.get_running_loop().time()

    async def _send_batch(
        self, channel: Channel, batch: Sequence[claims.Claimed]
    ) -> list[claims.Outcome]:
        # Normal announcements to a person wait out quiet hours, checked as each request leaves.
        gate = quiet.SendGate(batch)
        # Opt-outs, erasures and cancellations since the claim, looked at as requests leave.
        stops = late_stops.LateStops(self.engine, batch)
        try:
            outcomes, messages = await self._messages_of(channel, batch, gate, stops)
        except Exception:
            # Nothing of the batch has left: back to the queue now (the claim's attempt not
            # counted), not after its lease, and the worker tries again. If even that fails,
            # the lease runs out as before.
            with contextlib.suppress(Exception):
                await self.writer.run(functools.partial(claims.give_back, batch=batch))
            raise
        attempts = {item.id: item.attempts for item in batch}
        requests = [
            messages[i : i + channel.batch_size]
            for i in range(0, len(messages), channel.batch_size)
        ]
        kept_back: dict[int, claims.Outcome] = {}
        handed_back = 0
        try:
            results = await asyncio.gather(
                *(
                    self._send_request(channel, r, gate=gate, stops=stops, kept_back=kept_back)
                    for r in requests
                )
            )
        finally:
            stops.close()
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, ChannelError):
                if result.reason == STOPPING:
                    handed_back += len(request)
                outcomes.extend(
                    self._failure(m.delivery_id, result, attempts[m.delivery_id])
                    for m in request
                    if m.delivery_id not in kept_back
                )
                continue
            for sent in result:
                outcomes.append(self._outcome(sent, attempts[sent.delivery_id]))
            answered = {r.delivery_id for r in result}
            for m in request:
                if m.delivery_id in answered or m.delivery_id in kept_back:
                    continue
                missing = ChannelError("the provider did not report on this message")
                outcomes.append(self._failure(m.delivery_id, missing, attempts[m.delivery_id]))
        if handed_back:
            log.info(
                "%s: %d deliveries queued again unsent: %s", channel.name, handed_back, STOPPING
            )
        if kept_back:
            # Never sent, the claim's attempt given back: queued for the morning, or stopped
            # (or expired) after the claim.
            outcomes.extend(kept_back.values())
            waiting = sum(1 for o in kept_back.values() if o.state is DeliveryState.QUEUED)
            if waiting:
                log.info("%s: %d deliveries wait for the end of quiet hours", channel.name, waiting)
            if len(kept_back) > waiting:
                log.info(
                    "%s: %d deliveries stopped after their claim",
                    channel.name,
                    len(kept_back) - waiting,
                )
        return outcomes

    async def _messages_of(
        self,
        channel: Channel,
        batch: Sequence[claims.Claimed],
        gate: quiet.SendGate,
        stops: late_stops.LateStops,
    ) -> tuple[list[claims.Outcome], list[OutgoingMessage]]:
        """The batch's messages to send, and the outcomes of those it will not (expired, no
        address); the quiet hours and expiries of its announcements go to ``gate`` and
        ``stops``."""
        outcomes: list[claims.Outcome] = []
        messages: list[OutgoingMessage] = []
        now = self.clock.now()
        # One look-up per (announcement, language) of the batch, not per delivery; None: expired.
        texts: dict[tuple[int, str], str | None] = {}
        sendable: list[tuple[claims.Claimed, str]] = []
        watch = channel.name in PERSONAL_CHANNELS
        for item in batch:
            if item.announcement_id is None:
                sendable.append((item, item.body or ""))
                continue
            key = (item.announcement_id, item.language)
            if key in texts:
                text = texts[key]
            else:
                announcement = await self.texts.announcement(item.announcement_id)
                expired = announcement.expires_at is not None and announcement.expires_at <= now
                text = None if expired else self.texts.text(channel, announcement, item.language)
                texts[key] = text
                if announcement.expires_at is not None:
                    stops.expires(item.announcement_id, announcement.expires_at)
                if watch and (rule := await self._quiet_of(announcement)) is not None:
                    gate.watch(item.announcement_id, *rule)
            if text is None:
                outcomes.append(
                    claims.Outcome(
                        item.id,
                        DeliveryState.EXPIRED,
                        error_reason=late_stops.EXPIRED,
                    )
                )
                continue
            sendable.append((item, text))
        recipients = self._recipients(channel, [item for item, _ in sendable])
        for (item, text), recipient in zip(sendable, recipients, strict=True):
            if recipient is None:
                outcomes.append(
                    claims.Outcome(
                        item.id, DeliveryState.CANCELLED, error_reason="no address for this channel"
                    )
                )
                continue
            messages.append(
                OutgoingMessage(
                    delivery_id=item.id,
                    recipient=recipient,
                    text=text,
                    idempotency_key=f"warta-{item.id}",
                    language=item.language,
                    reply=item.announcement_id is None,
                )
            )
        return outcomes, messages

    async def _quiet_of(
        self, announcement: SentAnnouncement
    ) -> tuple[quiet.QuietHours, str] | None:
        """The quiet hours and zone its deliveries keep to; None for an emergency (or none)."""
        if announcement.row["urgency"] == Urgency.EMERGENCY.value:
            return None
        agency_id = int(announcement.row["agency_id"])
        loop_now = asyncio.get_running_loop().time()
        kept = self._agency_quiet.get(agency_id)
        if kept is not None and kept[0] > loop_now:
            hours = kept[1]
        else:
            async with self.engine.connect() as conn:
                hours = await quiet.quiet_hours_of(conn, agency_id, default=self._quiet_hours)
            if len(self._agency_quiet) > 1024:
                self._agency_quiet.clear()
            self._agency_quiet[agency_id] = (loop_now + QUIET_HOURS_KEPT_S, hours)
        if not hours.enabled:
            return None
        return hours, announcement.agency_zone

    async def _send_request(
        self,
        channel: Channel,
        request: list[OutgoingMessage],
        *,
        gate: quiet.SendGate,
        stops: late_stops.LateStops,
        kept_back: dict[int, claims.Outcome],
    ) -> list[SendResult] | ChannelError:
        """Send one request when the rate allows. What ``gate`` holds as it leaves (queued
        again for the end of quiet hours) and what ``stops`` finds stopped since the claim are
        not sent: they go into ``kept_back``, delivery id -> the outcome to record."""
        bucket = self._buckets[channel.name]
        pacer = self._arrivals.get(channel.name)
        send_by: float | None = None
        # Gives back the rate taken for messages that do not leave after all.
        give_back: Callable[[int], Awaitable[None]] = _nothing_taken
        if self._shared_rate is not None:
            request, send_by, give_back = await self._book(
                channel, request, bucket, stops, kept_back
            )
            if not request:
                return []
        elif pacer is None:
            wait = bucket.take(len(request))
            give_back = _giving_back_to(bucket)
            if wait > 0:
                request = await self._turn_of(
                    request, wait, give_back=give_back, stops=stops, kept_back=kept_back
                )
                if not request:
                    return []
        paused = await self._wait_out_pause(channel.name, request, give_back, stops, kept_back)
        if isinstance(paused, HandedBack):
            return paused
        request = paused
        if not request:
            return []
        if pacer is not None:
            turn = await self._arrival_turn(pacer, request, give_back, stops, kept_back)
            if turn is None:
                return HandedBack(STOPPING, retry_after=0.0)
            if not turn:
                return []
            request = turn
            give_back = _giving_back_to(pacer, give_back)  # and to the shared budget's
            # Paced by arrival (Telegram): the pacer's wait for answers in flight is part of
            # its pacing, not lateness, so the request carries no deadline after it.
            send_by = None
        size = len(request)
        now = self.clock.now()
        ids = [m.delivery_id for m in request]
        held = gate.held(ids, now) if gate else {}
        for delivery_id, resume in held.items():
            kept_back[delivery_id] = claims.Outcome(
                delivery_id, DeliveryState.QUEUED, next_attempt_at=resume, refund=True
            )
        stopped = await stops.outcomes([i for i in ids if i not in held] if held else ids, now)
        kept_back.update(stopped)
        if held or stopped:
            request = [m for m in request if m.delivery_id not in kept_back]
            await give_back(size - len(request))
        loop = asyncio.get_running_loop()
        # A channel that hands the request to a thread checks the deadline again there.
        token = SEND_BY.set(send_by)
        try:
            if self._stopping:
                return HandedBack(STOPPING, retry_after=0.0)
            if not request:
                return []
            leave_by_deadline(send_by)
            results = await channel.send(request)
            if self._held_for and channel.name in self._held_for:
                self._account_back(channel.name, loop.time())
            return results
        except HandedBack as exc:
            # Late for its booked window: queued again at once (the rate is not in doubt).
            return exc
        except Throttled as exc:
            if self._pause(channel.name, exc.retry_after or 1.0):
                self._held_for.pop(channel.name, None)  # paused for the 429 now
                self._release_held_with(channel.name)  # a 429 is no refused account
            return exc
        except ConfigError as exc:
            if channel.reach == "social":
                return exc  # one post to one of several accounts: the others may go on
            return self._hold(channel.name, exc)
        except ChannelError as exc:
            return exc
        finally:
            SEND_BY.reset(token)
            if pacer is not None:
                pacer.release(size)

    def _hold(self, channel_name: str, error: ConfigError) -> AccountHeld:
        """The provider refused a whole request for an account reason: hold the channel
        (nothing is claimed or sent on it in this process for ``account_hold_s``) and queue
        the request again for after the hold, its attempt given back. A refusal of the account
        itself (``AccountRefused``: its balance, its credentials) holds the channels paid from
        the same account too (SMS and voice calls), until this one finds it put right."""
        loop = asyncio.get_running_loop()
        hold = self.config.dispatch.account_hold_s
        word = error.reason or "refused"
        ended = self._paused_until.get(channel_name, 0.0) <= loop.time()
        self._held_with.pop(channel_name, None)  # refused itself: its own hold from now
        siblings = [
            name
            for name in (self._paid_with(channel_name) if isinstance(error, AccountRefused) else ())
            if name not in self._held_for or name in self._held_with
        ]
        if ended or self._held_for.get(channel_name) != word:
            log.warning(
                "%s: the provider refused the account (%s): nothing is sent on this channel%s "
                "for %.0f s, and its deliveries wait in the queue until the account is put right",
                channel_name,
                word,
                f" nor on {', '.join(siblings)}, paid from the same account," if siblings else "",
                hold,
            )
        for name in (channel_name, *siblings):
            self._pause(name, hold)
            self._held_for[name] = word
            self._hold_news[name] = word
        self._held_with.update(dict.fromkeys(siblings, channel_name))
        return AccountHeld(word, retry_after=hold)

    def _paid_with(self, channel_name: str) -> list[str]:
        """The other channels that send on ``channel_name``'s provider account."""
        account = self.channels[channel_name].paying_account
        if account is None:
            return []
        return sorted(
            name
            for name, channel in self.channels.items()
            if name != channel_name and channel.paying_account == account
        )

    def _pause(self, channel_name: str, seconds: float) -> bool:
        """Send nothing on the channel for ``seconds`` from now, unless a pause already set
        ends later; True when this moved its end."""
        until = asyncio.get_running_loop().time() + seconds
        if until <= self._paused_until.get(channel_name, 0.0):
            return False
        self._paused_until[channel_name] = until
        return True

    def paused_channels(self) -> dict[str, tuple[str, float]]:
        """channel -> (why, seconds left) for each channel this process does not send on
        now: ``throttled`` for a 429's pause; ``config`` for an account the provider refused,
        listed until a request goes through again (0 s left: the next one finds out)."""
        now = asyncio.get_running_loop().time()
        paused = {
            name: ("throttled", until - now)
            for name, until in self._paused_until.items()
            if until > now and name not in self._held_for
        }
        for name in self._held_for:
            paused[name] = ("config", max(0.0, self._paused_until.get(name, 0.0) - now))
        return paused

    def _account_back(self, channel_name: str, now: float) -> None:
        """A request went through after an account hold ended: the hold is over, and so is
        that of the channels held with it."""
        if self._paused_until.get(channel_name, 0.0) <= now:
            word = self._held_for.pop(channel_name)
            self._hold_news[channel_name] = None
            log.info("%s: the provider accepts the account again (was %s)", channel_name, word)
            self._release_held_with(channel_name)

    def _release_held_with(self, channel_name: str) -> None:
        """The provider answered ``channel_name`` other than by refusing its account: the
        channels held with it send again."""
        self._held_with.pop(channel_name, None)
        for sibling in [s for s, origin in self._held_with.items() if origin == channel_name]:
            del self._held_with[sibling]
            self._held_for.pop(sibling, None)
            self._paused_until.pop(sibling, None)
            self._hold_news[sibling] = None
            log.info("%s: sends again, paid from the same account as %s", sibling, channel_name)

    async def _store_holds(self) -> None:
        """Tell the database which channels this process holds, or no longer holds."""
        news, self._hold_news = self._hold_news, {}
        now = self.clock.now()
        until = now + timedelta(seconds=self.config.dispatch.account_hold_s)

        def write(conn: Connection) -> None:
            for channel_name, reason in news.items():
                if reason is None:
                    holds.clear(conn, channel_name)
                else:
                    holds.store(conn, channel_name, reason, now=now, until=until)

        try:
            await self.writer.run(write)
        except Exception as exc:  # only what the dashboard shows: the hold itself stands
            log.warning("could not store channel holds: %s", type(exc).__name__)

    async def _nap(self, seconds: float, news: asyncio.Event | None = None) -> None:
        """Sleep, ending early when the dispatcher stops (or ``news`` is set)."""
        if self._stopping:
            return
        events = (self._stop_requested,) if news is None else (self._stop_requested, news)
        waits = {asyncio.ensure_future(event.wait()) for event in events}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _drop_stopped(
        self,
        request: list[OutgoingMessage],
        give_back: Callable[[int], Awaitable[None]],
        stops: late_stops.LateStops,
        kept_back: dict[int, claims.Outcome],
    ) -> list[OutgoingMessage]:
        """``request`` without what a look of its batch found stopped, and what expired
        (into ``kept_back``; their share of the rate given back)."""
        found = stops.found([m.delivery_id for m in request], self.clock.now())
        if not found:
            return request
        kept_back.update(found)
        await give_back(len(found))
        return [m for m in request if m.delivery_id not in found]

    async def _turn_of(
        self,
        request: list[OutgoingMessage],
        left: float | Callable[[], float],
        *,
        give_back: Callable[[int], Awaitable[None]],
        stops: late_stops.LateStops,
        kept_back: dict[int, claims.Outcome],
        sleep: Callable[[float, asyncio.Event], Awaitable[None]] | None = None,
    ) -> list[OutgoingMessage]:
        """Wait for the request's turn at the rate, taken already: ``left`` seconds from now
        (or ``left()``, asked again after each wake), slept by ``sleep`` (``_nap``). Returns
        what is left of the request then.

        A look of its batch that finds stops meanwhile (``LateStops.news``) wakes it: what
        was stopped leaves the request (into ``kept_back``) and its share of the rate is
        given back. A request left empty does not wait on: a cancelled broadcast frees its
        worker at once.
        """
        if not callable(left):
            loop = asyncio.get_running_loop()
            left = functools.partial(_seconds_to, loop, loop.time() + left)
        sleep = sleep or self._nap
        while request and not self._stopping and (seconds := left()) > 0:
            stops.watch(self.clock.now)
            news = stops.news
            await sleep(seconds, news)
            if not news.is_set():
                break
            request = await self._drop_stopped(request, give_back, stops, kept_back)
        return request

    async def _arrival_turn(
        self,
        pacer: ArrivalPacer,
        request: list[OutgoingMessage],
        give_back: Callable[[int], Awaitable[None]],
        stops: late_stops.LateStops,
        kept_back: dict[int, claims.Outcome],
    ) -> list[OutgoingMessage] | None:
        """``pacer.acquire`` for the request; returns what is left of it, acquired. None, with
        nothing acquired, if the dispatcher stops first.

        As in ``_turn_of``, a look that finds stops meanwhile drops them from the request
        (their share of the rate taken before, ``give_back``, given back), which waits on for
        its (smaller) turn; a request left empty gives up its place.
        """
        stops.watch(self.clock.now)
        while request:
            news = stops.news
            acquired = await self._acquire(pacer, len(request), news)
            if acquired is None:
                return None
            if acquired:
                return request
            request = await self._drop_stopped(request, give_back, stops, kept_back)
        return request

    async def _acquire(self, pacer: ArrivalPacer, n: int, news: asyncio.Event) -> bool | None:
        """``pacer.acquire(n)``: True once acquired; False, with nothing acquired, if ``news``
        came first; None, with nothing acquired, if the dispatcher stops first."""
        if self._stopping:
            return None
        acquiring = asyncio.ensure_future(pacer.acquire(n))
        stopping = asyncio.ensure_future(self._stop_requested.wait())
        told = asyncio.ensure_future(news.wait())
        try:
            await asyncio.wait({acquiring, stopping, told}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            acquiring.cancel()  # not left to take a turn for a request that is gone
            raise
        finally:
            stopping.cancel()
            told.cancel()
        if not acquiring.done():
            acquiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquiring
        if acquiring.cancelled():
            return None if stopping.done() or self._stopping else False
        acquiring.result()  # its error, if any
        return True

    async def _book(
        self,
        channel: Channel,
        request: list[OutgoingMessage],
        bucket: TokenBucket,
        stops: late_stops.LateStops,
        kept_back: dict[int, claims.Outcome],
    ) -> tuple[list[OutgoingMessage], float | None, Callable[[int], Awaitable[None]]]:
        """Book the request in the shared budget and wait for its window (``_turn_of``);
        returns what is left of it, the time by which that must leave
        (``gateway.outbox.shared_rate``), and how to give back what does not.

        A wait that overran its window (an event loop held up by load) books again rather
        than crowd the next window. After ``_REBOOKS`` overruns in a row the machine is too
        loaded to keep to windows at all: the request goes (logged) rather than never.
        """
        shared = self._shared_rate
        assert shared is not None
        for _ in range(_REBOOKS):
            booking = await shared.book(
                channel.name, len(request), rate=channel.rate_per_second, local=bucket
            )
            give_back = functools.partial(shared.give_back, booking)

            def left(booked: Booking = booking, budget: SharedRateLimit = shared) -> float:
                return booked.start - budget.now()

            async def sleep(
                _: float,
                news: asyncio.Event,
                booked: Booking = booking,
                budget: SharedRateLimit = shared,
            ) -> None:
                await budget.wait(booked, news)

            request = await self._turn_of(
                request, left, sleep=sleep, give_back=give_back, stops=stops, kept_back=kept_back
            )
            if not request or booking.send_by is None or shared.now() < booking.send_by:
                return request, booking.send_by, give_back
        log.warning(
            "%s: woke after its booked rate window %d times running (process overloaded); "
            "sending without a window",
            channel.name,
            _REBOOKS,
        )
        return request, None, give_back

    async def _wait_out_pause(
        self,
        channel_name: str,
        request: list[OutgoingMessage],
        give_back: Callable[[int], Awaitable[None]],
        stops: late_stops.LateStops,
        kept_back: dict[int, claims.Outcome],
    ) -> HandedBack | list[OutgoingMessage]:
        """Hold a request while its channel is paused by a 429 that another request met;
        returns what is left of it when the pause ends.

        Workers claim before they wait for the rate, so a request claimed before the 429 may
        come up during the provider's ``Retry-After``: it waits until the pause ends (what
        a look finds stopped meanwhile leaving it, as in ``_turn_of``). A pause longer than
        half the lease hands the request back as throttled instead (queued again for after
        the pause, its attempt and its share of the rate given back) rather than hold a worker
        and its batch that long.
        """
        loop = asyncio.get_running_loop()
        budget = self.config.dispatch.lease_seconds / 2
        left = self._paused_until.get(channel_name, 0.0) - loop.time()
        while left > 0 and request:
            if left > budget:
                # It leaves no sooner than the pause ends, long after the turn it took.
                await give_back(len(request))
                held_for = self._held_for.get(channel_name)
                if held_for is not None:
                    return AccountHeld(held_for, retry_after=left)
                return HandedBack("channel paused after HTTP 429", retry_after=left)
            request = await self._turn_of(
                request, left, give_back=give_back, stops=stops, kept_back=kept_back
            )
            if self._stopping:
                return request  # handed back as it would leave
            # Another 429 while waiting moves the end of the pause.
            left = self._paused_until.get(channel_name, 0.0) - loop.time()
        return request

    def _outcome(self, result: SendResult, attempts: int) -> claims.Outcome:
        if result.error is not None:
            return self._failure(result.delivery_id, result.error, attempts)
        # Positional (id, state, message id, cost, error kind, reason, next attempt, url): one
        # per delivery, and keywords cost a tuple's __new__ twice as much.
        return claims.Outcome(
            result.delivery_id,
            result.state,
            result.provider_message_id,
            result.cost,
            None,
            None,
            None,
            result.url,
        )

    def _failure(self, delivery_id: int, error: ChannelError, attempts: int) -> claims.Outcome:
        settings = self.config.dispatch
        if isinstance(error, HandedBack):
            # Never sent: back in the queue for after the pause, its attempt given back, so
            # long pauses cannot use up a delivery's attempts without one send.
            return claims.Outcome(
                delivery_id,
                DeliveryState.QUEUED,
                error_kind=error.kind,
                error_reason=error.reason,
                next_attempt_at=self.clock.now()
                + timedelta(seconds=1.0 if error.retry_after is None else error.retry_after),
                refund=True,
            )
        # An account problem named for some recipients of an answer (the balance ran out
        # within the request, a sender id one network does not know) is retried like a failed
        # connection; one that refused a whole request held the channel (AccountHeld, above).
        retryable = error.retryable or isinstance(error, ConfigError)
        if retryable and attempts < settings.max_attempts:
            if isinstance(error, Throttled) and error.retry_after:
                delay = error.retry_after
            else:
                ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempts - 1))
                delay = random.uniform(ceiling / 2, ceiling)  # jitter spreads retries out
            return claims.Outcome(
                delivery_id,
                DeliveryState.QUEUED,
                error_kind=error.kind,
                error_reason=error.reason,
                next_attempt_at=self.clock.now() + timedelta(seconds=delay),
            )
        return claims.Outcome(
            delivery_id, DeliveryState.FAILED, error_kind=error.kind, error_reason=error.reason
        )

    def _recipients(self, channel: Channel, items: Sequence[claims.Claimed]) -> list[str | None]:
        if channel.reach == "social" or channel.name == "telegram":
            return [self._recipient(channel, item) for item in items]
        return self.vault.decrypt_many([item.phone_ciphertext for item in items])

    def _recipient(self, channel: Channel, item: claims.Claimed) -> str | None:
        if channel.reach == "social":
            return item.account
        if channel.name == "telegram":
            if item.body is not None and item.phone_ciphertext is not None:
                # A reply carries its own encrypted chat id: the asker may not be a subscriber.
                return self.vault.decrypt(item.phone_ciphertext)
            return None if item.telegram_chat_id is None else str(item.telegram_chat_id)
        if item.phone_ciphertext is None:
            return None
        return self.vault.decrypt(item.phone_ciphertext)

    # -- fallback ---------------------------------------------------------------------------

    async def _fallback_rules(self, announcement_ids: set[int]) -> fallback.FallbackRules:
        return fallback.FallbackRules(
            channels=frozenset(n for n, c in self.channels.items() if c.reach == "personal"),
            unconfirmed_after=timedelta(seconds=self.config.dispatch.fallback_unconfirmed_s),
            tariff=self._tariff,
            sms_segments={
                announcement_id: await self.texts.sms_segments_of(announcement_id)
                for announcement_id in sorted(announcement_ids)
            },
            call_tariff=self._call_tariff,
            call_minutes={
                announcement_id: await self.texts.call_minutes_of(announcement_id)
                for announcement_id in sorted(announcement_ids)
            },
        )

    # -- housekeeping -----------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        while not self._stopping:
            try:
                await self.housekeeping()
            except Exception:
                if self._stopping:
                    return  # cancelled inside a database call: see stop()
                log.exception("outbox housekeeping failed; retrying")
            await asyncio.sleep(max(1.0, self.config.dispatch.idle_poll_s * 2))

    async def housekeeping(self) -> None:
        """One pass of ``gateway.outbox.housekeeping``: dead leases, expiry, late fallbacks,
        quiet hours, finished announcements."""
        done = await self._housekeeping.run()
        if done.fell_back:
            log.info(
                "%d failed or unconfirmed deliveries fall back to another channel", done.fell_back
            )
        if done.reclaimed:
            log.warning("reclaimed %d deliveries whose lease expired", done.reclaimed)
        if done.reclaimed or done.fell_back:
            self._wake_workers()


# Bookings in the shared rate budget tried before a request that keeps waking late goes anyway.
_REBOOKS = 3
# Why a request waiting for the rate when the gateway stopped went back to the queue unsent.
STOPPING = "the gateway stopped before it could leave"


def _seconds_to(loop: asyncio.AbstractEventLoop, until: float) -> float:
    return until - loop.time()


async def _nothing_taken(n: int) -> None:
    """The ``give_back`` of a request that has taken no share of the rate yet."""


def _giving_back_to(
    pace: TokenBucket | ArrivalPacer,
    then: Callable[[int], Awaitable[None]] = _nothing_taken,
) -> Callable[[int], Awaitable[None]]:
    """Gives back to ``pace`` (this process's), and through ``then`` (the shared budget)."""

    async def give_back(n: int) -> None:
        pace.give_back(n)
        await then(n)

    return give_back


def _arrival_pacer(channel: Channel) -> ArrivalPacer:
    """The provider's bucket is taken to hold one second of the rate, or one whole request."""
    burst = max(channel.rate_per_second, channel.batch_size)
    return ArrivalPacer(channel.rate_per_second, burst, smallest_burst=channel.batch_size)
