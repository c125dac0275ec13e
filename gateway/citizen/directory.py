"""``SqlCitizenDirectory``: the citizen services' view of one agency, on the real database.

Reads are one statement each (``_read``: a read-only transaction on SQLite, autocommit on
PostgreSQL); each change is one short transaction. Phone numbers are only ever encrypted,
blind-indexed or masked (``gateway.personal``).

The published announcements are read once per ``published_ttl`` (and again as soon as one of
them expires), not once per request: a USSD menu asks for them on most screens. A new,
changed or withdrawn announcement therefore shows within that delay. Subscribers are never
cached: an opt-out or a language change counts from the very next request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
from gateway.db.engine import is_sqlite, reading
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
PUBLISHED_TTL = timedelta(seconds=5)
AGENCY_TTL = timedelta(minutes=1)


@asynccontextmanager
async def _read(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for a read of ONE statement, which is its own snapshot.

    PostgreSQL runs it in autocommit: ``BEGIN`` and ``COMMIT`` around a lone ``SELECT`` are two
    more round trips for nothing. SQLite takes ``reading``, which never waits on the write lock.
    """
    if is_sqlite(engine):
        async with reading(engine) as conn:
            yield conn
        return
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


def _subscription_query() -> sa.Select[Any]:
    """The person with ``phone_index`` and their channels: a row each, or one row of NULLs."""
    person = subscriber_table.c
    choice = subscriber_channels.c
    return (
        sa.select(
            person.language,
            person.area_code,
            person.topics,
            choice.channel,
            choice.opted_out_at,
        )
        .select_from(
            subscriber_table.outerjoin(subscriber_channels, choice.subscriber_id == person.id)
        )
        .where(
            person.agency_id == sa.bindparam("agency_id"),
            person.phone_index.in_(sa.bindparam("phone_indexes", expanding=True)),
            person.erased_at.is_(None),
        )
        .order_by(choice.preference, choice.channel)
    )


# Built once: it runs on every USSD request, and building a statement costs more than the
# cached compilation it then finds.
_SUBSCRIPTION = _subscription_query()


@dataclass(slots=True)
class _Published:
    """The agency's published announcements as read at ``taken_at``, and what is derived from
    them (bulletins by area and language, topics), valid until ``fresh_until``."""

    rows: list[Any]
    taken_at: datetime
    fresh_until: datetime
    bulletins: dict[tuple[str | None, str, int], list[Bulletin]] = field(default_factory=dict)
    topics: list[str] | None = None

    def fresh(self, now: datetime) -> bool:
        # ``taken_at <= now``: a clock set back must not keep an old list alive.
        return self.taken_at <= now < self.fresh_until


class AgencyDirectories:
    """Each agency's ``SqlCitizenDirectory``, kept for ``ttl``.

    A busy callback then neither looks its agency up nor re-reads the agency's announcements on
    every request; a renamed agency shows within ``ttl``. Keys are the configured slugs (and
    None), so the map stays as small as the configuration.
    """

    def __init__(self, *, ttl: timedelta = AGENCY_TTL) -> None:
        self._ttl = ttl
        self._kept: dict[str | None, tuple[datetime, SqlCitizenDirectory]] = {}

    async def get(
        self, engine: AsyncEngine, *, vault: PhoneVault, clock: Clock, slug: str | None
    ) -> SqlCitizenDirectory | None:
        """``SqlCitizenDirectory.for_agency``, from memory while fresh (never a missing one)."""
        now = clock.now()
        kept = self._kept.get(slug)
        if kept is not None and kept[0] <= now < kept[0] + self._ttl:
            return kept[1]
        found = await SqlCitizenDirectory.for_agency(engine, vault=vault, clock=clock, slug=slug)
        if found is None:
            self._kept.pop(slug, None)
        else:
            self._kept[slug] = (now, found)
        return found


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
        published_ttl: timedelta = PUBLISHED_TTL,
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
        self._published_ttl = published_ttl
        self._snapshot: _Published | None = None
        self._refreshing = asyncio.Lock()

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

    async def _published(self) -> _Published:
        """The published announcements, newest first: from memory while fresh, else read
        once for all the requests waiting on them."""
        snapshot = self._snapshot
        if snapshot is not None and snapshot.fresh(self._clock.now()):
            return snapshot
        async with self._refreshing:
            now = self._clock.now()
            snapshot = self._snapshot
            if snapshot is not None and snapshot.fresh(now):
                return snapshot
            async with _read(self._engine) as conn:
                rows = list(await conn.execute(self._published_query(now)))
            expiries = [row.expires_at for row in rows if row.expires_at is not None]
            fresh_until = min([now + self._published_ttl, *expiries])
            self._snapshot = _Published(rows=rows, taken_at=now, fresh_until=fresh_until)
            return self._snapshot

    def _published_query(self, now: datetime) -> sa.Select[Any]:
        stamp = sa.func.coalesce(announcements.c.approved_at, announcements.c.created_at)
        return (
            sa.select(
                announcements.c.language,
                announcements.c.title,
                announcements.c.body,
                announcements.c.translations,
                announcements.c.areas,
                announcements.c.topics,
                announcements.c.verification_code,
                announcements.c.expires_at,
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

    async def latest(self, *, area_code: str | None, language: str, limit: int) -> list[Bulletin]:
        published = await self._published()
        key = (area_code, language, limit)
        found = published.bulletins.get(key)
        if found is None:
            found = self._bulletins(published.rows, area_code, language, limit)
            published.bulletins[key] = found
        return list(found)

    def _bulletins(
        self, rows: list[Any], area_code: str | None, language: str, limit: int
    ) -> list[Bulletin]:
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
        async with _read(self._engine) as conn:
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
        published = await self._published()
        if published.topics is None:
            counts = Counter(
                t for row in published.rows for t in (row.topics or []) if isinstance(t, str)
            )
            published.topics = sorted(counts, key=lambda t: (-counts[t], t))[:MAX_TOPICS]
        return list(published.topics)

    async def _subscriber_id(self, conn: AsyncConnection, phone: PhoneNumber) -> int | None:
        return await find_by_phone(
            conn, agency_id=self.agency_id, phone_indexes=self._vault.blind_indexes(phone)
        )

    async def subscription(self, phone: PhoneNumber) -> Subscription | None:
        async with _read(self._engine) as conn:
            return await self._subscription(conn, phone)

    async def _subscription(self, conn: AsyncConnection, phone: PhoneNumber) -> Subscription | None:
        found = await conn.execute(
            _SUBSCRIPTION,
            {"agency_id": self.agency_id, "phone_indexes": list(self._vault.blind_indexes(phone))},
        )
        rows = found.all()
        if not rows:
            return None
        active: list[str] = []
        stopped: list[str] = []
        for row in rows:
            if row.channel is not None:
                (stopped if row.opted_out_at is not None else active).append(str(row.channel))
        first = rows[0]
        return Subscription(
            language=str(first.language),
            area_code=first.area_code,
            topics=tuple(first.topics or ()),
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
                    subscriber_table.c.phone_index.in_(self._vault.blind_indexes(phone)),
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
        announcement_id: int | None = None,
    ) -> bool:
        async with self._engine.begin() as conn:
            indexes = self._vault.blind_indexes(phone) if phone is not None else ()
            index = indexes[0] if indexes else None
            subscriber_id = (
                await find_by_phone(conn, agency_id=self.agency_id, phone_indexes=indexes)
                if indexes
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
                    announcement_id=announcement_id,
                ).returning(inbound_messages.c.id)
            )
        return new_id is not None
