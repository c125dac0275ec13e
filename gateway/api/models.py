"""Request and response bodies of the API, as pydantic models (they also make the OpenAPI
document). Unknown fields are refused so a typo is an error, not a silently ignored option."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, model_validator
from pydantic_core import PydanticCustomError

from gateway.domain import (
    CHANNELS,
    PERSONAL_CHANNELS,
    AnnouncementStatus,
    DeliveryState,
    Urgency,
)
from scheduler.series import SeriesOut
from scheduler.validation import RecurrenceIn

Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}$", examples=["id", "en"])]
AreaCode = Annotated[str, Field(pattern=r"^[0-9]{2}(\.[0-9]{2,4}){0,3}$", examples=["31", "31.71"])]
Topic = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$")]
ChannelName = Literal[CHANNELS]  # type: ignore[valid-type]
PersonalChannelName = Literal[PERSONAL_CHANNELS]  # type: ignore[valid-type]
# Ids and chat ids live in signed 64-bit columns; a larger number is refused as invalid
# instead of overflowing the database driver.
MAX_BIGINT = 2**63 - 1


def invalid(field: str, reason: str) -> PydanticCustomError:
    """A problem found across fields, naming the field to blame (``gateway.api.errors``)."""
    return PydanticCustomError(
        "invalid_combination", "{field}: {reason}", {"field": field, "reason": reason}
    )


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Facts(Strict):
    """What every channel must carry. Each is optional; each given one must appear everywhere."""

    what: str | None = Field(default=None, max_length=200)
    when: AwareDatetime | None = None
    where: str | None = Field(default=None, max_length=200)
    action: str | None = Field(default=None, max_length=200)
    link: HttpUrl | None = None


class Translation(Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=5000)
    facts: Facts | None = None


class AnnouncementIn(Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=5000)
    language: Language = "id"
    facts: Facts = Facts()
    translations: dict[Language, Translation] = Field(default_factory=dict)
    areas: list[AreaCode] = Field(default_factory=list, max_length=500)
    topics: list[Topic] = Field(default_factory=list, max_length=50)
    channels: list[ChannelName] = Field(min_length=1, max_length=len(CHANNELS))
    urgency: Urgency = Urgency.NORMAL
    # Send times are checked against the clock and each other by the handler, with
    # ``scheduler.validation`` (the one place those rules live).
    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    keep_gsm7: bool = False
    recurrence: RecurrenceIn | None = Field(
        default=None,
        description="Repeat on a crontab schedule: each occurrence is a dated copy, sent "
        "under this announcement's approval. See docs/scheduling.md.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AnnouncementIn:
        if len(set(self.channels)) != len(self.channels):
            raise invalid("channels", "each channel may be named once")
        if self.language in self.translations:
            raise invalid("translations", "the main language needs no translation")
        return self


class ScheduleIn(Strict):
    """A new send time and/or expiry. A field left out keeps its value; ``null`` clears it
    (no send time: start as soon as approved; no expiry: never expires)."""

    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _something(self) -> ScheduleIn:
        if not self.model_fields_set:
            raise invalid("send_at", "give send_at and/or expires_at")
        return self


class QuietHoursIn(Strict):
    quiet_hours: str = Field(
        max_length=20,
        description="Local times 'HH:MM-HH:MM' (may wrap midnight) or 'off'",
        examples=["21:00-06:00", "off"],
    )


class QuietHoursOut(BaseModel):
    quiet_hours: str = Field(description="'HH:MM-HH:MM' or 'off'")
    enabled: bool
    source: Literal["agency", "default"] = Field(
        description="'default' until the agency sets its own (the [scheduler] configuration)"
    )
    timezone: str = Field(
        description="the agency's zone, used for subscribers without an Indonesian area code"
    )


class CountsByState(BaseModel):
    channel: str
    counts: dict[DeliveryState, int]
    total: int


class ChannelHoldOut(BaseModel):
    """A channel whose provider refuses the account (gateway.outbox.holds): its deliveries
    wait in the queue, and sending goes on by itself once the account is put right."""

    channel: str
    reason: str = Field(description="the provider's word, e.g. InsufficientBalance")
    since: datetime
    next_try: datetime = Field(description="when the gateway next asks the provider")


class AnnouncementOut(BaseModel):
    id: int
    agency: str
    status: AnnouncementStatus
    verification_code: str
    title: str
    body: str
    language: str
    facts: Facts
    translations: dict[str, Translation]
    areas: list[str]
    topics: list[str]
    channels: list[str]
    urgency: Urgency
    keep_gsm7: bool
    send_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    submitted_at: datetime | None
    approved_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    public_url: str
    estimated_cost: Decimal | None = None
    actual_cost: Decimal | None = None
    stats: list[CountsByState] | None = None
    reached_by_fallback: int | None = Field(
        default=None,
        description="Subscribers whose only successful delivery was a fallback on another "
        "channel (see docs/fallback.md). Not filled in lists.",
    )
    series: SeriesOut | None = Field(
        default=None,
        description="The recurring series this announcement is the template or an occurrence "
        "of, with its recurrence (cron, time zone, until, count); null otherwise. Not filled "
        "in lists.",
    )
    held_channels: list[ChannelHoldOut] | None = Field(
        default=None,
        description="Channels of this announcement whose provider refuses the account now (an "
        "empty balance, a refused key), while it still has deliveries to send. Not filled in "
        "lists.",
    )


class AnnouncementList(BaseModel):
    items: list[AnnouncementOut]
    next_before_id: int | None


class ListQuery(Strict):
    limit: int = Field(default=50, ge=1, le=500)
    before_id: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    status: AnnouncementStatus | None = None


class Consent(Strict):
    channel: Literal["web", "sms", "ussd", "telegram", "whatsapp", "paper", "import", "api"] = "api"
    text: str = Field(default="", max_length=1000)
    at: AwareDatetime | None = None


class SubscriberIn(Strict):
    phone: str = Field(min_length=3, max_length=40)
    language: Language = "id"
    area_code: AreaCode | None = None
    topics: list[Topic] = Field(default_factory=list, max_length=50)
    channels: list[PersonalChannelName] = Field(
        default_factory=lambda: ["sms"], min_length=1, max_length=len(PERSONAL_CHANNELS)
    )
    telegram_chat_id: int | None = Field(default=None, ge=-MAX_BIGINT, le=MAX_BIGINT)
    consent: Consent = Consent()

    @model_validator(mode="after")
    def _consistent(self) -> SubscriberIn:
        if len(set(self.channels)) != len(self.channels):
            raise invalid("channels", "each channel may be named once")
        if "telegram" in self.channels and self.telegram_chat_id is None:
            raise invalid("telegram_chat_id", "required when channels include telegram")
        return self


class SubscriberOut(BaseModel):
    id: int
    phone: str | None = Field(description="masked, e.g. +62 812-****-789")
    language: str
    area_code: str | None
    topics: list[str]
    channels: list[str]
    opted_out: list[str]
    created_at: datetime
    erased: bool


class SubscriberList(BaseModel):
    items: list[SubscriberOut]
    next_after_id: int | None


class SubscriberQuery(Strict):
    limit: int = Field(default=50, ge=1, le=1000)
    after_id: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    area_code: AreaCode | None = None


class SubscriberSearch(Strict):
    phone: str = Field(min_length=1, max_length=40, description="full number, exact match")
    limit: int = Field(default=50, ge=1, le=1000)


class ImportRowError(BaseModel):
    row: int = Field(description="1-based line number in the CSV, header is line 1")
    field: str
    message: str


class ImportReport(BaseModel):
    received: int
    imported: int
    duplicates: int
    errors: list[ImportRowError]
    errors_truncated: bool = False


class DeliveryOut(BaseModel):
    id: int
    channel: str
    phone: str | None
    account: str | None
    language: str
    state: DeliveryState
    attempts: int
    provider_message_id: str | None
    error_kind: str | None
    error_reason: str | None
    segments: int | None
    cost: Decimal | None
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_after_id: int | None


class DeliveryQuery(Strict):
    limit: int = Field(default=100, ge=1, le=1000)
    after_id: int | None = Field(default=None, ge=0, le=MAX_BIGINT)
    state: DeliveryState | None = None
    channel: ChannelName | None = None


class VerifyOut(BaseModel):
    code: str
    genuine: bool
    message: str
    agency: str | None = None
    title: str | None = None
    issued_at: datetime | None = None
    public_url: str | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


# -- operator inbox and statistics (gateway.api.inbox, gateway.api.stats) --------------------

InboxStatus = Literal["open", "closed"]


class InboxQuery(Strict):
    limit: int = Field(default=50, ge=1, le=500)
    before_id: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    status: InboxStatus | None = None
    channel: PersonalChannelName | None = None
    assigned: str | None = Field(
        default=None,
        pattern=r"^(me|none|[0-9]{1,18})$",
        description="'me', 'none' (unassigned) or an operator token id",
    )


class InboxThreadOut(BaseModel):
    id: int
    status: InboxStatus
    channel: str = Field(description="where the latest message came from; replies go there")
    subscriber_id: int | None
    phone: str | None = Field(description="masked, e.g. +62 812-****-789; None on Telegram")
    assigned_token_id: int | None
    announcement_id: int | None = Field(description="the announcement the citizen answers")
    opened_at: datetime
    last_message_at: datetime
    first_response_at: datetime | None
    response_seconds: int | None = Field(description="time to first response, in seconds")
    closed_at: datetime | None
    messages_in: int
    replies_out: int


class InboxThreadList(BaseModel):
    items: list[InboxThreadOut]
    next_before_id: int | None


class InboxMessageOut(BaseModel):
    direction: Literal["in", "out"]
    id: int
    channel: str
    text: str | None
    at: datetime
    announcement_id: int | None = None
    operator_token_id: int | None = None
    delivery_id: int | None = None
    state: DeliveryState | None = Field(default=None, description="a reply's delivery state")
    error_kind: str | None = None
    error_reason: str | None = None
    sent_at: datetime | None = None
    finished_at: datetime | None = None


class InboxThreadDetail(InboxThreadOut):
    messages: list[InboxMessageOut]


class InboxAssignIn(Strict):
    token_id: int | None = Field(
        default=None, ge=1, description="an operator token of the agency; omitted: yourself"
    )
    unassign: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> InboxAssignIn:
        if self.unassign and self.token_id is not None:
            raise invalid("token_id", "give token_id or unassign, not both")
        return self


class InboxReplyIn(Strict):
    text: str = Field(min_length=1, max_length=4096)


class InboxReplyOut(BaseModel):
    delivery_id: int
    channel: str
    state: DeliveryState
    thread: InboxThreadOut


class StatsQuery(Strict):
    since: AwareDatetime | None = Field(default=None, description="default: until - 7 days")
    until: AwareDatetime | None = Field(default=None, description="default: now")
    from_: date | None = Field(
        default=None,
        alias="from",
        description="first day of the period (ISO date, in the agency's time zone); "
        "instead of since",
    )
    to: date | None = Field(
        default=None,
        description="last day of the period, included (ISO date, in the agency's time zone); "
        "instead of until",
    )

    @model_validator(mode="after")
    def _consistent(self) -> StatsQuery:
        if self.from_ is not None and self.since is not None:
            raise invalid("from", "give either from or since")
        if self.to is not None and self.until is not None:
            raise invalid("to", "give either to or until")
        if self.from_ is not None and self.to is not None and self.to < self.from_:
            raise invalid("to", "must not be before from")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise invalid("until", "must be after since")
        return self


class InboxStats(BaseModel):
    threads_opened: int
    threads_answered: int = Field(description="threads first answered in the window")
    response_seconds_median: float | None
    response_seconds_p90: float | None


class AreaStats(BaseModel):
    area: str | None = Field(description="the subscriber's area code; null for social posts")
    deliveries: int
    delivered: int
    reach: int = Field(description="distinct citizens with a delivered message")


class StatsOut(BaseModel):
    agency: str
    since: datetime
    until: datetime
    timezone: str = Field(description="the agency's time zone, in which from/to are days")
    deliveries: list[CountsByState] = Field(description="per channel × state")
    areas: list[AreaStats] = Field(description="per area, most deliveries first")
    reach: int = Field(description="distinct citizens with a delivered message, all channels")
    inbox: InboxStats
