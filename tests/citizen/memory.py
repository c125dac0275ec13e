"""``CitizenDirectory`` in memory, for tests of the pure USSD and SMS keyword logic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gateway.citizen.areas import reaches
from gateway.citizen.ports import (
    CITIZEN_CHANNELS,
    Bulletin,
    Subscription,
    SubscriptionRequest,
    Verification,
)
from gateway.personal import PhoneNumber


@dataclass
class Posted:
    bulletin: Bulletin
    areas: list[str] = field(default_factory=list)
    english: Bulletin | None = None


@dataclass
class MemoryDirectory:
    agency_name: str = "BPBD Kota Contoh"
    posted: list[Posted] = field(default_factory=list)
    offered_topics: list[str] = field(default_factory=lambda: ["banjir", "gempa"])
    people: dict[str, Subscription] = field(default_factory=dict)
    inbox: dict[str, str] = field(default_factory=dict)
    consents: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    async def latest(self, *, area_code: str | None, language: str, limit: int) -> list[Bulletin]:
        self.calls.append("latest")
        found = [
            (p.english if language == "en" and p.english else p.bulletin)
            for p in self.posted
            if reaches(p.areas, area_code)
        ]
        return found[:limit]

    async def verify(self, code: str) -> Verification:
        for p in self.posted:
            if p.bulletin.code == code:
                return Verification(code, True, self.agency_name, p.bulletin.title, p.bulletin.date)
        return Verification(code, False)

    async def topics(self) -> list[str]:
        return list(self.offered_topics)

    async def subscription(self, phone: PhoneNumber) -> Subscription | None:
        return self.people.get(phone.e164)

    async def subscribe(self, phone: PhoneNumber, request: SubscriptionRequest) -> Subscription:
        old = self.people.get(phone.e164)
        kept = tuple(c for c in (old.channels if old else ()) if c not in CITIZEN_CHANNELS)
        channels = tuple(dict.fromkeys(request.channels + kept))
        stopped = tuple(c for c in CITIZEN_CHANNELS if c not in channels)
        self.people[phone.e164] = Subscription(
            language=request.language,
            area_code=request.area_code,
            topics=request.topics,
            channels=channels,
            opted_out=stopped,
        )
        self.consents.append(request.consent_text)
        return self.people[phone.e164]

    async def unsubscribe(self, phone: PhoneNumber, channels: Sequence[str] | None) -> bool:
        old = self.people.get(phone.e164)
        if old is None:
            return False
        gone = set(channels) if channels is not None else set(old.channels)
        self.people[phone.e164] = replace(
            old,
            channels=tuple(c for c in old.channels if c not in gone),
            opted_out=tuple(dict.fromkeys(old.opted_out + tuple(sorted(gone)))),
        )
        return True

    async def set_language(self, phone: PhoneNumber, language: str) -> bool:
        old = self.people.get(phone.e164)
        if old is None:
            return False
        self.people[phone.e164] = replace(old, language=language)
        return True

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
        key = f"{channel}:{provider_message_id}"
        if provider_message_id is not None and key in self.inbox:
            return False
        self.inbox[key if provider_message_id else f"{channel}:{len(self.inbox)}"] = text
        return True
