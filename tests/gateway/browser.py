"""A real browser for the admin page's tests: Debian's Chromium driven by Playwright.

Playwright's own browser download is not reachable, so it drives the system's Chromium
(``.ci/run`` installs it when missing). Starting a browser costs about a second, so there
is one per test session (``browser``); each test gets a fresh context (its own cookies and
session storage) and page from ``new_page``. Imported by the tests that use it (it is not
a conftest: the gateway's conftest belongs to the API tests).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = os.environ.get("PLUGBRIDGE_CHROMIUM", "/usr/bin/chromium")
"""The browser binary (Debian's package installs it here)."""
VIEWPORT = {"width": 1280, "height": 800}
"""Every page's size: screenshots come out the same size on every run."""
ACTION_TIMEOUT_MS = 20_000
"""How long a page action or expectation may wait (generous: the suite runs under load)."""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module that uses it (skipped if there is none).

    Module scope, not session: Playwright's sync API keeps an asyncio loop marked as running
    on this thread while it is started, so every later ``asyncio.run`` of the suite would
    fail. All browser tests are in one module, so the browser still starts once per run."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            expect.set_options(timeout=ACTION_TIMEOUT_MS)
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """``new_page(color_scheme="light")``: a page in a fresh context, closed after the test.
    Uncaught script errors fail the test."""
    contexts = []
    errors: list[str] = []

    def make(color_scheme: Literal["light", "dark"] = "light") -> Page:
        context = browser.new_context(
            viewport=VIEWPORT, color_scheme=color_scheme, reduced_motion="reduce"
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"the page raised: {errors}"


def save_screenshot(page: Page, name: str, elsewhere: Path) -> Path:
    """Save ``<name>.png`` of ``page``: into docs/images when ``PLUGBRIDGE_SCREENSHOTS=1``,
    else into ``elsewhere`` (the screenshot is still taken and checked)."""
    folder = SCREENSHOTS if os.environ.get("PLUGBRIDGE_SCREENSHOTS") == "1" else elsewhere
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path
