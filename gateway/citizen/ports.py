"""What the citizen services (USSD, SMS keywords) need from the rest of the gateway.

``CitizenDirectory`` is bound to one agency: every call reads or changes that agency's
announcements and subscribers only (code verification alone is global, as on ``/verify``).
An in-memory implementation backs the property tests; ``SqlCitizenDirectory`` the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from gateway.personal import PhoneNumber

LANGUAGES = ("id", "en")
# The channels a citizen can choose from a feature phone.
CITIZEN_CHANNELS = ("sms", "voice")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is on the line; the number is personal data and stays out of the repr."""

    phone: PhoneNumber = field(repr=False)
    network_code: str | None = None


@dataclass(frozen=True, slots=True)
class Bulletin:
    """One announcement as a citizen reads it, already in the requested language."""

    title: str
    body: str
    code: str
    date: datetime | None


@dataclass(frozen=True, slots=True)
class Verification:
    code: str
    genuine: bool
    agency: str | None = None
    title: str | None = None
    issued_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A caller's subscription: ``channels`` are the active ones, ``opted_out`` the stopped."""

    language: str
    area_code: str | None
    topics: tuple[str, ...]
    channels: tuple[str, ...]
    opted_out: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.channels)


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """What a citizen chose; ``consent_text`` is exactly what they were shown and accepted."""

    language: str
    area_code: str | None
    topics: tuple[str, ...]
    channels: tuple[str, ...]
    consent_text: str
    consent_channel: str


class CitizenDirectory(Protocol):
    """Storage as the citizen services see it, for one agency.

    Every method is idempotent: calling it again with the same arguments changes nothing more
    (USSD histories and provider callbacks are replayed).
    """

    @property
    def agency_name(self) -> str: ...

    async def latest(self, *, area_code: str | None, language: str, limit: int) -> list[Bulletin]:
        """Published announcements reaching ``area_code`` (None: any), newest first.

        An announcement reaches an area when it names the area or one above it (``31``
        reaches ``31.71``) or names no area at all.
        """
        ...

    async def verify(self, code: str) -> Verification:
        """Whether ``code`` (already normalised) belongs to an announcement that was issued."""
        ...

    async def topics(self) -> list[str]:
        """Topics a citizen can pick, at most a handful, in a stable order."""
        ...

    async def subscription(self, phone: PhoneNumber) -> Subscription | None: ...

    async def subscribe(self, phone: PhoneNumber, request: SubscriptionRequest) -> Subscription:
        """Subscribe, or replace an existing subscription's area, topics and citizen channels.

        Channels in ``CITIZEN_CHANNELS`` not in ``request.channels`` are opted out; other
        channels (e.g. Telegram set up elsewhere) are left alone.
        """
        ...

    async def unsubscribe(self, phone: PhoneNumber, channels: Sequence[str] | None) -> bool:
        """Opt out of ``channels`` (all when None) at once, cancelling queued deliveries.

        Returns False when the number is not subscribed.
        """
        ...

    async def set_language(self, phone: PhoneNumber, language: str) -> bool:
        """Returns False when the number is not subscribed (nothing is stored then)."""
        ...

    async def record_inbound(
        self,
        *,
        phone: PhoneNumber | None,
        text: str,
        channel: str,
        provider_message_id: str | None,
        handled: str,
        announcement_id: int | None = None,
    ) -> bool:
        """Keep a citizen's message for the operator inbox (blind index and mask only).

        ``announcement_id``: the announcement it answers, when the provider says so (a
        WhatsApp reply to our message). Returns False when a message with this provider id
        was already recorded.
        """
        ...
