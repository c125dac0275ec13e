"""What the USSD callback keeps between requests (agency, published list) and what it never
keeps (the caller's subscription), on both databases, with a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from channels.africastalking.ussd_sim import play
from gateway.app import create_app
from gateway.citizen.directory import AGENCY_TTL, PUBLISHED_TTL
from gateway.citizen.ussd import respond
from gateway.clock import ManualClock
from gateway.config import WartaConfig
from gateway.db.schema import agencies
from gateway.personal import PhoneNumber
from tests.citizen.memory import MemoryDirectory
from tests.citizen.test_ussd_menu import CALLER
from tests.support.sms import broadcast
from tests.support.world import World, seed_agencies

PHONE = "+6281200000001"


@dataclass
class Timed:
    world: World
    clock: ManualClock
    ussd_url: str

    async def screens(self, inputs: list[str], phone: str = PHONE) -> list[str]:
        return await play(self.ussd_url, phone, inputs)


@pytest.fixture
async def timed(
    aiohttp_client: Any, config: WartaConfig, keys: dict[str, str]
) -> AsyncIterator[Timed]:
    clock = ManualClock()
    app = create_app(config, clock=clock)
    client = await aiohttp_client(app)
    tokens, ids = await seed_agencies(app)
    world = World(client=client, app=app, tokens=tokens, agency_ids=ids)
    path = f"/callbacks/africastalking/{keys['callback_token']}/ussd"
    yield Timed(world=world, clock=clock, ussd_url=str(client.make_url(path)))


async def test_a_new_announcement_shows_once_the_published_list_is_stale(timed: Timed) -> None:
    await broadcast(timed.world, title="Kabar lama")
    before = await timed.screens(["1"])
    await broadcast(timed.world, title="Kabar baru")
    within = await timed.screens(["1"])
    timed.clock.advance(PUBLISHED_TTL)
    after = await timed.screens(["1"])

    assert "Kabar lama" in before[1]
    assert "Kabar baru" not in within[1]
    assert after[1].startswith("CON Info terbaru 1/1\n1 Kabar baru\n2 Kabar lama")


async def test_an_announcement_leaves_the_list_when_it_expires_not_a_ttl_later(
    timed: Timed,
) -> None:
    expiry = timed.clock.now() + PUBLISHED_TTL / 5
    await broadcast(timed.world, title="Sebentar saja", expires_at=expiry.isoformat())
    await broadcast(timed.world, title="Tetap")
    before = await timed.screens(["1"])
    timed.clock.set(expiry)
    after = await timed.screens(["1"])

    assert "Sebentar saja" in before[1]
    assert "Sebentar saja" not in after[1] and "Tetap" in after[1]


async def test_an_opt_out_counts_from_the_very_next_request(timed: Timed) -> None:
    await broadcast(timed.world, title="Kabar")
    await timed.screens(["3", "1", "1", "1"])
    offered = await timed.screens(["4"])
    left = await timed.screens(["4", "1"])
    again = await timed.screens(["4"])

    assert offered[1].startswith("CON Berhenti menerima:")
    assert left[2].startswith("END Selesai.")
    assert again[1] == "END Nomor ini belum terdaftar. Daftar: menu 3."


async def test_a_language_change_counts_from_the_very_next_request(timed: Timed) -> None:
    await timed.screens(["3", "1", "1", "1"])
    await timed.screens(["5", "2"])
    english = await timed.screens([])
    await timed.screens(["5", "1"])
    bahasa = await timed.screens([])

    assert english[0].startswith("CON Agency Alpha\n1 Latest news")
    assert bahasa[0].startswith("CON Agency Alpha\n1 Info terbaru")


async def test_a_renamed_agency_shows_once_the_agency_is_stale(timed: Timed) -> None:
    await timed.screens([])
    async with timed.world.engine.begin() as conn:
        await conn.execute(
            sa.update(agencies).where(agencies.c.slug == "alpha").values(name="Agency Renamed")
        )
    within = await timed.screens([])
    timed.clock.advance(AGENCY_TTL)
    after = await timed.screens([])

    assert within[0].startswith("CON Agency Alpha\n")
    assert after[0].startswith("CON Agency Renamed\n")


class CountingDirectory(MemoryDirectory):
    async def set_language(self, phone: PhoneNumber, language: str) -> bool:
        self.calls.append(f"set_language {language}")
        return await super().set_language(phone, language)


async def test_choosing_the_language_already_kept_writes_nothing() -> None:
    found = CountingDirectory(offered_topics=[])
    joined = await respond(["3", "1", "1", "1"], CALLER, found, screen_size=160, language="id")

    same = await respond(["5", "1"], CALLER, found, screen_size=160, language="id")
    other = await respond(["5", "2"], CALLER, found, screen_size=160, language="id")

    assert joined.startswith("END Terima kasih")
    assert same.startswith("CON Bahasa: Indonesia.")
    assert other.startswith("CON Language: English.")
    assert [c for c in found.calls if c.startswith("set_language")] == ["set_language en"]
