"""The operator dashboard through HTTP (aiohttp test client, no browser), on both databases:
sign-in, sessions and CSRF, roles and tenancy, the compose -> preview -> submit -> approve
journey through the forms, the broadcast view, the CSV export, the inbox and subscriber
search, security headers, and no secrets in the logs."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import sqlalchemy as sa

from gateway.appkeys import CLOCK, ENGINE
from gateway.clock import ManualClock
from gateway.db.schema import announcements, audit_events
from gateway.domain import Role
from gateway.store import users
from tests.support.config import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for
from tests.support.world import AGENCY_SLUGS, World

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def add_user(world: World, role: Role, *, agency: int = 0, email: str = "") -> str:
    email = email or f"{role.value}@{AGENCY_SLUGS[agency]}.go.id"
    async with world.engine.begin() as conn:
        await users.create_user(
            conn,
            agency_slug=AGENCY_SLUGS[agency],
            email=email,
            display_name=f"{role.value.title()} {AGENCY_SLUGS[agency]}",
            role=role,
            password_hash=users.hash_password(PASSWORD),
            now=world.app[CLOCK].now(),
        )
    return email


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    url: str

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, self.text[:500]
        return found.group(1)


@dataclass
class Browser:
    """One person's cookie jar against the running gateway."""

    world: World
    session: aiohttp.ClientSession
    last: Page | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return str(self.world.client.make_url(path))

    async def get(self, path: str, *, follow: bool = True) -> Page:
        async with self.session.get(
            self.url(path), allow_redirects=follow, headers=self.headers
        ) as response:
            self.last = Page(
                response.status, await response.text(), response.headers, str(response.url)
            )
            return self.last

    async def post(
        self,
        path: str,
        data: dict[str, Any],
        *,
        csrf: str | None = "auto",
        headers: dict[str, str] | None = None,
    ) -> Page:
        form = dict(data)
        if csrf == "auto":
            assert self.last is not None
            form["csrf"] = self.last.csrf
        elif csrf is not None:
            form["csrf"] = csrf
        async with self.session.post(
            self.url(path),
            data=form,
            allow_redirects=True,
            headers={**self.headers, **(headers or {})},
        ) as response:
            self.last = Page(
                response.status, await response.text(), response.headers, str(response.url)
            )
            return self.last

    async def login(self, email: str, *, agency: int = 0, password: str = PASSWORD) -> Page:
        await self.get("/dashboard/login")
        return await self.post(
            "/dashboard/login",
            {"agency": AGENCY_SLUGS[agency], "email": email, "password": password},
        )

    def cookie(self) -> str:
        for cookie in self.session.cookie_jar:
            if "warta_session" in cookie.key:
                return cookie.value
        raise AssertionError("no session cookie")


@pytest.fixture
async def browsers() -> AsyncIterator[Any]:
    opened: list[aiohttp.ClientSession] = []

    def open_browser(world: World, **headers: str) -> Browser:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        opened.append(session)
        return Browser(world=world, session=session, headers=headers)

    yield open_browser
    for session in opened:
        await session.close()


def compose_form(**fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "title_id": "Jalan Merdeka ditutup",
        "body_id": "Jalan Merdeka ditutup untuk perbaikan.",
        "language": "id",
        "fact_what": "Penutupan jalan",
        "fact_where": "Jalan Merdeka",
        "areas": "",
        "channels": "sms",
        "urgency": "normal",
    }
    form.update(fields)
    return form


def announcement_id(page: Page) -> int:
    found = re.search(r"/dashboard/announcements/(\d+)", page.url)
    assert found, page.url
    return int(found.group(1))


# -- signing in ---------------------------------------------------------------------------


async def test_login_success_and_the_same_answer_for_wrong_password_and_unknown_email(
    world: World, browsers: Any
) -> None:
    email = await add_user(world, Role.AUTHOR)
    browser = browsers(world)
    wrong = await browser.login(email, password="not the password at all")
    unknown = await browser.login("nobody@alpha.go.id")
    other_agency = await browser.login(email, agency=1)
    for page in (wrong, unknown, other_agency):
        assert page.status == 401
        assert "Instansi, email, atau kata sandi salah." in page.text
    page = await browser.login(email)
    assert page.status == 200
    assert page.url.endswith("/dashboard/announcements")
    assert "Author alpha" in page.text
    async with world.engine.connect() as conn:
        actions = (await conn.execute(sa.select(audit_events.c.action))).scalars().all()
    assert "user.login" in actions


