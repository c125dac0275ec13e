"""An announcement's place in a recurring series, as the API shows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.tables import recurrence_instances, recurrences


class SeriesOut(BaseModel):
    """An announcement's place in a series, for the API: the template or one occurrence."""

    role: Literal["template", "occurrence"]
    series_id: int
    template_id: int
    cron: str
    timezone: str
    until: datetime | None
    count: int | None
    valid_for_minutes: int | None = None
    status: Literal["pending", "active", "finished", "cancelled"]
    next_run_at: datetime | None
    issued: int
    skipped: int
    occurrence_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Link:
    series_id: int
    occurrence_at: datetime | None


async def series_of(conn: AsyncConnection, announcement_id: int) -> SeriesOut | None:
    """The series an announcement is the template or an occurrence of; None for neither."""
    link: _Link | None = None
    as_template = await conn.scalar(
        sa.select(recurrences.c.id).where(recurrences.c.template_id == announcement_id)
    )
    if as_template is not None:
        link = _Link(int(as_template), None)
    else:
        row = (
            await conn.execute(
                sa.select(
                    recurrence_instances.c.recurrence_id, recurrence_instances.c.occurrence_at
                ).where(recurrence_instances.c.announcement_id == announcement_id)
            )
        ).first()
        if row is not None:
            link = _Link(int(row.recurrence_id), row.occurrence_at)
    if link is None:
        return None
    series = (
        await conn.execute(sa.select(recurrences).where(recurrences.c.id == link.series_id))
    ).one()
    return SeriesOut(
        role="template" if link.occurrence_at is None else "occurrence",
        series_id=series.id,
        template_id=series.template_id,
        cron=series.cron,
        timezone=series.timezone,
        until=series.until,
        count=series.max_count,
        valid_for_minutes=None if series.valid_for_s is None else series.valid_for_s // 60,
        status=series.status,
        next_run_at=series.next_run_at,
        issued=series.issued,
        skipped=series.skipped,
        occurrence_at=link.occurrence_at,
    )
