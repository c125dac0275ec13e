"""What every dashboard page shares: the signed-in user, the language, CSRF on every POST,
role checks borrowed from the API's own declarations, HTML rendering and error pages.

Pages call the API's handler functions in-process (``gateway.api.*``), so a page enforces the
same checks, writes the same audit events and wakes the same workers as the JSON API. Each
page states which API function it stands for; the roles allowed are read from that function's
route declaration, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from gateway.api import announcements, deliveries, inbox, stats, subscribers
from gateway.api.errors import ApiError
from gateway.appkeys import CLOCK, ENGINE
from gateway.attempts import AttemptLimit
from gateway.auth import Principal
from gateway.dashboard import i18n
from gateway.dashboard.sessions import Session, SessionKeeper
from gateway.db.engine import reading
from gateway.domain import Role
from gateway.store.users import User, get_user, normalise_email

log = logging.getLogger("warta.dashboard")

PREFIX = "/dashboard"
ACCOUNT_PASSWORD = PREFIX + "/account/password"  # every user's own password form
# What a user whose password an administrator set may reach before choosing their own.
_WITH_TEMPORARY_PASSWORD = frozenset({ACCOUNT_PASSWORD, PREFIX + "/logout"})
TEMPLATES = web.AppKey("dashboard_templates", jinja2.Environment)
SESSIONS = web.AppKey("dashboard_sessions", SessionKeeper)
LOGIN_BY_ADDRESS = web.AppKey("dashboard_login_by_address", AttemptLimit)
LOGIN_BY_ACCOUNT = web.AppKey("dashboard_login_by_account", AttemptLimit)
LANG_COOKIE = "warta_lang"
MAX_FORM_BYTES = 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_API_ROLES: dict[Callable[..., Any], frozenset[Role] | None] = {
    route.handler: route.roles
    for module in (announcements, deliveries, inbox, stats, subscribers)
    for route in module.routes.routes
}


async def allow_password_attempt(
    request: web.Request, *, agency_slug: str, email: str, now: datetime
) -> bool:
    """Whether one more try at an account's password is allowed now (signing in and changing
    one's own password share the per-account limit), counted per agency and e-mail."""
    account = f"{agency_slug.lower()}\n{normalise_email(email)}"
    return await request.app[LOGIN_BY_ACCOUNT].allow(request.app[ENGINE], account, now=now)


def allowed(principal: Principal, api_function: Callable[..., Any]) -> bool:
    """Whether ``principal`` may do what ``api_function`` does, by its API declaration."""
    roles = _API_ROLES[api_function]
    return roles is None or principal.role in roles or principal.role is Role.ADMIN


@dataclass
class Ctx:
    """One request's view of the dashboard."""

    request: web.Request
    lang: str
    session: Session
    user: User | None
    form: MultiDictProxy[Any] | None = None
    new_session: bool = False
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        assert self.user is not None
        return self.user.principal()

    def t(self, key: str, **values: object) -> str:
        return i18n.translate(key, self.lang, **values)

    def can(self, api_function: Callable[..., Any]) -> bool:
        return self.user is not None and allowed(self.principal, api_function)

    def field(self, name: str, default: str = "") -> str:
        if self.form is None:
            return default
        value = self.form.get(name, default)
        return value.strip() if isinstance(value, str) else default

    def fields(self, name: str) -> list[str]:
        if self.form is None:
            return []
        return [v.strip() for v in self.form.getall(name, []) if isinstance(v, str)]

    def render(self, name: str, *, status: int = 200, **context: Any) -> web.Response:
        keeper = self.request.app[SESSIONS]
        html = (
            self.request.app[TEMPLATES]
            .get_template(name)
            .render(
                t=self.t,
                lang=self.lang,
                user=self.user,
                csrf=keeper.csrf_token(self.session),
                path=self.request.path,
                can=self.can,
                api=API_FUNCTIONS,
                **context,
            )
        )
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )


API_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "create": announcements.create_announcement,
    "update": announcements.update_announcement,
    "list": announcements.list_announcements,
    "submit": announcements.submit,
    "approve": announcements.approve,
    "reject": announcements.reject,
    "cancel": announcements.cancel,
    "preview": deliveries.preview,
    "deliveries": deliveries.list_deliveries,
    "inbox": inbox.list_threads,
    "reply": inbox.reply,
    "close": inbox.close,
    "subscribers": subscribers.list_subscribers,
    "search": subscribers.search_subscribers,
    "stats": stats.get_stats,
}


def redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={"Location": location, **SECURITY_HEADERS})


def _language(request: web.Request) -> tuple[str, str | None]:
    """The page language, and a new choice to remember in the cookie (or None)."""
    chosen = request.query.get("lang")
    if chosen in i18n.LANGUAGES:
        return chosen, chosen
    remembered = request.cookies.get(LANG_COOKIE)
    if remembered in i18n.LANGUAGES:
        return remembered, None
    return i18n.from_accept_language(request.headers.get("Accept-Language", "")), None


async def _current(request: web.Request) -> tuple[Session, User | None, bool]:
    """The request's session (a new anonymous one if none is valid), its user, and whether
    the session is new or refreshed (so the cookie must be written)."""
    keeper = request.app[SESSIONS]
    now = request.app[CLOCK].now().timestamp()
    session = keeper.decode(request.cookies.get(keeper.cookie_name), now=now)
    if session is None:
        return keeper.new(user_id=None, now=now), None, True
    user = None
    if session.user_id is not None:
        async with reading(request.app[ENGINE]) as conn:
            user = await get_user(conn, session.user_id)
        ended = (
            user is None
            or user.disabled
            or (
                user.sessions_valid_after is not None
                and session.issued <= user.sessions_valid_after.timestamp()
            )
        )
        if ended:
            return keeper.new(user_id=None, now=now), None, True
    refreshed = keeper.refreshed(session, now=now)
    if refreshed is not None:
        return refreshed, user, True
    return session, user, False


PageHandler = Callable[[Ctx], Awaitable[web.StreamResponse]]


def page(
    *, login: bool = True, api: Callable[..., Any] | None = None
) -> Callable[[PageHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Wrap a page: session, language, sign-in, role (of the API function ``api``), CSRF.

    A POST without the session's CSRF token is refused with 403 before the page runs. An
    ``ApiError`` from the API functions becomes an error page with the same status.
    """

    def wrap(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            lang, chosen = _language(request)
            session, user, write_cookie = await _current(request)
            ctx = Ctx(request=request, lang=lang, session=session, user=user)
            response = await _dispatch(ctx, handler, login=login, api=api)
            keeper = request.app[SESSIONS]
            if ctx.new_session:
                keeper.set_cookie(response, ctx.session)
            elif write_cookie and ctx.session is session:
                keeper.set_cookie(response, session)
            if chosen is not None:
                response.set_cookie(
                    LANG_COOKIE,
                    chosen,
                    path=PREFIX,
                    max_age=365 * 24 * 3600,
                    httponly=True,
                    samesite="Lax",
                    secure=keeper.secure,
                )
            return response

        return run

    return wrap


async def _dispatch(
    ctx: Ctx, handler: PageHandler, *, login: bool, api: Callable[..., Any] | None
) -> web.StreamResponse:
    request = ctx.request
    if login and ctx.user is None:
        if request.method == "GET":
            return redirect(f"{PREFIX}/login?next={quote(request.path_qs, safe='')}")
        return ctx.render("error.html", status=401, message=ctx.t("csrf_failed"))
    if (
        login
        and ctx.user is not None
        and ctx.user.password_temporary
        and request.path not in _WITH_TEMPORARY_PASSWORD
    ):
        if request.method == "GET":
            return redirect(ACCOUNT_PASSWORD)
        return ctx.render("error.html", status=403, message=ctx.t("password_first"))
    if request.method == "POST":
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return ctx.render("error.html", status=413, message=ctx.t("error"))
        form = ctx.form = await request.post()
        token = form.get("csrf")
        if not request.app[SESSIONS].csrf_ok(
            ctx.session, token if isinstance(token, str) else None
        ):
            log.info("dashboard: POST %s refused, CSRF token missing or wrong", request.path)
            return ctx.render("error.html", status=403, message=ctx.t("csrf_failed"))
    if api is not None and ctx.user is not None and not allowed(ctx.principal, api):
        return ctx.render("error.html", status=403, message=ctx.t("forbidden"))
    try:
        return await handler(ctx)
    except ApiError as exc:
        message = ctx.t("page_not_found") if exc.status == 404 else exc.message
        if exc.code == "two_person_rule":
            message = ctx.t("two_person")
        return ctx.render("error.html", status=exc.status, message=message)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"
