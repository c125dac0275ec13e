"""``SqlCitizenDirectory``: the citizen services' view of one agency, on the real database.

Reads run in read-only transactions (``gateway.db.engine.reading``); each change is one short
transaction. Phone numbers are only ever encrypted, blind-indexed or masked
(``gateway.personal``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.citizen.areas import reaches
from gateway.citizen.ports import (
    CITIZEN_CHANNELS,
    Bulletin,
    Subscription,
    SubscriptionRequest,
    Verification,
)
from gateway.clock import Clock
from gateway.codes import normalise_code
from gateway.db.dialect import insert_ignoring_conflicts
from gateway.db.engine import reading
from gateway.db.schema import agencies, announcements, inbound_messages, subscriber_channels
from gateway.db.schema import subscribers as subscriber_table
from gateway.personal import PhoneNumber, PhoneVault
from gateway.store.announcements import find_by_code
from gateway.store.subscribers import NewSubscriber, find_by_phone, insert_subscribers, opt_out

# Published and not withdrawn; ``approved``/``scheduled`` only once their send time has come.
PUBLISHED = ("approved", "scheduled", "sending", "done")
# Announcements scanned for "latest" and for topics: the area rule runs in Python over these.
SCAN = 200
MAX_TOPICS = 6


class SqlCitizenDirectory:
    """The ``CitizenDirectory`` of one agency. Build it with ``for_agency``."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        vault: PhoneVault,
        clock: Clock,
        agency_id: int,
        agency_name: str,
        default_language: str = "id",
        timezone: str = "Asia/Jakarta",
    ) -> None:
        self._engine = engine
        self._vault = vault
        self._clock = clock
        self.agency_id = agency_id
        self._agency_name = agency_name
        self.default_language = default_language
        try:
            self._zone: ZoneInfo | None = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self._zone = None

    def __repr__(self) -> str:
        return f"<SqlCitizenDirectory agency={self.agency_id}>"

    @classmethod
    async def for_agency(
        cls, engine: AsyncEngine, *, vault: PhoneVault, clock: Clock, slug: str | None
    ) -> SqlCitizenDirectory | None:
        """The directory of the agency ``slug``; with None (or an unknown slug), the first
        agency (lowest id). None when there is no agency at all."""
        columns = (
            agencies.c.id,
            agencies.c.name,
            agencies.c.default_language,
            agencies.c.timezone,
        )
        async with reading(engine) as conn:
            row = None
            if slug is not None:
                query = sa.select(*columns).where(agencies.c.slug == slug)
                row = (await conn.execute(query)).first()
            if row is None:
                query = sa.select(*columns).order_by(agencies.c.id).limit(1)
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        return cls(
            engine,
            vault=vault,
            clock=clock,
            agency_id=int(row.id),
            agency_name=str(row.name),
            default_language=str(row.default_language),
            timezone=str(row.timezone),
        )

    @property
    def agency_name(self) -> str:
        return self._agency_name

    def _local(self, when: datetime | None) -> datetime | None:
        if when is None or self._zone is None:
            return when
        return when.astimezone(self._zone)

    async def _published(self, conn: AsyncConnection) -> list[Any]:
        now = self._clock.now()
        stamp = sa.func.coalesce(announcements.c.approved_at, announcements.c.created_at)
        rows = await conn.execute(
            sa.select(
                announcements.c.language,
                announcements.c.title,
                announcements.c.body,
                announcements.c.translations,
                announcements.c.areas,
                announcements.c.topics,
                announcements.c.verification_code,
                stamp.label("issued_at"),
            )
            .where(
                announcements.c.agency_id == self.agency_id,
                announcements.c.status.in_(PUBLISHED),
                sa.or_(announcements.c.send_at.is_(None), announcements.c.send_at <= now),
                sa.or_(announcements.c.expires_at.is_(None), announcements.c.expires_at > now),
            )
            .order_by(stamp.desc(), announcements.c.id.desc())
            .limit(SCAN)
        )
        return list(rows)

    async def latest(self, *, area_code: str | None, language: str, limit: int) -> list[Bulletin]:
        async with reading(self._engine) as conn:
            rows = await self._published(conn)
        found: list[Bulletin] = []
        for row in rows:
            if len(found) >= limit:
                break
            if not reaches(list(row.areas or []), area_code):
                continue
            title, body = row.title, row.body
            translation = (row.translations or {}).get(language)
            if language != row.language and translation:
                title, body = translation["title"], translation.get("body", "")
            found.append(Bulletin(title, body, row.verification_code, self._local(row.issued_at)))
        return found

    async def verify(self, code: str) -> Verification:
        """Same rule as ``/verify``: issued means past draft and approval, by any agency."""
        clean = normalise_code(code)
        if clean is None:
            return Verification(code=code[:12], genuine=False)
        async with reading(self._engine) as conn:
            row = await find_by_code(conn, clean)
        if row is None or row["status"] in ("draft", "pending_approval"):
            return Verification(code=clean, genuine=False)
        return Verification(
            code=clean,
            genuine=True,
            agency=row.agency_name,
            title=row["title"],
            issued_at=self._local(row["approved_at"] or row["created_at"]),
        )

    async def topics(self) -> list[str]:
        """The topics of recent announcements, most used first (until agencies configure a
        list of their own)."""
        async with reading(self._engine) as conn:
            rows = await self._published(conn)
        counts = Counter(t for row in rows for t in (row.topics or []) if isinstance(t, str))
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        return ranked[:MAX_TOPICS]

    async def _subscriber_id(self, conn: AsyncConnection, phone: PhoneNumber) -> int | None:
        return await find_by_phone(
            conn, agency_id=self.agency_id, phone_index=self._vault.blind_index(phone)
        )

    async def subscription(self, phone: PhoneNumber) -> Subscription | None:
        async with reading(self._engine) as conn:
            return await self._subscription(conn, phone)

    async def _subscription(self, conn: AsyncConnection, phone: PhoneNumber) -> Subscription | None:
        person = (
            await conn.execute(
                sa.select(
                    subscriber_table.c.id,
                    subscriber_table.c.language,
                    subscriber_table.c.area_code,
                    subscriber_table.c.topics,
                ).where(
                    subscriber_table.c.agency_id == self.agency_id,
                    subscriber_table.c.phone_index == self._vault.blind_index(phone),
                    subscriber_table.c.erased_at.is_(None),
                )
            )
        ).first()
        if person is None:
            return None
        choices = await conn.execute(
            sa.select(subscriber_channels.c.channel, subscriber_channels.c.opted_out_at)
            .where(subscriber_channels.c.subscriber_id == person.id)
            .order_by(subscriber_channels.c.preference, subscriber_channels.c.channel)
        )
        active: list[str] = []
        stopped: list[str] = []
        for channel, opted_out_at in choices:
            (stopped if opted_out_at is not None else active).append(str(channel))
        return Subscription(
            language=str(person.language),
            area_code=person.area_code,
            topics=tuple(person.topics or ()),
            channels=tuple(active),
            opted_out=tuple(stopped),
        )

    async def subscribe(self, phone: PhoneNumber, request: SubscriptionRequest) -> Subscription:
        now = self._clock.now()
        async with self._engine.begin() as conn:
            subscriber_id = await self._subscriber_id(conn, phone)
            if subscriber_id is None:
                person = NewSubscriber(
                    phone=phone,
                    language=request.language,
                    area_code=request.area_code,
                    topics=list(request.topics),
                    channels=list(request.channels),
                    telegram_chat_id=None,
                    consent_channel=request.consent_channel,
                    consent_text=request.consent_text,
                    consent_at=now,
                )
                inserted = await insert_subscribers(
                    conn, agency_id=self.agency_id, people=[person], vault=self._vault, now=now
                )
                # Lost a race with a concurrent subscribe of the same number: update instead.
                subscriber_id = None if inserted else await self._subscriber_id(conn, phone)
            if subscriber_id is not None:
                await self._replace(conn, subscriber_id, request, now)
            found = await self._subscription(conn, phone)
        assert found is not None
        return found

    async def _replace(
        self, conn: AsyncConnection, subscriber_id: int, request: SubscriptionRequest, now: datetime
    ) -> None:
        await conn.execute(
            sa.update(subscriber_table)
            .where(subscriber_table.c.id == subscriber_id)
            .values(
                language=request.language,
                area_code=request.area_code,
                topics=list(request.topics),
                consent_at=now,
                consent_channel=request.consent_channel,
                consent_text=request.consent_text,
            )
        )
        existing = {
            str(channel): opted_out_at
            for channel, opted_out_at in await conn.execute(
                sa.select(subscriber_channels.c.channel, subscriber_channels.c.opted_out_at).where(
                    subscriber_channels.c.subscriber_id == subscriber_id
                )
            )
        }
        for position, channel in enumerate(request.channels):
            if channel not in existing:
                await conn.execute(
                    sa.insert(subscriber_channels).values(
                        subscriber_id=subscriber_id,
                        channel=channel,
                        preference=position,
                        opted_in_at=now,
                    )
                )
                continue
            values: dict[str, Any] = {"preference": position}
            if existing[channel] is not None:
                values.update(opted_out_at=None, opted_in_at=now)
            await conn.execute(
                sa.update(subscriber_channels)
                .where(
                    subscriber_channels.c.subscriber_id == subscriber_id,
                    subscriber_channels.c.channel == channel,
                )
                .values(**values)
            )
        dropped = [c for c in CITIZEN_CHANNELS if c not in request.channels and c in existing]
        if dropped:
            await opt_out(conn, subscriber_ids=[subscriber_id], channels=dropped, now=now)

    async def unsubscribe(self, phone: PhoneNumber, channels: Sequence[str] | None) -> bool:
        async with self._engine.begin() as conn:
            subscriber_id = await self._subscriber_id(conn, phone)
            if subscriber_id is None:
                return False
            await opt_out(
                conn,
                subscriber_ids=[subscriber_id],
                channels=None if channels is None else list(channels),
                now=self._clock.now(),
            )
        return True

    async def set_language(self, phone: PhoneNumber, language: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(subscriber_table)
                .where(
                    subscriber_table.c.agency_id == self.agency_id,
                    subscriber_table.c.phone_index == self._vault.blind_index(phone),
                    subscriber_table.c.erased_at.is_(None),
                )
                .values(language=language)
            )
        return bool(result.rowcount)

    async def record_inbound(
        self,
        *,
        phone: PhoneNumber | None,
        text: str,
        channel: str,
        provider_message_id: str | None,
        handled: str,
    ) -> bool:
        async with self._engine.begin() as conn:
            index = self._vault.blind_index(phone) if phone is not None else None
            subscriber_id = (
                await find_by_phone(conn, agency_id=self.agency_id, phone_index=index)
                if index is not None
                else None
            )
            statement = insert_ignoring_conflicts(
                conn, inbound_messages, ["channel", "provider_message_id"]
            )
            new_id = await conn.scalar(
                statement.values(
                    agency_id=self.agency_id,
                    subscriber_id=subscriber_id,
                    channel=channel,
                    provider_message_id=provider_message_id,
                    phone_index=index,
                    phone_masked=str(phone) if phone is not None else None,
                    text=text,
                    received_at=self._clock.now(),
                    handled=handled,
                ).returning(inbound_messages.c.id)
            )
        return new_id is not None
