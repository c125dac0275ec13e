"""Standard crontab to an APScheduler ``CronTrigger``, with cron's own weekday numbers.

APScheduler 3 reads day-of-week numbers with 0 = Monday (its issue 286); crontab has
0 = Sunday (and 7 = Sunday). So the day-of-week field is expanded here into weekday *names*,
which both agree on: ``0 7 * * 1`` is Monday 07:00, as anyone who writes crontab expects.

Two crontab habits are refused rather than silently misread:
- day-of-month and day-of-week both restricted: cron fires when *either* matches,
  APScheduler only when *both* do;
- schedules firing more often than ``MIN_SPACING`` (``* 7 * * 1`` fires sixty times every
  Monday morning, a classic slip for ``0 7 * * 1``): each occurrence is a whole broadcast.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.cron import CronTrigger

from scheduler.validation import FieldError

FIELD = "recurrence.cron"
FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
MIN_SPACING = timedelta(hours=1)
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SPACING_SAMPLE = 120
_REFERENCE = datetime(2026, 1, 1, tzinfo=UTC)


def _day_number(token: str) -> int:
    lowered = token.lower()
    if lowered in _DAY_NAMES:
        return _DAY_NAMES.index(lowered)
    if not token.isdigit() or int(token) > 7:
        raise FieldError(FIELD, f"day-of-week: {token[:10]!r} is not 0-7 or sun..sat")
    return int(token) % 7


def cron_weekdays(field: str) -> set[int]:
    """The weekdays (0 = Sunday … 6 = Saturday) a crontab day-of-week field selects.

    Accepts ``*``, numbers 0-7, names, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists.

    Raises:
        FieldError: naming ``recurrence.cron`` for anything else.
    """
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        if step_text and (not step_text.isdigit() or int(step_text) == 0):
            raise FieldError(FIELD, f"day-of-week: bad step in {part[:20]!r}")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, _, high = span.partition("-")
            first, last = _day_number(low), _day_number(high)
            if high == "7":
                last = 7
            if last < first:
                raise FieldError(FIELD, f"day-of-week: range {span[:20]!r} runs backwards")
        else:
            first = last = _day_number(span)
            if step_text:
                last = 6
        days.update(day % 7 for day in range(first, last + 1, step))
    return days


def crontab_trigger(expression: str, timezone: tzinfo) -> CronTrigger:
    """A trigger firing as ``expression`` (standard five-field crontab) reads in ``timezone``.

    Raises:
        FieldError: naming ``recurrence.cron`` and, where it can, the crontab field at fault.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise FieldError(
            FIELD,
            f"needs five fields (minute hour day-of-month month day-of-week), got {len(fields)}",
        )
    minute, hour, day, month, weekday = fields
    if not day.startswith("*") and not weekday.startswith("*"):
        raise FieldError(
            FIELD, "restrict day-of-month or day-of-week, not both (cron would match either)"
        )
    days = cron_weekdays(weekday)
    day_of_week = "*" if len(days) == 7 else ",".join(_DAY_NAMES[d] for d in sorted(days))
    values = {"minute": minute, "hour": hour, "day": day, "month": month}
    for name, value in values.items():
        try:
            CronTrigger(**{name: value}, timezone=UTC)
        except (ValueError, TypeError) as exc:
            label = FIELD_NAMES[("minute", "hour", "day", "month").index(name)]
            raise FieldError(FIELD, f"{label}: {exc}") from None
    trigger = CronTrigger(**values, day_of_week=day_of_week, timezone=timezone)
    _check_spacing(trigger)
    return trigger


def _check_spacing(trigger: CronTrigger) -> None:
    previous: datetime | None = None
    moment = _REFERENCE
    for _ in range(_SPACING_SAMPLE):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            if previous is None:
                raise FieldError(FIELD, "never fires (no such date)")
            return
        if previous is not None and fire - previous < MIN_SPACING:
            raise FieldError(
                FIELD,
                f"fires more often than once every {int(MIN_SPACING.total_seconds() // 60)} "
                "minutes; each occurrence is a whole broadcast (did you mean minute 0?)",
            )
        previous, moment = fire, fire


def next_occurrence(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first occurrence strictly after ``after`` (aware), in UTC; None when none is left."""
    fire = trigger.get_next_fire_time(after, after)
    return None if fire is None else fire.astimezone(UTC)


def first_occurrence(trigger: CronTrigger, not_before: datetime) -> datetime | None:
    """The first occurrence at or after ``not_before`` (aware), in UTC."""
    fire = trigger.get_next_fire_time(None, not_before)
    return None if fire is None else fire.astimezone(UTC)
