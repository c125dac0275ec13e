"""The public /verify page, asked too often from one address, says so with a 429 page (not a
500), and keeps answering once the address slows down."""

from __future__ import annotations

from typing import Any

from tests.support.config import make_config
from tests.support.world import World


async def test_too_many_checks_get_a_429_page(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    config = make_config(
        database_url, {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    )
    world = await World.start(aiohttp_client, config)
    statuses = []
    for _ in range(40):
        async with world.client.get("/verify", params={"code": "AB3DEF"}) as response:
            statuses.append(response.status)
            body = await response.text()
    assert 500 not in statuses
    assert statuses[0] == 200
    assert statuses[-1] == 429
    assert "<html" in body.lower()
