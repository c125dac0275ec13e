"""Checks on what people ask the scheduler to do, each naming the field to blame.

Every check raises ``FieldError`` (a ``ValueError``) whose ``field`` is the dotted name of the
request field (``send_at``, ``expires_at``, ``recurrence.cron``, ``recurrence.timezone``) and
whose message starts with it, so the API answers 422 with ``{"field": …}`` unchanged.
``RecurrenceIn`` is the request body part for a recurring announcement; its field validators
raise pydantic errors located at ``recurrence.<field>``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

# Indonesian names for the country's three zones, accepted wherever a time zone is.
ZONE_ALIASES = {"WIB": "Asia/Jakarta", "WITA": "Asia/Makassar", "WIT": "Asia/Jayapura"}


class FieldError(ValueError):
    """A request value the scheduler cannot accept; ``field`` names it (dotted path)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.message = f"{field}: {reason}"


def zone(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The IANA zone called ``name`` (or WIB / WITA / WIT).

    Raises:
        FieldError: naming ``field`` when there is no such zone.
    """
    canonical = ZONE_ALIASES.get(name.strip().upper(), name.strip())
    try:
        return ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError):
        raise FieldError(
            field, f"unknown time zone {name[:64]!r}; use an IANA name like 'Asia/Jakarta'"
        ) from None


def validate_send_window(
    *, send_at: datetime | None, expires_at: datetime | None, now: datetime
) -> None:
    """A send time must not be past; an expiry must be in the future and after the send time.

    Raises:
        FieldError: naming ``send_at`` or ``expires_at``.
    """
    if send_at is not None and send_at < now:
        raise FieldError("send_at", "must not be in the past")
    if expires_at is not None and expires_at <= now:
        raise FieldError("expires_at", "must be in the future")
    if send_at is not None and expires_at is not None and expires_at <= send_at:
        raise FieldError("expires_at", "must be after send_at")


class RecurrenceIn(BaseModel):
    """How an announcement repeats: a crontab in a time zone, until a date or a count.

    ``cron`` is standard crontab (minute hour day-of-month month day-of-week; Sunday is 0 or
    7; names like ``mon`` work), e.g. ``0 7 * * 1`` is every Monday at 07:00. ``timezone``
    defaults to the agency's. Each occurrence is a dated copy of the announcement, approved
    under its approval, with its own verification code; ``valid_for_minutes`` sets each
    copy's expiry after its send time.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    cron: str = Field(min_length=1, max_length=120, examples=["0 7 * * 1"])
    timezone: str | None = Field(default=None, max_length=64, examples=["Asia/Jakarta", "WIB"])
    until: AwareDatetime | None = None
    count: int | None = Field(default=None, ge=1, le=1000)
    valid_for_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 31)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from scheduler.cron import crontab_trigger

        try:
            crontab_trigger(value, ZoneInfo("UTC"))
        except FieldError as exc:
            raise _invalid(exc) from None
        return " ".join(value.split())

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return zone(value).key
        except FieldError as exc:
            raise _invalid(exc) from None


def _invalid(exc: FieldError) -> PydanticCustomError:
    # A custom error keeps pydantic's "Value error, " prefix out of the API's message.
    return PydanticCustomError("invalid", "{reason}", {"reason": exc.reason})


def validate_recurrence(
    recurrence: RecurrenceIn,
    *,
    now: datetime,
    send_at: datetime | None,
    expires_at: datetime | None,
) -> None:
    """Checks that need the clock or the announcement's other fields.

    Raises:
        FieldError: ``recurrence.until`` in the past or before ``send_at``; ``expires_at``
            given on a recurring announcement (each occurrence expires by
            ``recurrence.valid_for_minutes`` instead).
    """
    if expires_at is not None:
        raise FieldError(
            "expires_at",
            "a recurring announcement has no single expiry; "
            "use recurrence.valid_for_minutes and recurrence.until",
        )
    if recurrence.until is not None:
        if recurrence.until <= now:
            raise FieldError("recurrence.until", "must be in the future")
        if send_at is not None and recurrence.until <= send_at:
            raise FieldError("recurrence.until", "must be after send_at")


def valid_for(recurrence: RecurrenceIn) -> timedelta | None:
    if recurrence.valid_for_minutes is None:
        return None
    return timedelta(minutes=recurrence.valid_for_minutes)
