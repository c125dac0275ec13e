"""Real-browser tests: the real gateway on a real TCP port, driven by Debian's Chromium.

Playwright (Python, async API) launches the system Chromium (``/usr/bin/chromium``, or
``WARTA_CHROMIUM``); Playwright's own browser downloads are never used. Without Chromium or the
``playwright`` package the tests skip locally and fail when ``CI=true``, like PostgreSQL and
espeak-ng in ``tests/conftest.py``.

Fixtures:

- ``live_gateway`` -> ``LiveGateway``: the gateway (``gateway.app.create_app``) listening on
  127.0.0.1, wired to a running Africa's Talking simulator, two agencies seeded with a token
  per role, on the database of ``database_url`` (SQLite file and PostgreSQL when configured).
  ``live_gateway.url("/verify")`` is an absolute URL; ``http.public_url`` is the same origin,
  so links the gateway prints are followable.
- ``browser`` -> ``playwright.async_api.Browser``: headless Chromium, ``--no-sandbox``.
- ``new_page`` -> ``async (**context_options) -> Page``: a page in a fresh context, e.g.
  ``await new_page(java_script_enabled=False)``; the desktop viewport unless one is given.
- ``page`` -> ``Page``: ``await new_page()``.
- ``screenshot`` -> ``async (page, name) -> list[Path]``: ``save_screenshots`` below.

Every test under tests/browser is marked ``browser`` (``pytest -m browser`` / ``-m "not browser"``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.domain import Role
from tests.support.ci import unavailable
from tests.support.config import make_config
from tests.support.sms import sms_world
from tests.support.world import World

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The system Chromium; skips locally without it (or without playwright), fails on CI."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    configured = os.environ.get("WARTA_CHROMIUM")
    candidates = [configured] if configured else [*_CANDIDATES, shutil.which("chromium")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    unavailable("Chromium is not installed (apt-get install chromium, or set WARTA_CHROMIUM)")
    raise AssertionError("unreachable")


@dataclass
class LiveGateway:
    """The running gateway as a browser sees it."""

    world: World
    sim: AfricasTalkingSimulator
    base_url: str

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def token(self, role: Role, agency: int = 0) -> str:
        return self.world.tokens[agency][role]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def live_gateway(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], chromium_path: str
) -> AsyncIterator[LiveGateway]:
    # The port is chosen first so the gateway's public URL (printed in pages and the feed)
    # is the address the browser actually reaches.
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"

    async def client_on_port(app: Any) -> Any:
        return await aiohttp_client(app, server_kwargs={"port": port})

    configured = partial(make_config, http={"public_url": base_url})
    async with sms_world(client_on_port, configured, database_url, keys) as (world, sim):
        yield LiveGateway(world=world, sim=sim, base_url=base_url)


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    contexts: list[Any] = []

    async def make(**context_options: Any) -> Page:
        context_options.setdefault("viewport", dict(DESKTOP))
        context = await browser.new_context(**context_options)
        contexts.append(context)
        return await context.new_page()

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
async def page(new_page: Callable[..., Awaitable[Page]]) -> Page:
    return await new_page()


async def save_screenshots(page: Page, name: str) -> list[Path]:
    """Full-page PNGs of ``page`` at a 360×740 phone and a 1280×800 desktop viewport.

    Saved as ``test-artifacts/screenshots/<name>-phone.png`` and ``<name>-desktop.png``; the
    page's viewport is restored afterwards.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "page"
    before = page.viewport_size
    saved = []
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        await page.set_viewport_size(size)  # type: ignore[arg-type]
        path = SCREENSHOTS / f"{safe}-{label}.png"
        await page.screenshot(path=str(path), full_page=True)
        saved.append(path)
    if before is not None:
        await page.set_viewport_size(before)
    return saved


@pytest.fixture
def screenshot() -> Callable[[Page, str], Awaitable[list[Path]]]:
    return save_screenshots
