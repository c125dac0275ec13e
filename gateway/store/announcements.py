"""Announcements in storage: create, read, list and the status transitions.

Every transition is one conditional UPDATE (``… WHERE status = :from``), so two people (or two
processes) acting at once cannot both win, and the loser gets a clear 409.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.api.errors import ApiError, conflict, not_found
from gateway.codes import new_code
from gateway.db.schema import agencies, announcements, deliveries
from gateway.domain import TRANSITIONS, AnnouncementStatus, DeliveryState

_CODE_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class AnnouncementRow:
    """An announcement as stored, plus its agency's slug and name."""

    values: dict[str, Any]
    agency_slug: str
    agency_name: str

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _select() -> sa.Select[Any]:
    return sa.select(
        announcements, agencies.c.slug.label("agency_slug"), agencies.c.name.label("agency_name")
    ).join(agencies, agencies.c.id == announcements.c.agency_id)


def _row(mapping: Any) -> AnnouncementRow:
    values = dict(mapping)
    return AnnouncementRow(
        values=values, agency_slug=values.pop("agency_slug"), agency_name=values.pop("agency_name")
    )


async def insert_announcement(
    conn: AsyncConnection, *, values: dict[str, Any], now: datetime
) -> int:
    """Insert with a fresh verification code; a code collision draws another one."""
    for _ in range(_CODE_ATTEMPTS):
        code = new_code()
        nested = await conn.begin_nested()
        try:
            new_id = await conn.scalar(
                sa.insert(announcements)
                .values(
                    **values,
                    verification_code=code,
                    status=AnnouncementStatus.DRAFT.value,
                    created_at=now,
                    updated_at=now,
                )
                .returning(announcements.c.id)
            )
        except IntegrityError:
            await nested.rollback()
            continue
        await nested.commit()
        assert new_id is not None
        return int(new_id)
    raise ApiError(503, "unavailable", "could not allocate a verification code; try again")


async def get_announcement(
    conn: AsyncConnection, announcement_id: int, *, agency_id: int | None
) -> AnnouncementRow:
    query = _select().where(announcements.c.id == announcement_id)
    if agency_id is not None:
        query = query.where(announcements.c.agency_id == agency_id)
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise not_found(f"announcement {announcement_id}", field="id")
    return _row(row)


async def find_by_code(conn: AsyncConnection, code: str) -> AnnouncementRow | None:
    row = (
        (await conn.execute(_select().where(announcements.c.verification_code == code)))
        .mappings()
        .first()
    )
    return None if row is None else _row(row)


async def list_announcements(
    conn: AsyncConnection,
    *,
    agency_id: int,
    limit: int,
    before_id: int | None,
    status: AnnouncementStatus | None,
) -> list[AnnouncementRow]:
    query = (
        _select()
        .where(announcements.c.agency_id == agency_id)
        .order_by(announcements.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(announcements.c.id < before_id)
    if status is not None:
        query = query.where(announcements.c.status == status.value)
    return [_row(r) for r in (await conn.execute(query)).mappings()]


async def replace_draft(
    conn: AsyncConnection, announcement_id: int, *, values: dict[str, Any], now: datetime
) -> None:
    """Overwrite a draft's content in one conditional UPDATE; a 409 if it is not a draft
    (any more: someone submitted or cancelled it meanwhile)."""
    result = await conn.execute(
        sa.update(announcements)
        .where(
            announcements.c.id == announcement_id,
            announcements.c.status == AnnouncementStatus.DRAFT.value,
        )
        .values(**values, updated_at=now)
    )
    if result.rowcount != 1:
        raise conflict(
            f"announcement {announcement_id} is not a draft: only a draft can be edited",
            field="status",
        )


_STAMP = {
    "submit": "submitted_at",
    "approve": "approved_at",
    "cancel": "cancelled_at",
}


async def transition(
    conn: AsyncConnection,
    announcement_id: int,
    *,
    agency_id: int,
    action: str,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> AnnouncementStatus:
    """Apply ``action`` if the announcement's current status allows it.

    Returns the new status. Raises a 404 for an unknown id and a 409 naming the current status
    when the action is not allowed from it.
    """
    current = await conn.scalar(
        sa.select(announcements.c.status).where(
            announcements.c.id == announcement_id, announcements.c.agency_id == agency_id
        )
    )
    if current is None:
        raise not_found(f"announcement {announcement_id}", field="id")
    source = AnnouncementStatus(current)
    target = TRANSITIONS.get((source, action))
    if target is None:
        raise conflict(_refusal(action, source), field="status")
    values: dict[str, Any] = {"status": target.value, "updated_at": now, **(extra or {})}
    if action in _STAMP:
        values[_STAMP[action]] = now
    result = await conn.execute(
        sa.update(announcements)
        .where(announcements.c.id == announcement_id, announcements.c.status == source.value)
        .values(**values)
    )
    if result.rowcount != 1:
        raise conflict(
            f"announcement {announcement_id} changed at the same time; retry", field="status"
        )
    return target


def _refusal(action: str, status: AnnouncementStatus) -> str:
    hints = {
        AnnouncementStatus.DRAFT: "submit it for approval first",
        AnnouncementStatus.PENDING_APPROVAL: "it is waiting for approval",
        AnnouncementStatus.APPROVED: "it is already approved",
        AnnouncementStatus.SCHEDULED: "it is already scheduled",
        AnnouncementStatus.SENDING: "it is being sent",
        AnnouncementStatus.DONE: "it has been sent",
        AnnouncementStatus.CANCELLED: "it was cancelled",
        AnnouncementStatus.EXPIRED: "it has expired",
    }
    return f"cannot {action} an announcement that is {status.value}: {hints[status]}"


async def delivery_counts(
    conn: AsyncConnection, announcement_ids: Sequence[int]
) -> dict[int, dict[str, dict[DeliveryState, int]]]:
    """Counts per announcement × channel × state, from one grouped query."""
    if not announcement_ids:
        return {}
    rows = await conn.execute(
        sa.select(
            deliveries.c.announcement_id,
            deliveries.c.channel,
            deliveries.c.state,
            sa.func.count().label("n"),
        )
        .where(deliveries.c.announcement_id.in_(announcement_ids))
        .group_by(deliveries.c.announcement_id, deliveries.c.channel, deliveries.c.state)
    )
    counts: dict[int, dict[str, dict[DeliveryState, int]]] = {}
    for announcement_id, channel, state, n in rows:
        per_channel = counts.setdefault(announcement_id, {}).setdefault(channel, {})
        per_channel[DeliveryState(state)] = int(n)
    return counts


async def actual_cost(conn: AsyncConnection, announcement_id: int) -> Decimal | None:
    value = await conn.scalar(
        sa.select(sa.func.sum(deliveries.c.cost)).where(
            deliveries.c.announcement_id == announcement_id,
            deliveries.c.sent_at.is_not(None),
        )
    )
    return None if value is None else Decimal(value)


async def budget_state(
    conn: AsyncConnection, *, agency_id: int, now: datetime
) -> tuple[Decimal | None, Decimal]:
    """The agency's monthly budget (None: no limit) and what this month's deliveries cost or
    are estimated to cost, from one aggregate. Months are calendar months in UTC."""
    limit = await conn.scalar(sa.select(agencies.c.budget_limit).where(agencies.c.id == agency_id))
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spent = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(deliveries.c.cost), 0)).where(
            deliveries.c.agency_id == agency_id,
            deliveries.c.created_at >= month_start,
            deliveries.c.state != DeliveryState.CANCELLED.value,
        )
    )
    return (None if limit is None else Decimal(limit)), Decimal(spent or 0)
