"""The My Credit page in a real browser (issue 14): Debian's Chromium driven by Playwright against a real
``creditline serve`` on SQLite, with the demo data of ``creditline demo``.

The page is built first when its build is missing or stale (``make web``: Node.js 20+). Without Node.js or
Chromium these tests are skipped, saying why, except where ``CREDITLINE_REQUIRE_SERVICES=1`` (CI) fails them.

Playwright's sync API keeps an event loop of its own running while it is open: it is opened for this module
only (module scope), so that the asyncio tests after it, in the same process, run their own."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Playwright, Route, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, Server, Watched, missing, start_server


@pytest.fixture(scope="session")
def web_build() -> Path:
    """web/dist, built now if it is missing or older than its sources (one build for every test process)."""
    if not Path(CHROMIUM).exists():
        missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        missing("Node.js 20 or newer and npm, to build the page (apt-get install nodejs npm)")
    lock_path = Path(tempfile.gettempdir()) / f"creditline-web-build-{abs(hash(str(ROOT)))}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), "web"], capture_output=True, text=True, timeout=600
        )
    if built.returncode != 0:
        pytest.fail(f"make web failed:\n{built.stdout}\n{built.stderr}", pytrace=False)
    dist = ROOT / "web" / "dist"
    assert (dist / "index.html").is_file()
    assert (dist / "graphiql.html").is_file()
    return dist


@pytest.fixture(scope="module")
def server(web_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("web-sandbox"), "sandbox")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, web_build: Path) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Watched]:
    """A new page at 1280 px whose console errors (and uncaught exceptions) the test checks."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    opened.on("console", console)
    opened.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    watched = Watched(opened, errors)

    def stripe_js(route: Route) -> None:  # nothing reaches Stripe; a test of `legacy` routes its stand-in
        watched.stripe_js.append(route.request.url)
        route.abort()

    context.route("https://js.stripe.com/**", stripe_js)
    yield watched
    context.close()
