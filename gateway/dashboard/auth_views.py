"""Signing in and out.

A wrong password, an unknown e-mail, an unknown agency and a disabled user all get the same
page, after the same work (one argon2 verification, against a dummy hash when there is no
user). Attempts are limited per client address and per account (agency + e-mail) before any
hashing, so a flood costs the server one counter upsert per attempt; the counters are in the
database (``gateway.attempts``), so the limits hold across every process. The per-account
limit is loose enough (5 in 5 minutes) that an attacker can slow, not lock out, a user.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.appkeys import CLOCK, ENGINE
from gateway.dashboard.web import (
    LOGIN_BY_ADDRESS,
    PREFIX,
    SESSIONS,
    Ctx,
    allow_password_attempt,
    client_address,
    page,
    redirect,
)
from gateway.db.engine import reading
from gateway.store import users as store
from gateway.store.audit import record

log = logging.getLogger("warta.dashboard")


def _safe_next(value: str) -> str:
    """Only a path inside the dashboard: never another site (an open redirect)."""
    if value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


@page(login=False)
async def login_form(ctx: Ctx) -> web.StreamResponse:
    if ctx.user is not None:
        return redirect(PREFIX + "/")
    query = ctx.request.query
    notice = None
    if query.get("password_changed") == "1":
        notice = ctx.t("password_changed")
    elif query.get("signed_out") == "1":
        notice = ctx.t("signed_out")
    return ctx.render("login.html", next=_safe_next(query.get("next", "")), notice=notice)


@page(login=False)
async def login(ctx: Ctx) -> web.StreamResponse:
    request = ctx.request
    agency = ctx.field("agency")[:64].lower()
    email = store.normalise_email(ctx.field("email"))[:254]
    password = ctx.field("password")
    target = _safe_next(ctx.field("next"))

    def refuse(key: str, status: int) -> web.Response:
        return ctx.render(
            "login.html", status=status, error=ctx.t(key), agency=agency, email=email, next=target
        )

    engine, now = request.app[ENGINE], request.app[CLOCK].now()
    by_address = await request.app[LOGIN_BY_ADDRESS].allow(engine, client_address(request), now=now)
    by_account = await allow_password_attempt(request, agency_slug=agency, email=email, now=now)
    if not (by_address and by_account):
        log.warning("dashboard: sign-in attempts throttled")
        return refuse("login_throttled", 429)
    if not password or len(password) > store.MAX_PASSWORD_LENGTH:
        await asyncio.to_thread(store.verify_password, None, "-")
        return refuse("login_failed", 401)
    async with reading(request.app[ENGINE]) as conn:
        user = await store.find_for_login(conn, agency_slug=agency, email=email)
    good = await asyncio.to_thread(
        store.verify_password, None if user is None else user.password_hash, password
    )
    if user is None or user.disabled or not good:
        log.info("dashboard: sign-in refused")
        return refuse("login_failed", 401)
    now = request.app[CLOCK].now()
    new_hash = None
    if store.needs_rehash(user.password_hash):
        new_hash = await asyncio.to_thread(store.hash_password, password)
    async with request.app[ENGINE].begin() as conn:
        await store.record_login(conn, user_id=user.id, now=now, new_hash=new_hash)
        await record(
            conn,
            principal=user.principal(),
            action="user.login",
            subject=("user", user.id),
            now=now,
        )
    log.info("dashboard: user %s signed in", user.id)
    # A fresh session id at sign-in: an id planted before it (fixation) is worth nothing.
    ctx.session = request.app[SESSIONS].new(user_id=user.id, now=now.timestamp())
    ctx.new_session = True
    return redirect(target)


@page()
async def logout(ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    request = ctx.request
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        await store.end_sessions(conn, user_id=ctx.user.id, now=now)
        await record(
            conn,
            principal=ctx.principal,
            action="user.logout",
            subject=("user", ctx.user.id),
            now=now,
        )
    ctx.session = request.app[SESSIONS].new(user_id=None, now=now.timestamp())
    ctx.new_session = True
    return redirect(PREFIX + "/login?signed_out=1")
