"""The agency's people, for its administrators: list, add (with an initial password), change a
role, disable and enable, reset a password. And every user's own password
(``/dashboard/account/password``).

Only an ``admin`` of the agency sees or changes its users; a user of another agency is a 404.
Every change is one transaction with its audit event (actor, before and after; never a
password or its hash). The agency's last enabled administrator cannot be demoted or disabled,
and nobody can disable themselves, so an administrator cannot lock the agency out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.routing import path_id
from gateway.appkeys import CLOCK, ENGINE
from gateway.dashboard.web import (
    ACCOUNT_PASSWORD,
    PREFIX,
    SESSIONS,
    Ctx,
    allow_password_attempt,
    page,
    redirect,
)
from gateway.db.engine import reading
from gateway.domain import Role
from gateway.store import users as store
from gateway.store.audit import record

log = logging.getLogger("warta.dashboard")

USERS = PREFIX + "/users"
ROLES = tuple(role.value for role in Role)

# The page's own words (kept here, next to the only page that uses them).
WORDS: dict[str, tuple[str, str]] = {
    "users": ("Pengguna", "Users"),
    "add_user": ("Tambah pengguna", "Add a user"),
    "display_name": ("Nama", "Name"),
    "role": ("Peran", "Role"),
    "status": ("Status", "Status"),
    "active": ("Aktif", "Active"),
    "disabled": ("Nonaktif", "Disabled"),
    "last_login": ("Terakhir masuk", "Last sign-in"),
    "never": ("Belum pernah", "Never"),
    "initial_password": ("Kata sandi awal", "Initial password"),
    "password_hint": (
        "Minimal 10 karakter. Sampaikan kepada orangnya secara langsung; ia harus menggantinya "
        "saat pertama masuk.",
        "At least 10 characters. Hand it to the person directly; they must replace it when "
        "they first sign in.",
    ),
    "temporary_password": (
        "Kata sandi ini dibuat oleh admin instansi Anda. Pilih kata sandi Anda sendiri untuk "
        "melanjutkan.",
        "An administrator of your agency set this password. Choose your own to go on.",
    ),
    "new_password": ("Kata sandi baru", "New password"),
    "reset_password": ("Atur ulang kata sandi", "Reset password"),
    "change_role": ("Ubah peran", "Change role"),
    "disable": ("Nonaktifkan", "Disable"),
    "enable": ("Aktifkan", "Enable"),
    "you": ("Anda", "you"),
    "saved": ("Tersimpan.", "Saved."),
    "last_admin": (
        "Admin terakhir instansi tidak dapat dinonaktifkan atau diubah perannya.",
        "The agency's last administrator cannot be disabled or given another role.",
    ),
    "not_yourself": (
        "Anda tidak dapat menonaktifkan akun Anda sendiri.",
        "You cannot disable your own account.",
    ),
    "bad_role": ("Peran tidak dikenal.", "Unknown role."),
    "bad_email": ("Alamat email tidak valid.", "The e-mail address is not valid."),
    "email_taken": (
        "Email ini sudah dipakai pengguna instansi ini.",
        "This e-mail is already a user of this agency.",
    ),
    "bad_password": (
        "Kata sandi harus 10 sampai 1024 karakter.",
        "The password must have 10 to 1024 characters.",
    ),
    "current_password": ("Kata sandi sekarang", "Current password"),
    "new_password_again": ("Kata sandi baru sekali lagi", "New password again"),
    "change_password": ("Ganti kata sandi", "Change password"),
    "own_password_hint": (
        "Minimal 10 karakter. Setelah diganti, semua sesi Anda berakhir dan Anda masuk lagi.",
        "At least 10 characters. Afterwards every session of yours ends and you sign in again.",
    ),
    "wrong_password": ("Kata sandi sekarang salah.", "The current password is not right."),
    "mismatch": (
        "Kedua kata sandi baru tidak sama.",
        "The two new passwords are not the same.",
    ),
    "same_password": (
        "Kata sandi baru sama dengan yang sekarang.",
        "The new password is the current one.",
    ),
}


def _words(ctx: Ctx) -> Callable[[str], str]:
    index = 0 if ctx.lang == "id" else 1
    return lambda key: WORDS[key][index] if key in WORDS else ctx.t(key)


async def _users_page(
    ctx: Ctx, *, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
) -> web.Response:
    assert ctx.user is not None
    async with reading(ctx.request.app[ENGINE]) as conn:
        people = await store.list_users(conn, agency_id=ctx.user.agency_id)
    return ctx.render(
        "users.html",
        status=status,
        w=_words(ctx),
        people=people,
        roles=ROLES,
        error=error,
        saved=ctx.request.query.get("saved") == "1",
        form=form or {},
    )


AdminPage = Callable[[Ctx], Awaitable[web.StreamResponse]]


def _admin(handler: AdminPage) -> AdminPage:
    """Refuse everyone but the agency's administrators (403), before the page runs."""

    async def run(ctx: Ctx) -> web.StreamResponse:
        assert ctx.user is not None
        if ctx.user.role is not Role.ADMIN:
            return ctx.render("error.html", status=403, message=ctx.t("forbidden"))
        return await handler(ctx)

    run.__name__ = handler.__name__
    return run


