"""Helpers for the API tests: row counts, queued deliveries, valid Indonesian numbers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from gateway.appkeys import CLOCK
from gateway.db.schema import deliveries, metadata
from gateway.domain import DeliveryState, Priority
from tests.support.world import World

COUNTED_TABLES = ("announcements", "subscribers", "subscriber_channels", "audit_events")


async def row_counts(world: World, tables: tuple[str, ...] = COUNTED_TABLES) -> dict[str, int]:
    async with world.engine.connect() as conn:
        return {
            name: int(
                await conn.scalar(sa.select(sa.func.count()).select_from(metadata.tables[name]))
                or 0
            )
            for name in tables
        }


async def queue_deliveries(
    world: World, *, announcement_id: int, subscriber_ids: list[int], agency: int = 0
) -> None:
    """Queue one SMS delivery per subscriber, as fan-out would."""
    now = world.app[CLOCK].now()
    async with world.engine.begin() as conn:
        await conn.execute(
            sa.insert(deliveries),
            [
                {
                    "announcement_id": announcement_id,
                    "agency_id": world.agency_ids[agency],
                    "subscriber_id": subscriber_id,
                    "channel": "sms",
                    "language": "id",
                    "state": DeliveryState.QUEUED.value,
                    "priority": Priority.NORMAL,
                    "next_attempt_at": now + timedelta(hours=1),
                    "created_at": now,
                }
                for subscriber_id in subscriber_ids
            ],
        )


async def delivery_states(world: World, announcement_id: int) -> list[str]:
    async with world.engine.connect() as conn:
        rows = await conn.scalars(
            sa.select(deliveries.c.state)
            .where(deliveries.c.announcement_id == announcement_id)
            .order_by(deliveries.c.id)
        )
        return list(rows)


def local_mobile(n: int) -> str:
    """A valid Indonesian mobile number in local form (Telkomsel 0812 range), unique per n."""
    return f"0812{n:08d}"


def phone_forms(local: str) -> list[str]:
    """Every way a number may leak: local, E.164, digits without +, grouped local form."""
    national = local[1:]
    return [local, f"+62{national}", f"62{national}", f"{local[:4]}-{local[4:8]}-{local[8:]}"]


def contains_any(text: str, needles: list[str]) -> list[str]:
    return [n for n in needles if n in text]


def error_of(body: Any) -> dict[str, Any]:
    """The error object, after checking the body has exactly the documented shape."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) >= {"code", "message", "field"}, error
    assert isinstance(error["message"], str) and error["message"], error
    return error
