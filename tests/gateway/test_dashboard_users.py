"""The dashboard's user management, through HTTP on both databases: only an agency's
administrators see and change its users; every change is audited without secrets; CSRF on
every form; the last administrator cannot be demoted or disabled."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.db.schema import audit_events, users
from gateway.domain import Role
from tests.gateway import test_dashboard
from tests.gateway.test_dashboard import PASSWORD, Browser, add_user
from tests.support.world import World

browsers = test_dashboard.browsers  # the fixture: one cookie jar per person

NEW_PASSWORD = "a brand new password 42"


async def _signed_in(world: World, browsers: Any, role: Role, **kw: Any) -> tuple[Browser, str]:
    email = await add_user(world, role, **kw)
    browser = browsers(world)
    assert (await browser.login(email, agency=kw.get("agency", 0))).status == 200
    return browser, email


async def _user_id(world: World, email: str) -> int:
    async with world.engine.connect() as conn:
        found = await conn.scalar(sa.select(users.c.id).where(users.c.email == email))
    assert found is not None
    return int(found)


async def _events(world: World, action: str) -> list[dict[str, Any]]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(audit_events)
            .where(audit_events.c.action == action)
            .order_by(audit_events.c.id)
        )
        return [dict(row) for row in rows.mappings()]


async def _all_audit_text(world: World) -> str:
    async with world.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit_events))).mappings().all()
    return json.dumps([dict(r) for r in rows], default=str)


async def _password_is(world: World, email: str, password: str) -> bool:
    from gateway.store.users import verify_password

    async with world.engine.connect() as conn:
        stored = await conn.scalar(sa.select(users.c.password_hash).where(users.c.email == email))
    return verify_password(stored, password)


async def _user_count(world: World) -> int:
    async with world.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(users)) or 0)


@pytest.mark.parametrize("role", [Role.AUTHOR, Role.APPROVER, Role.OPERATOR])
async def test_only_admins_see_or_change_users(world: World, browsers: Any, role: Role) -> None:
    browser, _ = await _signed_in(world, browsers, role)
    target = await add_user(world, Role.ADMIN)
    target_id = await _user_id(world, target)
    page = await browser.get("/dashboard/users")
    assert page.status == 403
    assert 'href="/dashboard/users"' not in (await browser.get("/dashboard/announcements")).text
    before = await _user_count(world)
    for path, form in [
        ("/dashboard/users", {"email": "x@alpha.go.id", "role": "admin", "password": PASSWORD}),
        (f"/dashboard/users/{target_id}/role", {"role": "author"}),
        (f"/dashboard/users/{target_id}/disable", {}),
        (f"/dashboard/users/{target_id}/password", {"password": NEW_PASSWORD}),
    ]:
        await browser.get("/dashboard/announcements")
        assert (await browser.post(path, form)).status == 403
    assert await _user_count(world) == before
    assert await _events(world, "user.role") == []


async def test_admin_lists_only_their_agency_and_adds_a_user_who_can_sign_in(
    world: World, browsers: Any
) -> None:
    admin, admin_email = await _signed_in(world, browsers, Role.ADMIN)
    elsewhere = await add_user(world, Role.AUTHOR, agency=1)
    page = await admin.get("/dashboard/users")
    assert page.status == 200
    assert admin_email in page.text and elsewhere not in page.text
    assert 'href="/dashboard/users"' in page.text

    added = await admin.post(
        "/dashboard/users",
        {
            "email": "New.Approver@alpha.go.id",
            "display_name": "Siti",
            "role": "approver",
            "password": NEW_PASSWORD,
        },
    )
    assert added.status == 200
    assert "new.approver@alpha.go.id" in added.text
    newcomer = browsers(world)
    assert (await newcomer.login("new.approver@alpha.go.id", password=NEW_PASSWORD)).status == 200
    # The administrator chose that password: the newcomer's first stop is choosing their own.
    first = await newcomer.get("/dashboard/approvals")
    assert first.url.endswith("/dashboard/account/password")
    assert "dibuat oleh admin" in first.text

    (event,) = await _events(world, "user.create")
    assert event["actor"].endswith(":admin")
    assert event["after"] == {
        "email": "new.approver@alpha.go.id",
        "role": "approver",
        "disabled": False,
    }
    audit = await _all_audit_text(world)
    assert NEW_PASSWORD not in audit and "argon2" not in audit


async def test_bad_input_is_a_422_naming_the_problem_and_writes_nothing(
    world: World, browsers: Any
) -> None:
    admin, admin_email = await _signed_in(world, browsers, Role.ADMIN)
    before = await _user_count(world)
    cases = [
        ({"email": "a@alpha.go.id", "role": "root", "password": NEW_PASSWORD}, "Peran tidak"),
        ({"email": "a@alpha.go.id", "role": "author", "password": "short"}, "10 sampai 1024"),
        ({"email": "not an email", "role": "author", "password": NEW_PASSWORD}, "tidak valid"),
        ({"email": admin_email, "role": "author", "password": NEW_PASSWORD}, "sudah dipakai"),
    ]
    for form, message in cases:
        await admin.get("/dashboard/users")
        page = await admin.post("/dashboard/users", form)
        assert page.status == 422, form
        assert message in page.text
    assert await _user_count(world) == before
    assert await _events(world, "user.create") == []
    await admin.get("/dashboard/users")
    admin_id = await _user_id(world, admin_email)
    assert (await admin.post(f"/dashboard/users/{admin_id}/role", {"role": "x"})).status == 422


async def test_role_change_disable_enable_and_reset_are_audited_and_take_effect(
    world: World, browsers: Any
) -> None:
    admin, _ = await _signed_in(world, browsers, Role.ADMIN)
    person, email = await _signed_in(world, browsers, Role.AUTHOR)
    person_id = await _user_id(world, email)

    await admin.get("/dashboard/users")
    assert (
        await admin.post(f"/dashboard/users/{person_id}/role", {"role": "approver"})
    ).status == 200
    assert (await person.get("/dashboard/approvals")).status == 200
    (changed,) = await _events(world, "user.role")
    assert changed["before"]["role"] == "author" and changed["after"]["role"] == "approver"
    assert changed["subject_id"] == str(person_id)

    await admin.get("/dashboard/users")
    assert (await admin.post(f"/dashboard/users/{person_id}/disable", {})).status == 200
    # Their session ends at once, and they cannot sign in again.
    assert (await person.get("/dashboard/announcements", follow=False)).status == 303
    assert (await browsers(world).login(email)).status == 401
    await admin.get("/dashboard/users")
    assert (await admin.post(f"/dashboard/users/{person_id}/enable", {})).status == 200
    assert [e["after"]["disabled"] for e in await _events(world, "user.disable")] == [True]
    assert [e["after"]["disabled"] for e in await _events(world, "user.enable")] == [False]

    again = browsers(world)
    assert (await again.login(email)).status == 200
    assert (await again.get("/dashboard/announcements")).status == 200
    await admin.get("/dashboard/users")
    reset = await admin.post(f"/dashboard/users/{person_id}/password", {"password": NEW_PASSWORD})
    assert reset.status == 200
    assert (await again.get("/dashboard/announcements", follow=False)).status == 303
    assert (await browsers(world).login(email)).status == 401
    assert (await browsers(world).login(email, password=NEW_PASSWORD)).status == 200
    (event,) = await _events(world, "user.password_reset")
    assert event["after"]["password"] == "reset"
    assert NEW_PASSWORD not in await _all_audit_text(world)


async def test_the_last_admin_cannot_be_demoted_or_disabled(world: World, browsers: Any) -> None:
    admin, admin_email = await _signed_in(world, browsers, Role.ADMIN)
    admin_id = await _user_id(world, admin_email)
    await admin.get("/dashboard/users")
    refused = await admin.post(f"/dashboard/users/{admin_id}/role", {"role": "operator"})
    assert refused.status == 409
    assert "Admin terakhir" in refused.text
    await admin.get("/dashboard/users")
    own = await admin.post(f"/dashboard/users/{admin_id}/disable", {})
    assert own.status == 409

    second_email = await add_user(world, Role.ADMIN, email="second@alpha.go.id")
    second_id = await _user_id(world, second_email)
    # With a second admin, one may step down; then the other is the last.
    await admin.get("/dashboard/users")
    assert (
        await admin.post(f"/dashboard/users/{admin_id}/role", {"role": "operator"})
    ).status == 200
    second, _ = browsers(world), None
    assert (await second.login(second_email)).status == 200
    await second.get("/dashboard/users")
    assert (
        await second.post(f"/dashboard/users/{second_id}/role", {"role": "author"})
    ).status == 409
    # The former admin is an operator now: the page is closed to them.
    assert (await admin.get("/dashboard/users")).status == 403
    async with world.engine.connect() as conn:
        admins = await conn.scalar(
            sa.select(sa.func.count()).select_from(users).where(users.c.role == "admin")
        )
    assert admins == 1


async def test_forms_need_the_csrf_token_and_other_agencies_users_are_not_found(
    world: World, browsers: Any
) -> None:
    admin, _ = await _signed_in(world, browsers, Role.ADMIN)
    person = await add_user(world, Role.AUTHOR)
    person_id = await _user_id(world, person)
    other = await _user_id(world, await add_user(world, Role.ADMIN, agency=1))
    await admin.get("/dashboard/users")
    for path, form in [
        ("/dashboard/users", {"email": "y@alpha.go.id", "role": "admin", "password": PASSWORD}),
        (f"/dashboard/users/{person_id}/role", {"role": "admin"}),
        (f"/dashboard/users/{person_id}/disable", {}),
        (f"/dashboard/users/{person_id}/password", {"password": NEW_PASSWORD}),
    ]:
        assert (await admin.post(path, form, csrf=None)).status == 403
        assert (await admin.post(path, form, csrf="forged")).status == 403
    await admin.get("/dashboard/users")
    assert (await admin.post(f"/dashboard/users/{other}/disable", {})).status == 404
    await admin.get("/dashboard/users")
    assert (await admin.post(f"/dashboard/users/{other}/role", {"role": "author"})).status == 404
    async with world.engine.connect() as conn:
        rows = (await conn.execute(sa.select(users.c.role, users.c.disabled_at))).all()
    assert all(row.disabled_at is None for row in rows)
    assert await _events(world, "user.role") == [] and await _events(world, "user.create") == []


@pytest.mark.parametrize("role", list(Role))
async def test_anyone_changes_their_own_password_knowing_the_current_one(
    world: World, browsers: Any, role: Role
) -> None:
    me, email = await _signed_in(world, browsers, role)
    elsewhere = browsers(world)  # the same person signed in on another computer
    assert (await elsewhere.login(email)).status == 200
    page = "/dashboard/account/password"
    assert 'href="/dashboard/account/password"' in (await me.get("/dashboard/announcements")).text

    def form(current: str, new: str, again: str | None = None) -> dict[str, str]:
        return {
            "current_password": current,
            "new_password": new,
            "new_password_again": again or new,
        }

    # Sign-in and this form share the 5-per-5-minutes limit per account: the two sign-ins
    # above, one wrong current password, the change and one sign-in below make five.
    refusals = [
        (form(PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x"), 422, "not the same"),
        (form(PASSWORD, "short"), 422, "10 to 1024"),
        (form(PASSWORD, PASSWORD), 422, "is the current one"),
        (form("not my password at all", NEW_PASSWORD), 403, "not right"),
    ]
    for data, status, words in refusals:
        await me.get(page + "?lang=en")
        refused = await me.post(page, data)
        assert (refused.status, words in refused.text) == (status, True), refused.text[-400:]
    assert await _events(world, "user.password_change") == []
    assert await _password_is(world, email, PASSWORD)

    await me.get(page + "?lang=en")
    changed = await me.post(page, form(PASSWORD, NEW_PASSWORD))
    assert changed.status == 200 and changed.url.endswith("/dashboard/login?password_changed=1")
    assert "Password changed" in changed.text
    # Every session of theirs ends, this one and the other computer's.
    assert (await me.get("/dashboard/announcements", follow=False)).status == 303
    assert (await elsewhere.get("/dashboard/announcements", follow=False)).status == 303
    assert not await _password_is(world, email, PASSWORD)
    assert (await browsers(world).login(email, password=NEW_PASSWORD)).status == 200
    (event,) = await _events(world, "user.password_change")
    assert event["subject_id"] == str(await _user_id(world, email))
    assert event["after"] == {"password": "changed"}
    assert NEW_PASSWORD not in await _all_audit_text(world)
    assert PASSWORD not in await _all_audit_text(world)


async def test_guessing_the_current_password_is_limited_like_signing_in(
    world: World, browsers: Any
) -> None:
    me, email = await _signed_in(world, browsers, Role.AUTHOR)
    page = "/dashboard/account/password"
    statuses = []
    for n in range(7):
        await me.get(page)
        guess = {
            "current_password": f"guess number {n}",
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        }
        statuses.append((await me.post(page, guess)).status)
    # The sign-in before counted once against the same 5-per-5-minutes account limit.
    assert statuses == [403, 403, 403, 403, 429, 429, 429]
    assert (await browsers(world).login(email)).status == 429
    await me.get(page)
    no_csrf = await me.post(page, {"current_password": PASSWORD}, csrf=None)
    assert no_csrf.status == 403


async def test_a_password_an_admin_set_must_be_replaced_before_anything_else(
    world: World, browsers: Any
) -> None:
    admin, _ = await _signed_in(world, browsers, Role.ADMIN)
    person, email = await _signed_in(world, browsers, Role.AUTHOR)
    person_id = await _user_id(world, email)
    # The person's own password works everywhere until an administrator resets it.
    assert (await person.get("/dashboard/announcements")).url.endswith("/dashboard/announcements")
    await admin.get("/dashboard/users")
    reset = await admin.post(f"/dashboard/users/{person_id}/password", {"password": NEW_PASSWORD})
    assert reset.status == 200

    person = browsers(world)
    assert (await person.login(email, password=NEW_PASSWORD)).status == 200
    for path in ("/dashboard/announcements", "/dashboard/announcements/new", "/dashboard/inbox"):
        answer = await person.get(path + "?lang=en", follow=False)
        assert answer.status == 303 and answer.headers["Location"].endswith(
            "/dashboard/account/password"
        ), path
    form_page = await person.get("/dashboard/account/password?lang=en")
    assert "An administrator of your agency set this password" in form_page.text
    # Nothing can be done in the meantime, not even with a valid form token.
    refused = await person.post(
        "/dashboard/announcements", {"title": "Uji", "body": "Isi", "channels": "sms"}
    )
    assert refused.status == 403 and "Choose your own password first" in refused.text

    await person.get("/dashboard/account/password")
    changed = await person.post(
        "/dashboard/account/password",
        {
            "current_password": NEW_PASSWORD,
            "new_password": "my very own password 7",
            "new_password_again": "my very own password 7",
        },
    )
    assert changed.url.endswith("/dashboard/login?password_changed=1")
    again = browsers(world)
    assert (await again.login(email, password="my very own password 7")).status == 200
    page = await again.get("/dashboard/announcements")
    assert page.url.endswith("/dashboard/announcements")
    assert "dibuat oleh admin" not in (await again.get("/dashboard/account/password")).text
