"""The operator dashboard in a real Chromium: an author signs in, composes in Bahasa Indonesia
and English while the live preview follows the typing, saves, edits the draft and submits; an
approver signs in and approves; the broadcast view refreshes itself until every SMS is
delivered (the Africa's Talking simulator sends the delivery reports); an admin reads the
statistics of a chosen period and downloads them as CSV. Each main page is screenshotted at
phone and desktop size."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from playwright.async_api import Page, expect

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
    problems: list[str] = []
    author.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    author.on("pageerror", lambda e: problems.append(str(e)))
    await author.get_by_role("link", name="Tulis pengumuman").click()
    live_preview = author.locator("#live-preview")
    # The live preview follows the typing: the Indonesian card appears once there is a title,
    # the English one once its title is typed, and the facts check reacts to a missing fact.
    await author.get_by_label("Judul (Bahasa Indonesia)").press_sequentially(
        "Jalan Merdeka ditutup", delay=15
    )
    await author.get_by_label("Isi (Bahasa Indonesia)").fill(
        "Jalan Merdeka ditutup untuk perbaikan."
    )
    await author.get_by_label("Apa", exact=True).fill("Penutupan jalan")
    await author.get_by_label("Di mana", exact=True).fill("Jalan Merdeka")
    await live_preview.get_by_role("heading", name="sms · id").wait_for()
    await expect(live_preview).to_contain_text("Semua fakta ada")
    assert await live_preview.get_by_role("heading", name="sms · en").count() == 0
    await author.get_by_label("Judul (English)").press_sequentially("Road closed", delay=15)
    await author.get_by_label("Isi (English)").fill("Merdeka road is closed for repairs.")
    await live_preview.get_by_role("heading", name="sms · en").wait_for()
    await expect(live_preview.locator(".recipients")).to_have_count(2)
    await expect(live_preview).to_contain_text("Merdeka road is")
    text = await live_preview.inner_text()
    assert "gsm7" in text and f"Penerima {RECIPIENTS}" in text
    await screenshot(author, "dashboard-compose")
    await author.get_by_role("button", name="Simpan draf dan pratinjau").click()
    await author.wait_for_url("**/dashboard/announcements/*")
    preview = await author.content()
    assert "Semua fakta ada" in preview
    await screenshot(author, "dashboard-preview")
    # The author edits the draft: the form comes back filled in, in both languages.
    await author.get_by_role("link", name="Ubah draf").click()
    await author.wait_for_url("**/edit")
    assert await author.get_by_label("Judul (English)").input_value() == "Road closed"
    await author.get_by_label("Judul (Bahasa Indonesia)").fill("Jalan Merdeka ditutup sementara")
    await expect(live_preview).to_contain_text("ditutup sementara")
    await screenshot(author, "dashboard-edit")
    await author.get_by_role("button", name="Simpan perubahan dan pratinjau").click()
    await author.wait_for_url("**/dashboard/announcements/*?done=saved")
    assert "Perubahan disimpan." in await author.content()
    assert problems == [], problems
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

    admin = await new_page(locale="en-US", accept_downloads=True)
    await _sign_in_english(admin, live, admin_email)
    pages: dict[str, Any] = {
        "dashboard-inbox": "/dashboard/inbox",
        "dashboard-subscribers": "/dashboard/subscribers",
        "dashboard-users": "/dashboard/users",
        "dashboard-account": "/dashboard/account/password",
    }
    for name, path in pages.items():
        response = await admin.goto(live.url(path))
        assert response is not None and response.status == 200, path
        await screenshot(admin, name)

    # Statistics of a chosen period (today, in the agency's zone), and their CSV.
    today = live.world.app[CLOCK].now().astimezone(ZoneInfo("Asia/Jakarta")).date().isoformat()
    await admin.get_by_role("link", name="Statistics").click()
    await admin.get_by_label("From").fill(today)
    await admin.get_by_label("To").fill(today)
    await admin.get_by_role("button", name="Show").click()
    await admin.wait_for_url(f"**/dashboard/stats?from={today}&to={today}")
    assert await admin.locator("#reach").inner_text() == str(RECIPIENTS)
    delivered = admin.locator('#by-channel [data-state="delivered"]')
    assert await delivered.inner_text() == str(RECIPIENTS)
    await screenshot(admin, "dashboard-stats")
    async with admin.expect_download() as download_info:
        await admin.get_by_role("link", name="Download statistics (CSV)").click()
    download = await download_info.value
    assert download.suggested_filename == f"warta-stats-{today}-{today}.csv"
    saved = Path(await download.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(saved)))
    assert [
        r["deliveries"]
        for r in rows
        if (r["breakdown"], r["state"]) == ("channel_state", "delivered")
    ] == [str(RECIPIENTS)]
    assert [r["reach"] for r in rows if r["breakdown"] == "total"] == [str(RECIPIENTS)]


async def _sign_in_english(page: Page, live: LiveGateway, email: str) -> None:
    await page.goto(live.url("/dashboard/login"))
    await page.get_by_label("Agency (slug)").fill("alpha")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/announcements")
