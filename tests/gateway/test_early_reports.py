"""A delivery report that overtakes the record of its send is applied once the send is
recorded, with the same state, reason, error kind and cost as a report arriving in order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import agencies, deliveries, delivery_reports
from gateway.outbox.claims import apply_early_reports

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


async def test_an_early_failure_report_keeps_its_reason(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        agency = await conn.scalar(
            sa.insert(agencies)
            .values(slug="early", name="Early", created_at=NOW)
            .returning(agencies.c.id)
        )
        ids = []
        for message_id in ("ATX-busy", "ATX-ok", "ATX-none"):
            ids.append(
                await conn.scalar(
                    sa.insert(deliveries)
                    .values(
                        agency_id=agency,
                        channel="voice",
                        language="id",
                        state="sent",
                        priority=1,
                        next_attempt_at=NOW,
                        created_at=NOW,
                        sent_at=NOW,
                        provider_message_id=message_id,
                    )
                    .returning(deliveries.c.id)
                )
            )
        await conn.execute(
            sa.insert(delivery_reports),
            [
                {
                    "channel": "voice",
                    "provider_message_id": "ATX-busy",
                    "status_word": "Failed",
                    "state": "failed",
                    "reason": "USER_BUSY",
                    "cost": Decimal("0"),
                    "received_at": NOW,
                },
                {
                    "channel": "voice",
                    "provider_message_id": "ATX-ok",
                    "status_word": "Completed",
                    "state": "delivered",
                    "reason": None,
                    "cost": Decimal("4.0000"),
                    "received_at": NOW,
                },
            ],
        )

    async with engine.begin() as conn:
        await apply_early_reports(conn, channel="voice", ids=ids)

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    deliveries.c.provider_message_id,
                    deliveries.c.state,
                    deliveries.c.error_kind,
                    deliveries.c.error_reason,
                    deliveries.c.cost,
                    deliveries.c.finished_at.is_not(None),
                ).order_by(deliveries.c.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("ATX-busy", "failed", "rejected", "USER_BUSY", Decimal("0"), True),
        ("ATX-ok", "delivered", None, None, Decimal("4.0000"), True),
        ("ATX-none", "sent", None, None, None, False),
    ]
