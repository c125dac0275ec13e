"""/metrics: a small broadcast through the Africa's Talking simulator, then the right numbers."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from channels.africastalking.simconfig import SimulatorConfig
from gateway.domain import Role
from tests.support.config import make_config
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