def test_an_unknown_user_costs_one_password_verification_too() -> None:
    stored = users.hash_password(PASSWORD)
    started = time.perf_counter()
    for _ in range(3):
        assert not users.verify_password(stored, "wrong password here")
    known = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(3):
        assert not users.verify_password(None, "wrong password here")
    unknown = time.perf_counter() - started
    assert 0.33 < unknown / known < 3.0


async def test_login_is_rate_limited_per_account(world: World, browsers: Any) -> None:
    email = await add_user(world, Role.AUTHOR)
    browser = browsers(world)
    statuses = [
        (await browser.login(email, password="wrong password " + str(n))).status for n in range(5)
    ]
    assert statuses == [401] * 5
    throttled = await browser.login(email)
    assert throttled.status == 429
    assert "Terlalu banyak percobaan" in throttled.text
    # Another account from the same address still gets through.
    other = await add_user(world, Role.APPROVER)
    assert (await browser.login(other)).status == 200


async def test_login_is_rate_limited_per_address(world: World, browsers: Any) -> None:
    browser = browsers(world)
    statuses = [
        (await browser.login(f"guess{n}@alpha.go.id", password="x" * 12)).status for n in range(26)
    ]
    assert statuses[:20] == [401] * 20
    # The bucket refills at one attempt per 5 s, so a few may pass while the test runs.
    assert statuses[-3:] == [429] * 3


async def test_signed_out_pages_redirect_to_the_login_form(world: World, browsers: Any) -> None:
    browser = browsers(world)
    page = await browser.get("/dashboard/approvals", follow=False)
    assert page.status == 303
    assert page.headers["Location"].startswith("/dashboard/login?next=")
    page = await browser.get("/dashboard/approvals")
    assert page.status == 200
    assert 'name="password"' in page.text


async def test_logout_ends_the_session_even_if_the_cookie_is_replayed(
    world: World, browsers: Any
) -> None:
    email = await add_user(world, Role.AUTHOR)
    browser = browsers(world)
    await browser.login(email)
    stolen = browser.cookie()
    page = await browser.post("/dashboard/logout", {})
    assert page.url.endswith("/dashboard/login?signed_out=1")
    replay = browsers(world)
    replay.session.cookie_jar.update_cookies(
        {"warta_session": stolen}, response_url=aiohttp.client.URL(browser.url("/"))
    )
    page = await replay.get("/dashboard/announcements", follow=False)
    assert page.status == 303


async def test_sessions_expire_when_idle_and_absolutely(
    aiohttp_client: Any, config: Any, browsers: Any
) -> None:
    clock = ManualClock()
    world = await World.start(aiohttp_client, config, clock=clock)
    email = await add_user(world, Role.AUTHOR)
    browser = browsers(world)
    await browser.login(email)
    clock.advance(timedelta(minutes=29))
    assert (await browser.get("/dashboard/announcements", follow=False)).status == 200
    clock.advance(timedelta(minutes=31))
    assert (await browser.get("/dashboard/announcements", follow=False)).status == 303
    await browser.login(email)
    for _ in range(40):
        clock.advance(timedelta(minutes=20))
        page = await browser.get("/dashboard/announcements", follow=False)
        if page.status == 303:
            break
    assert page.status == 303


# -- CSRF, roles, tenancy -----------------------------------------------------------------


async def test_posts_without_the_sessions_csrf_token_are_refused(
    world: World, browsers: Any
) -> None:
    author = await add_user(world, Role.AUTHOR)
    approver = await add_user(world, Role.APPROVER)
    other = browsers(world)
    await other.login(approver)
    foreign_token = other.last.csrf if other.last else ""
    browser = browsers(world)
    await browser.get("/dashboard/login")
    refused = await browser.post(
        "/dashboard/login",
        {"agency": "alpha", "email": author, "password": PASSWORD},
        csrf=None,
    )
    assert refused.status == 403
    await browser.login(author)
    for token in (None, "", foreign_token, "forged"):
        page = await browser.post("/dashboard/announcements", compose_form(), csrf=token)
        assert page.status == 403, token
    async with world.engine.connect() as conn:
        count = await conn.scalar(sa.text("SELECT count(*) FROM announcements"))
    assert count == 0


