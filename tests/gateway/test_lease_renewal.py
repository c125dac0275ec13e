"""A batch that takes longer than its lease to send keeps its lease while it is being sent.

Without renewal, maintenance would reclaim the batch once its lease ran out and another
worker would send it a second time while the first send was still waiting for its answer.
"""

from __future__ import annotations

from typing import Any

from channels.africastalking.simconfig import SimulatorConfig
from tests.support.config import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for


def _settled(total: int) -> Any:
    def check(counts: dict[str, int], _body: dict[str, Any]) -> bool:
        return counts.get("delivered", 0) + counts.get("failed", 0) >= total

    return check


async def test_a_slow_batch_keeps_its_lease_and_goes_out_once(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    phones = numbers(20)
    async with sms_world(
        aiohttp_client,
        make_config,
        database_url,
        keys,
        # Each request is answered after 3 s, three times the 1 s lease; maintenance runs
        # every second, so without renewal it reclaims the batch mid-send.
        simulator=SimulatorConfig(latency=3.0, delivery_report_delay=0.05),
        africastalking={"request_timeout_s": 10.0},
        dispatch={"lease_seconds": 1.0, "workers_per_channel": 2},
    ) as (world, sim):
        await import_numbers(world, phones)
        approved = await broadcast(world, facts={"what": "Uji", "where": "Gambir"})
        body = await wait_for(world, approved["id"], _settled(len(phones)), timeout=60)
        counts = {c["channel"]: c["counts"] for c in body["stats"]}
        assert counts["sms"].get("delivered", 0) == len(phones)
        assert sim.sent_count.duplicates() == {}
        assert sim.sent_count.total() == len(phones)
