"""Every change to a setting or a user writes exactly one audit event, with its actor, and
no secret: agency settings, quiet hours, API tokens, dashboard users, sign-in and sign-out.
The chain stays intact through all of them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from gateway.db.schema import audit_events, users
from gateway.domain import Role
from gateway.store.audit import verify_chain
from tests.gateway import test_dashboard
from tests.gateway.test_dashboard import PASSWORD, add_user
from tests.support.world import World

browsers = test_dashboard.browsers  # the fixture: one cookie jar per person


async def _events(world: World) -> list[dict[str, Any]]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(sa.select(audit_events).order_by(audit_events.c.id))
        return [dict(row) for row in rows.mappings()]


async def test_every_setting_and_user_change_is_audited_once_without_secrets(
    world: World, browsers: Any
) -> None:
    admin_email = await add_user(world, Role.ADMIN)
    admin = browsers(world)
    issued: dict[str, Any] = {}

    async def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = await world.call(method, path, role=Role.ADMIN, json=body)
        assert answer.status in (200, 201, 204), answer.body
        return answer.body

    async def issue_token() -> None:
        issued.update(await api("POST", "/api/v1/tokens", {"role": "operator", "name": "kiosk"}))

    async def dashboard(path: str, form: dict[str, Any]) -> None:
        await admin.get("/dashboard/users")
        assert (await admin.post(path, form)).status == 200

    async def user_id(email: str) -> int:
        async with world.engine.connect() as conn:
            return int(await conn.scalar(sa.select(users.c.id).where(users.c.email == email)))

    async def sign_in() -> None:
        assert (await admin.login(admin_email)).status == 200

    async def sign_out() -> None:
        await admin.get("/dashboard/announcements")
        assert (await admin.post("/dashboard/logout", {})).status == 200

    new_user = "kasi@alpha.go.id"
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("agency.settings", lambda: api("PATCH", "/api/v1/agency", {"name": "BPBD Baru"})),
        (
            "agency.quiet_hours",
            lambda: api("PUT", "/api/v1/agency/quiet-hours", {"quiet_hours": "22:00-05:00"}),
        ),
        ("token.issue", issue_token),
        ("token.revoke", lambda: api("DELETE", f"/api/v1/tokens/{issued['id']}")),
        ("user.login", sign_in),
        (
            "user.create",
            lambda: dashboard(
                "/dashboard/users",
                {"email": new_user, "role": "author", "password": "initial password 1"},
            ),
        ),
    ]
    for action, step in steps:
        before = len(await _events(world))
        await step()
        new = (await _events(world))[before:]
        assert [event["action"] for event in new] == [action]
        assert new[0]["actor"].startswith("token:") and new[0]["agency_id"] is not None

    target = await user_id(new_user)
    user_steps: list[tuple[str, str, dict[str, Any]]] = [
        ("user.role", f"/dashboard/users/{target}/role", {"role": "approver"}),
        ("user.disable", f"/dashboard/users/{target}/disable", {}),
        ("user.enable", f"/dashboard/users/{target}/enable", {}),
        (
            "user.password_reset",
            f"/dashboard/users/{target}/password",
            {"password": "another password 2"},
        ),
    ]
    for action, path, form in user_steps:
        before = len(await _events(world))
        await dashboard(path, form)
        new = (await _events(world))[before:]
        assert [event["action"] for event in new] == [action]
        assert new[0]["before"] is not None and new[0]["after"] is not None
        assert new[0]["subject_type"] == "user" and new[0]["subject_id"] == str(target)

    before = len(await _events(world))
    await sign_out()
    assert [e["action"] for e in (await _events(world))[before:]] == ["user.logout"]

    await sign_in()
    await admin.get("/dashboard/account/password")
    own = "my own password 3"
    before = len(await _events(world))
    changed = await admin.post(
        "/dashboard/account/password",
        {"current_password": PASSWORD, "new_password": own, "new_password_again": own},
    )
    assert changed.status == 200
    new = (await _events(world))[before:]
    assert [e["action"] for e in new] == ["user.password_change"]
    assert new[0]["subject_id"] == str(await user_id(admin_email))

    everything = json.dumps(await _events(world), default=str)
    secrets = (issued["token"], PASSWORD, "initial password 1", "another password 2", own)
    for secret in (*secrets, "argon2"):
        assert secret not in everything
    async with world.engine.connect() as conn:
        assert await verify_chain(conn) == []