async def test_roles_an_author_cannot_approve_and_nobody_approves_their_own(
    world: World, browsers: Any
) -> None:
    author = browsers(world)
    await author.login(await add_user(world, Role.AUTHOR))
    await author.get("/dashboard/announcements/new")
    created = await author.post("/dashboard/announcements", compose_form())
    assert created.status == 200, created.text
    aid = announcement_id(created)
    submitted = await author.post(f"/dashboard/announcements/{aid}/submit", {})
    assert "pending_approval" in submitted.text
    refused = await author.post(f"/dashboard/announcements/{aid}/approve", {})
    assert refused.status == 403
    assert (await author.get("/dashboard/approvals")).status == 403

    admin = browsers(world)
    await admin.login(await add_user(world, Role.ADMIN))
    await admin.get("/dashboard/announcements/new")
    own = announcement_id(await admin.post("/dashboard/announcements", compose_form()))
    await admin.post(f"/dashboard/announcements/{own}/submit", {})
    page = await admin.post(f"/dashboard/announcements/{own}/approve", {})
    assert page.status == 403
    assert "disetujui oleh orang lain" in page.text

    operator = browsers(world)
    await operator.login(await add_user(world, Role.OPERATOR))
    assert (await operator.get("/dashboard/announcements/new")).status == 403
    await operator.get("/dashboard/inbox")
    assert (await operator.post("/dashboard/announcements", compose_form())).status == 403


async def test_another_agencys_announcement_is_not_found(world: World, browsers: Any) -> None:
    theirs = await world.announce(agency=1)
    browser = browsers(world)
    await browser.login(await add_user(world, Role.ADMIN))
    for path in ("", "/broadcast", "/deliveries.csv"):
        page = await browser.get(f"/dashboard/announcements/{theirs['id']}{path}")
        assert page.status == 404, path
        assert theirs["title"] not in page.text
    await browser.get("/dashboard/announcements")
    page = await browser.post(f"/dashboard/announcements/{theirs['id']}/cancel", {})
    assert page.status == 404
    listing = await browser.get("/dashboard/announcements")
    assert theirs["title"] not in listing.text


# -- the journey --------------------------------------------------------------------------


