"""The My Credit page's browser tests (tests/web/): a real ``creditline serve`` with the demo data, and what
the tests read of it."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.support.live import free_port
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


def missing(what: str) -> None:
    if os.environ.get("CREDITLINE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"the browser tests need {what}", pytrace=False)
    pytest.skip(f"the browser tests need {what}")


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


def start_server(
    tmp: Path, gateway: str, *, settings: dict[str, str] | None = None, demo_gateway: str | None = None
) -> Iterator[Server]:
    """``creditline serve`` on ``gateway`` with ``settings``, after ``creditline demo`` (on ``demo_gateway``: the
    legacy gateway saves no sandbox test token). Stripe sends people back to its own address (public URL)."""
    port = free_port()
    env = {
        **os.environ,
        "CREDITLINE_DATABASE_URL": f"sqlite://{tmp}/web.sqlite3",
        "CREDITLINE_GATEWAY": gateway,
        "CREDITLINE_RATE_LIMIT": "0",
        "CREDITLINE_SWEEP_INTERVAL_SECONDS": "3600",
        "CREDITLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    for name in ("CREDITLINE_REDIS_URL", "CREDITLINE_WEB_DIST", "CREDITLINE_ENV", "CREDITLINE_FRAME_ANCESTORS"):
        env.pop(name, None)
    for name in list(env):
        if name.startswith("CREDITLINE_STRIPE_"):
            env.pop(name)
    env.update(settings or {})
    assert cli(env, "migrate").returncode == 0
    demo = cli({**env, "CREDITLINE_GATEWAY": demo_gateway or gateway}, "demo")
    assert demo.returncode == 0, demo.stderr
    tokens = dict(TOKEN.findall(demo.stdout))
    code = CODE.findall(demo.stdout)
    assert set(tokens) == {"user", "agent", "admin"}, demo.stdout
    assert len(code) == 1, demo.stdout
    with served(env, wait=60, port=port) as (url, _):
        server = Server(url, env, tokens, code[0])
        server.user_id = server.gql("user", "{ me { id } }")["me"]["id"]
        yield server


@dataclass
class Watched:
    page: Page
    errors: list[str]
    stripe_js: list[str] = field(default_factory=list)
    """Requests for https://js.stripe.com that reached the network layer (the fixture aborts them)."""

    def assert_no_console_errors(self) -> None:
        assert self.errors == []

    def assert_no_stripe_js(self) -> None:
        """Stripe.js was neither requested nor put in the page (a script tag the CSP refused counts too)."""
        assert self.stripe_js == []
        assert self.page.evaluate("document.querySelectorAll('script[src*=\"stripe.com\"]').length") == 0
        assert self.page.evaluate("typeof window.Stripe") == "undefined"


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
