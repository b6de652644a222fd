"""The My Credit page (issue 14, points 1 and 5): /my-credit/ serves the build of web/ (index.html for every path
of the page, never cached; hashed assets cached for a year, a missing one 404), under a strict
Content-Security-Policy whose frame-ancestors come from CREDITLINE_FRAME_ANCESTORS; without a build it says how
to make one. /graphql serves the build's offline GraphiQL in development, else strawberry's.

These run on a fake build in a temporary directory: no Node.js needed (the real one is tests/web/)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings

INDEX = '<!doctype html><title>My Credit</title><script type="module" src="/my-credit/assets/index-abc123.js"></script>'
GRAPHIQL = "<!doctype html><title>GraphiQL (offline)</title>"
SCRIPT = "console.log('my credit')"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self';"
    " connect-src 'self' ws://test wss://test; frame-src 'none'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}
HEADERS = tuple(PAGE_HEADERS)


def fake_build(root: Path, *, graphiql: bool = True) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-abc123.js").write_text(SCRIPT)
    (dist / "assets" / "index-abc123.css").write_text("body { margin: 0 }")
    (dist / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    if graphiql:
        (dist / "graphiql.html").write_text(GRAPHIQL)
    return dist


def settings_for(dist: Path, **changes: object) -> Settings:
    return Settings(database_url="unused", web_dist=str(dist), **changes)  # type: ignore[arg-type]


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client(settings_for(fake_build(tmp_path))) as c:
        yield c


def client(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings, clock=Clock(), manage_database=False, run_jobs=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def picked(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in HEADERS if name in response.headers}


async def test_the_page_is_served_with_a_strict_policy_and_never_cached(page: httpx.AsyncClient) -> None:
    response = await page.get("/my-credit/")

    assert (response.status_code, response.text) == (200, INDEX)
    assert picked(response) == PAGE_HEADERS


@pytest.mark.parametrize("path", ["/my-credit/billing", "/my-credit/org/T3JnOjE/usage", "/my-credit/index.html"])
async def test_every_path_of_the_page_answers_the_page_itself(page: httpx.AsyncClient, path: str) -> None:
    response = await page.get(path, params={"code": "abc"})

    assert (response.status_code, response.text) == (200, INDEX)
    assert picked(response) == PAGE_HEADERS


async def test_without_the_trailing_slash_it_redirects_keeping_the_query(page: httpx.AsyncClient) -> None:
    response = await page.get("/my-credit", params={"code": "abc"})

    assert (response.status_code, response.headers["location"]) == (308, "/my-credit/?code=abc")


async def test_the_return_from_stripe_lands_on_the_billing_tab(page: httpx.AsyncClient) -> None:
    response = await page.get("/billing", params={"checkout": "success", "transaction": "VHJhbnNhY3Rpb246Nw"})

    assert (response.status_code, response.headers["location"]) == (
        307,
        "/my-credit/billing?checkout=success&transaction=VHJhbnNhY3Rpb246Nw",
    )


async def test_hashed_assets_are_cached_for_a_year(page: httpx.AsyncClient) -> None:
    script = await page.get("/my-credit/assets/index-abc123.js")
    style = await page.get("/my-credit/assets/index-abc123.css")

    assert (script.status_code, script.text) == (200, SCRIPT)
    assert (style.status_code, style.text) == (200, "body { margin: 0 }")
    assert {name: script.headers[name] for name in ("content-type", "cache-control", "x-content-type-options")} == {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "public, max-age=31536000, immutable",
        "x-content-type-options": "nosniff",
    }
    assert style.headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize(
    "path",
    [
        "/my-credit/assets/index-old999.js",
        "/my-credit/assets/",
        "/my-credit/assets/%2e%2e/index.html",
        "/my-credit/assets/..%2f..%2fpyproject.toml",
        "/my-credit/assets/.hidden",
    ],
)
async def test_a_missing_asset_is_404_never_the_page(page: httpx.AsyncClient, path: str) -> None:
    response = await page.get(path)

    assert (response.status_code, response.text) == (404, "Not Found")
    assert "cache-control" not in response.headers


async def test_a_file_at_the_top_of_the_build_is_served_revalidated(page: httpx.AsyncClient) -> None:
    response = await page.get("/my-credit/favicon.svg")

    assert response.status_code == 200
    assert (response.headers["content-type"], response.headers["cache-control"]) == ("image/svg+xml", "no-cache")


async def test_nothing_outside_the_build_is_served(tmp_path: Path) -> None:
    dist = fake_build(tmp_path)
    (tmp_path / "secret.txt").write_text("not for you")
    (dist / "assets" / "link.txt").symlink_to(tmp_path / "secret.txt")
    async with client(settings_for(dist)) as c:
        linked = await c.get("/my-credit/assets/link.txt")
        up = await c.get("/my-credit/..%2fsecret.txt")

    assert (linked.status_code, linked.text) == (404, "Not Found")
    assert (up.status_code, up.text) == (200, INDEX)


async def test_without_a_build_the_page_says_how_to_make_one(tmp_path: Path) -> None:
    async with client(settings_for(tmp_path / "nowhere")) as c:
        response = await c.get("/my-credit/", params={"code": "abc"})
        asset = await c.get("/my-credit/assets/index-abc123.js")

    assert response.status_code == 503
    assert "<h1>The My Credit page is not built</h1>" in response.text
    assert f"<code>{tmp_path / 'nowhere'}</code>" in response.text
    assert "<code>make web</code>" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == POLICY
    assert (asset.status_code, asset.text) == (404, "Not Found")


@pytest.mark.parametrize(
    ("setting", "ancestors"),
    [
        ("'self'", "'self'"),
        ("https://app.example.com, https://*.example.org:8443", "https://app.example.com https://*.example.org:8443"),
        ("'self' https://app.example.com", "'self' https://app.example.com"),
    ],
)
async def test_frame_ancestors_let_a_platform_embed_the_page(tmp_path: Path, setting: str, ancestors: str) -> None:
    frames = Settings.from_env({"CREDITLINE_FRAME_ANCESTORS": setting}).frame_ancestors
    async with client(settings_for(fake_build(tmp_path), frame_ancestors=frames)) as c:
        response = await c.get("/my-credit/")

    assert response.headers["content-security-policy"] == POLICY.replace(
        "frame-ancestors 'none'", f"frame-ancestors {ancestors}"
    )
    assert "x-frame-options" not in response.headers


@pytest.mark.parametrize(
    "setting",
    ["*", "'none' https://app.example.com", "https://app.example.com; script-src *", "javascript:alert(1)", "'unsafe'"],
)
def test_a_frame_ancestors_setting_that_is_no_source_stops_start_up(setting: str) -> None:
    with pytest.raises(SystemExit, match=r"^CREDITLINE_FRAME_ANCESTORS must be 'none', or origins"):
        Settings.from_env({"CREDITLINE_FRAME_ANCESTORS": setting})


def test_frame_ancestors_default_to_none_and_the_build_to_web_dist() -> None:
    settings = Settings.from_env({})

    assert settings.frame_ancestors == ("'none'",)
    assert settings.web_dist == str(Path(__file__).resolve().parents[2] / "web" / "dist")
    assert Settings.from_env({"CREDITLINE_WEB_DIST": "/srv/page"}).web_dist == "/srv/page"


async def test_the_legacy_gateway_lets_stripe_js_in(tmp_path: Path) -> None:
    async with client(settings_for(fake_build(tmp_path), gateway="legacy")) as c:
        response = await c.get("/my-credit/")

    assert response.headers["content-security-policy"] == (
        "default-src 'self'; script-src 'self' https://js.stripe.com; style-src 'self'; img-src 'self' data:;"
        " font-src 'self'; connect-src 'self' ws://test wss://test https://api.stripe.com;"
        " frame-src https://js.stripe.com; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    )


async def test_a_host_header_that_is_no_host_adds_no_websocket_source(page: httpx.AsyncClient) -> None:
    response = await page.get("/my-credit/", headers={"host": "evil; script-src *"})

    assert "connect-src 'self'; frame-src 'none';" in response.headers["content-security-policy"]
    assert "evil" not in response.headers["content-security-policy"]


async def test_graphiql_is_the_offline_build_when_there_is_one(page: httpx.AsyncClient) -> None:
    response = await page.get("/graphql", headers={"accept": "text/html"})

    assert (response.status_code, response.text) == (200, GRAPHIQL)
    assert picked(response) == {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
            " font-src 'self' data:; connect-src 'self' ws://test wss://test; worker-src 'self' blob:;"
            " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "cache-control": "no-cache",
    }


async def test_graphiql_falls_back_to_strawberrys_without_a_build(tmp_path: Path) -> None:
    async with client(settings_for(fake_build(tmp_path, graphiql=False))) as c:
        response = await c.get("/graphql", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert "<title>Strawberry GraphiQL</title>" in response.text
    assert "content-security-policy" not in response.headers


async def test_production_serves_the_page_but_no_graphiql(tmp_path: Path) -> None:
    settings = settings_for(
        fake_build(tmp_path),
        env="production",
        allow_sandbox_in_production=True,
        secret_key="test-secret-key-0123456789abcdefghij",
    )
    async with client(settings) as c:
        page = await c.get("/my-credit/")
        graphiql = await c.get("/graphql", headers={"accept": "text/html"})

    assert (page.status_code, page.text) == (200, INDEX)
    assert (graphiql.status_code, graphiql.text) == (404, "Not Found")
