"""A delivery report that overtakes the record of its send is applied once the send is
recorded, with the same state, reason, error kind and cost as a report arriving in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
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

    sent = list(zip(ids, ("ATX-busy", "ATX-ok", "ATX-none"), strict=True))
    async with engine.begin() as conn:
        await conn.run_sync(apply_early_reports, channel="voice", sent=sent)

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


async def test_early_reports_are_looked_up_by_message_id_before_any_delivery_is_read(
    engine: AsyncEngine,
) -> None:
    """A batch nothing overtook costs one look into the reports and no UPDATE; a report on
    another channel or one that is not final applies nothing; a delivery whose outcome carried
    no message id is still checked by the id its row keeps from before."""
    from tests.support.plans import captured

    async with engine.begin() as conn:
        agency = await conn.scalar(
            sa.insert(agencies)
            .values(slug="lookup", name="Lookup", created_at=NOW)
            .returning(agencies.c.id)
        )
        ids = {}
        for message_id in ("ATX-a", "ATX-b", "ATX-c", "ATX-kept"):
            ids[message_id] = await conn.scalar(
                sa.insert(deliveries)
                .values(
                    agency_id=agency, channel="sms", language="id", state="sent", priority=1,
                    next_attempt_at=NOW, created_at=NOW, sent_at=NOW,
                    provider_message_id=message_id,
                )
                .returning(deliveries.c.id)
            )  # fmt: skip
        await conn.execute(
            sa.insert(delivery_reports),
            [
                # Another channel's report of the same id, and a report that is not final.
                {"channel": "voice", "provider_message_id": "ATX-a", "status_word": "Completed",
                 "state": "delivered", "received_at": NOW},
                {"channel": "sms", "provider_message_id": "ATX-b", "status_word": "Sent",
                 "state": "sent", "received_at": NOW},
            ],
        )  # fmt: skip

    def states() -> Any:
        return sa.select(deliveries.c.provider_message_id, deliveries.c.state).order_by(
            deliveries.c.id
        )

    sent = [(ids["ATX-a"], "ATX-a"), (ids["ATX-b"], "ATX-b"), (ids["ATX-c"], "ATX-c")]
    with captured(engine) as statements:
        async with engine.begin() as conn:
            await conn.run_sync(apply_early_reports, channel="sms", sent=sent)
    assert [s.split()[0] for s, _ in statements] == ["SELECT"]
    assert "delivery_reports" in statements[0][0] and "deliveries " not in statements[0][0]

    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(delivery_reports),
            [
                {"channel": "sms", "provider_message_id": "ATX-c", "status_word": "Success",
                 "state": "delivered", "received_at": NOW},
                {"channel": "sms", "provider_message_id": "ATX-kept", "status_word": "Failed",
                 "state": "failed", "reason": "DeliveryFailure", "received_at": NOW},
            ],
        )  # fmt: skip
    # ATX-kept: its outcome named no message id; the row's own id finds its report.
    sent.append((ids["ATX-kept"], None))
    async with engine.begin() as conn:
        await conn.run_sync(apply_early_reports, channel="sms", sent=sent)
    async with engine.connect() as conn:
        rows = [tuple(r) for r in (await conn.execute(states())).all()]
    assert rows == [
        ("ATX-a", "sent"),
        ("ATX-b", "sent"),
        ("ATX-c", "delivered"),
        ("ATX-kept", "failed"),
    ]


async def test_one_batch_of_reports_stores_each_once_and_finishes_its_deliveries(
    engine: AsyncEngine,
) -> None:
    """The group commit's one INSERT: a report repeated inside the batch, or replayed in the
    next one, is one row; reason and cost survive; an unknown message id is stored too."""
    from channels.base import DeliveryReport
    from gateway.domain import DeliveryState
    from gateway.outbox.reports import write_reports

    async with engine.begin() as conn:
        agency = await conn.scalar(
            sa.insert(agencies)
            .values(slug="batch", name="Batch", created_at=NOW)
            .returning(agencies.c.id)
        )
        for message_id in ("ATX-1", "ATX-2"):
            await conn.execute(
                sa.insert(deliveries).values(
                    agency_id=agency, channel="voice", language="id", state="sent", priority=1,
                    next_attempt_at=NOW, created_at=NOW, sent_at=NOW,
                    provider_message_id=message_id,
                )
            )  # fmt: skip
    done = DeliveryReport("ATX-1", DeliveryState.DELIVERED, "Completed", cost=Decimal("1.2500"))
    # A provider's reason longer than the column: cut to 200 characters in the report and on
    # the delivery alike (uncut, PostgreSQL refused the whole batch).
    failed = DeliveryReport("ATX-2", DeliveryState.FAILED, "Failed", reason="USER_BUSY" * 30)
    stranger = DeliveryReport("ATX-unknown", DeliveryState.DELIVERED, "Success")
    async with engine.begin() as conn:
        await conn.run_sync(
            write_reports,
            [("voice", done), ("voice", failed), ("voice", done), ("sms", stranger)],
            now=NOW,
        )
    async with engine.begin() as conn:
        await conn.run_sync(write_reports, [("voice", done)], now=NOW)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.select(
                    delivery_reports.c.provider_message_id,
                    delivery_reports.c.state,
                    delivery_reports.c.reason,
                    delivery_reports.c.cost,
                    delivery_reports.c.received_at,
                ).order_by(delivery_reports.c.provider_message_id)
            )
        ).all()
        finished = (
            await conn.execute(
                sa.select(
                    deliveries.c.provider_message_id,
                    deliveries.c.state,
                    deliveries.c.error_reason,
                    deliveries.c.cost,
                ).order_by(deliveries.c.provider_message_id)
            )
        ).all()
    assert [tuple(row) for row in stored] == [
        ("ATX-1", "delivered", None, Decimal("1.2500"), NOW),
        ("ATX-2", "failed", ("USER_BUSY" * 30)[:200], None, NOW),
        ("ATX-unknown", "delivered", None, None, NOW),
    ]
    assert [tuple(row) for row in finished] == [
        ("ATX-1", "delivered", None, Decimal("1.2500")),
        ("ATX-2", "failed", ("USER_BUSY" * 30)[:200], None),
    ]


async def test_reports_arriving_together_are_committed_together(engine: AsyncEngine) -> None:
    """Group commit: the writer takes every report waiting into one commit, so 300 callbacks
    at once are one or two commits, each acknowledged only once its report is stored."""
    from channels.base import DeliveryReport
    from gateway.clock import ManualClock
    from gateway.domain import DeliveryState
    from gateway.outbox.reports import ReportWriter
    from tests.support.plans import captured

    writer = ReportWriter(engine, clock=ManualClock(NOW))
    await writer.start()
    try:
        reports = [
            DeliveryReport(f"ATX-{i}", DeliveryState.DELIVERED, "Success") for i in range(300)
        ]
        # On SQLite the writer's own connection stores them (gateway.db.writer).
        with captured(engine, writer.writer.sync_engine) as statements:
            await asyncio.gather(*(writer.submit("sms", report) for report in reports))
            async with engine.connect() as conn:
                stored = await conn.scalar(sa.select(sa.func.count()).select_from(delivery_reports))
    finally:
        await writer.stop()
    assert stored == 300
    # On PostgreSQL the INSERT is inside the statement that also finishes the deliveries.
    inserts = [s for s, _ in statements if "INSERT INTO delivery_reports" in s]
    assert 1 <= len(inserts) <= 2


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_batch_of_reports_finds_its_deliveries_by_index(engine: AsyncEngine) -> None:
    """SQLite (whose plans need no data): neither statement of a batch reads every delivery
    or every stored report; the UPDATE finds each delivery by its provider message id."""
    from channels.base import DeliveryReport
    from gateway.domain import DeliveryState
    from gateway.outbox.reports import write_reports
    from tests.support.plans import captured, plans

    reports = [
        ("sms", DeliveryReport("ATX-1", DeliveryState.DELIVERED, "Success")),
        ("sms", DeliveryReport("ATX-2", DeliveryState.FAILED, "Failed", reason="Rejected")),
    ]
    with captured(engine) as statements:
        async with engine.begin() as conn:
            await conn.run_sync(write_reports, reports, now=NOW)
    explained = await plans(engine, statements)
    assert len(explained) == 2
    for statement, lines in explained:
        assert not [line for line in lines if line.startswith("SCAN delivery")], (statement, lines)
    update = next(lines for statement, lines in explained if "UPDATE deliveries" in statement)
    by_id = "SEARCH deliveries USING INDEX ix_deliveries_channel_provider_message_id"
    assert [line for line in update if line.startswith(by_id)], update
