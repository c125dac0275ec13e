"""A running gateway with the citizen routes installed (until ``create_app`` installs them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.app import create_app
from gateway.citizen import routes as citizen_routes
from gateway.citizen.routes import SmsReply
from gateway.config import WartaConfig
from tests.support.world import World, seed_agencies


@dataclass
class CitizenWorld:
    world: World
    ussd_url: str
    ussd_path: str
    sms_path: str
    replies: list[SmsReply] = field(default_factory=list)

    async def sms(self, phone: str, text: str, message_id: str, to: str = "21234") -> int:
        form = {
            "from": phone,
            "to": to,
            "text": text,
            "date": "2026-01-05 10:00:00",
            "id": message_id,
            "linkId": "",
        }
        async with self.world.client.post(self.sms_path, data=form) as response:
            await response.read()
            return response.status


@pytest.fixture
async def citizen(
    aiohttp_client: Any, config: WartaConfig, keys: dict[str, str]
) -> AsyncIterator[CitizenWorld]:
    replies: list[SmsReply] = []

    async def capture(reply: SmsReply) -> None:
        replies.append(reply)

    app = create_app(config)
    citizen_routes.install(app, replies=capture)
    client = await aiohttp_client(app)
    tokens, ids = await seed_agencies(app)
    world = World(client=client, app=app, tokens=tokens, agency_ids=ids)
    base = f"/callbacks/africastalking/{keys['callback_token']}"
    yield CitizenWorld(
        world=world,
        ussd_url=str(client.make_url(base + "/ussd")),
        ussd_path=base + "/ussd",
        sms_path=base + "/sms/inbound",
        replies=replies,
    )
