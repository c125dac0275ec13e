"""A batch's outcomes are written as they were decided, whatever their mix, in a fixed number
of statements: plain sends, sends without a message id or cost, final failures, retries and
pauses handed back, side by side in one batch."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from gateway.clock import ManualClock
from gateway.db.schema import deliveries
from gateway.domain import DeliveryState
from gateway.outbox import claims
from tests.support.plans import captured
from tests.support.sms import claim_now, started_by_hand

COLUMNS = (
    "state",
    "provider_message_id",
    "cost",
    "error_kind",
    "error_reason",
    "next_attempt_at",
    "attempts",
    "lease_until",
    "sent_at",
    "finished_at",
    "url",
)


async def test_every_kind_of_outcome_is_written_as_decided(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    clock = ManualClock()
    async with started_by_hand(aiohttp_client, database_url, keys, clock, recipients=2006) as (
        world,
        _sim,
        _approved,
    ):
        claimed_at = clock.now()
        batch = await claim_now(world.engine, "sms", limit=2006, now=claimed_at)
        ids = [item.id for item in batch]
        # A row that already has a cost (a report that came first keeps it).
        async with world.engine.begin() as conn:
            await conn.execute(
                sa.update(deliveries).where(deliveries.c.id == ids[1]).values(cost=Decimal("7"))
            )
            estimate = await conn.scalar(
                sa.select(deliveries.c.cost).where(deliveries.c.id == ids[0])
            )
        clock.advance(timedelta(seconds=5))
        now = clock.now()
        retry_at = now + timedelta(minutes=2)
        plain = [
            claims.Outcome(
                i, DeliveryState.SENT, provider_message_id=f"ATX-{i}", cost=Decimal("0.8")
            )
            for i in ids[6:]
        ]
        outcomes = [
            *plain,
            claims.Outcome(ids[0], DeliveryState.SENT, provider_message_id="ATX-first"),
            claims.Outcome(ids[1], DeliveryState.SENT),  # no id, no cost: kept as they were
            claims.Outcome(
                ids[2], DeliveryState.FAILED, error_kind="rejected", error_reason="x" * 300
            ),
            claims.Outcome(
                ids[3],
                DeliveryState.QUEUED,
                error_kind="connection",
                error_reason="timeout",
                next_attempt_at=retry_at,
            ),
            claims.Outcome(ids[4], DeliveryState.QUEUED, next_attempt_at=retry_at, refund=True),
            claims.Outcome(ids[5], DeliveryState.SENT, provider_message_id="p", url="https://x/1"),
        ]
        prepared = claims.prepare_outcomes(outcomes, dialect=world.engine.dialect.name)
        with captured(world.engine) as statements:
            async with world.engine.begin() as conn:
                changed = await conn.run_sync(claims.write_outcomes, prepared, now=now)
        assert changed == 2006
        updates = [s for s, _ in statements if s.lstrip().upper().startswith("UPDATE")]
        assert len(updates) <= 2  # one per form of row, not one per outcome
        # A second record of the same batch finds nothing still sending: it changes nothing.
        async with world.engine.begin() as conn:
            assert await conn.run_sync(claims.write_outcomes, prepared, now=now) == 0

        async with world.engine.connect() as conn:
            rows = {
                row.id: row
                for row in await conn.execute(
                    sa.select(deliveries.c.id, *(deliveries.c[name] for name in COLUMNS))
                )
            }
    for i in ids[6:]:
        row = rows[i]
        assert (row.state, row.provider_message_id, row.cost) == (
            "sent",
            f"ATX-{i}",
            Decimal("0.8"),
        )
        assert (row.error_kind, row.error_reason, row.lease_until, row.finished_at) == (
            None,
            None,
            None,
            None,
        )
        assert (row.sent_at, row.attempts) == (now, 1)
    first, kept, failed, retried, handed_back, posted = (rows[i] for i in ids[:6])
    assert (first.state, first.provider_message_id, first.cost, first.sent_at) == (
        "sent",
        "ATX-first",
        estimate,  # the fan-out's estimate stays until a cost is known
        now,
    )
    assert (kept.state, kept.provider_message_id, kept.cost) == ("sent", None, Decimal("7"))
    assert (failed.state, failed.error_kind, failed.finished_at) == ("failed", "rejected", now)
    assert failed.error_reason == "x" * 200
    assert failed.sent_at is None
    assert (retried.state, retried.error_kind, retried.error_reason) == (
        "queued",
        "connection",
        "timeout",
    )
    assert (retried.next_attempt_at, retried.attempts, retried.lease_until) == (retry_at, 1, None)
    assert (handed_back.state, handed_back.attempts, handed_back.next_attempt_at) == (
        "queued",
        0,
        retry_at,
    )
    assert (posted.state, posted.url, posted.provider_message_id) == ("sent", "https://x/1", "p")
