"""Channels held because their provider refuses the account, as the database knows them.

A dispatcher that finds an account refused (an empty balance, a refused key) holds the channel
in its own process (``gateway.outbox.dispatcher``). It also stores the hold here, so that the
API and the dashboard, in whatever process they run, can say why a broadcast waits. The holder
renews ``until`` each time the provider refuses it again and deletes the row once a request
goes through. A row whose ``until`` passed more than one hold ago has no live holder (it
stopped, or the account was put right meanwhile) and is not shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import channel_holds


@dataclass(frozen=True, slots=True)
class Hold:
    channel: str
    reason: str
    since: datetime
    until: datetime


def store(conn: Connection, channel: str, reason: str, *, now: datetime, until: datetime) -> None:
    """The channel is held for ``reason`` until ``until`` (since when it first was)."""
    since = conn.scalar(sa.select(channel_holds.c.since).where(channel_holds.c.channel == channel))
    conn.execute(sa.delete(channel_holds).where(channel_holds.c.channel == channel))
    conn.execute(
        sa.insert(channel_holds).values(
            channel=channel, reason=reason[:200], since=since or now, until=until
        )
    )


def clear(conn: Connection, channel: str) -> None:
    """The provider accepts the account again."""
    conn.execute(sa.delete(channel_holds).where(channel_holds.c.channel == channel))


async def current(
    conn: AsyncConnection, channels: Sequence[str], *, now: datetime, hold: timedelta
) -> list[Hold]:
    """The holds of ``channels`` that a live holder keeps (see the module doc)."""
    rows = await conn.execute(
        sa.select(channel_holds)
        .where(channel_holds.c.channel.in_(list(channels)), channel_holds.c.until > now - hold)
        .order_by(channel_holds.c.channel)
    )
    return [Hold(r.channel, r.reason, r.since, r.until) for r in rows]
