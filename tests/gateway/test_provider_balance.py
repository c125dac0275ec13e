"""The preview shows the provider account's balance beside the estimate: no cost surprise.

The balance comes from Africa's Talking's application data endpoint, asked through the
official SDK's ``ApplicationService`` (on the same seam as sending) of the simulator, which
keeps the account's balance.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any

from channels.base import Balance, Channel, SendResult
from gateway.appkeys import BALANCES
from gateway.balances import Balances
from gateway.domain import Role
from gateway.errors import ConnectionFailed
from tests.gateway.test_dashboard import add_user, browsers  # noqa: F401 - a fixture
from tests.support.config import make_config
from tests.support.sms import import_numbers, numbers, sms_world


async def preview_of(world: Any) -> dict[str, Any]:
    created = await world.announce()
    answer = await world.call(
        "GET", f"/api/v1/announcements/{created['id']}/preview", role=Role.AUTHOR
    )
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.body
    return body


async def test_the_preview_shows_the_balance_and_says_when_it_is_short(
    aiohttp_client,
    database_url,
    keys,
    browsers,  # noqa: F811 - the fixture imported above
):
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, sim):
        await import_numbers(world, numbers(10))
        sim.balance = Decimal("1000000")
        preview = await preview_of(world)
        cost = Decimal(preview["estimated_cost"])
        assert cost > 0
        assert preview["balances"] == [
            {
                "channel": "sms",
                "channels": ["sms"],
                "currency": "IDR",
                "amount": "1000000.0000",
                "estimated_cost": str(cost),
                "enough": True,
            }
        ]
        assert preview["problems"] == []

        # The balance is read at most every 30 s: forget it to read the new one.
        world.app[BALANCES]._known.clear()
        sim.balance = cost * 3 / 10
        preview = await preview_of(world)
        (balance,) = preview["balances"]
        assert balance["enough"] is False
        (problem,) = preview["problems"]
        assert problem.startswith("sms: the estimated cost (IDR ")
        assert "about 3 of 10 recipients would get it before the channel waits for a top-up" in (
            problem
        )
        author = browsers(world)
        await author.login(await add_user(world, Role.AUTHOR))
        page = await author.get(f"/dashboard/announcements/{preview['announcement_id']}")
        assert page.status == 200
        assert "Saldo akun penyedia (sms): IDR" in page.text
        assert "tidak cukup: pengiriman berhenti saat saldo habis" in page.text


async def test_a_provider_that_does_not_say_leaves_the_preview_as_it_was(
    aiohttp_client, database_url, keys, caplog
):
    """No balance from the provider (the simulator with no limit names none; a provider
    that errs): the preview has no balances and no problem, and answers all the same."""
    caplog.set_level(logging.WARNING)
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, sim):
        await import_numbers(world, numbers(3))
        preview = await preview_of(world)
        assert preview["balances"] == [] and preview["problems"] == []
        world.app[BALANCES]._known.clear()
        sim.config = replace(sim.config, api_key="another-key")  # the key refused
        sim.balance = Decimal(1)
        preview = await preview_of(world)
        assert preview["balances"] == [] and preview["problems"] == []
    assert "could not read the sms provider balance" in caplog.text
    assert keys["africastalking_api_key"] not in caplog.text


class SlowBalance(Channel):
    name = "slow"

    def __init__(self, answers: list[Balance | Exception]) -> None:
        self.answers = answers
        self.asked = 0
        self.release = asyncio.Event()

    async def send(self, batch: Any) -> list[SendResult]:
        raise NotImplementedError

    async def balance(self) -> Balance | None:
        self.asked += 1
        await self.release.wait()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_balances_are_asked_once_for_previews_drawn_together_and_kept_a_while():
    now = [0.0]
    channel = SlowBalance([Balance("KES", Decimal(5)), ConnectionFailed("timeout")])
    balances = Balances({"slow": channel}, ttl_s=30, clock=lambda: now[0])
    together = [asyncio.ensure_future(balances.of("slow")) for _ in range(5)]
    await asyncio.sleep(0)
    channel.release.set()
    assert await asyncio.gather(*together) == [Balance("KES", Decimal(5))] * 5
    assert channel.asked == 1
    now[0] = 29.0
    assert await balances.of("slow") == Balance("KES", Decimal(5))
    now[0] = 31.0
    assert await balances.of("slow") is None  # the provider erred: unknown, not a failure
    assert channel.asked == 2
    assert await balances.of("nothing") is None


async def test_a_balance_that_does_not_come_in_time_is_unknown():
    channel = SlowBalance([Balance("KES", Decimal(5))])
    balances = Balances({"slow": channel}, timeout_s=0.05)
    assert await balances.of("slow") is None
