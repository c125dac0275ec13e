"""Public pages, light enough for a feature-phone browser: no JavaScript, small HTML.

Every page is in Bahasa Indonesia or English (``?lang=id|en``; Indonesian unless asked), with
a link to switch on every page. Pages are gzipped for clients that accept it: each is a few
kilobytes on the wire, with no linked asset (the style sheet is inline, there are no images).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

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
LANGUAGES = ("id", "en")
PER_AGENCY = 5
WORDS: dict[str, dict[str, str]] = {
    "id": {
        "site_nav": "Menu situs",
        "home": "Beranda",
        "check": "Cek kode",
        "feed": "Umpan Atom",
        "latest": "Pengumuman terbaru",
        "none_yet": "Belum ada pengumuman.",
        "code": "Kode verifikasi",
        "check_title": "Cek keaslian pesan",
        "check_help": "Masukkan kode 6 huruf/angka dari pesan yang Anda terima.",
        "check_button": "Cek",
        "genuine": "ASLI",
        "genuine_text": "Pesan ini dikeluarkan oleh {agency} pada {date}.",
        "not_genuine": "TIDAK ASLI",
        "not_genuine_text": "Kode {code} tidak dikeluarkan oleh gateway ini. "
        "Jangan ikuti isi pesan itu.",
        "not_a_code": "Kode verifikasi Warta terdiri dari 6 huruf dan angka.",
        "issued_by": "Dari {agency}",
        "this_code": "Cek kode ini",
        "cap": "Dokumen CAP",
        "not_found": "Tidak ditemukan",
        "not_found_text": "Kode {code} tidak dikenal: pesan itu bukan dari gateway ini.",
        "emergency": "Darurat",
    },
    "en": {
        "site_nav": "Site menu",
        "home": "Home",
        "check": "Check a code",
        "feed": "Atom feed",
        "latest": "Latest announcements",
        "none_yet": "No announcements yet.",
        "code": "Verification code",
        "check_title": "Is this message genuine?",
        "check_help": "Enter the 6 letters and digits from the message you received.",
        "check_button": "Check",
        "genuine": "GENUINE",
        "genuine_text": "This message was issued by {agency} on {date}.",
        "not_genuine": "NOT GENUINE",
        "not_genuine_text": "The code {code} was not issued by this gateway. "
        "Do not act on that message.",
        "not_a_code": "A Warta verification code is 6 letters and digits.",
        "issued_by": "From {agency}",
        "this_code": "Check this code",
        "cap": "CAP document",
        "not_found": "Not found",
        "not_found_text": "The code {code} is unknown: "
        "that message did not come from this gateway.",
        "emergency": "Emergency",
    },
}
_MONTHS = {
    "id": ["Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des"],
    "en": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
}


def page_language(request: web.Request, default: str = "id") -> str:
    asked = request.query.get("lang", "")
    return asked if asked in LANGUAGES else (default if default in LANGUAGES else "id")


def day(value: datetime | None, lang: str) -> str:
    """``27 Nov 2025`` in UTC, month names in ``lang``; empty for None."""
    if value is None:
        return ""
    return f"{value.day} {_MONTHS[lang][value.month - 1]} {value.year}"


def _switches(request: web.Request, lang: str) -> list[dict[str, str]]:
    """Links to this page in each other language, keeping the rest of the query."""
    links = []
    for other, name in (("id", "Bahasa Indonesia"), ("en", "English")):
        if other == lang:
            continue
        query = {k: v for k, v in request.query.items() if k != "lang"}
        query["lang"] = other
        links.append({"lang": other, "name": name, "href": f"{request.path}?{urlencode(query)}"})
    return links


def _gzipped(request: web.Request, response: web.Response) -> web.Response:
    """Gzip for clients that accept it (aiohttp alone would prefer deflate, which some
    clients read wrongly); everyone else gets the page as it is."""
    accepted = request.headers.get("Accept-Encoding", "").lower()
    if "gzip" in {part.split(";")[0].strip() for part in accepted.split(",")}:
        response.enable_compression(web.ContentCoding.gzip)
    return response


def _page(
    request: web.Request,
    name: str,
    *,
    lang: str,
    status: int = 200,
    **context: object,
) -> web.Response:
    html = (
        request.app[PAGES]
        .get_template(name)
        .render(
            lang=lang,
            t=WORDS[lang],
            switches=_switches(request, lang),
            q="" if lang == "id" else f"?lang={lang}",
            **context,
        )
    )
    response = web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )
    return _gzipped(request, response)


async def home(request: web.Request) -> web.Response:
    """The latest announcements of each agency (``PER_AGENCY`` each), newest agency first."""
    newest_first = sa.func.row_number().over(
        partition_by=announcements.c.agency_id,
        order_by=(announcements.c.approved_at.desc(), announcements.c.id.desc()),
    )
    ranked = (
        sa.select(
            announcements.c.agency_id,
            announcements.c.title,
            announcements.c.verification_code,
            announcements.c.urgency,
            announcements.c.approved_at,
            newest_first.label("rank"),
        )
        .where(announcements.c.status.in_(_VISIBLE))
        .subquery()
    )
    async with reading(request.app[ENGINE]) as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(ranked, agencies.c.name.label("agency"))
                    .join(agencies, agencies.c.id == ranked.c.agency_id)
                    .where(ranked.c.rank <= PER_AGENCY)
                    .order_by(ranked.c.rank, ranked.c.approved_at.desc(), ranked.c.agency_id)
                )
            )
            .mappings()
            .all()
        )
    by_agency: dict[int, dict[str, object]] = {}
    for row in rows:
        group = by_agency.setdefault(row["agency_id"], {"name": row["agency"], "items": []})
        items = group["items"]
        assert isinstance(items, list)
        items.append(row)
    lang = page_language(request)
    return _page(request, "home.html", lang=lang, agencies=list(by_agency.values()))


async def announcement_page(request: web.Request) -> web.Response:
    code = normalise_code(request.match_info["code"])
    row = None
    if code is not None:
        async with reading(request.app[ENGINE]) as conn:
            row = await find_by_code(conn, code)
    if row is None or row["status"] not in _VISIBLE:
        return _page(
            request,
            "not_found.html",
            lang=page_language(request),
            status=404,
            code=request.match_info["code"][:12],
        )
    language = page_language(request, default=row["language"])
    url = f"{request.app[CONFIG].http.public_url.rstrip('/')}/a/{row['verification_code']}"
    content = content_for(
        row.values, language=language, agency_name=row.agency_name, public_url=url
    )
    try:
        rendition = request.app[RENDERER].render(WEB_PAGE, content)
        body = rendition.text
    except TemplateProblem:
        body = None
    return _page(
        request, "announcement.html", lang=language, row=row, body_html=body, content=content
    )


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
    response = web.Response(
        body=document, content_type=ATOM_MEDIA_TYPE, charset="utf-8", headers=SECURITY_HEADERS
    )
    return _gzipped(request, response)


async def verify_page(request: web.Request) -> web.Response:
    raw = request.query.get("code", "").strip()
    lang = page_language(request)
    result = None
    if raw:
        try:
            result = await verify_code(request, raw[:32])
        except ApiError as exc:
            # Refused (e.g. 429, too many checks): the same page with the reason, no verdict.
            return _page(
                request,
                "verify.html",
                lang=lang,
                status=exc.status,
                error=exc.message,
                result=None,
                code=raw[:32],
                issued="",
                well_formed=normalise_code(raw[:32]) is not None,
            )
    issued = day(result.issued_at, lang) if result is not None else ""
    return _page(
        request,
        "verify.html",
        lang=lang,
        result=result,
        code=raw[:32],
        issued=issued,
        well_formed=normalise_code(raw[:32]) is not None,
    )


def install(app: web.Application) -> None:
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[PAGES].filters["day"] = day
    app.router.add_get("/", home)
    # Before /a/{code}, which would otherwise take "K7P2QX.cap" for a code.
    app.router.add_get("/a/{code}.cap", announcement_cap)
    app.router.add_get("/a/{code}", announcement_page)
    app.router.add_get("/feed.atom", feed)
    app.router.add_get("/verify", verify_page)
