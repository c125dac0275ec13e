"""The scheduler's decisions as pure functions of time: what to issue, when to wake.

Nothing here reads a clock or the database; callers pass ``now`` (from ``gateway.clock``),
so tests move time by hand. Every loop is bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from scheduler.cron import next_occurrence

MAX_OCCURRENCES_PER_PASS = 500


@dataclass(frozen=True, slots=True)
class Pending:
    """What the database says is coming (each aware, UTC, or None when nothing is)."""

    earliest_send_at: datetime | None = None  # approved announcements; <= now means due
    earliest_occurrence: datetime | None = None  # next occurrence of an active recurrence
    earliest_expiry: datetime | None = None  # of an announcement still sending


def next_wakeup(pending: Pending, *, now: datetime, horizon: timedelta) -> datetime | None:
    """When the scheduler must next look: the earliest of a send time, an occurrence minus
    the issue ``horizon`` (occurrences are issued that long ahead, as dated announcements),
    and an expiry; never before ``now``. None when nothing is pending."""
    candidates = [
        moment
        for moment in (
            pending.earliest_send_at,
            None if pending.earliest_occurrence is None else pending.earliest_occurrence - horizon,
            pending.earliest_expiry,
        )
        if moment is not None
    ]
    if not candidates:
        return None
    return max(min(candidates), now)


def wall_time(target: datetime, *, clock_now: datetime, wall_now: datetime) -> datetime:
    """The wall-clock moment APScheduler should fire for ``target`` on the injected clock.

    With the system clock both are the same; with a manual clock the distance is kept, so a
    test clock standing still never makes the scheduler spin."""
    return wall_now + (target - clock_now)


@dataclass(frozen=True, slots=True)
class OccurrencePlan:
    """One pass over a recurrence: occurrences to issue now, how many were missed."""

    issue: list[datetime] = field(default_factory=list)
    skipped: int = 0
    next_run_at: datetime | None = None
    finished: bool = False


def plan_occurrences(
    trigger: CronTrigger,
    *,
    next_run_at: datetime,
    now: datetime,
    horizon: timedelta,
    grace: timedelta,
    until: datetime | None,
    remaining: int | None,
    limit: int = MAX_OCCURRENCES_PER_PASS,
    following: Callable[[CronTrigger, datetime], datetime | None] = next_occurrence,
) -> OccurrencePlan:
    """Decide which occurrences from ``next_run_at`` on to issue at ``now``.

    An occurrence is issued once it is within ``horizon`` of ``now``. One older than
    ``grace`` (the process was down) is skipped, not sent late: a Monday 07:00 reminder must
    not go out on Wednesday. The series finishes after ``until`` or once ``remaining`` more
    occurrences were issued (skipped ones do not count). At most ``limit`` occurrences are
    looked at per pass; the next pass continues from ``next_run_at``.
    """
    issue: list[datetime] = []
    skipped = 0
    occurrence: datetime | None = next_run_at
    for _ in range(limit):
        if (
            occurrence is None
            or (until is not None and occurrence > until)
            or (remaining is not None and len(issue) >= remaining)
        ):
            return OccurrencePlan(issue=issue, skipped=skipped, finished=True)
        if occurrence > now + horizon:
            break
        if occurrence < now - grace:
            skipped += 1
        else:
            issue.append(occurrence)
        occurrence = following(trigger, occurrence)
    return OccurrencePlan(
        issue=issue, skipped=skipped, next_run_at=occurrence, finished=occurrence is None
    )
