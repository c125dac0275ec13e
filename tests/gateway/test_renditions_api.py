"""Issue "renditions" through the API: preview, the same-facts guarantee, budgets, codes."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from gateway.db.schema import agencies
from gateway.domain import Role
from tests.support.world import World

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
FACTS = {
    "what": "Pemadaman listrik",
    "when": "2026-12-01T09:00:00+07:00",
    "where": "Kecamatan Gambir",
    "action": "Siapkan penerangan darurat",
}


async def _subscribe_many(world: World, count: int, **fields: object) -> None:
    lines = ["phone,language,area_code"]
    lines += [f"+62813{i:08d},{fields.get('language', 'id')},31.71" for i in range(1, count + 1)]
    answer = await world.call(
        "POST",
        "/api/v1/subscribers/import",
        role=Role.OPERATOR,
        data="\n".join(lines),
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status == 200, answer.body


async def test_preview_counts_recipients_segments_and_cost(world: World) -> None:
    await _subscribe_many(world, 7)
    created = await world.announce(facts=FACTS, areas=["31"])
    answer = await world.call(
        "GET", f"/api/v1/announcements/{created['id']}/preview", role=Role.AUTHOR
    )
    assert answer.status == 200, answer.body
    (sms,) = answer.body["renditions"]
    assert (sms["channel"], sms["language"], sms["recipients"]) == ("sms", "id", 7)
    assert sms["encoding"] == "gsm7"
    assert sms["missing_facts"] == []
    assert "Kecamatan Gambir" in sms["text"] and created["verification_code"] in sms["text"]
    # The example price table: IDR 350 per segment for Indonesian numbers.
    assert Decimal(sms["estimated_cost"]) == Decimal(350) * sms["segments"] * 7
    assert answer.body["sms_segments"] == sms["segments"] * 7
    outside = await world.announce(facts=FACTS, areas=["32"])
    answer = await world.call(
        "GET", f"/api/v1/announcements/{outside['id']}/preview", role=Role.AUTHOR
    )
    assert answer.body["recipients"] == 0


async def test_submit_refuses_a_rendition_missing_a_fact(aiohttp_client, config, tmp_path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, templates)
    sms = templates / "id" / "sms.txt.j2"
    sms.write_text(sms.read_text().replace("Lokasi: {{ facts.where }}", ""))
    broken = config.model_copy(update={"templates_dir": templates})
    world = await World.start(aiohttp_client, broken)
    created = await world.announce(facts=FACTS)
    answer = await world.call(
        "POST", f"/api/v1/announcements/{created['id']}/submit", role=Role.AUTHOR
    )
    assert answer.status == 422
    assert answer.body["error"]["field"] == "facts.where"
    assert "sms" in answer.body["error"]["message"] and " id" in answer.body["error"]["message"]
    again = await world.call("GET", f"/api/v1/announcements/{created['id']}", role=Role.AUTHOR)
    assert again.body["status"] == "draft"


async def test_submit_refuses_what_cannot_fit(world: World) -> None:
    long_fact = "Jalan " + "sangat panjang " * 12
    created = await world.announce(
        facts={
            "what": long_fact.strip()[:200],
            "where": long_fact.strip()[:200],
            "action": long_fact.strip()[:200],
        }
    )
    answer = await world.call(
        "POST", f"/api/v1/announcements/{created['id']}/submit", role=Role.AUTHOR
    )
    assert answer.status == 422
    assert answer.body["error"]["code"] == "too_long"


async def test_approval_respects_the_budget_unless_emergency(world: World) -> None:
    await _subscribe_many(world, 10)
    async with world.engine.begin() as conn:
        await conn.execute(
            sa.update(agencies)
            .where(agencies.c.id == world.agency_ids[0])
            .values(budget_limit=1000)
        )
    normal = await world.announce(facts=FACTS, send_at="2099-01-01T00:00:00+00:00")
    path = f"/api/v1/announcements/{normal['id']}"
    assert (await world.call("POST", path + "/submit", role=Role.AUTHOR)).status == 200
    refused = await world.call("POST", path + "/approve", role=Role.APPROVER)
    assert refused.status == 409
    assert refused.body["error"]["code"] == "over_budget"
    emergency = await world.announce(
        facts=FACTS, urgency="emergency", send_at="2099-01-01T00:00:00+00:00"
    )
    path = f"/api/v1/announcements/{emergency['id']}"
    assert (await world.call("POST", path + "/submit", role=Role.AUTHOR)).status == 200
    approved = await world.call("POST", path + "/approve", role=Role.APPROVER)
    assert approved.status == 200, approved.body
    assert Decimal(approved.body["estimated_cost"]) > 1000


async def test_verification_codes_answer_genuine_or_not(world: World) -> None:
    created = await world.announce(facts=FACTS, send_at="2099-01-01T00:00:00+00:00")
    code = created["verification_code"]
    draft = await world.call("GET", f"/api/v1/verify/{code}", role=None)
    assert draft.body["genuine"] is False  # not yet approved: not an official message
    path = f"/api/v1/announcements/{created['id']}"
    await world.call("POST", path + "/submit", role=Role.AUTHOR)
    await world.call("POST", path + "/approve", role=Role.APPROVER)
    genuine = await world.call("GET", f"/api/v1/verify/{code.lower()}", role=None)
    assert genuine.body["genuine"] is True
    assert genuine.body["agency"] == "Agency Alpha"
    fake = await world.call("GET", "/api/v1/verify/ABCDEF", role=None)
    assert fake.body["genuine"] is False
    page = await world.client.get(f"/verify?code={code}")
    assert page.status == 200 and "ASLI" in await page.text()
    public = await world.client.get(f"/a/{code}")
    assert public.status == 200 and "Kecamatan Gambir" in await public.text()


async def test_verification_is_rate_limited_per_address(world: World) -> None:
    statuses = [
        (await world.call("GET", "/api/v1/verify/ABCDEF", role=None)).status for _ in range(25)
    ]
    assert statuses[:20] == [200] * 20
    assert 429 in statuses[20:]


async def test_a_broken_template_stops_the_start_naming_it(config, tmp_path) -> None:
    import pytest

    from gateway.app import create_app
    from gateway.config import ConfigProblem

    templates = tmp_path / "templates"
    shutil.copytree(REPO_TEMPLATES, templates)
    (templates / "en" / "x.txt.j2").write_text("{{ title }}\n{% if %}\n")
    with pytest.raises(ConfigProblem) as caught:
        create_app(config.model_copy(update={"templates_dir": templates}))
    assert "en/x.txt.j2" in str(caught.value)
    assert "line 2" in str(caught.value)


async def test_prices_follow_the_network_where_the_tariff_names_it(aiohttp_client, config) -> None:
    from gateway.config import PricingConfig

    priced = config.model_copy(
        update={
            "pricing": PricingConfig(
                per_region={"ID": Decimal(350)},
                per_network={"ID": {"Telkomsel": Decimal(400)}},
            )
        }
    )
    world = await World.start(aiohttp_client, priced)
    lines = ["phone,language,area_code"]
    lines += [f"+62812{i:08d},id,31.71" for i in range(1, 4)]  # Telkomsel
    lines += [f"+62857{i:08d},id,31.71" for i in range(1, 3)]  # Indosat
    imported = await world.call(
        "POST",
        "/api/v1/subscribers/import",
        role=Role.OPERATOR,
        data="\n".join(lines),
        headers={"Content-Type": "text/csv"},
    )
    assert imported.body["imported"] == 5
    created = await world.announce(facts=FACTS)
    answer = await world.call(
        "GET", f"/api/v1/announcements/{created['id']}/preview", role=Role.AUTHOR
    )
    (sms,) = answer.body["renditions"]
    segments = sms["segments"]
    assert Decimal(answer.body["estimated_cost"]) == segments * (3 * 400 + 2 * 350)
