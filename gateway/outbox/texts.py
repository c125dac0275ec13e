"""What the dispatcher sends for an announcement: each channel's text in each language,
rendered once and kept (an LRU per process), and the SMS segments that price it.

Announcements do not change once approved, so a worker renders each (channel, language) once
instead of once per delivery; the caches are bounded so a long-running process does not grow.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from cachetools import LRUCache
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from channels.base import Channel
from channels.voice.adapter import call_seconds
from gateway.db.schema import agencies, announcements
from gateway.outbox.content import content_for, languages_of
from gateway.pricing import billed_minutes
from gateway.renditions import Renderer, Rendition

log = logging.getLogger("warta.dispatch")

_ANNOUNCEMENTS_KEPT = 256
_TEXTS_KEPT = 1024

_Value = TypeVar("_Value")


@dataclass(frozen=True, slots=True)
class SentAnnouncement:
    """An announcement as the dispatcher needs it: its row, and its agency's name and zone."""

    row: Mapping[str, Any]
    agency_name: str
    expires_at: datetime | None
    agency_zone: str


class AnnouncementTexts:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        renderer: Renderer,
        public_url: str,
        sms: Channel | None,
        voice: Channel | None = None,
        call_billing_s: int = 60,
    ) -> None:
        self._engine = engine
        self._renderer = renderer
        self._public_url = public_url.rstrip("/")
        self._sms = sms
        self._voice = voice
        self._call_billing_s = call_billing_s
        self._announcements: LRUCache[int, SentAnnouncement] = LRUCache(_ANNOUNCEMENTS_KEPT)
        self._texts: LRUCache[tuple[int, str, str], str] = LRUCache(_TEXTS_KEPT)
        self._sms_segments: LRUCache[int, dict[str, int]] = LRUCache(_ANNOUNCEMENTS_KEPT)
        self._call_minutes_kept: LRUCache[int, dict[str, Decimal]] = LRUCache(_ANNOUNCEMENTS_KEPT)

    def public_url(self, row: Mapping[str, Any]) -> str:
        return f"{self._public_url}/a/{row['verification_code']}"

    async def announcement(self, announcement_id: int) -> SentAnnouncement:
        cached = self._announcements.get(announcement_id)
        if cached is not None:
            return cached
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(
                            announcements,
                            agencies.c.name.label("agency_name"),
                            agencies.c.timezone.label("agency_zone"),
                        )
                        .join(agencies, agencies.c.id == announcements.c.agency_id)
                        .where(announcements.c.id == announcement_id)
                    )
                )
                .mappings()
                .one()
            )
        entry = SentAnnouncement(
            row=dict(row),
            agency_name=row["agency_name"],
            expires_at=row["expires_at"],
            agency_zone=row["agency_zone"],
        )
        self._announcements[announcement_id] = entry
        return entry

    def text(self, channel: Channel, announcement: SentAnnouncement, language: str) -> str:
        key = (announcement.row["id"], channel.name, language)
        text = self._texts.get(key)
        if text is None:
            row, agency_name = announcement.row, announcement.agency_name
            text = self._rendition(channel, row, agency_name, language).text
            self._texts[key] = text
        return text

    async def segments_at_start(
        self, conn: AsyncConnection, row: Mapping[str, Any]
    ) -> dict[str, dict[str, int]]:
        """SMS segments per language for the rendition each delivery of ``row`` (just
        started, not yet cached) will carry, by channel: what its fan-out prices."""
        if self._sms is None or "sms" not in row["channels"]:
            return {}
        agency_name = (
            await conn.execute(sa.select(agencies.c.name).where(agencies.c.id == row["agency_id"]))
        ).scalar_one()
        return {"sms": self._segments(self._sms, row, agency_name)}

    async def call_minutes_of(self, announcement_id: int) -> dict[str, Decimal]:
        """The minutes one voice call of the announcement is billed for, per language: what
        its fan-out, and a stand-in call of its fallback, price. Empty when voice is off or the
        rendition cannot be made (the calls then carry no estimate)."""
        voice = self._voice
        if voice is None:
            return {}

        async def compute(announcement: SentAnnouncement) -> dict[str, Decimal]:
            return await self._call_minutes(voice, announcement.row, announcement.agency_name)

        return await self._of_sending(
            self._call_minutes_kept, announcement_id, compute, "voice call"
        )

    async def _call_minutes(
        self, voice: Channel, row: Mapping[str, Any], agency_name: str
    ) -> dict[str, Decimal]:
        minutes: dict[str, Decimal] = {}
        for language in languages_of(row):
            text = self._rendition(voice, row, agency_name, language).text
            seconds = await call_seconds(voice, text, language)
            minutes[language] = billed_minutes(seconds, self._call_billing_s)
        return minutes

    async def sms_segments_of(self, announcement_id: int) -> dict[str, int]:
        """Segments per language of the announcement's SMS, to price a stand-in SMS."""
        sms = self._sms
        if sms is None:
            return {}

        async def compute(announcement: SentAnnouncement) -> dict[str, int]:
            return self._segments(sms, announcement.row, announcement.agency_name)

        return await self._of_sending(self._sms_segments, announcement_id, compute, "SMS")

    async def _of_sending(
        self,
        kept: LRUCache[int, dict[str, _Value]],
        announcement_id: int,
        compute: Callable[[SentAnnouncement], Awaitable[dict[str, _Value]]],
        what: str,
    ) -> dict[str, _Value]:
        """What ``compute`` says per language of an announcement already sending, kept."""
        cached = kept.get(announcement_id)
        if cached is not None:
            return cached
        announcement = await self.announcement(announcement_id)
        try:
            values = await compute(announcement)
        except Exception:
            # Only an estimate: a rendition that cannot be made must not stop the outbox
            # housekeeping; the stand-in is priced as if it had one segment, or not at all
            # (a call), and the send itself will tell.
            log.exception("could not render the %s of announcement %s", what, announcement_id)
            return {}
        kept[announcement_id] = values
        return values

    def _segments(self, sms: Channel, row: Mapping[str, Any], agency_name: str) -> dict[str, int]:
        return {
            language: self._rendition(sms, row, agency_name, language).segments
            for language in languages_of(row)
        }

    def _rendition(
        self, channel: Channel, row: Mapping[str, Any], agency_name: str, language: str
    ) -> Rendition:
        content = content_for(
            row, language=language, agency_name=agency_name, public_url=self.public_url(row)
        )
        return self._renderer.render(type(channel), content, keep_gsm7=row["keep_gsm7"])
