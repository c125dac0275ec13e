"""SMS end to end: API -> fan-out -> claim -> real SDK -> simulator -> delivery reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from gateway.db.schema import deliveries, delivery_reports
from gateway.domain import Role
from tests.support.config import make_config
from tests.support.plans import captured, plans
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for


def _all_settled(total: int):
    def settled(counts: dict[str, int], body: dict[str, Any]) -> bool:
        final = counts.get("delivered", 0) + counts.get("failed", 0)
        return body["status"] == "done" and final == total

    return settled


async def test_broadcast_reaches_every_subscriber_once(aiohttp_client, database_url, keys):
    phones = [*numbers(250), "+6281299990000"]  # the simulator treats ...0000 as invalid
    async with sms_world(
        aiohttp_client,
        make_config,
        database_url,
        keys,
        simulator=SimulatorConfig(delivery_report_delay=0.05),
    ) as (world, sim):
        await import_numbers(world, phones)
        approved = await broadcast(
            world, facts={"what": "Pemadaman listrik", "where": "Kecamatan Gambir"}
        )
        body = await wait_for(world, approved["id"], _all_settled(len(phones)))
        await sim.wait_for_reports()
        counts = {c["channel"]: c["counts"] for c in body["stats"]}
        assert counts["sms"]["delivered"] == 250
        assert counts["sms"]["failed"] == 1
        # Exactly what reached the provider: every valid number once, nobody twice.
        assert sim.sent_count.duplicates() == {}
        assert sim.sent_count.total() == 250
        failed = await world.call(
            "GET",
            f"/api/v1/announcements/{approved['id']}/deliveries?state=failed",
            role=Role.OPERATOR,
        )
        (only,) = failed.body["items"]
        assert only["error_kind"] == "rejected"
        assert only["error_reason"] == "InvalidPhoneNumber"
        assert only["phone"] == "+62 812-****-000"
        assert body["actual_cost"] is not None


async def test_a_cost_in_another_currency_is_not_recorded(
    aiohttp_client, database_url, keys, caplog
):
    """The provider charges in KES, the agency counts in IDR: each delivery keeps its IDR
    estimate rather than a KES figure summed into IDR, and the operator is told why."""
    import logging

    from gateway import pricing

    pricing._warn_currency.cache_clear()  # it says so once per process
    caplog.set_level(logging.WARNING)
    phones = numbers(5)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys, provider_currency="KES"
    ) as (world, sim):
        await import_numbers(world, phones)
        approved = await broadcast(world)
        body = await wait_for(world, approved["id"], _all_settled(len(phones)))
        await sim.wait_for_reports()
        assert sim.sent_count.total() == 5
        assert Decimal(body["actual_cost"]) == Decimal(body["estimated_cost"]) > 0
        kes_price = Decimal(str(sim.config.cost_per_segment))
        sent = await world.call(
            "GET", f"/api/v1/announcements/{approved['id']}/deliveries", role=Role.OPERATOR
        )
        costs = {Decimal(item["cost"]) for item in sent.body["items"]}
        assert costs == {Decimal(body["estimated_cost"]) / 5} and kes_price not in costs
    warnings = [r.getMessage() for r in caplog.records if "costs are kept in" in r.getMessage()]
    assert warnings and all("KES" in w and "IDR" in w for w in warnings)


async def _announcement_row(conn: Any, announcement_id: int) -> dict[str, Any]:
    from gateway.db.schema import announcements

    query = sa.select(announcements).where(announcements.c.id == announcement_id)
    return dict((await conn.execute(query)).mappings().one())


async def _per_subscriber(world: Any, announcement_id: int) -> dict[int, int]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.subscriber_id, sa.func.count())
            .where(deliveries.c.announcement_id == announcement_id)
            .group_by(deliveries.c.subscriber_id)
        )
        return {int(s): int(n) for s, n in rows}


async def _started(world: Any, subscribers: int) -> tuple[int, Any]:
    """A broadcast to ``subscribers`` numbers, approved and fanned out by the dispatcher."""
    await import_numbers(world, numbers(subscribers))
    approved = await broadcast(world)
    dispatcher = world.app[__import__("gateway.appkeys").appkeys.DISPATCHER]
    assert await dispatcher.start_due() == 1
    return int(approved["id"]), dispatcher.clock


async def test_fan_out_twice_inserts_nothing_the_second_time(aiohttp_client, database_url, keys):
    from gateway.outbox.fanout import fan_out

    async with sms_world(
        aiohttp_client, make_config, database_url, keys, dispatch={"enabled": False}
    ) as (world, _sim):
        announcement_id, clock = await _started(world, 40)
        async with world.engine.begin() as conn:
            row = await _announcement_row(conn, announcement_id)
            again = await fan_out(conn, announcement=row, now=clock.now())
        assert again == {"sms": 0}
        async with world.engine.connect() as conn:
            total = await conn.scalar(sa.select(sa.func.count()).select_from(deliveries))
        assert total == 40


async def test_fan_out_again_adds_only_the_missing_deliveries(aiohttp_client, database_url, keys):
    """A channel that already has deliveries takes the ON CONFLICT form: the rows it lacks."""
    from gateway.outbox.fanout import fan_out

    async with sms_world(
        aiohttp_client, make_config, database_url, keys, dispatch={"enabled": False}
    ) as (world, _sim):
        announcement_id, clock = await _started(world, 30)
        async with world.engine.begin() as conn:
            gone = await conn.execute(
                sa.delete(deliveries).where(
                    deliveries.c.announcement_id == announcement_id,
                    deliveries.c.id.in_(
                        sa.select(deliveries.c.id).order_by(deliveries.c.id).limit(7)
                    ),
                )
            )
            assert gone.rowcount == 7
            row = await _announcement_row(conn, announcement_id)
            again = await fan_out(conn, announcement=row, now=clock.now())
        assert again == {"sms": 7}
        per_subscriber = await _per_subscriber(world, announcement_id)
        assert len(per_subscriber) == 30 and set(per_subscriber.values()) == {1}


async def test_two_fan_outs_at_once_insert_each_delivery_once(
    aiohttp_client, database_url, keys, caplog
):
    """The second fan-out checks before the first commits, so it takes the plain INSERT too;
    the unique constraint refuses it once the first commits (PostgreSQL) or it waits for the
    write lock and then finds the rows (SQLite). Either way it adds nothing and fails nothing."""
    import asyncio
    import logging

    from gateway.outbox.fanout import fan_out

    caplog.set_level(logging.INFO, logger="gateway.outbox.fanout")
    async with sms_world(
        aiohttp_client, make_config, database_url, keys, dispatch={"enabled": False}
    ) as (world, _sim):
        await import_numbers(world, numbers(25))
        approved = await broadcast(world)
        clock = world.app[__import__("gateway.appkeys").appkeys.DISPATCHER].clock
        postgres = world.engine.dialect.name == "postgresql"
        first = await world.engine.connect()
        try:
            await first.begin()
            row = await _announcement_row(first, approved["id"])
            assert await fan_out(first, announcement=row, now=clock.now()) == {"sms": 25}

            async def second() -> dict[str, int]:
                async with world.engine.begin() as conn:
                    return await fan_out(conn, announcement=row, now=clock.now())

            racing = asyncio.create_task(second())
            if postgres:
                # Wait until the second insert is blocked on the first's unique entries.
                async with world.engine.connect() as watcher:
                    for _ in range(200):
                        waiting = await watcher.scalar(
                            sa.text(
                                "SELECT count(*) FROM pg_stat_activity WHERE "
                                "wait_event = 'transactionid' AND datname = current_database()"
                            )
                        )
                        if waiting:
                            break
                        # A transaction reads pg_stat_activity once and keeps that snapshot:
                        # end it, or a watch that began before the insert waited never sees it.
                        await watcher.rollback()
                        await asyncio.sleep(0.05)
                    assert waiting == 1
            else:
                await asyncio.sleep(0.3)
            assert not racing.done()
            await first.commit()
        finally:
            await first.close()
        assert await asyncio.wait_for(racing, 30) == {"sms": 0}
        per_subscriber = await _per_subscriber(world, approved["id"])
        assert len(per_subscriber) == 25 and set(per_subscriber.values()) == {1}
        came_first = [r for r in caplog.records if "came first" in r.getMessage()]
        assert len(came_first) == (1 if postgres else 0)


async def test_opt_out_and_cancel_take_effect_for_queued_deliveries(
    aiohttp_client, database_url, keys
):
    phones = numbers(30)
    async with sms_world(
        aiohttp_client, make_config, database_url, keys, dispatch={"enabled": False}
    ) as (world, sim):
        await import_numbers(world, phones)
        approved = await broadcast(world)
        dispatcher = world.app[__import__("gateway.appkeys").appkeys.DISPATCHER]
        await dispatcher.start_due()
        # Africa's Talking reports an opt-out for one citizen.
        url = f"/callbacks/africastalking/{keys['callback_token']}/sms/optout"
        with captured(world.engine) as statements:
            answer = await world.client.post(
                url, data={"senderId": "WARTA", "phoneNumber": phones[0]}
            )
        assert answer.status == 200
        if world.engine.dialect.name == "sqlite":
            # Found by index, not by reading every subscriber (SQLite's plans need no data).
            for statement, lines in await plans(world.engine, statements):
                assert not [line for line in lines if line.startswith("SCAN subscribers")], (
                    statement
                )
        async with world.engine.connect() as conn:
            states = dict(
                (
                    await conn.execute(
                        sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)
                    )
                ).all()
            )
        assert states == {"queued": 29, "cancelled": 1}
        cancelled = await world.call(
            "POST", f"/api/v1/announcements/{approved['id']}/cancel", role=Role.APPROVER
        )
        assert cancelled.status == 200
        async with world.engine.connect() as conn:
            states = dict(
                (
                    await conn.execute(
                        sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)
                    )
                ).all()
            )
        assert states == {"cancelled": 30}
        await dispatcher.run_once("sms")
        assert sim.requests_total == 0


async def test_retryable_failures_retry_then_fail_within_the_limit(
    aiohttp_client, database_url, keys
):
    sim_config = SimulatorConfig(request_failure_shares={"server_error": 1.0})
    async with sms_world(
        aiohttp_client,
        make_config,
        database_url,
        keys,
        simulator=sim_config,
        dispatch={"max_attempts": 3},
    ) as (world, sim):
        await import_numbers(world, numbers(5))
        approved = await broadcast(world)
        body = await wait_for(world, approved["id"], lambda c, b: c.get("failed", 0) == 5)
        assert body["stats"][0]["counts"]["failed"] == 5
        async with world.engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(deliveries.c.attempts, deliveries.c.error_kind))
            ).all()
        assert {tuple(r) for r in rows} == {(3, "connection")}
        # Each of the 5 was offered to the provider exactly max_attempts times.
        assert sum(len(r.recipients) for r in sim.received) == 15


async def test_delivery_reports_are_authenticated_and_idempotent(
    aiohttp_client, database_url, keys
):
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _sim):
        good = f"/callbacks/africastalking/{keys['callback_token']}/sms/delivery"
        report = {
            "id": "ATXid_unknown",
            "status": "Success",
            "phoneNumber": "+6281200000001",
            "networkCode": "51010",
        }
        for _ in range(2):
            answer = await world.client.post(good, data=report)
            assert answer.status == 200
        bad = await world.client.post(
            "/callbacks/africastalking/wrong-token/sms/delivery", data=report
        )
        assert bad.status == 403
        missing = await world.client.post(good, data={"status": "Success"})
        assert missing.status == 400
        assert (await missing.json())["error"]["field"] == "id"
        async with world.engine.connect() as conn:
            stored = await conn.scalar(sa.select(sa.func.count()).select_from(delivery_reports))
        assert stored == 1


async def test_no_number_or_secret_reaches_the_logs_while_sending(
    aiohttp_client, database_url, keys, caplog
):
    import logging

    caplog.set_level(logging.DEBUG)
    phones = [*numbers(20), "+6281299990000"]
    sim_config = SimulatorConfig(
        delivery_report_delay=0.01,
        recipient_failure_shares={"blacklisted": 0.2, "could_not_route": 0.2},
        delivery_report_shares={"Failed:DeliveryFailure": 0.3},
    )
    async with sms_world(aiohttp_client, make_config, database_url, keys, simulator=sim_config) as (
        world,
        sim,
    ):
        await import_numbers(world, phones)
        approved = await broadcast(world)
        await wait_for(world, approved["id"], lambda c, b: b["status"] == "done", timeout=30)
        await sim.wait_for_reports()
    # The test server's access log prints request paths, and callback paths carry the
    # callback token: `warta serve` and `warta demo` run with the access log off.
    records = [r for r in caplog.records if r.name != "aiohttp.access"]
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in records)
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert errors == []
    assert records, "the flow logged nothing at all: the scan would prove nothing"
    secrets = [
        keys["africastalking_api_key"],
        keys["phone_keys"],
        keys["blind_index_key"],
        keys["callback_token"],
    ]
    for needle in [
        *phones,
        *(p.lstrip("+") for p in phones),
        *(("0" + p[3:]) for p in phones),
        *secrets,
    ]:
        assert needle not in text