async def _target(ctx: Ctx) -> store.User | None:
    """The user named in the path, if they belong to the signed-in admin's agency."""
    assert ctx.user is not None
    user_id = path_id(ctx.request, "user_id")
    async with reading(ctx.request.app[ENGINE]) as conn:
        found = await store.get_user(conn, user_id)
    if found is None or found.agency_id != ctx.user.agency_id:
        return None
    return found


def _state(user: store.User) -> dict[str, Any]:
    return {"email": user.email, "role": user.role.value, "disabled": user.disabled}


@page()
@_admin
async def users_page(ctx: Ctx) -> web.StreamResponse:
    return await _users_page(ctx)


@page()
@_admin
async def add_user(ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    w = _words(ctx)
    email, name, role = ctx.field("email"), ctx.field("display_name"), ctx.field("role")
    password = ctx.field("password")
    kept = {"email": email, "display_name": name, "role": role}
    if role not in ROLES:
        return await _users_page(ctx, status=422, error=w("bad_role"), form=kept)
    try:
        store.check_password_rules(password)
    except store.UserProblem:
        return await _users_page(ctx, status=422, error=w("bad_password"), form=kept)
    password_hash = await asyncio.to_thread(store.hash_password, password)
    now = ctx.request.app[CLOCK].now()
    try:
        async with ctx.request.app[ENGINE].begin() as conn:
            created = await store.create_user(
                conn,
                agency_slug=ctx.user.agency_slug,
                email=email,
                display_name=name[:200],
                role=Role(role),
                password_hash=password_hash,
                now=now,
                temporary=True,
            )
            await record(
                conn,
                principal=ctx.principal,
                action="user.create",
                subject=("user", created.id),
                now=now,
                after=_state(created),
            )
    except store.UserProblem as exc:
        key = "email_taken" if "already" in str(exc) else "bad_email"
        return await _users_page(ctx, status=422, error=w(key), form=kept)
    return redirect(USERS + "?saved=1")


async def _change(
    ctx: Ctx,
    action: str,
    change: Callable[[Any, store.User], Awaitable[dict[str, Any] | None]],
    *,
    then: str = USERS + "?saved=1",
) -> web.StreamResponse:
    """Run ``change`` on the path's user with its audit event, in one transaction."""
    target = await _target(ctx)
    if target is None:
        return ctx.render("error.html", status=404, message=ctx.t("page_not_found"))
    w = _words(ctx)
    now = ctx.request.app[CLOCK].now()
    try:
        async with ctx.request.app[ENGINE].begin() as conn:
            # Read again under the agency's lock: the state the change and its audit start from.
            await store.lock_agency_users(conn, agency_id=target.agency_id)
            target = await store.get_user(conn, target.id) or target
            after = await change(conn, target)
            if after is not None:
                await record(
                    conn,
                    principal=ctx.principal,
                    action=action,
                    subject=("user", target.id),
                    now=now,
                    before=_state(target),
                    after=after,
                )
    except store.LastAdmin:
        return await _users_page(ctx, status=409, error=w("last_admin"))
    return redirect(then)


@page()
@_admin
async def change_role(ctx: Ctx) -> web.StreamResponse:
    role = ctx.field("role")
    if role not in ROLES:
        return await _users_page(ctx, status=422, error=_words(ctx)("bad_role"))

    async def apply(conn: Any, target: store.User) -> dict[str, Any] | None:
        if target.role.value == role:
            return None
        await store.change_role(conn, user=target, role=Role(role))
        return {**_state(target), "role": role}

    assert ctx.user is not None
    # An admin who steps down can no longer see this page: back to the announcements.
    stepped_down = path_id(ctx.request, "user_id") == ctx.user.id and role != Role.ADMIN.value
    return await _change(
        ctx,
        "user.role",
        apply,
        then=PREFIX + "/announcements" if stepped_down else USERS + "?saved=1",
    )


@page()
@_admin
async def disable(ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    if path_id(ctx.request, "user_id") == ctx.user.id:
        return await _users_page(ctx, status=409, error=_words(ctx)("not_yourself"))
    now = ctx.request.app[CLOCK].now()

    async def apply(conn: Any, target: store.User) -> dict[str, Any] | None:
        if target.disabled:
            return None
        await store.disable_checked(conn, user=target, now=now)
        return {**_state(target), "disabled": True}

    return await _change(ctx, "user.disable", apply)


@page()
@_admin
async def enable(ctx: Ctx) -> web.StreamResponse:
    async def apply(conn: Any, target: store.User) -> dict[str, Any] | None:
        if not target.disabled:
            return None
        await store.enable_user(conn, user=target)
        return {**_state(target), "disabled": False}

    return await _change(ctx, "user.enable", apply)


@page()
@_admin
async def reset_password(ctx: Ctx) -> web.StreamResponse:
    password = ctx.field("password")
    try:
        store.check_password_rules(password)
    except store.UserProblem:
        return await _users_page(ctx, status=422, error=_words(ctx)("bad_password"))
    password_hash = await asyncio.to_thread(store.hash_password, password)
    now = ctx.request.app[CLOCK].now()

    async def apply(conn: Any, target: store.User) -> dict[str, Any] | None:
        await store.set_password(
            conn, user_id=target.id, password_hash=password_hash, now=now, temporary=True
        )
        # That it changed, never what to: no password or hash reaches the audit log.
        return {**_state(target), "password": "reset"}

    return await _change(ctx, "user.password_reset", apply)


def _account_page(ctx: Ctx, *, status: int = 200, error: str | None = None) -> web.Response:
    temporary = ctx.user is not None and ctx.user.password_temporary
    return ctx.render(
        "account.html", status=status, w=_words(ctx), error=error, temporary=temporary
    )


@page()
async def account_form(ctx: Ctx) -> web.StreamResponse:
    return _account_page(ctx)


@page()
async def change_own_password(ctx: Ctx) -> web.StreamResponse:
    """Any user, their own password: the current one first (a session left open on a shared
    computer must not be enough), counted against the same per-account limit as signing in.
    Every session of the user ends, this one too: they sign in again with the new password."""
    assert ctx.user is not None
    w = _words(ctx)
    app = ctx.request.app
    engine, now = app[ENGINE], app[CLOCK].now()
    current = ctx.field("current_password")
    new, again = ctx.field("new_password"), ctx.field("new_password_again")
    # What the form alone shows wrong costs no attempt and no hashing.
    if new != again:
        return _account_page(ctx, status=422, error=w("mismatch"))
    try:
        store.check_password_rules(new)
    except store.UserProblem:
        return _account_page(ctx, status=422, error=w("bad_password"))
    if new == current:
        return _account_page(ctx, status=422, error=w("same_password"))
    allowed = await allow_password_attempt(
        ctx.request, agency_slug=ctx.user.agency_slug, email=ctx.user.email, now=now
    )
    if not allowed:
        log.warning("dashboard: password change attempts throttled")
        return _account_page(ctx, status=429, error=ctx.t("login_throttled"))
    me = ctx.user  # read with its password hash for this request (``gateway.dashboard.web``)
    good = await asyncio.to_thread(
        store.verify_password, me.password_hash, current[: store.MAX_PASSWORD_LENGTH]
    )
    if not good:
        log.info("dashboard: password change refused (current password)")
        return _account_page(ctx, status=403, error=w("wrong_password"))
    password_hash = await asyncio.to_thread(store.hash_password, new)
    async with engine.begin() as conn:
        await store.set_password(conn, user_id=me.id, password_hash=password_hash, now=now)
        # That it changed, never what to: no password or hash reaches the audit log.
        await record(
            conn,
            principal=ctx.principal,
            action="user.password_change",
            subject=("user", me.id),
            now=now,
            after={"password": "changed"},
        )
    log.info("dashboard: user %s changed their password", me.id)
    ctx.session = app[SESSIONS].new(user_id=None, now=now.timestamp())
    ctx.new_session = True
    return redirect(PREFIX + "/login?password_changed=1")


def install(app: web.Application) -> None:
    router = app.router
    router.add_get(USERS, users_page)
    router.add_post(USERS, add_user)
    router.add_post(USERS + "/{user_id}/role", change_role)
    router.add_post(USERS + "/{user_id}/disable", disable)
    router.add_post(USERS + "/{user_id}/enable", enable)
    router.add_post(USERS + "/{user_id}/password", reset_password)
    router.add_get(ACCOUNT_PASSWORD, account_form)
    router.add_post(ACCOUNT_PASSWORD, change_own_password)
