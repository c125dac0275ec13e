"""``WartaScheduler``: APScheduler (``AsyncIOScheduler``) waking the gateway at the right times.

APScheduler holds no state of ours; the database does. Three jobs all run one ``tick``:

- ``warta-due``: one-shot (``DateTrigger``) at the next moment the database says something is
  due (a send time, an occurrence to issue, an expiry); every tick re-plans it;
- ``warta-now``: one-shot at once, added by ``notify()`` after an approval, cancellation or
  send-time change, so the plan is re-read from the database;
- ``warta-sweep``: every ``sweep_interval_s``, which catches what other processes changed.

A tick: issue due occurrences of recurring announcements, start due announcements
(``Dispatcher.start_due``: exactly one process wins each), defer queued deliveries out of
quiet hours, then wake the channel workers, run the outbox housekeeping (expiry, dead
leases, finished announcements) and re-plan. Ticks never overlap within a process.

Time comes from the injected clock; APScheduler fires on the wall clock at the same distance
(``planning.wall_time``), so a manual test clock moves the plan only when tests call
``notify()`` or ``settle()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock
from gateway.outbox.quiet import DEFAULT_QUIET_HOURS, QuietHours, defer_queued
from scheduler import recurrence, sendat
from scheduler.planning import next_wakeup, wall_time

if TYPE_CHECKING:
    from gateway.config import SchedulerSection
    from gateway.outbox.dispatcher import Dispatcher

log = logging.getLogger("warta.scheduler")
RETRY_DUE = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """``enabled=None`` follows ``dispatch.enabled``: a process that does not dispatch (an
    API-only process, or a test driving the dispatcher by hand) starts nothing by itself."""

    enabled: bool | None = None
    sweep_interval_s: float = 30.0
    recurrence_horizon: timedelta = timedelta(minutes=10)
    misfire_grace: timedelta = timedelta(hours=1)
    quiet_hours_default: QuietHours = field(default=DEFAULT_QUIET_HOURS)

    @classmethod
    def from_config(cls, section: SchedulerSection) -> SchedulerSettings:
        """The ``[scheduler]`` section (its quiet hours were checked when it was parsed)."""
        return cls(
            enabled=section.enabled,
            sweep_interval_s=section.sweep_interval_s,
            recurrence_horizon=timedelta(seconds=section.recurrence_horizon_s),
            misfire_grace=timedelta(seconds=section.misfire_grace_s),
            quiet_hours_default=section.default_quiet_hours(),
        )


@dataclass(frozen=True, slots=True)
class TickReport:
    issued: int = 0
    started: int = 0
    deferred: int = 0
    next_wakeup: datetime | None = None
    failed: bool = False


def _wall_now() -> datetime:
    return datetime.now(UTC)


class WartaScheduler:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        dispatcher: Dispatcher | None,
        settings: SchedulerSettings,
        wall: Callable[[], datetime] = _wall_now,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.dispatcher = dispatcher
        self.settings = settings
        self._wall = wall
        self._aps = AsyncIOScheduler(timezone=UTC)
        self._lock = asyncio.Lock()
        self._done = asyncio.Condition()
        self._begun = 0
        self._finished = 0
        self._wake_pending = False
        self._stopping = False
        self.started_total = 0
        self.last_report = TickReport()

    @property
    def ticks(self) -> int:
        """How many ticks have finished in this process (for health checks and tests)."""
        return self._finished

    async def start(self) -> None:
        """Start APScheduler: a first tick at once, then the periodic sweep."""
        # APScheduler logs every run at INFO; a sweep every few seconds would drown the log.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._aps.start()
        self._aps.add_job(
            self._run,
            IntervalTrigger(seconds=self.settings.sweep_interval_s, timezone=UTC),
            id="warta-sweep",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self.notify()

    async def stop(self, timeout: float = 30.0) -> None:
        """Let a running tick finish (up to ``timeout``), then shut APScheduler down."""
        self._stopping = True
        try:
            async with asyncio.timeout(timeout), self._lock:
                pass
        except TimeoutError:
            log.warning("a scheduler tick was still running at shutdown")
        if self._aps.running:
            self._aps.shutdown(wait=False)

    def notify(self) -> None:
        """Re-read the database soon (call after an approve, cancel or send-time change).

        Cheap and idempotent: at most one extra tick waits behind a running one."""
        if self._stopping or self._wake_pending:
            return
        self._wake_pending = True
        self._aps.add_job(
            self._run,
            DateTrigger(run_date=self._wall(), timezone=UTC),
            id="warta-now",
            replace_existing=True,
            max_instances=2,
            misfire_grace_time=None,
        )

    async def settle(self, timeout: float = 30.0) -> TickReport:
        """Ask for a tick and wait until one that began after this call has finished."""
        wanted = self._begun + 1
        self.notify()
        async with asyncio.timeout(timeout), self._done:
            await self._done.wait_for(lambda: self._finished >= wanted)
        return self.last_report

    async def _run(self) -> None:
        await self.tick()

    async def tick(self) -> TickReport:
        """One look at the database (see the module docstring); never raises."""
        async with self._lock:
            if self._stopping:
                return self.last_report
            self._begun += 1
            self._wake_pending = False
            try:
                report = await self._tick()
            except Exception:
                log.exception("scheduler tick failed; the sweep retries")
                report = TickReport(failed=True)
            self.last_report = report
            self.started_total += report.started
            self._finished += 1
        async with self._done:
            self._done.notify_all()
        return report

    async def _tick(self) -> TickReport:
        settings = self.settings
        now = self.clock.now()
        issued = await recurrence.issue_due(
            self.engine,
            now=now,
            horizon=settings.recurrence_horizon,
            grace=settings.misfire_grace,
        )
        started = await self.dispatcher.start_due() if self.dispatcher is not None else 0
        async with self.engine.begin() as conn:
            deferred = await defer_queued(conn, now=now, default=settings.quiet_hours_default)
        if self.dispatcher is not None:
            if started:
                for name in self.dispatcher.channels:
                    self.dispatcher.wake_channel(name)
            await self.dispatcher.housekeeping()
        now = self.clock.now()
        async with self.engine.connect() as conn:
            coming = await sendat.pending(conn, now=now)
        wake = next_wakeup(coming, now=now, horizon=settings.recurrence_horizon)
        if wake is not None:
            # Still due right after this tick (e.g. a start that failed): retry soon, not in
            # a busy loop.
            wake = max(wake, now + RETRY_DUE)
        if wake is not None and not self._stopping:
            self._aps.add_job(
                self._run,
                DateTrigger(
                    run_date=wall_time(wake, clock_now=now, wall_now=self._wall()), timezone=UTC
                ),
                id="warta-due",
                replace_existing=True,
                max_instances=2,
                misfire_grace_time=None,
            )
        elif self._aps.get_job("warta-due") is not None:
            self._aps.remove_job("warta-due")
        return TickReport(issued=len(issued), started=started, deferred=deferred, next_wakeup=wake)


SCHEDULER: web.AppKey[WartaScheduler] = web.AppKey("scheduler")
SCHEDULER_SETTINGS = web.AppKey("scheduler_settings", SchedulerSettings)


def notify_scheduler(app: web.Application) -> None:
    """Ask this process's scheduler, if it runs one, to re-read the database now. API
    handlers call it after an approval, a cancellation or a send-time change, so a due
    announcement starts within seconds instead of at the next sweep."""
    scheduler = app.get(SCHEDULER)
    if scheduler is not None:
        scheduler.notify()


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """``app.cleanup_ctx`` entry, after the outbox's: the scheduler for this process.

    Settings come from ``app[SCHEDULER_SETTINGS]`` when set (else the defaults). When not
    enabled, nothing starts and ``SCHEDULER`` stays unset."""
    from gateway.appkeys import CLOCK, CONFIG, DISPATCHER, ENGINE

    settings = app.get(SCHEDULER_SETTINGS) or SchedulerSettings()
    enabled = settings.enabled
    if enabled is None:
        enabled = app[CONFIG].dispatch.enabled
    if not enabled:
        yield
        return
    scheduler = WartaScheduler(
        engine=app[ENGINE],
        clock=app[CLOCK],
        dispatcher=app.get(DISPATCHER),
        settings=settings,
    )
    await scheduler.start()
    app[SCHEDULER] = scheduler
    try:
        yield
    finally:
        await scheduler.stop()
