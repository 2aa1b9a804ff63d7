"""A real headless browser for page tests: Debian's `chromium` driven by Playwright.

Never a downloaded browser build: Playwright is pointed at the system binary (`executable_path`),
which `make setup` installs with apt where it is missing. The flags are the ones a closed network
needs: without the background-networking switches Chromium keeps trying to reach its own services,
and each refused connection slows the start.

Use the `page` fixture (tests/conftest.py exposes it): a fresh page in a fresh context per test.
A test that needs the browser skips with the reason only where neither the binary nor Playwright can
be had; CI installs both, so there it always runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path):
            return path
    return shutil.which("chromium")


# Module scope, not session: while Playwright's sync API is running it holds an asyncio event loop in the
# main thread, so every later test that calls asyncio.run() (tests/test_serve_app.py) would fail with
# "cannot be called from a running event loop". Leaving the `with` at the end of each module closes it.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no system chromium (apt-get install chromium; `make setup` does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is a dev dependency: make setup)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
