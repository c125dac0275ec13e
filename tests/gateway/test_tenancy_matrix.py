"""Every API endpoint, one by one: the roles it refuses, and that one agency's admin can neither
read nor change another agency's things. The list of endpoints comes from the app itself, so a
new endpoint without an entry here fails this test until someone decides what it needs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.api.routing import Route
from gateway.app import API_MODULES
from gateway.domain import Role
from tests.support.config import make_config
from tests.support.world import World

ROUTES: list[Route] = [route for module in API_MODULES for route in module.routes]
SOON = (datetime.now(UTC) + timedelta(days=3)).isoformat()
MARK = "Rahasia-Alpha-7Q"  # appears only in agency alpha's data

# A valid body for each endpoint that takes one, so a refusal is about who asks, not the body.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/announcements"): {"title": "t", "body": "b", "channels": ["sms"]},
    ("PUT", "/api/v1/announcements/{id}"): {"title": "t", "body": "b", "channels": ["sms"]},
    ("POST", "/api/v1/announcements/preview"): {"title": "t", "body": "b", "channels": ["sms"]},
    ("POST", "/api/v1/inbox/{thread_id}/assign"): {},
    ("POST", "/api/v1/inbox/{thread_id}/reply"): {"text": "Terima kasih"},
    ("PATCH", "/api/v1/announcements/{id}/schedule"): {"send_at": SOON},
    ("PUT", "/api/v1/agency/quiet-hours"): {"quiet_hours": "22:00-05:00"},
    ("POST", "/api/v1/subscribers"): {"phone": "+6281299990001"},
    ("POST", "/api/v1/subscribers/search"): {"phone": "+6281200000001"},
    ("POST", "/api/v1/tokens"): {"role": "author", "name": "n"},
    ("PATCH", "/api/v1/agency"): {"budget_limit": "1000"},
}
# Endpoints that name no object of one agency: their answers must just not show alpha's data.
AGENCY_WIDE = {
    ("GET", "/api/v1/agency"),
    ("PATCH", "/api/v1/agency"),
    ("POST", "/api/v1/announcements"),
    ("POST", "/api/v1/announcements/preview"),
    ("GET", "/api/v1/announcements"),
    ("POST", "/api/v1/cap"),
    ("GET", "/api/v1/inbox"),
    ("GET", "/api/v1/agency/quiet-hours"),
    ("PUT", "/api/v1/agency/quiet-hours"),
    ("GET", "/api/v1/stats"),
    ("POST", "/api/v1/subscribers"),
    ("POST", "/api/v1/subscribers/import"),
    ("GET", "/api/v1/subscribers"),
    ("POST", "/api/v1/subscribers/search"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
}


def _key(route: Route) -> tuple[str, str]:
    return route.method, route.path


def _params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def test_every_endpoint_is_in_this_matrix() -> None:
    for route in ROUTES:
        params = _params(route.path)
        if route.roles is None:
            continue
        assert params or _key(route) in AGENCY_WIDE, f"{_key(route)}: add it to AGENCY_WIDE"
        if route.body is not None:
            assert _key(route) in BODIES, f"{_key(route)}: add a valid body to BODIES"


@pytest.fixture
async def world(aiohttp_client: Any, database_url: str, keys: dict[str, str]) -> World:
    config = make_config(
        database_url, {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    )
    return await World.start(aiohttp_client, config)


async def _alpha_things(world: World, keys: dict[str, str]) -> dict[str, int | str]:
    """One of each thing in agency alpha (index 0), named by the path parameter that names it."""
    created = await world.announce(title=MARK)
    subscriber = await world.subscribe("+6281200000001")
    assert subscriber.status == 201, subscriber.body
    token = await world.call(
        "POST", "/api/v1/tokens", role=Role.ADMIN, json={"role": "operator", "name": MARK}
    )
    assert token.status == 201, token.body
    form = {"from": "+6281200000001", "to": "21234", "text": MARK, "date": "", "id": "m-1"}
    path = f"/callbacks/africastalking/{keys['callback_token']}/sms/inbound"
    async with world.client.post(path, data=form) as response:
        assert response.status == 200, await response.text()
    threads = await world.call("GET", "/api/v1/inbox", role=Role.OPERATOR)
    assert threads.status == 200 and threads.body["items"], threads.body
    return {
        "id": created["id"],
        "subscriber": subscriber.body["id"],
        "token": token.body["id"],
        "thread_id": threads.body["items"][0]["id"],
        "code": created["verification_code"],
    }


def _fill(route: Route, things: dict[str, int | str]) -> str:
    path = route.path
    if "/subscribers/{id}" in path:
        return path.replace("{id}", str(things["subscriber"]))
    if "/tokens/{id}" in path:
        return path.replace("{id}", str(things["token"]))
    for name in _params(path):
        path = path.replace("{" + name + "}", str(things[name]))
    return path


async def test_no_endpoint_lets_one_agency_reach_anothers_things(
    world: World, keys: dict[str, str]
) -> None:
    things = await _alpha_things(world, keys)
    checked = 0
    for route in ROUTES:
        if route.roles is None:
            continue  # public: the verification of a code, the same answer for anyone
        path = _fill(route, things)
        body = BODIES.get(_key(route))
        headers = None
        data = None
        if route.path.endswith("/import"):
            data, headers = "phone\n+6281299990002\n", {"Content-Type": "text/csv"}
        elif route.path.endswith("/cap"):
            data, headers = "<alert/>", {"Content-Type": "application/cap+xml"}
        # Agency beta's admin passes every role check: only the agency can stop it.
        answer = await world.call(
            route.method, path, role=Role.ADMIN, agency=1, json=body, data=data, headers=headers
        )
        text = str(answer.body)
        assert MARK not in text, f"{route.method} {path} showed alpha's data to beta"
        if _params(route.path):
            assert answer.status == 404, f"{route.method} {path}: {answer.status} {answer.body}"
        else:
            assert answer.status < 500, f"{route.method} {path}: {answer.status}"
        checked += 1
    assert checked == sum(1 for r in ROUTES if r.roles is not None)

    # And nothing of alpha's changed: its announcement is still a draft, its things still there.
    mine = await world.call("GET", f"/api/v1/announcements/{things['id']}", role=Role.AUTHOR)
    assert mine.status == 200 and mine.body["status"] == "draft"
    tokens = await world.call("GET", "/api/v1/tokens", role=Role.ADMIN)
    assert [t["revoked_at"] for t in tokens.body["items"] if t["name"] == MARK] == [None]


@pytest.mark.parametrize("role", [Role.AUTHOR, Role.APPROVER, Role.OPERATOR])
async def test_each_role_is_refused_where_it_has_no_business(
    world: World, keys: dict[str, str], role: Role
) -> None:
    things = await _alpha_things(world, keys)
    refused = 0
    for route in ROUTES:
        if route.roles is None or role in route.roles:
            continue
        answer = await world.call(
            route.method, _fill(route, things), role=role, json=BODIES.get(_key(route))
        )
        assert answer.status == 403, f"{role} {route.method} {route.path}: {answer.status}"
        assert answer.body["error"]["code"] == "forbidden"
        refused += 1
    assert refused > 0
    anonymous = await world.call("GET", "/api/v1/announcements", role=None)
    assert anonymous.status == 401


async def test_tokens_are_shown_once_used_and_revoked(world: World) -> None:
    issued = await world.call(
        "POST", "/api/v1/tokens", role=Role.ADMIN, json={"role": "author", "name": "humas"}
    )
    assert issued.status == 201
    token = issued.body["token"]
    assert token.startswith(issued.body["prefix"])

    async with world.client.get(
        "/api/v1/announcements", headers={"Authorization": f"Bearer {token}"}
    ) as used:
        assert used.status == 200
        assert used.headers["X-Content-Type-Options"] == "nosniff"
        assert used.headers["Cache-Control"] == "no-store"
    listed = await world.call("GET", "/api/v1/tokens", role=Role.ADMIN)
    assert token not in str(listed.body)
    mine = next(t for t in listed.body["items"] if t["id"] == issued.body["id"])
    assert mine["last_used_at"] is not None and mine["revoked_at"] is None

    revoked = await world.call("DELETE", f"/api/v1/tokens/{issued.body['id']}", role=Role.ADMIN)
    assert revoked.status == 200 and revoked.body["revoked_at"] is not None
    again = await world.call("DELETE", f"/api/v1/tokens/{issued.body['id']}", role=Role.ADMIN)
    assert again.status == 200  # idempotent
    async with world.client.get(
        "/api/v1/announcements", headers={"Authorization": f"Bearer {token}"}
    ) as refused:
        assert refused.status == 401

    bad = await world.call("POST", "/api/v1/tokens", role=Role.ADMIN, json={"role": "king"})
    assert bad.status == 422 and bad.body["error"]["field"] in ("role", "name")


async def test_security_headers_on_every_kind_of_answer(world: World) -> None:
    for path in ("/api/v1/nothing-here", "/healthz", "/api/v1/openapi.json", "/verify"):
        async with world.client.get(path) as response:
            assert response.status < 500
            assert response.headers["X-Content-Type-Options"] == "nosniff", path
            assert response.headers["X-Frame-Options"] == "DENY", path
            assert "Content-Security-Policy" in response.headers, path
