"""The My Credit page in a real browser (issue 14): Debian's Chromium driven by Playwright against a real
``creditline serve`` on SQLite, with the demo data of ``creditline demo``.

The page is built first when its build is missing or stale (``make web``: Node.js 20+). Without Node.js or
Chromium these tests are skipped, saying why, except where ``CREDITLINE_REQUIRE_SERVICES=1`` (CI) fails them."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.support.processes import cli, served

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts" / "web"
TOKEN = re.compile(r"^  (user|agent|admin) token +(\S+)", re.M)
CODE = re.compile(r"/my-credit/\?code=([A-Za-z0-9_-]+)$", re.M)


def _missing(what: str) -> None:
    if os.environ.get("CREDITLINE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"the browser tests need {what}", pytrace=False)
    pytest.skip(f"the browser tests need {what}")


@pytest.fixture(scope="session")
def web_build() -> Path:
    """web/dist, built now if it is missing or older than its sources (one build for every test process)."""
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        _missing("Node.js 20 or newer and npm, to build the page (apt-get install nodejs npm)")
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


def graphql(url: str, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        answer: dict[str, Any] = json.loads(response.read())
    assert "errors" not in answer, answer
    data: dict[str, Any] = answer["data"]
    return data


@dataclass
class Server:
    url: str
    env: dict[str, str]
    tokens: dict[str, str]
    first_code: str
    user_id: str = ""
    used: list[str] = field(default_factory=list)

    def gql(self, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.url, self.tokens.get(token, token), query, variables)

    def portal_link(self, **whose: str) -> str:
        """A new sign-in link (createPortalSession) of the demo user's account, or of ``whose``."""
        target = whose or {"userId": self.user_id}
        made = self.gql(
            "admin",
            "mutation($input: CreatePortalSessionInput!) { createPortalSession(input: $input) {"
            " __typename ... on CreatePortalSessionSuccess { code } ... on Error { message } } }",
            {"input": target},
        )["createPortalSession"]
        assert made["__typename"] == "CreatePortalSessionSuccess", made
        return f"{self.url}/my-credit/?code={made['code']}"

    def user_token(self, email: str) -> str:
        made = cli(self.env, "token", "create", "--user", email)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip().splitlines()[-1]


def start_server(tmp: Path, gateway: str) -> Iterator[Server]:
    env = {
        **os.environ,
        "CREDITLINE_DATABASE_URL": f"sqlite://{tmp}/web.sqlite3",
        "CREDITLINE_GATEWAY": gateway,
        "CREDITLINE_RATE_LIMIT": "0",
        "CREDITLINE_SWEEP_INTERVAL_SECONDS": "3600",
    }
    for name in ("CREDITLINE_REDIS_URL", "CREDITLINE_WEB_DIST", "CREDITLINE_ENV", "CREDITLINE_FRAME_ANCESTORS"):
        env.pop(name, None)
    assert cli(env, "migrate").returncode == 0
    demo = cli(env, "demo")
    assert demo.returncode == 0, demo.stderr
    tokens = dict(TOKEN.findall(demo.stdout))
    code = CODE.findall(demo.stdout)
    assert set(tokens) == {"user", "agent", "admin"}, demo.stdout
    assert len(code) == 1, demo.stdout
    with served(env, wait=60) as (url, _):
        server = Server(url, env, tokens, code[0])
        server.user_id = server.gql("user", "{ me { id } }")["me"]["id"]
        yield server


@pytest.fixture(scope="module")
def server(web_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("web-sandbox"), "sandbox")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright, web_build: Path) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class Watched:
    page: Page
    errors: list[str]

    def assert_no_console_errors(self) -> None:
        assert self.errors == []


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
    yield Watched(opened, errors)
    context.close()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
