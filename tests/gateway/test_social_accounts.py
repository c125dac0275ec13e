"""Each agency's announcements go to its own social accounts only.

Several agencies may share a gateway. An announcement approved by one agency's second person
must never appear on another agency's Facebook Page: ``[social] account_agencies`` names each
account's agency, and an account it does not name posts for the first agency.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from channels.meta.simconfig import SimulatorConfig
from channels.meta.simulator import MetaSimulator
from gateway.config import ConfigProblem
from gateway.db.schema import deliveries
from gateway.domain import Role
from gateway.outbox import accounts
from tests.support.config import make_config
from tests.support.sms import broadcast, wait_for
from tests.support.world import World

PAGE_1 = "300000000000001"  # named for neither agency: the first agency's (alpha)
PAGE_2 = "300000000000002"  # beta's
PAGE_3 = "300000000000003"  # alpha's, named
PAGES = {PAGE_1: "page-token-1", PAGE_2: "page-token-2", PAGE_3: "page-token-3"}


@asynccontextmanager
async def pages_world(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], owners: dict[str, str]
) -> AsyncIterator[tuple[World, MetaSimulator]]:
    meta = MetaSimulator(SimulatorConfig(page_tokens=PAGES))
    url = await meta.start()
    config = make_config(
        database_url,
        {**keys, "facebook_page_tokens": json.dumps(PAGES)},
        facebook={"base_url": url},
        social={"account_agencies": {"facebook": owners}},
    )
    world = await World.start(aiohttp_client, config)
    try:
        yield world, meta
    finally:
        await meta.stop()
        await world.client.close()


async def posted(world: World, announcement_id: int) -> list[tuple[str | None, str]]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.account, deliveries.c.state)
            .where(deliveries.c.announcement_id == announcement_id)
            .order_by(deliveries.c.account)
        )
        return [(row.account, row.state) for row in rows]


def done(_counts: dict[str, int], body: dict[str, Any]) -> bool:
    return bool(body["status"] == "done")


async def test_each_agency_posts_to_its_own_pages_only(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    owners = {PAGE_2: "beta", PAGE_3: "alpha"}
    async with pages_world(aiohttp_client, database_url, keys, owners) as (world, meta):
        alpha = await broadcast(world, agency=0, title="Banjir Alpha", channels=["facebook"])
        beta = await broadcast(world, agency=1, title="Banjir Beta", channels=["facebook"])
        await wait_for(world, alpha["id"], done)
        await wait_for(world, beta["id"], done, agency=1)
        assert await posted(world, alpha["id"]) == [(PAGE_1, "delivered"), (PAGE_3, "delivered")]
        assert await posted(world, beta["id"]) == [(PAGE_2, "delivered")]
        # What reached the Graph API: each Page got its own agency's post, and nothing else.
        on_page = {
            page: sorted(
                r.body["message"].split("\n")[0] for r in meta.received if r.node_id == page
            )
            for page in PAGES
        }
        assert [len(v) for v in on_page.values()] == [1, 1, 1]
        assert "Beta" in on_page[PAGE_2][0] and "Alpha" not in on_page[PAGE_2][0]
        assert all("Alpha" in on_page[p][0] for p in (PAGE_1, PAGE_3))
        # Each agency can see where its announcements are posted.
        for agency, pages in ((0, [PAGE_1, PAGE_3]), (1, [PAGE_2])):
            settings = await world.call("GET", "/api/v1/agency", agency=agency)
            assert settings.body["social_accounts"] == {"facebook": pages}


async def test_an_agency_without_a_page_is_told_before_approval_and_posts_nowhere(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    owners = dict.fromkeys(PAGES, "alpha")
    async with pages_world(aiohttp_client, database_url, keys, owners) as (world, meta):
        created = await world.announce(agency=1, channels=["facebook", "sms"])
        preview = await world.call(
            "GET", f"/api/v1/announcements/{created['id']}/preview", agency=1
        )
        assert preview.status == 200, preview.body
        (facebook,) = [r for r in preview.body["renditions"] if r["channel"] == "facebook"]
        problem = "none of this channel's accounts posts for this agency"
        assert any(p.startswith(problem) for p in facebook["problems"])
        assert any(p.startswith(f"facebook/id: {problem}") for p in preview.body["problems"])
        # Alpha's own preview has no such problem.
        own = await world.announce(agency=0, channels=["facebook"])
        answer = await world.call("GET", f"/api/v1/announcements/{own['id']}/preview")
        assert not any(problem in p for p in answer.body["problems"])

        path = f"/api/v1/announcements/{created['id']}"
        assert (
            await world.call("POST", path + "/submit", role=Role.AUTHOR, agency=1)
        ).status == 200
        approved = await world.call("POST", path + "/approve", role=Role.APPROVER, agency=1)
        assert approved.status == 200, approved.body
        await wait_for(world, created["id"], done, agency=1)
        assert await posted(world, created["id"]) == []
        assert [r for r in meta.received if r.endpoint == "facebook"] == []


def test_only_social_channels_have_account_owners(database_url: str, keys: dict[str, str]) -> None:
    with pytest.raises(ConfigProblem, match=r"social\.account_agencies") as raised:
        make_config(database_url, keys, social={"account_agencies": {"sms": {"x": "alpha"}}})
    assert "'sms' is not a social channel" in str(raised.value)


async def test_an_account_named_for_no_agency_is_warned_of(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    accounts._warn_unknown.cache_clear()
    owners = {PAGE_1: "gamma", PAGE_2: "beta"}
    async with pages_world(aiohttp_client, database_url, keys, owners) as (world, _meta):
        for _ in range(2):
            created = await world.announce(channels=["facebook"])
            answer = await world.call("GET", f"/api/v1/announcements/{created['id']}/preview")
            assert answer.status == 200, answer.body
    warned = [r.getMessage() for r in caplog.records if "names no such agency" in r.getMessage()]
    assert warned == [
        "[social] account_agencies names no such agency (gamma): its accounts post for nobody"
    ]
