"""Bad input gets an error naming its field: send-at, expiry, cron expression, time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError

from gateway.api.errors import from_validation_error
from scheduler.cron import cron_weekdays, crontab_trigger, first_occurrence
from scheduler.validation import (
    FieldError,
    RecurrenceIn,
    validate_recurrence,
    validate_send_window,
    zone,
)

NOW = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
WIB = ZoneInfo("Asia/Jakarta")


class Body(BaseModel):
    recurrence: RecurrenceIn


def api_error(payload: dict[str, object]) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as raised:
        Body.model_validate({"recurrence": payload})
    error = from_validation_error(raised.value)
    return error.field, error.message


@pytest.mark.parametrize(
    ("send_at", "expires_at", "field", "reason"),
    [
        (NOW - timedelta(seconds=1), None, "send_at", "must not be in the past"),
        (None, NOW, "expires_at", "must be in the future"),
        (NOW + timedelta(hours=2), NOW + timedelta(hours=1), "expires_at", "must be after send_at"),
    ],
)
def test_send_window_errors_name_the_field(send_at, expires_at, field, reason):
    with pytest.raises(FieldError) as raised:
        validate_send_window(send_at=send_at, expires_at=expires_at, now=NOW)

    assert (raised.value.field, raised.value.reason) == (field, reason)
    assert str(raised.value) == f"{field}: {reason}"


def test_a_good_send_window_passes():
    validate_send_window(send_at=NOW, expires_at=NOW + timedelta(hours=1), now=NOW)
    validate_send_window(send_at=None, expires_at=None, now=NOW)


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 7 * *", "needs five fields"),
        ("61 7 * * 1", "minute:"),
        ("0 24 * * 1", "hour:"),
        ("0 7 32 * *", "day-of-month:"),
        ("0 7 * 13 *", "month:"),
        ("0 7 * * 8", "day-of-week:"),
        ("0 7 * * funday", "day-of-week:"),
        ("0 7 * * 5-1", "runs backwards"),
        ("* 7 * * 1", "more often than once every 60 minutes"),
        ("*/15 * * * *", "more often"),
        ("0 7 1 * 1", "not both"),
        ("0 7 30 2 *", "never fires"),
    ],
)
def test_bad_cron_is_a_422_naming_recurrence_cron(cron, problem):
    field, message = api_error({"cron": cron})

    assert field == "recurrence.cron"
    assert problem in message


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "UTC+7"])
def test_bad_time_zone_is_a_422_naming_recurrence_timezone(name):
    field, message = api_error({"cron": "0 7 * * 1", "timezone": name})

    assert field == "recurrence.timezone"
    assert "unknown time zone" in message


def test_indonesian_zone_names_are_accepted():
    body = Body.model_validate({"recurrence": {"cron": "0 7 * * 1", "timezone": "wita"}})

    assert body.recurrence.timezone == "Asia/Makassar"
    assert zone("WIT").key == "Asia/Jayapura"


def test_count_and_validity_are_bounded():
    assert api_error({"cron": "0 7 * * 1", "count": 0})[0] == "recurrence.count"
    assert api_error({"cron": "0 7 * * 1", "valid_for_minutes": 0})[0] == (
        "recurrence.valid_for_minutes"
    )
    assert api_error({"cron": "0 7 * * 1", "every": "week"})[0] == "recurrence.every"


def test_recurrence_checks_that_need_the_clock():
    spec = RecurrenceIn(cron="0 7 * * 1", until=NOW - timedelta(days=1))
    with pytest.raises(FieldError) as past:
        validate_recurrence(spec, now=NOW, send_at=None, expires_at=None)
    later = RecurrenceIn(cron="0 7 * * 1", until=NOW + timedelta(days=1))
    with pytest.raises(FieldError) as before_start:
        validate_recurrence(later, now=NOW, send_at=NOW + timedelta(days=2), expires_at=None)
    with pytest.raises(FieldError) as expiry:
        validate_recurrence(later, now=NOW, send_at=None, expires_at=NOW + timedelta(hours=1))

    assert (past.value.field, past.value.reason) == ("recurrence.until", "must be in the future")
    assert before_start.value.message == "recurrence.until: must be after send_at"
    assert expiry.value.field == "expires_at"


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("*", {0, 1, 2, 3, 4, 5, 6}),
        ("1", {1}),
        ("0", {0}),
        ("7", {0}),
        ("1-5", {1, 2, 3, 4, 5}),
        ("5-7", {5, 6, 0}),
        ("*/2", {0, 2, 4, 6}),
        ("1-5/2", {1, 3, 5}),
        ("mon,WED,fri", {1, 3, 5}),
        ("sat-sun", None),
    ],
)
def test_weekdays_read_as_crontab_does(field, days):
    if days is None:
        with pytest.raises(FieldError):
            cron_weekdays(field)
        return
    assert cron_weekdays(field) == days


def test_monday_0700_wib_is_monday_0700_wib():
    trigger = crontab_trigger("0 7 * * 1", WIB)

    first = first_occurrence(trigger, datetime(2026, 1, 6, tzinfo=UTC))

    assert first is not None
    assert first.astimezone(WIB).strftime("%A %H:%M") == "Monday 07:00"
    assert first == datetime(2026, 1, 12, 0, 0, tzinfo=UTC)


def test_sunday_is_zero_and_seven():
    zero = first_occurrence(crontab_trigger("0 9 * * 0", UTC), NOW)
    seven = first_occurrence(crontab_trigger("0 9 * * 7", UTC), NOW)

    assert zero == seven
    assert zero is not None and zero.strftime("%A") == "Sunday"
