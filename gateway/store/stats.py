"""Delivery statistics of one agency over a window: reach overall and per area.

Each figure is one grouped statement over the window's deliveries (by when they were queued),
the same on SQLite and PostgreSQL. Reach counts distinct citizens whose message was delivered
(or sent, on a channel that never confirms delivery: Telegram), so a citizen reached on SMS
and Telegram counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import deliveries
from gateway.domain import RECEIPTLESS_CHANNELS, DeliveryState

MAX_AREAS = 500


@dataclass(frozen=True)
class AreaCounts:
    area: str | None
    deliveries: int
    delivered: int
    reach: int


def _window(agency_id: int, since: datetime, until: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        deliveries.c.agency_id == agency_id,
        deliveries.c.created_at >= since,
        deliveries.c.created_at < until,
    )


_DELIVERED = deliveries.c.state == DeliveryState.DELIVERED.value
REACHED = sa.or_(
    _DELIVERED,
    sa.and_(
        deliveries.c.state == DeliveryState.SENT.value,
        deliveries.c.channel.in_(sorted(RECEIPTLESS_CHANNELS)),
    ),
)


async def per_area(
    conn: AsyncConnection, *, agency_id: int, since: datetime, until: datetime
) -> list[AreaCounts]:
    """Deliveries, delivered ones and reach per area code, most deliveries first (at most
    ``MAX_AREAS`` areas)."""
    total = sa.func.count().label("n")
    rows = await conn.execute(
        sa.select(
            deliveries.c.area_code,
            total,
            sa.func.count(sa.case((_DELIVERED, 1))).label("delivered"),
            sa.func.count(sa.distinct(sa.case((REACHED, deliveries.c.subscriber_id)))).label(
                "reach"
            ),
        )
        .where(_window(agency_id, since, until))
        .group_by(deliveries.c.area_code)
        .order_by(total.desc(), deliveries.c.area_code)
        .limit(MAX_AREAS)
    )
    return [
        AreaCounts(area=area, deliveries=int(n), delivered=int(done), reach=int(reach))
        for area, n, done, reach in rows
    ]


async def reach(conn: AsyncConnection, *, agency_id: int, since: datetime, until: datetime) -> int:
    """Distinct citizens reached in the window (see the module docstring), over every channel."""
    return int(
        await conn.scalar(
            sa.select(sa.func.count(sa.distinct(deliveries.c.subscriber_id))).where(
                _window(agency_id, since, until), REACHED
            )
        )
        or 0
    )
