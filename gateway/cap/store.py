"""CAP alerts in storage: the (sender, identifier, sent) -> announcement mapping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.api.errors import ApiError, conflict
from gateway.cap.reader import CapMessage, Reference
from gateway.cap.tables import cap_alerts
from gateway.db.schema import announcements
from gateway.domain import AnnouncementStatus

# An Update rewrites an announcement only while nothing has gone out for it.
UPDATABLE = (
    AnnouncementStatus.DRAFT,
    AnnouncementStatus.PENDING_APPROVAL,
    AnnouncementStatus.APPROVED,
    AnnouncementStatus.SCHEDULED,
)


@dataclass(frozen=True, slots=True)
class KnownAlert:
    """A CAP message Warta received earlier, as found again for a later one."""

    sender: str
    identifier: str
    sent: datetime
    sent_text: str
    msg_type: str
    announcement_id: int
    details: dict[str, Any]


def _known(row: Any) -> KnownAlert:
    return KnownAlert(
        sender=row["sender"],
        identifier=row["identifier"],
        sent=row["sent"],
        sent_text=row["sent_text"],
        msg_type=row["msg_type"],
        announcement_id=int(row["announcement_id"]),
        details=dict(row["details"] or {}),
    )


def _duplicate(message: CapMessage) -> ApiError:
    return conflict(
        f"CAP alert {message.identifier!r} from {message.sender!r} sent {message.sent_text} "
        "was received before",
        field="alert/identifier",
    )


async def refuse_duplicate(conn: AsyncConnection, *, agency_id: int, message: CapMessage) -> None:
    """409 when this agency already received this very message."""
    seen = await conn.scalar(
        sa.select(cap_alerts.c.id).where(
            cap_alerts.c.agency_id == agency_id,
            cap_alerts.c.sender == message.sender,
            cap_alerts.c.identifier == message.identifier,
            cap_alerts.c.sent == message.sent,
        )
    )
    if seen is not None:
        raise _duplicate(message)


async def find_reference(
    conn: AsyncConnection, *, agency_id: int, reference: Reference
) -> KnownAlert | None:
    row = (
        (
            await conn.execute(
                sa.select(cap_alerts).where(
                    cap_alerts.c.agency_id == agency_id,
                    cap_alerts.c.sender == reference.sender,
                    cap_alerts.c.identifier == reference.identifier,
                    cap_alerts.c.sent == reference.sent,
                )
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else _known(row)


async def record_alert(
    conn: AsyncConnection,
    *,
    agency_id: int,
    message: CapMessage,
    announcement_id: int,
    details: dict[str, Any],
    token_id: int | None,
    now: datetime,
) -> None:
    """Remember the message; a twin inserted at the same moment makes this a 409."""
    nested = await conn.begin_nested()
    try:
        await conn.execute(
            sa.insert(cap_alerts).values(
                agency_id=agency_id,
                sender=message.sender,
                identifier=message.identifier,
                sent=message.sent,
                sent_text=message.sent_text,
                msg_type=message.msg_type,
                announcement_id=announcement_id,
                details=details,
                created_by=token_id,
                received_at=now,
            )
        )
    except IntegrityError:
        await nested.rollback()
        raise _duplicate(message) from None
    await nested.commit()


async def alerts_of(conn: AsyncConnection, announcement_id: int) -> list[KnownAlert]:
    """The CAP messages behind an announcement, oldest first."""
    rows = await conn.execute(
        sa.select(cap_alerts)
        .where(cap_alerts.c.announcement_id == announcement_id)
        .order_by(cap_alerts.c.id)
    )
    return [_known(row) for row in rows.mappings()]


async def rewrite(
    conn: AsyncConnection,
    announcement_id: int,
    *,
    values: dict[str, Any],
    now: datetime,
) -> AnnouncementStatus:
    """Replace an announcement's content and send it back for approval (the two-person rule
    holds for the new words too). Returns the status it had; 409 once sending has started."""
    row = (
        (
            await conn.execute(
                sa.select(announcements.c.status, announcements.c.started_at).where(
                    announcements.c.id == announcement_id
                )
            )
        )
        .mappings()
        .one()
    )
    status = AnnouncementStatus(row["status"])
    if status not in UPDATABLE or row["started_at"] is not None:
        raise conflict(
            f"announcement {announcement_id} is {status.value}: a CAP Update can only change it "
            "before sending starts; send a Cancel and a new Alert instead",
            field="alert/msgType",
        )
    result = await conn.execute(
        sa.update(announcements)
        .where(announcements.c.id == announcement_id, announcements.c.status == status.value)
        .values(
            **values,
            status=AnnouncementStatus.PENDING_APPROVAL.value,
            submitted_at=now,
            approved_at=None,
            approved_by=None,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        raise conflict(
            f"announcement {announcement_id} changed at the same time; retry", field="status"
        )
    return status
