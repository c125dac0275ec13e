"""The operator dashboard in a real Chromium: an author signs in, composes and submits; an
approver signs in and approves; the broadcast view refreshes itself until every SMS is
delivered (the Africa's Talking simulator sends the delivery reports). Each main page is
screenshotted at phone and desktop size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from gateway.appkeys import CLOCK
from gateway.domain import Role
from gateway.store import users
from tests.browser.conftest import PHONE, LiveGateway
from tests.support.sms import import_numbers, numbers

PASSWORD = "correct horse battery staple"
RECIPIENTS = 4

Shot = Callable[[Page, str], Awaitable[list[Path]]]


async def _add_user(live: LiveGateway, role: Role) -> str:
    email = f"{role.value}@alpha.go.id"
    async with live.world.engine.begin() as conn:
        await users.create_user(
            conn,
            agency_slug="alpha",
            email=email,
            display_name=f"{role.value.title()} Alpha",
            role=role,
            password_hash=users.hash_password(PASSWORD),
            now=live.world.app[CLOCK].now(),
        )
    return email


async def _sign_in(page: Page, live: LiveGateway, email: str) -> None:
    await page.goto(live.url("/dashboard/login"))
    await page.get_by_label("Instansi (slug)").fill("alpha")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Kata sandi").fill(PASSWORD)
    await page.get_by_role("button", name="Masuk").click()
    await page.wait_for_url("**/dashboard/announcements")


async def test_compose_submit_approve_until_all_delivered(
    live_gateway: LiveGateway, new_page: Callable[..., Awaitable[Page]], screenshot: Shot
) -> None:
    live = live_gateway
    await import_numbers(live.world, numbers(RECIPIENTS, start=7770001))
    author_email = await _add_user(live, Role.AUTHOR)
    approver_email = await _add_user(live, Role.APPROVER)
    admin_email = await _add_user(live, Role.ADMIN)

    author = await new_page(viewport=dict(PHONE), locale="id-ID")
    await author.goto(live.url("/dashboard/login"))
    await screenshot(author, "dashboard-login")
    await _sign_in(author, live, author_email)
    await author.get_by_role("link", name="Tulis pengumuman").click()
    await author.get_by_label("Judul", exact=True).fill("Jalan Merdeka ditutup")
    await author.get_by_label("Isi", exact=True).fill("Jalan Merdeka ditutup untuk perbaikan.")
    await author.get_by_label("Apa", exact=True).fill("Penutupan jalan")
    await author.get_by_label("Di mana", exact=True).fill("Jalan Merdeka")
    await screenshot(author, "dashboard-compose")
    await author.get_by_role("button", name="Simpan draf dan pratinjau").click()
    await author.wait_for_url("**/dashboard/announcements/*")
    preview = await author.content()
    assert "Semua fakta ada" in preview
    await screenshot(author, "dashboard-preview")
    await author.get_by_role("button", name="Ajukan untuk persetujuan").click()
    await author.wait_for_load_state("load")
    assert "pending_approval" in await author.content()

    approver = await new_page(locale="id-ID")
    await _sign_in(approver, live, approver_email)
    await approver.get_by_role("link", name="Menunggu persetujuan").click()
    await approver.wait_for_load_state("load")
    await screenshot(approver, "dashboard-approvals")
    await approver.get_by_role("button", name="Setujui dan kirim").click()
    await approver.wait_for_url("**/broadcast*")

    delivered = "0"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        delivered = await approver.locator('[data-total="delivered"]').inner_text()
        if delivered == str(RECIPIENTS):
            break
        await asyncio.sleep(0.5)
        await approver.reload()
    assert delivered == str(RECIPIENTS)
    await screenshot(approver, "dashboard-broadcast")
    await approver.get_by_role("link", name="Pengumuman", exact=True).click()
    await screenshot(approver, "dashboard-announcements")

    admin = await new_page(locale="en-US")
    await _sign_in_english(admin, live, admin_email)
    pages: dict[str, Any] = {
        "dashboard-inbox": "/dashboard/inbox",
        "dashboard-subscribers": "/dashboard/subscribers",
        "dashboard-stats": "/dashboard/stats",
        "dashboard-users": "/dashboard/users",
    }
    for name, path in pages.items():
        response = await admin.goto(live.url(path))
        assert response is not None and response.status == 200, path
        await screenshot(admin, name)


async def _sign_in_english(page: Page, live: LiveGateway, email: str) -> None:
    await page.goto(live.url("/dashboard/login"))
    await page.get_by_label("Agency (slug)").fill("alpha")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/announcements")
