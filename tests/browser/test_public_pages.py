"""Citizens' public pages in a real Chromium: latest news, one announcement, verify, the feed.

Each page is screenshotted at phone and desktop size, measured on the wire (every request the
page made: headers plus body as transferred, gzip included) and held under ``MAX_WIRE_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Page, Request

from gateway.codes import new_code
from tests.browser.conftest import PHONE, LiveGateway
from tests.support.sms import broadcast

MAX_WIRE_BYTES = 30 * 1024


@dataclass
class Wire:
    """Bytes transferred per page visit, summed over every request the visit made."""

    sizes: dict[str, int] = field(default_factory=dict)

    async def visit(self, page: Page, url: str, name: str) -> Any:
        finished: list[Request] = []

        def on_finished(request: Request) -> None:
            finished.append(request)

        page.on("requestfinished", on_finished)
        try:
            response = await page.goto(url)
            await page.wait_for_load_state("load")
        finally:
            page.remove_listener("requestfinished", on_finished)
        assert response is not None
        await self.record(finished, name)
        return response

    async def record(self, requests: list[Request], name: str) -> None:
        total = 0
        for request in requests:
            sizes = await request.sizes()
            total += sizes["responseHeadersSize"] + sizes["responseBodySize"]
        self.sizes[name] = total
        print(f"wire size {name}: {total} bytes ({len(requests)} request(s))")
        assert total < MAX_WIRE_BYTES, (name, total)


async def _publish(live: LiveGateway) -> dict[str, dict[str, Any]]:
    """Two announcements from Alpha (one an emergency), one from Beta, all approved."""
    world = live.world
    return {
        "road": await broadcast(
            world, title="Jalan Merdeka ditutup", facts={"where": "Jalan Merdeka"}
        ),
        "flood": await broadcast(
            world,
            title="Peringatan banjir Kali Ciliwung",
            urgency="emergency",
            facts={"what": "Banjir", "where": "Kampung Melayu", "action": "Mengungsi"},
        ),
        "water": await broadcast(
            world, agency=1, title="Air PAM mati Sabtu", facts={"where": "Kecamatan Gambir"}
        ),
    }


def _unknown_code(known: dict[str, dict[str, Any]]) -> str:
    codes = {a["verification_code"] for a in known.values()}
    while (code := new_code()) in codes:
        pass
    return code


async def _fits_a_phone(page: Page) -> None:
    await page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways on a phone: {width}px"


async def test_home_lists_each_agency_and_opens_an_announcement(
    live_gateway: LiveGateway, page: Page, screenshot: Any
) -> None:
    published = await _publish(live_gateway)
    wire = Wire()

    response = await wire.visit(page, live_gateway.url("/"), "home")
    assert response.status == 200
    assert response.headers.get("content-encoding") == "gzip"
    assert await page.get_attribute("html", "lang") == "id"
    assert await page.get_by_role("heading", level=1).inner_text() == "Pengumuman terbaru"
    alpha = page.locator("section", has=page.get_by_role("heading", name="Agency Alpha"))
    beta = page.locator("section", has=page.get_by_role("heading", name="Agency Beta"))
    assert await alpha.get_by_role("link").all_inner_texts() == [
        "Peringatan banjir Kali Ciliwung",
        "Jalan Merdeka ditutup",
    ]
    assert await beta.get_by_role("link").all_inner_texts() == ["Air PAM mati Sabtu"]
    await _fits_a_phone(page)
    await screenshot(page, "home")

    await page.get_by_role("link", name="Peringatan banjir Kali Ciliwung").click()
    code = published["flood"]["verification_code"]
    assert page.url == live_gateway.url(f"/a/{code}")
    assert await page.get_by_role("heading", level=1).inner_text() == (
        "Peringatan banjir Kali Ciliwung"
    )
    assert "Peringatan darurat" in await page.inner_text("main")
    assert code in await page.inner_text("main")
    await wire.visit(page, page.url, "announcement")
    await _fits_a_phone(page)
    await screenshot(page, "announcement")

    await page.get_by_role("link", name="English").click()
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.get_by_role("link", name="Check this code").count() == 1
    await page.get_by_role("link", name="Warta").click()
    assert page.url == live_gateway.url("/?lang=en")
    assert await page.get_by_role("heading", level=1).inner_text() == "Latest announcements"
    await wire.visit(page, page.url, "home-en")
    await screenshot(page, "home-en")

    missing = await wire.visit(page, live_gateway.url(f"/a/{_unknown_code(published)}"), "404")
    assert missing.status == 404
    assert await page.get_by_role("heading", level=1).inner_text() == "Tidak ditemukan"

    feed = await wire.visit(page, live_gateway.url("/feed.atom"), "feed.atom")
    assert feed.status == 200
    assert feed.headers["content-type"].startswith("application/atom+xml")
    document = await feed.text()
    for announcement in published.values():
        assert announcement["title"] in document
        assert live_gateway.url(f"/a/{announcement['verification_code']}") in document
    await screenshot(page, "feed")


async def test_verify_says_genuine_or_clearly_not(
    live_gateway: LiveGateway, page: Page, screenshot: Any
) -> None:
    published = await _publish(live_gateway)
    wire = Wire()
    await wire.visit(page, live_gateway.url("/verify"), "verify")
    await _fits_a_phone(page)
    await screenshot(page, "verify")

    water = published["water"]
    # As a citizen types it: lower case, with a space.
    typed = water["verification_code"].lower()[:3] + " " + water["verification_code"].lower()[3:]
    await page.get_by_label("Kode verifikasi").fill(typed)
    await page.get_by_role("button", name="Cek").click()
    await page.wait_for_load_state("load")
    verdict = page.get_by_role("status")
    assert await verdict.get_by_role("heading").inner_text() == "✓ ASLI"
    text = await verdict.inner_text()
    assert "Agency Beta" in text
    day = water["approved_at"][:10]  # "2025-11-27" -> "27 Nov 2025"
    year, month, date = day.split("-")
    months = ["Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des"]
    assert f"{int(date)} {months[int(month) - 1]} {year}" in text
    await wire.visit(page, page.url, "verify-genuine")
    await _fits_a_phone(page)
    await screenshot(page, "verify-genuine")

    fake = _unknown_code(published)
    await page.get_by_label("Kode verifikasi").fill(fake)
    await page.get_by_role("button", name="Cek").click()
    await page.wait_for_load_state("load")
    alert = page.get_by_role("alert")
    assert await alert.get_by_role("heading").inner_text() == "✗ TIDAK ASLI"
    assert fake in await alert.inner_text()
    assert await page.get_by_role("status").count() == 0
    await wire.visit(page, page.url, "verify-fake")
    await screenshot(page, "verify-fake")

    await page.get_by_role("link", name="English").click()
    alert = page.get_by_role("alert")
    assert await alert.get_by_role("heading").inner_text() == "✗ NOT GENUINE"
    assert "Do not act on that message" in await alert.inner_text()
    await screenshot(page, "verify-fake-en")


async def test_public_pages_work_without_javascript(
    live_gateway: LiveGateway, new_page: Any, screenshot: Any
) -> None:
    published = await _publish(live_gateway)
    page = await new_page(java_script_enabled=False)

    await page.goto(live_gateway.url("/"))
    await page.get_by_role("link", name="Jalan Merdeka ditutup").click()
    assert page.url == live_gateway.url(f"/a/{published['road']['verification_code']}")
    await page.get_by_role("link", name="Cek kode ini").click()
    # The form arrives filled in from the link; a plain GET form needs no script.
    code = published["road"]["verification_code"]
    assert await page.get_by_label("Kode verifikasi").input_value() == code
    await page.get_by_role("button", name="Cek").click()
    await page.wait_for_load_state("load")
    assert "Agency Alpha" in await page.get_by_role("status").inner_text()
    await screenshot(page, "verify-genuine-nojs")