async def test_compose_preview_submit_approve_broadcast_and_export(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], browsers: Any
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _sim):
        phones = numbers(5, start=5550001)
        await import_numbers(world, phones)
        author = browsers(world)
        await author.login(await add_user(world, Role.AUTHOR))
        form = await author.get("/dashboard/announcements/new")
        for name in ("title_id", "body_id", "title_en", "body_en"):
            assert f'for="{name}"' in form.text and f'id="{name}"' in form.text
        bad = await author.post("/dashboard/announcements", compose_form(channels=[]))
        assert bad.status == 422
        assert 'value="Jalan Merdeka ditutup"' in bad.text
        page = await author.post(
            "/dashboard/announcements",
            compose_form(title_en="Road closed", body_en="Merdeka road closed."),
        )
        assert page.status == 200, page.text
        aid = announcement_id(page)
        # The preview: per channel and language, with recipients, segments, cost, parity.
        assert "GSM-7" in page.text or "gsm7" in page.text.lower()
        assert page.text.count("Semua fakta ada") == 2
        assert re.findall(r'<dd class="recipients">(\d+)</dd>', page.text) == ["5", "0"]
        page = await author.post(f"/dashboard/announcements/{aid}/submit", {})
        assert page.status == 200
        assert "pending_approval" in page.text

        approver = browsers(world)
        await approver.login(await add_user(world, Role.APPROVER))
        queue = await approver.get("/dashboard/approvals")
        assert "Jalan Merdeka ditutup" in queue.text
        assert "Perkiraan biaya" in queue.text
        rejected = await approver.post(
            f"/dashboard/announcements/{aid}/reject", {"reason": "Tambahkan jam"}
        )
        assert "draft" in rejected.text
        back = await author.get(f"/dashboard/announcements/{aid}")
        assert "Tambahkan jam" in back.text
        await author.post(f"/dashboard/announcements/{aid}/submit", {})
        await approver.get("/dashboard/approvals")
        page = await approver.post(f"/dashboard/announcements/{aid}/approve", {})
        assert page.status == 200
        assert page.url.split("?")[0].endswith(f"/dashboard/announcements/{aid}/broadcast")

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            page = await approver.get(f"/dashboard/announcements/{aid}/broadcast")
            delivered = re.search(r'data-total="delivered">(\d+)<', page.text)
            if delivered and int(delivered.group(1)) == 5:
                break
            assert 'http-equiv="refresh"' in page.text
            await asyncio.sleep(0.2)
        assert delivered and int(delivered.group(1)) == 5, page.text
        # Deliveries per minute and reach by area: every one of the five counted once.
        timeline = re.search(r'<table class="bars" id="timeline">(.*?)</table>', page.text, re.S)
        assert timeline is not None
        per_minute = [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', timeline.group(1))]
        assert sum(per_minute) == 5
        areas = re.search(r'<table class="bars" id="areas">(.*?)</table>', page.text, re.S)
        assert areas is not None
        assert sum(int(n) for n in re.findall(r'<td class="num">(\d+)</td>', areas.group(1))) == 5

        async with approver.session.get(
            approver.url(f"/dashboard/announcements/{aid}/deliveries.csv")
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/csv")
            exported = await response.text()
        rows = list(csv.DictReader(io.StringIO(exported)))
        assert len(rows) == 5
        assert {r["state"] for r in rows} == {"delivered"}
        assert all("****" in r["phone_masked"] for r in rows)
        for phone in phones:
            assert phone not in exported
            assert phone[1:] not in exported
            assert phone[3:] not in exported


async def test_subscriber_counts_and_search_show_masked_numbers_only(
    world: World, browsers: Any
) -> None:
    phone = "+6281234567789"
    assert (await world.subscribe(phone, area_code="31.71")).status == 201
    assert (await world.subscribe("+6281234567790", language="en")).status == 201
    browser = browsers(world)
    await browser.login(await add_user(world, Role.OPERATOR))
    page = await browser.get("/dashboard/subscribers")
    assert "31.71" in page.text
    page = await browser.post("/dashboard/subscribers/search", {"phone": "0812-3456-7789"})
    assert page.status == 200
    assert "+62 812-****-789" in page.text
    assert phone not in page.text and "81234567789" not in page.text
    assert "3456-7789" not in page.text


async def test_inbox_thread_and_reply_through_the_forms(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], browsers: Any
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _sim):
        phone = "+6281211110001"
        await world.subscribe(phone)
        form = {
            "from": phone,
            "to": "21234",
            "text": "Kapan jalan dibuka lagi?",
            "date": "2026-01-05 10:00:00",
            "id": "in-1",
            "linkId": "",
        }
        path = f"/callbacks/africastalking/{keys['callback_token']}/sms/inbound"
        async with world.client.post(path, data=form) as response:
            assert response.status == 200
        browser = browsers(world)
        await browser.login(await add_user(world, Role.OPERATOR))
        page = await browser.get("/dashboard/inbox")
        found = re.search(r'href="/dashboard/inbox/(\d+)"', page.text)
        assert found, page.text
        thread = await browser.get(f"/dashboard/inbox/{found.group(1)}")
        assert "Kapan jalan dibuka lagi?" in thread.text
        assert phone not in thread.text
        page = await browser.post(
            f"/dashboard/inbox/{found.group(1)}/reply", {"text": "Besok pukul 06.00."}
        )
        assert page.status == 200
        assert "Besok pukul 06.00." in page.text
        stats = await browser.get("/dashboard/stats")
        assert stats.status == 200
        assert "Percakapan dibuka" in stats.text


# -- headers, cookies, language, logs -----------------------------------------------------


async def test_security_headers_and_cookie_flags(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], browsers: Any
) -> None:
    plain = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    config = make_config(database_url, plain, http={"public_url": "https://warta.example.go.id"})
    world = await World.start(aiohttp_client, config)
    browser = browsers(world)
    async with browser.session.get(browser.url("/dashboard/login")) as response:
        headers = response.headers
        set_cookie = response.headers.getall("Set-Cookie")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "form-action 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    session_cookie = next(c for c in set_cookie if "warta_session=" in c)
    assert session_cookie.startswith("__Host-warta_session=")
    for flag in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert flag.lower() in session_cookie.lower(), session_cookie


