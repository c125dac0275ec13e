"""Send times in storage: what is coming (for the planner) and changing a send time.

An approved announcement with a future ``send_at`` simply waits in the database: nothing in
memory holds it, so it survives restarts, and whichever process looks after ``send_at``
starts it (``Dispatcher.start_due``'s conditional update lets exactly one win).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.schema import announcements
from gateway.domain import AnnouncementStatus
from scheduler.planning import Pending
from scheduler.tables import recurrences
from scheduler.validation import FieldError, validate_send_window

# A send time may change until the announcement starts (a series' template: never).
CHANGEABLE = (
    AnnouncementStatus.DRAFT,
    AnnouncementStatus.PENDING_APPROVAL,
    AnnouncementStatus.APPROVED,
)


class NotChangeable(Exception):
    """The announcement is past the point where its send time can change (API: 409)."""

    def __init__(self, announcement_id: int, status: str) -> None:
        super().__init__(
            f"cannot change the send time of announcement {announcement_id}: it is {status}"
        )
        self.status = status


async def pending(conn: AsyncConnection, *, now: datetime) -> Pending:
    """Three aggregates: the earliest approved send time (``now`` if one has none), the next
    occurrence of an active series, the next expiry of an announcement still sending."""
    approved = (
        await conn.execute(
            sa.select(
                sa.func.min(announcements.c.send_at),
                sa.func.sum(sa.case((announcements.c.send_at.is_(None), 1), else_=0)),
            ).where(announcements.c.status == AnnouncementStatus.APPROVED.value)
        )
    ).one()
    earliest_send_at: datetime | None = now if approved[1] else approved[0]
    occurrence = await conn.scalar(
        sa.select(sa.func.min(recurrences.c.next_run_at)).where(recurrences.c.status == "active")
    )
    expiry = await conn.scalar(
        sa.select(sa.func.min(announcements.c.expires_at)).where(
            announcements.c.status == AnnouncementStatus.SENDING.value,
            announcements.c.expires_at > now,
        )
    )
    return Pending(
        earliest_send_at=earliest_send_at, earliest_occurrence=occurrence, earliest_expiry=expiry
    )


async def change_send_at(
    conn: AsyncConnection,
    *,
    announcement_id: int,
    agency_id: int,
    send_at: datetime | None,
    expires_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """Move an announcement's send time (None: as soon as approved) and expiry.

    One conditional UPDATE (``… WHERE status IN (draft, pending_approval, approved)``), so a
    change racing the start either lands before it or is refused. An approved announcement
    stays approved. Returns the old ``{"send_at", "expires_at", "status"}`` for the audit log.

    Raises:
        FieldError: ``send_at`` in the past, ``expires_at`` not after now and ``send_at``.
        LookupError: no such announcement in the agency.
        NotChangeable: it started, finished, was cancelled, or is a series' template.
    """
    validate_send_window(send_at=send_at, expires_at=expires_at, now=now)
    before = (
        await conn.execute(
            sa.select(
                announcements.c.status, announcements.c.send_at, announcements.c.expires_at
            ).where(announcements.c.id == announcement_id, announcements.c.agency_id == agency_id)
        )
    ).first()
    if before is None:
        raise LookupError(f"announcement {announcement_id} not found")
    is_template = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(recurrences)
        .where(recurrences.c.template_id == announcement_id)
    )
    if is_template and expires_at is not None:
        raise FieldError(
            "expires_at", "a recurring announcement has no single expiry; use recurrence fields"
        )
    result = await conn.execute(
        sa.update(announcements)
        .where(
            announcements.c.id == announcement_id,
            announcements.c.status.in_([s.value for s in CHANGEABLE]),
        )
        .values(send_at=send_at, expires_at=expires_at, updated_at=now)
    )
    if result.rowcount != 1:
        current = await conn.scalar(
            sa.select(announcements.c.status).where(announcements.c.id == announcement_id)
        )
        raise NotChangeable(announcement_id, str(current))
    return {"send_at": before.send_at, "expires_at": before.expires_at, "status": before.status}
