"""Recurring announcements in storage: attach, approve, issue occurrences, cancel.

Life of a series: the author creates an announcement with a recurrence (``attach``: series
``pending``). Approving the announcement approves the series: in the approval's transaction
``activate_on_approval`` turns the announcement into the series' *template* (status
``scheduled``, so the dispatcher never sends it) and sets the first occurrence. From then on
``issue_due`` issues each occurrence ``horizon`` ahead of time as a dated copy: status
``approved`` under the template's approval (same approver and approval time), its own
verification code, ``send_at`` = the occurrence, and expiry ``valid_for`` later. Starting the
copy at its time is the send-at path (``Dispatcher.start_due``), like any other announcement.

Exactly once with many processes: a pass over a series advances ``next_run_at`` with a
conditional UPDATE (``WHERE next_run_at = :seen``) and issues its copies in the same
transaction; the loser updates nothing and issues nothing. ``recurrence_instances`` has a
unique (series, occurrence) pair as the second guard.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.codes import new_code
from gateway.db.schema import agencies, announcements
from gateway.domain import AnnouncementStatus
from gateway.store.audit import record
from scheduler.cron import crontab_trigger, first_occurrence
from scheduler.planning import plan_occurrences
from scheduler.tables import recurrence_instances, recurrences
from scheduler.validation import FieldError, RecurrenceIn, valid_for, zone

log = logging.getLogger("warta.scheduler")

PENDING, ACTIVE, FINISHED, CANCELLED = "pending", "active", "finished", "cancelled"
COPIED = (
    "agency_id",
    "language",
    "title",
    "body",
    "facts",
    "translations",
    "areas",
    "topics",
    "channels",
    "urgency",
    "keep_gsm7",
    "created_by",
    "approved_by",
    "estimated_cost",
    "submitted_at",
    "approved_at",
)
_CODE_ATTEMPTS = 8


async def attach(
    conn: AsyncConnection,
    *,
    template_id: int,
    agency_id: int,
    recurrence: RecurrenceIn,
    agency_timezone: str,
    now: datetime,
) -> int:
    """Record how a (draft) announcement repeats; returns the series id. Call it in the
    transaction that inserts the announcement; validate first (``RecurrenceIn`` and
    ``validation.validate_recurrence``).

    Raises:
        FieldError: ``recurrence.timezone`` when none is given and ``agency_timezone`` is not
            a zone this machine knows.
    """
    ttl = valid_for(recurrence)
    timezone = recurrence.timezone or zone(agency_timezone, field="recurrence.timezone").key
    series_id = await conn.scalar(
        sa.insert(recurrences)
        .values(
            template_id=template_id,
            agency_id=agency_id,
            cron=recurrence.cron,
            timezone=timezone,
            until=recurrence.until,
            max_count=recurrence.count,
            valid_for_s=None if ttl is None else int(ttl.total_seconds()),
            status=PENDING,
            created_at=now,
            updated_at=now,
        )
        .returning(recurrences.c.id)
    )
    assert series_id is not None
    return int(series_id)


async def agency_timezone(conn: AsyncConnection, agency_id: int) -> str:
    """The agency's zone: a series without its own time zone is read in it."""
    name = await conn.scalar(sa.select(agencies.c.timezone).where(agencies.c.id == agency_id))
    if name is None:
        raise LookupError(f"agency {agency_id} not found")
    return str(name)


async def activate_on_approval(
    conn: AsyncConnection, *, announcement_id: int, now: datetime
) -> bool:
    """Call in the approval's transaction, after the transition to ``approved``.

    For a recurring announcement: the series becomes active from the first occurrence at or
    after its ``send_at`` (or now), and the announcement becomes the template (``scheduled``;
    ``done`` at once when no occurrence is left before ``until``). Returns False, changing
    nothing, for an announcement without a series.
    """
    series = (
        await conn.execute(
            sa.select(recurrences).where(
                recurrences.c.template_id == announcement_id, recurrences.c.status == PENDING
            )
        )
    ).first()
    if series is None:
        return False
    send_at = await conn.scalar(
        sa.select(announcements.c.send_at).where(announcements.c.id == announcement_id)
    )
    trigger = crontab_trigger(series.cron, zone(series.timezone))
    first = first_occurrence(trigger, max(now, send_at or now))
    over = first is None or (series.until is not None and first > series.until)
    await conn.execute(
        sa.update(recurrences)
        .where(recurrences.c.id == series.id)
        .values(status=FINISHED if over else ACTIVE, next_run_at=first, updated_at=now)
    )
    target = AnnouncementStatus.DONE if over else AnnouncementStatus.SCHEDULED
    await conn.execute(
        sa.update(announcements)
        .where(
            announcements.c.id == announcement_id,
            announcements.c.status == AnnouncementStatus.APPROVED.value,
        )
        .values(status=target.value, updated_at=now, finished_at=now if over else None)
    )
    return True


async def cancel_series(conn: AsyncConnection, *, template_id: int, now: datetime) -> int:
    """End the series of a cancelled template and cancel its occurrences not yet started;
    returns how many occurrences were cancelled. Call in the cancellation's transaction."""
    await conn.execute(
        sa.update(recurrences)
        .where(
            recurrences.c.template_id == template_id, recurrences.c.status.in_([PENDING, ACTIVE])
        )
        .values(status=CANCELLED, updated_at=now)
    )
    issued = (
        sa.select(recurrence_instances.c.announcement_id)
        .join(recurrences, recurrences.c.id == recurrence_instances.c.recurrence_id)
        .where(recurrences.c.template_id == template_id)
    )
    result = await conn.execute(
        sa.update(announcements)
        .where(
            announcements.c.id.in_(issued),
            announcements.c.status == AnnouncementStatus.APPROVED.value,
        )
        .values(status=AnnouncementStatus.CANCELLED.value, cancelled_at=now, updated_at=now)
    )
    return int(result.rowcount or 0)


