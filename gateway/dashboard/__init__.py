"""The operator dashboard at ``/dashboard/``: server-rendered pages for people who sign in
(``gateway.store.users``), in Bahasa Indonesia and English. See docs/dashboard.md."""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from aiohttp import web

from gateway.appkeys import CONFIG
from gateway.attempts import AttemptLimit
from gateway.dashboard import announcement_views as a
from gateway.dashboard import auth_views as auth
from gateway.dashboard import compose_views as c
from gateway.dashboard import operator_views as op
from gateway.dashboard import user_views
from gateway.dashboard.sessions import SessionKeeper
from gateway.dashboard.web import (
    LOGIN_BY_ACCOUNT,
    LOGIN_BY_ADDRESS,
    PREFIX,
    SESSIONS,
    TEMPLATES,
    redirect,
)

log = logging.getLogger("warta.dashboard")
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "web" / "dashboard_templates"


async def _home(request: web.Request) -> web.Response:
    return redirect(PREFIX + "/announcements")


def install(app: web.Application) -> None:
    config = app[CONFIG]
    secret = config.secrets.blind_index_key
    if secret is None:
        log.warning(
            "dashboard: no secrets.blind_index_key; sessions use a per-process key and end "
            "at restart"
        )
    # From the newest blind index key: rotating it signs everyone out once.
    app[SESSIONS] = SessionKeeper.derive(
        None if secret is None else secret.get_secret_value().split(",")[0].strip(),
        secure=config.http.public_url.lower().startswith("https://"),
    )
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    # Per address: generous, since an agency's staff may share one NAT address. Counted in the
    # database (gateway.attempts), so the limits hold across processes.
    app[LOGIN_BY_ADDRESS] = AttemptLimit("login_address", limit=20, window_s=100)
    app[LOGIN_BY_ACCOUNT] = AttemptLimit("login_account", limit=5, window_s=300)
    router = app.router
    router.add_get(PREFIX, _home)
    router.add_get(PREFIX + "/", _home)
    router.add_get(PREFIX + "/login", auth.login_form)
    router.add_post(PREFIX + "/login", auth.login)
    router.add_post(PREFIX + "/logout", auth.logout)
    router.add_get(PREFIX + "/announcements", a.list_page)
    router.add_post(PREFIX + "/announcements", a.compose)
    router.add_get(PREFIX + "/announcements/new", a.compose_form)
    router.add_get(PREFIX + "/announcements/{id}", a.detail)
    router.add_get(PREFIX + "/announcements/{id}/broadcast", a.broadcast)
    router.add_get(PREFIX + "/announcements/{id}/deliveries.csv", a.export_csv)
    router.add_post(PREFIX + "/announcements/{id}/{action}", a.act)
    router.add_get(PREFIX + "/approvals", a.approvals)
    router.add_get(PREFIX + "/inbox", op.inbox)
    router.add_get(PREFIX + "/inbox/{thread_id}", op.thread)
    router.add_post(PREFIX + "/inbox/{thread_id}/reply", op.reply)
    router.add_post(PREFIX + "/inbox/{thread_id}/close", op.close)
    router.add_get(PREFIX + "/subscribers", op.subscribers_page)
    router.add_post(PREFIX + "/subscribers/search", op.search)
    router.add_get(PREFIX + "/stats", op.stats)
    router.add_get(PREFIX + "/stats.csv", op.stats_csv)
    router.add_get(PREFIX + "/announcements/{id}/edit", c.edit_form)
    # Before "/announcements/{id}", which would take "preview" for an id.
    router.add_post(PREFIX + "/announcements/preview", c.live_preview)
    router.add_post(PREFIX + "/announcements/{id}", c.update)
    router.add_get(PREFIX + "/static/live-preview.js", c.live_preview_script)
    user_views.install(app)
