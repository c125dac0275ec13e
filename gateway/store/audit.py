"""The audit log: append-only, hash-chained per agency so that editing or deleting a past event
breaks the chain (``verify_chain``). Events never hold phone numbers: callers pass masked forms."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.auth import Principal
from gateway.db.schema import audit_events


def _digest(prev_hash: str | None, event: dict[str, Any]) -> str:
    payload = json.dumps(event, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(((prev_hash or "") + payload).encode()).hexdigest()


def _chained_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "agency_id": row["agency_id"],
        "actor": row["actor"],
        "action": row["action"],
        "subject_type": row["subject_type"],
        "subject_id": row["subject_id"],
        "before": row["before"],
        "after": row["after"],
        "at": row["at"].isoformat(),
    }


async def record(
    conn: AsyncConnection,
    *,
    principal: Principal | None,
    action: str,
    subject: tuple[str, int | str | None],
    now: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    agency_id: int | None = None,
    actor: str | None = None,
) -> None:
    """Append one event in the caller's transaction (so it commits with the change itself)."""
    agency = principal.agency_id if principal is not None else agency_id
    if conn.dialect.name == "postgresql":
        # Serialise appends per agency so two transactions cannot chain onto the same event.
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(7_000_000 + (agency or 0))))
    prev_hash = await conn.scalar(
        sa.select(audit_events.c.hash)
        .where(
            audit_events.c.agency_id == agency
            if agency is not None
            else audit_events.c.agency_id.is_(None)
        )
        .order_by(audit_events.c.id.desc())
        .limit(1)
    )
    row = {
        "agency_id": agency,
        "actor": actor
        or (f"token:{principal.token_id}:{principal.role}" if principal else "system"),
        "action": action,
        "subject_type": subject[0],
        "subject_id": None if subject[1] is None else str(subject[1]),
        "before": before,
        "after": after,
        "at": now,
    }
    row["prev_hash"] = prev_hash
    row["hash"] = _digest(prev_hash, _chained_fields(row))
    await conn.execute(sa.insert(audit_events).values(**row))


async def verify_chain(conn: AsyncConnection) -> list[str]:
    """Walk every agency's chain; returns the problems found (empty when intact)."""
    problems: list[str] = []
    last: dict[int | None, str | None] = {}
    rows = await conn.stream(sa.select(audit_events).order_by(audit_events.c.id))
    async for row in rows.mappings():
        agency = row["agency_id"]
        expected_prev = last.get(agency)
        if row["prev_hash"] != expected_prev:
            problems.append(f"event {row['id']}: does not follow the previous event")
        if row["hash"] != _digest(row["prev_hash"], _chained_fields(dict(row))):
            problems.append(f"event {row['id']}: its content was changed")
        last[agency] = row["hash"]
    return problems
