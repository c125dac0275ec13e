"""The scheduler's decisions as pure functions: a manual clock, no database, no waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.clock import ManualClock
from scheduler.cron import crontab_trigger, first_occurrence
from scheduler.planning import OccurrencePlan, Pending, next_wakeup, plan_occurrences, wall_time

WIB = ZoneInfo("Asia/Jakarta")
MONDAYS_0700_WIB = crontab_trigger("0 7 * * 1", WIB)
HORIZON = timedelta(minutes=10)
GRACE = timedelta(hours=1)
# 2026-01-05 is a Monday; 07:00 WIB is 00:00 UTC.
MONDAY = datetime(2026, 1, 12, 0, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def plan(now: datetime, **kwargs: object) -> OccurrencePlan:
    options: dict[str, object] = {
        "next_run_at": MONDAY,
        "horizon": HORIZON,
        "grace": GRACE,
        "until": None,
        "remaining": None,
    }
    options.update(kwargs)
    return plan_occurrences(MONDAYS_0700_WIB, now=now, **options)  # type: ignore[arg-type]


def test_nothing_is_issued_before_the_horizon():
    assert plan(MONDAY - HORIZON - timedelta(seconds=1)) == OccurrencePlan(next_run_at=MONDAY)


def test_an_occurrence_is_issued_within_the_horizon_and_the_next_is_a_week_later():
    assert plan(MONDAY - HORIZON) == OccurrencePlan(issue=[MONDAY], next_run_at=MONDAY + WEEK)


def test_after_a_long_outage_missed_occurrences_are_skipped_not_sent_late():
    clock = ManualClock(MONDAY)
    clock.advance(2 * WEEK + timedelta(minutes=30))

    result = plan(clock.now())

    assert result == OccurrencePlan(
        issue=[MONDAY + 2 * WEEK], skipped=2, next_run_at=MONDAY + 3 * WEEK
    )


def test_the_series_ends_at_until():
    result = plan(MONDAY + 3 * WEEK, until=MONDAY + WEEK + timedelta(days=1), grace=4 * WEEK)

    assert result == OccurrencePlan(issue=[MONDAY, MONDAY + WEEK], finished=True)


def test_the_series_ends_after_count_occurrences():
    last = plan(MONDAY, remaining=1)
    done = plan(MONDAY + 5 * WEEK, remaining=2, grace=10 * WEEK)

    assert last == OccurrencePlan(issue=[MONDAY], finished=True)
    assert done == OccurrencePlan(issue=[MONDAY, MONDAY + WEEK], finished=True)


def test_a_pass_looks_at_a_bounded_number_of_occurrences():
    hourly = crontab_trigger("0 * * * *", UTC)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    result = plan_occurrences(
        hourly,
        next_run_at=start,
        now=start + timedelta(days=365),
        horizon=HORIZON,
        grace=GRACE,
        until=None,
        remaining=None,
        limit=50,
    )

    assert (result.skipped, result.issue, result.finished) == (50, [], False)
    assert result.next_run_at == start + timedelta(hours=50)


def test_a_series_with_no_occurrence_left_finishes():
    once = crontab_trigger("0 7 1 1 *", UTC)

    result = plan_occurrences(
        once,
        next_run_at=datetime(2026, 1, 1, 7, tzinfo=UTC),
        now=datetime(2026, 1, 1, 7, tzinfo=UTC),
        horizon=HORIZON,
        grace=GRACE,
        until=None,
        remaining=None,
        following=lambda _trigger, _after: None,
    )

    assert result == OccurrencePlan(issue=[datetime(2026, 1, 1, 7, tzinfo=UTC)], finished=True)


def test_first_occurrence_honours_a_later_send_at():
    assert first_occurrence(MONDAYS_0700_WIB, MONDAY + timedelta(minutes=1)) == MONDAY + WEEK
    assert first_occurrence(MONDAYS_0700_WIB, MONDAY) == MONDAY


def test_next_wakeup_is_the_earliest_thing_coming():
    now = MONDAY - timedelta(days=1)
    send_at = now + timedelta(hours=5)
    occurrence = now + timedelta(hours=3)
    expiry = now + timedelta(hours=4)

    assert next_wakeup(Pending(), now=now, horizon=HORIZON) is None
    assert next_wakeup(Pending(earliest_send_at=send_at), now=now, horizon=HORIZON) == send_at
    assert next_wakeup(
        Pending(send_at, occurrence, expiry), now=now, horizon=timedelta(minutes=10)
    ) == occurrence - timedelta(minutes=10)
    assert next_wakeup(Pending(earliest_expiry=expiry), now=now, horizon=HORIZON) == expiry


def test_something_already_due_wakes_now_not_in_the_past():
    now = MONDAY
    overdue = Pending(earliest_send_at=now - timedelta(hours=1))

    assert next_wakeup(overdue, now=now, horizon=HORIZON) == now


def test_wall_time_keeps_the_distance_of_the_injected_clock():
    clock = ManualClock(datetime(2030, 6, 1, tzinfo=UTC))
    wall = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    assert wall_time(
        clock.now() + timedelta(seconds=90), clock_now=clock.now(), wall_now=wall
    ) == wall + timedelta(seconds=90)
