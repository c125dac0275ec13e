"""/metrics: a small broadcast through the Africa's Talking simulator, then the right numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from channels.africastalking.simconfig import SimulatorConfig
from gateway.db.schema import deliveries
from gateway.domain import Role
from gateway.metrics import read_figures
from tests.support.config import make_config
from tests.support.plans import captured, plans
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for
from tests.support.world import World

PHONES = [*numbers(12), "+6281299990000"]  # the simulator rejects ...0000 as invalid


def _settled(counts: dict[str, int], body: dict[str, Any]) -> bool:
    final = counts.get("delivered", 0) + counts.get("failed", 0)
    return body["status"] == "done" and final == len(PHONES)


async def _scrape(world: World) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with world.client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


async def test_metrics_count_a_broadcast(aiohttp_client, database_url, keys) -> None:
    async with sms_world(
        aiohttp_client,
        make_config,
        database_url,
        keys,
        simulator=SimulatorConfig(delivery_report_delay=0.02),
    ) as (world, sim):
        await import_numbers(world, PHONES)
        approved = await broadcast(world, facts={"what": "Banjir", "where": "Kecamatan Gambir"})
        await wait_for(world, approved["id"], _settled)
        await sim.wait_for_reports()
        await world.client.post("/callbacks/africastalking/wrong-secret/sms/delivery", data={})

        text, samples = await _scrape(world)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("warta_deliveries", channel="sms", state="delivered") == 12
    assert value("warta_deliveries", channel="sms", state="failed") == 1
    assert value("warta_queue_depth", channel="sms") == 0
    assert value("warta_provider_errors_total", channel="sms", kind="rejected") == 1
    assert value("warta_metrics_database_up") == 1
    # Every delivery report the simulator posted, and the one with a made-up secret.
    assert value("warta_callbacks_total", provider="africastalking", status="200") == 12
    refused = {
        labels: v
        for (name, labels), v in samples.items()
        if name == "warta_callbacks_total" and dict(labels)["status"] != "200"
    }
    assert sum(refused.values()) == 1
    # Twelve sent (the invalid number fails at send, so it has no sent_at).
    assert value("warta_dispatch_latency_seconds_bucket", channel="sms", le="+Inf") == 12
    assert value("warta_dispatch_latency_seconds_gcount", channel="sms") == 12
    assert value("warta_dispatch_latency_seconds_bucket", channel="sms", le="60.0") == 12
    # Public, so nothing personal: no number, no secret, no announcement text.
    for secret in (*PHONES, keys["callback_token"], "Banjir", "wrong-secret"):
        assert secret not in text


async def test_metrics_answer_before_any_delivery(world: World) -> None:
    _, samples = await _scrape(world)
    assert samples[("warta_metrics_database_up", ())] == 1
    assert not [key for key in samples if key[0] == "warta_deliveries"]
    answer = await world.call("GET", "/metrics", role=Role.AUTHOR)
    assert answer.status == 200


async def test_figures_count_states_and_only_final_failures_by_kind(engine) -> None:
    # (announcement, channel, state, error kind, how many): a queued retry carries the kind of
    # its last error but is no provider error yet; replies have no announcement.
    rows = [
        (1, "sms", "delivered", None, 5),
        (1, "sms", "failed", "rejected", 2),
        (1, "sms", "queued", "connection", 3),
        (2, "sms", "failed", "connection", 1),
        (2, "telegram", "sent", None, 4),
        (None, "sms", "sending", None, 1),
    ]
    now = datetime(2026, 11, 28, 8, tzinfo=UTC)
    values = [
        {
            "announcement_id": ann, "agency_id": 1, "subscriber_id": n * 100 + i, "channel": ch,
            "language": "id", "state": state, "priority": 0, "next_attempt_at": now,
            "created_at": now, "error_kind": kind,
        }
        for n, (ann, ch, state, kind, count) in enumerate(rows)
        for i in range(count)
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(sa.insert(deliveries), values)

    with captured(engine) as statements:
        figures = await read_figures(engine)

    assert figures.counts == {
        ("sms", "delivered"): 5, ("sms", "failed"): 3, ("sms", "queued"): 3,
        ("sms", "sending"): 1, ("telegram", "sent"): 4,
    }  # fmt: skip
    assert figures.failures == {("sms", "rejected"): 2, ("sms", "connection"): 1}
    if engine.dialect.name == "sqlite":
        # SQLite reads indexes only (the newest-rows sample walks the primary key under its
        # LIMIT); grouping the table itself read and sorted every row on each scrape.
        for statement, plan in await plans(engine, statements):
            scans = [line for line in plan if line.startswith("SCAN deliveries")]
            if "LIMIT" in statement:
                continue
            assert scans, (statement, plan)
            assert all(" INDEX " in line for line in scans), (statement, plan)
