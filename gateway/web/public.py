"""Public pages, light enough for a feature-phone browser: no JavaScript, small HTML."""

from __future__ import annotations

from pathlib import Path

import jinja2
import sqlalchemy as sa
from aiohttp import web

from gateway.api.errors import ApiError
from gateway.api.system import verify_code
from gateway.appkeys import CLOCK, CONFIG, ENGINE, RENDERER
from gateway.cap import CAP_MEDIA_TYPE
from gateway.cap.atom import ATOM_MEDIA_TYPE, atom_feed
from gateway.cap.store import KnownAlert, alerts_of
from gateway.cap.writer import cap_document
from gateway.codes import normalise_code
from gateway.db.engine import reading
from gateway.db.schema import agencies, announcements
from gateway.outbox.content import content_for
from gateway.renditions import WEB_PAGE, TemplateProblem
from gateway.store.announcements import find_by_code

PAGES = web.AppKey("pages", jinja2.Environment)
_VISIBLE = ("approved", "scheduled", "sending", "done", "expired")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _page(request: web.Request, name: str, status: int = 200, **context: object) -> web.Response:
    html = request.app[PAGES].get_template(name).render(**context)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


async def home(request: web.Request) -> web.Response:
    async with reading(request.app[ENGINE]) as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(
                        announcements.c.title,
                        announcements.c.verification_code,
                        announcements.c.urgency,
                        announcements.c.approved_at,
                        agencies.c.name.label("agency"),
                    )
                    .join(agencies, agencies.c.id == announcements.c.agency_id)
                    .where(announcements.c.status.in_(_VISIBLE))
                    .order_by(announcements.c.approved_at.desc())
                    .limit(20)
                )
            )
            .mappings()
            .all()
        )
    return _page(request, "home.html", items=rows)


async def announcement_page(request: web.Request) -> web.Response:
    code = normalise_code(request.match_info["code"])
    row = None
    if code is not None:
        async with reading(request.app[ENGINE]) as conn:
            row = await find_by_code(conn, code)
    if row is None or row["status"] not in _VISIBLE:
        return _page(request, "not_found.html", status=404, code=request.match_info["code"][:12])
    language = request.query.get("lang", row["language"])
    url = f"{request.app[CONFIG].http.public_url.rstrip('/')}/a/{row['verification_code']}"
    content = content_for(
        row.values, language=language, agency_name=row.agency_name, public_url=url
    )
    try:
        rendition = request.app[RENDERER].render(WEB_PAGE, content)
        body = rendition.text
    except TemplateProblem:
        body = None
    return _page(request, "announcement.html", row=row, body_html=body, content=content)


async def announcement_cap(request: web.Request) -> web.Response:
    """The announcement as a CAP 1.2 document; a cancelled one (once public) as a Cancel."""
    code = normalise_code(request.match_info["code"])
    row = None
    timezone: str | None = None
    alerts: list[KnownAlert] = []
    if code is not None:
        async with reading(request.app[ENGINE]) as conn:
            row = await find_by_code(conn, code)
            if row is not None:
                timezone = await conn.scalar(
                    sa.select(agencies.c.timezone).where(agencies.c.id == row["agency_id"])
                )
                alerts = await alerts_of(conn, row["id"])
    public = row is not None and (
        row["status"] in _VISIBLE
        or (row["status"] == "cancelled" and row["approved_at"] is not None)
    )
    if row is None or not public:
        return web.Response(
            text="not found", status=404, content_type="text/plain", headers=SECURITY_HEADERS
        )
    details = next((a.details for a in reversed(alerts) if a.details), None)
    document = cap_document(
        row,
        public_base=request.app[CONFIG].http.public_url,
        timezone=timezone or "Asia/Jakarta",
        details=details,
    )
    return web.Response(
        body=document, content_type=CAP_MEDIA_TYPE, charset="utf-8", headers=SECURITY_HEADERS
    )


async def feed(request: web.Request) -> web.Response:
    """The latest public announcements as Atom, each linking to its page and its CAP."""
    published = sa.func.coalesce(announcements.c.approved_at, announcements.c.created_at)
    async with reading(request.app[ENGINE]) as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(
                        announcements.c.title,
                        announcements.c.body,
                        announcements.c.facts,
                        announcements.c.urgency,
                        announcements.c.verification_code,
                        published.label("published"),
                        announcements.c.updated_at.label("updated"),
                        agencies.c.name.label("agency"),
                    )
                    .join(agencies, agencies.c.id == announcements.c.agency_id)
                    .where(announcements.c.status.in_(_VISIBLE))
                    .order_by(published.desc(), announcements.c.id.desc())
                    .limit(50)
                )
            )
            .mappings()
            .all()
        )
    document = atom_feed(
        [dict(row) for row in rows],
        public_base=request.app[CONFIG].http.public_url,
        title="Warta",
        now=request.app[CLOCK].now(),
    )
    return web.Response(
        body=document, content_type=ATOM_MEDIA_TYPE, charset="utf-8", headers=SECURITY_HEADERS
    )


async def verify_page(request: web.Request) -> web.Response:
    raw = request.query.get("code", "").strip()
    result = None
    if raw:
        try:
            result = await verify_code(request, raw[:32])
        except ApiError as exc:
            return _page(
                request, "verify.html", status=exc.status, error=exc.message, code=raw[:32]
            )
    return _page(request, "verify.html", result=result, code=raw[:32])


def install(app: web.Application) -> None:
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/", home)
    # Before /a/{code}, which would otherwise take "K7P2QX.cap" for a code.
    app.router.add_get("/a/{code}.cap", announcement_cap)
    app.router.add_get("/a/{code}", announcement_page)
    app.router.add_get("/feed.atom", feed)
    app.router.add_get("/verify", verify_page)