async def retire_cancelled(conn: AsyncConnection, *, now: datetime) -> int:
    """Series whose template was cancelled without ``cancel_series`` end here (set-based)."""
    templates = sa.select(announcements.c.id).where(
        announcements.c.status == AnnouncementStatus.CANCELLED.value
    )
    stale = (
        (
            await conn.execute(
                sa.select(recurrences.c.template_id).where(
                    recurrences.c.status.in_([PENDING, ACTIVE]),
                    recurrences.c.template_id.in_(templates),
                )
            )
        )
        .scalars()
        .all()
    )
    for template_id in stale[:1000]:
        await cancel_series(conn, template_id=template_id, now=now)
    return len(stale)


async def issue_due(
    engine: AsyncEngine,
    *,
    now: datetime,
    horizon: timedelta,
    grace: timedelta,
    max_series: int = 100,
) -> list[int]:
    """Issue every occurrence due within ``horizon``; returns the new announcements' ids.

    Each series is handled in its own short transaction (``issue_series``)."""
    async with engine.begin() as conn:
        await retire_cancelled(conn, now=now)
    async with engine.connect() as conn:
        due = (
            (
                await conn.execute(
                    sa.select(recurrences.c.id)
                    .where(
                        recurrences.c.status == ACTIVE,
                        recurrences.c.next_run_at <= now + horizon,
                    )
                    .order_by(recurrences.c.next_run_at)
                    .limit(max_series)
                )
            )
            .scalars()
            .all()
        )
    issued: list[int] = []
    for series_id in due:
        try:
            issued += await issue_series(
                engine, series_id=series_id, now=now, horizon=horizon, grace=grace
            )
        except FieldError:
            log.exception("recurrence %s cannot be read; skipped", series_id)
    return issued


async def issue_series(
    engine: AsyncEngine, *, series_id: int, now: datetime, horizon: timedelta, grace: timedelta
) -> list[int]:
    """One pass over one series (see ``planning.plan_occurrences``); the new ids."""
    async with engine.begin() as conn:
        series = (
            await conn.execute(
                sa.select(recurrences, announcements.c.status.label("template_status"))
                .join(announcements, announcements.c.id == recurrences.c.template_id)
                .where(recurrences.c.id == series_id)
            )
        ).first()
        if (
            series is None
            or series.status != ACTIVE
            or series.next_run_at is None
            or series.template_status != AnnouncementStatus.SCHEDULED.value
        ):
            return []
        plan = plan_occurrences(
            crontab_trigger(series.cron, zone(series.timezone)),
            next_run_at=series.next_run_at,
            now=now,
            horizon=horizon,
            grace=grace,
            until=series.until,
            remaining=None if series.max_count is None else series.max_count - series.issued,
        )
        if not (plan.issue or plan.skipped or plan.finished):
            return []
        won = await conn.execute(
            sa.update(recurrences)
            .where(
                recurrences.c.id == series_id,
                recurrences.c.status == ACTIVE,
                recurrences.c.next_run_at == series.next_run_at,
            )
            .values(
                next_run_at=plan.next_run_at,
                issued=recurrences.c.issued + len(plan.issue),
                skipped=recurrences.c.skipped + plan.skipped,
                status=FINISHED if plan.finished else ACTIVE,
                updated_at=now,
            )
        )
        if won.rowcount != 1:
            return []
        template = dict(
            (
                await conn.execute(
                    sa.select(announcements).where(announcements.c.id == series.template_id)
                )
            )
            .mappings()
            .one()
        )
        ttl = None if series.valid_for_s is None else timedelta(seconds=series.valid_for_s)
        ids = [
            await _issue_occurrence(
                conn, template=template, series_id=series_id, occurrence=o, ttl=ttl, now=now
            )
            for o in plan.issue
        ]
        if plan.skipped:
            log.warning("recurrence %s: %d occurrences missed, skipped", series_id, plan.skipped)
        if plan.finished:
            await conn.execute(
                sa.update(announcements)
                .where(
                    announcements.c.id == series.template_id,
                    announcements.c.status == AnnouncementStatus.SCHEDULED.value,
                )
                .values(status=AnnouncementStatus.DONE.value, finished_at=now, updated_at=now)
            )
        return ids


async def _issue_occurrence(
    conn: AsyncConnection,
    *,
    template: dict[str, Any],
    series_id: int,
    occurrence: datetime,
    ttl: timedelta | None,
    now: datetime,
) -> int:
    values = {name: template[name] for name in COPIED}
    values.update(
        send_at=occurrence,
        expires_at=None if ttl is None else occurrence + ttl,
        status=AnnouncementStatus.APPROVED.value,
        created_at=now,
        updated_at=now,
    )
    for _ in range(_CODE_ATTEMPTS):
        savepoint = await conn.begin_nested()
        try:
            new_id = await conn.scalar(
                sa.insert(announcements)
                .values(**values, verification_code=new_code())
                .returning(announcements.c.id)
            )
        except IntegrityError:
            await savepoint.rollback()
            continue
        await savepoint.commit()
        break
    else:
        raise RuntimeError("could not allocate a verification code for an occurrence")
    assert new_id is not None
    await conn.execute(
        sa.insert(recurrence_instances).values(
            announcement_id=new_id, recurrence_id=series_id, occurrence_at=occurrence
        )
    )
    await record(
        conn,
        principal=None,
        agency_id=template["agency_id"],
        actor="scheduler",
        action="announcement.recur",
        subject=("announcement", new_id),
        after={"template_id": template["id"], "occurrence_at": occurrence.isoformat()},
        now=now,
    )
    return int(new_id)
