"""An agency's settings through the API: budget, time zone, language, and whether one person
may approve an emergency they wrote (flagged in the audit log when they do)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from gateway.db.schema import audit_events
from gateway.domain import Role
from tests.support.config import make_config
from tests.support.world import World

AGENCY = "/api/v1/agency"


@pytest.fixture
async def world(aiohttp_client: Any, database_url: str, keys: dict[str, str]) -> World:
    config = make_config(
        database_url, {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    )
    return await World.start(aiohttp_client, config)


async def _audit(world: World, action: str) -> list[dict[str, Any]]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(sa.select(audit_events).where(audit_events.c.action == action))
        return [dict(r) for r in rows.mappings()]


async def test_settings_are_read_by_all_and_changed_by_admins_only(world: World) -> None:
    read = await world.call("GET", AGENCY, role=Role.AUTHOR)
    assert read.status == 200
    assert read.body["budget_limit"] is None
    assert read.body["emergency_single_approval"] is False

    refused = await world.call("PATCH", AGENCY, role=Role.OPERATOR, json={"name": "X"})
    assert refused.status == 403

    changed = await world.call(
        "PATCH",
        AGENCY,
        role=Role.ADMIN,
        json={"budget_limit": "250000", "timezone": "Asia/Makassar", "default_language": "en"},
    )
    assert changed.status == 200, changed.body
    assert (
        changed.body["budget_limit"] == "250000.0000"
        or float(changed.body["budget_limit"]) == 250000
    )
    assert changed.body["timezone"] == "Asia/Makassar"
    assert changed.body["default_language"] == "en"
    [event] = await _audit(world, "agency.settings")
    assert event["after"]["timezone"] == "Asia/Makassar"
    assert event["before"]["budget_limit"] is None

    cleared = await world.call("PATCH", AGENCY, role=Role.ADMIN, json={"budget_limit": None})
    assert cleared.status == 200 and cleared.body["budget_limit"] is None

    # The other agency's settings did not move.
    other = await world.call("GET", AGENCY, role=Role.ADMIN, agency=1)
    assert other.body["timezone"] == "Asia/Jakarta"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"default_language": "fr"}, "default_language"),
        ({"budget_limit": "-5"}, "budget_limit"),
        ({"name": None}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_settings_name_the_field_and_change_nothing(
    world: World, body: dict[str, Any], field: str
) -> None:
    answer = await world.call("PATCH", AGENCY, role=Role.ADMIN, json=body)

    assert answer.status == 422, answer.body
    assert answer.body["error"]["field"] == field
    assert await _audit(world, "agency.settings") == []


async def _emergency_by_admin(world: World, urgency: str = "emergency") -> int:
    created = await world.call(
        "POST",
        "/api/v1/announcements",
        role=Role.ADMIN,
        json={
            "title": "Tsunami",
            "body": "Segera ke tempat tinggi.",
            "channels": ["sms"],
            "urgency": urgency,
        },
    )
    assert created.status == 201, created.body
    path = f"/api/v1/announcements/{created.body['id']}"
    submitted = await world.call("POST", path + "/submit", role=Role.ADMIN)
    assert submitted.status == 200, submitted.body
    return int(created.body["id"])


async def test_one_person_approves_an_emergency_only_where_the_agency_allows_it(
    world: World,
) -> None:
    first = await _emergency_by_admin(world)
    refused = await world.call("POST", f"/api/v1/announcements/{first}/approve", role=Role.ADMIN)
    assert refused.status == 403
    assert refused.body["error"]["code"] == "two_person_rule"

    allowed = await world.call(
        "PATCH", AGENCY, role=Role.ADMIN, json={"emergency_single_approval": True}
    )
    assert allowed.status == 200
    approved = await world.call("POST", f"/api/v1/announcements/{first}/approve", role=Role.ADMIN)
    assert approved.status == 200, approved.body
    [event] = await _audit(world, "announcement.approve")
    assert event["after"]["single_approval"] is True

    # A normal announcement still needs a second person.
    normal = await _emergency_by_admin(world, urgency="normal")
    again = await world.call("POST", f"/api/v1/announcements/{normal}/approve", role=Role.ADMIN)
    assert again.status == 403