async def test_plain_http_cookie_is_not_secure_and_the_language_follows_the_browser(
    world: World, browsers: Any
) -> None:
    browser = browsers(world, **{"Accept-Language": "en-GB,en;q=0.9,id;q=0.5"})
    async with browser.session.get(
        browser.url("/dashboard/login"), headers=browser.headers
    ) as response:
        text = await response.text()
        cookie = next(c for c in response.headers.getall("Set-Cookie") if "warta_session" in c)
    assert "Sign in" in text and '<html lang="en">' in text
    assert "secure" not in cookie.lower()
    chosen = await browser.get("/dashboard/login?lang=id")
    assert '<html lang="id">' in chosen.text
    again = await browser.get("/dashboard/login")
    assert '<html lang="id">' in again.text


async def test_no_password_or_session_in_logs(
    world: World, browsers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = await add_user(world, Role.AUTHOR)
    browser = browsers(world)
    await browser.login(email, password="a wrong password 123")
    await browser.login(email)
    session = browser.cookie()
    await browser.get("/dashboard/announcements/new")
    csrf = browser.last.csrf if browser.last else ""
    await browser.post("/dashboard/announcements", compose_form())
    await browser.post("/dashboard/announcements", compose_form(), csrf="forged")
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    assert caplog.records
    for secret in (PASSWORD, "a wrong password 123", session, session.split(".")[0], csrf):
        assert secret not in text
    async with world.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT password_hash FROM users"))).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_cli_users_add_reads_the_password_from_stdin(
    database_url: str,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    aiohttp_client: Any,
    browsers: Any,
) -> None:
    plain = {k: v for k, v in keys.items() if k != "africastalking_api_key"}
    world = await World.start(aiohttp_client, make_config(database_url, plain))
    for name in [n for n in os.environ if n.startswith("WARTA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WARTA_DATABASE__URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    from gateway.cli import main

    code = await asyncio.to_thread(
        main,
        ["users", "add", "--agency", "beta", "--email", "Ops@Beta.go.id", "--role", "operator"],
    )
    assert code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code = await asyncio.to_thread(
        main, ["users", "add", "--agency", "beta", "--email", "x@beta.go.id", "--role", "author"]
    )
    assert code == 2
    page = await browsers(world).login("ops@beta.go.id", agency=1)
    assert page.status == 200
    assert "ops@beta.go.id" in page.text
    async with world.app[ENGINE].connect() as conn:
        actions = (await conn.execute(sa.select(audit_events.c.action))).scalars().all()
    assert "user.create" in actions


async def test_stats_over_a_chosen_period_and_its_csv(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], browsers: Any
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _sim):
        await import_numbers(world, numbers(3, start=5560001), area_code="31.71")
        await import_numbers(world, numbers(2, start=5570001), area_code="32.73")
        sent = await broadcast(world)
        await wait_for(world, sent["id"], lambda counts, _b: counts.get("delivered", 0) == 5)
        operator = browsers(world)
        await operator.login(await add_user(world, Role.OPERATOR))
        today = world.app[CLOCK].now().astimezone(ZoneInfo("Asia/Jakarta")).date().isoformat()

        # The default week: the last seven whole days, shown in the form and its CSV link.
        week = await operator.get("/dashboard/stats")
        assert week.status == 200
        first = (date.fromisoformat(today) - timedelta(days=6)).isoformat()
        assert f'id="from" name="from" value="{first}"' in week.text
        assert f'id="to" name="to" value="{today}"' in week.text
        assert f"stats.csv?from={first}&amp;to={today}" in week.text
        assert '<strong id="reach">5</strong>' in week.text
        assert (await operator.get("/dashboard/stats?days=1")).text.count(f'value="{today}"') == 2
        page = await operator.get(f"/dashboard/stats?from={today}&to={today}")
        assert page.status == 200
        assert re.search(r'data-state="delivered">5<', page.text)
        assert '<strong id="reach">5</strong>' in page.text
        by_area = re.findall(
            r'<th scope="row">([\d.]+)</th><td class="num">(\d+)</td><td class="num">(\d+)</td>'
            r'<td class="num" data-reach>(\d+)</td>',
            page.text,
        )
        assert by_area == [("31.71", "3", "3", "3"), ("32.73", "2", "2", "2")]
        link = re.search(r'href="(/dashboard/stats\.csv\?[^"]+)"', page.text)
        assert link is not None
        async with operator.session.get(operator.url(link.group(1).replace("&amp;", "&"))) as got:
            assert got.status == 200
            assert got.headers["Content-Type"].startswith("text/csv")
            assert f"warta-stats-{today}-{today}.csv" in got.headers["Content-Disposition"]
            rows = list(csv.DictReader(io.StringIO(await got.text())))
        assert {(r["breakdown"], r["channel"], r["state"], r["deliveries"]) for r in rows} >= {
            ("channel_state", "sms", "delivered", "5")
        }
        assert [
            (r["area"], r["deliveries"], r["reach"]) for r in rows if r["breakdown"] == "area"
        ] == [
            ("31.71", "3", "3"),
            ("32.73", "2", "2"),
        ]
        assert [r["reach"] for r in rows if r["breakdown"] == "total"] == ["5"]

        yesterday = (date.fromisoformat(today) - timedelta(days=1)).isoformat()
        empty = await operator.get(f"/dashboard/stats?from={yesterday}&to={yesterday}")
        assert '<strong id="reach">0</strong>' in empty.text
        bad = await operator.get(f"/dashboard/stats?from={today}&to={yesterday}")
        assert bad.status == 422
        assert 'name="to" value="' in bad.text and 'aria-invalid="true"' in bad.text
        assert "to: must not be before from" in bad.text
        async with operator.session.get(
            operator.url("/dashboard/stats.csv?from=2026-02-30")
        ) as got:
            assert got.status == 422
        # Another agency's operator sees none of it.
        other = browsers(world)
        await other.login(await add_user(world, Role.OPERATOR, agency=1), agency=1)
        theirs = await other.get(f"/dashboard/stats?from={today}&to={today}")
        assert '<strong id="reach">0</strong>' in theirs.text


async def _announcement_rows(world: World) -> int:
    async with world.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(announcements)) or 0)


