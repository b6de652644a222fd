"""CORS (issue 11, point 7): off by default; ``CREDITLINE_CORS_ORIGINS`` lets pages on those exact origins (or
on any, with ``*``) call the API from a browser, with bearer headers and never credentials. It sits outside the
rate limit and the body limit, so their refusals are readable by the page too; websockets are not its business."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import websockets

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from tests.support.backends import Backend
from tests.support.helpers import Api
from tests.support.live import PROTOCOL, serve

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
QUERY = {"query": "{ plans { id } }"}
PREFLIGHT = {
    "origin": APP,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


def client(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings, clock=Clock(), manage_database=False, run_jobs=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def allowing(settings: Settings, db: Backend) -> AsyncIterator[httpx.AsyncClient]:
    async with client(replace(settings, cors_origins=(APP, "http://localhost:3000"))) as c:
        yield c


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


async def test_cors_is_off_by_default(settings: Settings, db: Backend) -> None:
    assert Settings.from_env({}).cors_origins == ()
    async with client(settings) as c:
        answered = await c.post("/graphql", json=QUERY, headers={"origin": APP})
        preflight = await c.options("/graphql", headers=PREFLIGHT)
    assert answered.status_code == 200
    assert cors_headers(answered) == {}
    assert (preflight.status_code, cors_headers(preflight)) == (405, {})


async def test_an_allowed_origin_gets_its_origin_back_and_no_credentials(allowing: httpx.AsyncClient) -> None:
    answered = await allowing.post("/graphql", json=QUERY, headers={"origin": APP})

    assert answered.status_code == 200
    assert answered.json()["data"]["plans"]
    assert cors_headers(answered) == {"access-control-allow-origin": APP}
    assert answered.headers["vary"] == "Origin"


async def test_another_origin_gets_no_cors_headers(allowing: httpx.AsyncClient) -> None:
    answered = await allowing.post("/graphql", json=QUERY, headers={"origin": OTHER})
    preflight = await allowing.options("/graphql", headers={**PREFLIGHT, "origin": OTHER})

    assert answered.status_code == 200  # the server answers; the browser keeps the answer from the page
    assert "access-control-allow-origin" not in answered.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("path", ["/graphql", "/portal/session"])
async def test_a_preflight_is_answered_with_the_methods_and_headers(allowing: httpx.AsyncClient, path: str) -> None:
    preflight = await allowing.options(path, headers=PREFLIGHT)

    assert preflight.status_code == 200
    assert cors_headers(preflight) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": "Accept, Accept-Language, Authorization, Content-Language, Content-Type",
        "access-control-max-age": "600",
    }


async def test_a_preflight_asking_for_another_header_is_refused(allowing: httpx.AsyncClient) -> None:
    preflight = await allowing.options(
        "/graphql", headers={**PREFLIGHT, "access-control-request-headers": "authorization, x-secret"}
    )
    assert preflight.status_code == 400


async def test_any_origin_with_a_star_and_never_credentials(settings: Settings, db: Backend) -> None:
    async with client(replace(settings, cors_origins=("*",))) as c:
        answered = await c.post("/graphql", json=QUERY, headers={"origin": OTHER, "cookie": "session=1"})
        preflight = await c.options("/graphql", headers={**PREFLIGHT, "origin": OTHER})

    assert cors_headers(answered) == {"access-control-allow-origin": "*"}
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers


async def test_refusals_of_the_rate_limit_and_the_body_limit_carry_cors_headers(
    settings: Settings, db: Backend
) -> None:
    limited = replace(
        settings,
        cors_origins=(APP,),
        rate_limit=True,
        rate_limit_anonymous_burst=1,
        rate_limit_anonymous_per_second=0.001,
        max_body_bytes=100,
    )
    async with client(limited) as c:
        too_large = await c.post("/graphql", content=b"x" * 200, headers={"origin": APP})
        too_many = await c.post("/graphql", json=QUERY, headers={"origin": APP})
        preflight = await c.options("/graphql", headers=PREFLIGHT)

    assert (too_large.status_code, too_large.headers["access-control-allow-origin"]) == (413, APP)
    assert (too_many.status_code, too_many.headers["access-control-allow-origin"]) == (429, APP)
    assert preflight.status_code == 200  # answered before the rate limit: a preflight costs the page nothing


async def test_websockets_keep_their_own_origin_check(api: Api) -> None:
    """CORS does not apply to websockets: with it on, a handshake without an Origin (not a browser) still
    connects, and one from another origin, even an allowed one, is still refused by strawberry's check."""
    _, token = await api.user("ada@example.com")
    with_cors = replace(api.settings, cors_origins=(APP,))
    async with serve(with_cors, api.clock) as live, websockets.connect(live.ws, subprotocols=PROTOCOL) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
        for origin in (APP, OTHER):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(live.ws, subprotocols=PROTOCOL, origin=websockets.Origin(origin))
            assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", ()),
        (" https://app.example.com/ , http://localhost:3000", ("https://app.example.com", "http://localhost:3000")),
        ("*", ("*",)),
    ],
)
def test_cors_origins_are_read_from_the_environment(raw: str, parsed: tuple[str, ...]) -> None:
    assert Settings.from_env({"CREDITLINE_CORS_ORIGINS": raw}).cors_origins == parsed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("*, https://app.example.com", "CREDITLINE_CORS_ORIGINS is either * alone or a list of origins"),
        ("app.example.com", "CREDITLINE_CORS_ORIGINS: 'app.example.com' is not an origin"),
        ("https://app.example.com/path", "CREDITLINE_CORS_ORIGINS: 'https://app.example.com/path' is not an origin"),
        ("https://*.example.com", "CREDITLINE_CORS_ORIGINS: 'https://*.example.com' is not an origin"),
    ],
)
def test_a_malformed_origin_stops_start_up(raw: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message.replace("*", r"\*").replace(".", r"\.")):
        Settings.from_env({"CREDITLINE_CORS_ORIGINS": raw})