def _metrics(text: str) -> list[tuple[str, ...]]:
    """(channel · language, characters, segments, recipients) of each rendition card."""
    return re.findall(
        r"<h3>(\S+ · \S+)</h3>\s*<dl class=\"metrics\">\s*<div><dt>[^<]+</dt><dd>(\d+)</dd></div>"
        r".*?<dt>Segmen SMS</dt><dd>(\d+)</dd>.*?<dd class=\"recipients\">(\d+)</dd>",
        text,
        re.S,
    )


async def test_live_preview_renders_the_form_without_saving_it(world: World, browsers: Any) -> None:
    assert (await world.subscribe("+6281255590001", language="en")).status == 201
    author = browsers(world)
    await author.login(await add_user(world, Role.AUTHOR))
    form = await author.get("/dashboard/announcements/new")
    assert 'src="/dashboard/static/live-preview.js"' in form.text
    csrf = form.csrf
    both = compose_form(title_en="Road closed", body_en="Merdeka road closed.")
    live = await author.post(
        "/dashboard/announcements/preview", both, csrf=csrf, headers={"X-Warta-Fragment": "1"}
    )
    assert live.status == 200, live.text
    assert "<html" not in live.text  # a block for the page, not a page
    assert live.headers["X-Warta-Fragment"] == "1"  # the script shows nothing else
    assert live.text.count("Semua fakta ada") == 2
    shown = _metrics(live.text)
    assert [(m[0], m[3]) for m in shown] == [("sms · id", "0"), ("sms · en", "1")]
    assert await _announcement_rows(world) == 0

    # Half-typed: the preview says what it waits for, naming the field.
    waiting = await author.post(
        "/dashboard/announcements/preview",
        compose_form(title_id=""),
        csrf=csrf,
        headers={"X-Warta-Fragment": "1"},
    )
    assert waiting.status == 422
    assert "Pratinjau menunggu: title: String should have at least 1 character" in waiting.text
    # Without JavaScript the Preview button gets the whole form back, filled in, with it.
    page = await author.post("/dashboard/announcements/preview", both, csrf=csrf)
    assert page.status == 200
    assert 'value="Road closed"' in page.text and "<form" in page.text
    assert "X-Warta-Fragment" not in page.headers
    assert _metrics(page.text) == shown
    # CSRF applies; an approver may not compose, so may not preview either.
    forged = await author.post(
        "/dashboard/announcements/preview", both, csrf="forged", headers={"X-Warta-Fragment": "1"}
    )
    assert forged.status == 403
    approver = browsers(world)
    await approver.login(await add_user(world, Role.APPROVER))
    await approver.get("/dashboard/announcements")
    assert (await approver.post("/dashboard/announcements/preview", both)).status == 403
    assert await _announcement_rows(world) == 0

    # Saved, the preview has the same characters, segments and recipients (the code drawn
    # for the live preview has the real one's length).
    saved = await author.post("/dashboard/announcements", both, csrf=csrf)
    assert _metrics(saved.text) == shown
    script = await author.get("/dashboard/static/live-preview.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "X-Warta-Fragment" in script.text


async def test_an_author_edits_a_draft_and_a_rejected_one_approvers_cannot(
    world: World, browsers: Any
) -> None:
    author = browsers(world)
    await author.login(await add_user(world, Role.AUTHOR))
    await author.get("/dashboard/announcements/new")
    created = await author.post(
        "/dashboard/announcements", compose_form(title_en="Road closed", body_en="Closed.")
    )
    aid = announcement_id(created)
    assert f'href="/dashboard/announcements/{aid}/edit"' in created.text
    form = await author.get(f"/dashboard/announcements/{aid}/edit")
    assert form.status == 200
    assert 'value="Jalan Merdeka ditutup"' in form.text and 'value="Road closed"' in form.text
    assert f'action="/dashboard/announcements/{aid}"' in form.text
    edited = await author.post(
        f"/dashboard/announcements/{aid}",
        compose_form(title_id="Jalan Merdeka ditutup sementara", title_en="", body_en=""),
    )
    assert edited.status == 200 and "Perubahan disimpan." in edited.text
    assert "Jalan Merdeka ditutup sementara" in edited.text
    assert re.findall(r"<h3>(\S+ · \S+)</h3>", edited.text) == ["sms · id"]
    # A bad edit is refused with the form kept, naming the field; nothing changes.
    form = await author.get(f"/dashboard/announcements/{aid}/edit")
    bad = await author.post(f"/dashboard/announcements/{aid}", compose_form(title_id=""))
    assert bad.status == 422
    assert 'id="title_id" name="title_id" value="" lang="id" aria-invalid="true"' in bad.text

    approver = browsers(world)
    await approver.login(await add_user(world, Role.APPROVER))
    assert (await approver.get(f"/dashboard/announcements/{aid}/edit")).status == 403
    page = await approver.get(f"/dashboard/announcements/{aid}")
    assert f"/dashboard/announcements/{aid}/edit" not in page.text
    assert (await approver.post(f"/dashboard/announcements/{aid}", compose_form())).status == 403
    other_author = browsers(world)
    await other_author.login(await add_user(world, Role.AUTHOR, email="second@alpha.go.id"))
    assert (await other_author.get(f"/dashboard/announcements/{aid}/edit")).status == 403

    # Submitted, it cannot be edited; rejected, it is a draft again and can.
    await author.get(f"/dashboard/announcements/{aid}")
    await author.post(f"/dashboard/announcements/{aid}/submit", {})
    assert (await author.get(f"/dashboard/announcements/{aid}/edit")).status == 409
    await approver.get("/dashboard/approvals")
    await approver.post(f"/dashboard/announcements/{aid}/reject", {"reason": "Tambahkan jam"})
    await author.get(f"/dashboard/announcements/{aid}/edit")
    again = await author.post(
        f"/dashboard/announcements/{aid}", compose_form(fact_action="Gunakan Jalan Sudirman")
    )
    assert again.status == 200 and "Perubahan disimpan." in again.text
    assert (
        "pending_approval" in (await author.post(f"/dashboard/announcements/{aid}/submit", {})).text
    )

    async with world.engine.connect() as conn:
        events = (
            await conn.execute(
                sa.select(audit_events.c.action, audit_events.c.after)
                .where(audit_events.c.action == "announcement.update")
                .order_by(audit_events.c.id)
            )
        ).all()
    assert [sorted(e.after["changed"]) for e in events] == [
        ["title", "translations"],
        ["facts", "title"],
    ]
