"""Rate limits per token, per address without one, and per address for websocket handshakes (issue 9,
point 11): in this process, and shared through Redis."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import models.tokens
import resolvers.auth
from creditline.app import create_app
from creditline.logs import RefusedHandshakeFilter, handshake_refused
from creditline.rate_limit import RateLimiter
from creditline.settings import Settings
from models.tables import TokenKind
from models.tokens import create_token
from tests.support.asgi import graphql_websocket_scope
from tests.support.backends import REQUIRE_SERVICES, Backend

REDIS_URL = os.environ.get("CREDITLINE_TEST_REDIS_URL", "")
QUERY = {"query": "{ __typename }"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def limited(**kwargs: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "unused",
        "token_cache_seconds": 0,
        "rate_limit_token_per_second": 0.25,
        "rate_limit_token_burst": 3,
        "rate_limit_anonymous_per_second": 0.5,
        "rate_limit_anonymous_burst": 2,
        "rate_limit_websocket_per_second": 1,
        "rate_limit_websocket_burst": 1,
        **kwargs,
    }
    return Settings(**values)


class Client:
    def __init__(self, app: Any, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.clients: list[httpx.AsyncClient] = []

    def at(self, address: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(address, 4000)), base_url="http://test"
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def limited_client(settings: Settings, clock: FakeClock) -> Client:
    app = create_app(settings, manage_database=False, run_jobs=False)
    limiter = app.state.rate_limiter
    assert isinstance(limiter, RateLimiter)
    limiter.clock = clock
    return Client(app, clock)


@pytest.fixture
async def local(db: Backend) -> AsyncIterator[Client]:
    client = await limited_client(limited(), FakeClock())
    yield client
    await client.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, retry_after: int) -> None:
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(retry_after)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": f"Too many requests: retry in {retry_after} s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
            }
        ],
    }


async def service_token(name: str) -> str:
    return await create_token(TokenKind.SERVICE, name=name, scopes=("usage:write",), now=datetime.now(UTC))


async def run_token_bucket(client: Client) -> None:
    """Burst 3, 0.25 per second: the 4th request waits 4 s; 1 s later, 3 s; another token is unaffected."""
    token_a, token_b = await service_token("a"), await service_token("b")
    http = client.at("10.0.0.1")
    for _ in range(3):
        response = await http.post("/graphql", json=QUERY, headers=bearer(token_a))
        assert response.status_code == 200, response.text
    assert_refused(await http.post("/graphql", json=QUERY, headers=bearer(token_a)), 4)
    assert (await http.post("/graphql", json=QUERY, headers=bearer(token_b))).status_code == 200
    client.clock.now += 1
    assert_refused(await http.post("/graphql", json=QUERY, headers=bearer(token_a)), 3)
    client.clock.now += 3
    assert (await http.post("/graphql", json=QUERY, headers=bearer(token_a))).status_code == 200
    assert_refused(await http.post("/graphql", json=QUERY, headers=bearer(token_a)), 4)
    # The refused requests did not move the refill: 4 s after the last allowed one, one more.
    client.clock.now += 4
    assert (await http.post("/graphql", json=QUERY, headers=bearer(token_a))).status_code == 200


async def run_anonymous_bucket(client: Client) -> None:
    """Burst 2, 0.5 per second per address; another address is unaffected; GET counts too."""
    one, other = client.at("10.0.0.2"), client.at("10.0.0.3")
    assert (await one.post("/graphql", json=QUERY)).status_code == 200
    assert (await one.get("/graphql", params=QUERY)).status_code == 200
    assert_refused(await one.post("/graphql", json=QUERY), 2)
    assert_refused(await one.get("/exports/usage.csv"), 2)
    assert (await other.post("/graphql", json=QUERY)).status_code == 200
    assert (await one.get("/healthz")).status_code == 200  # probes are not limited
    client.clock.now += 2
    assert (await one.post("/graphql", json=QUERY)).status_code == 200


async def test_a_token_past_its_bucket_gets_429_with_retry_after_and_others_do_not(local: Client) -> None:
    await run_token_bucket(local)


async def test_anonymous_requests_are_limited_per_address(local: Client) -> None:
    await run_anonymous_bucket(local)


async def test_a_refusal_needs_no_token_lookup(local: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    real = models.tokens.token_for

    async def counting(secret: str) -> Any:
        looked_up.append(secret)
        return await real(secret)

    monkeypatch.setattr(resolvers.auth, "token_for", counting)
    token = await service_token("c")
    http = local.at("10.0.0.4")
    statuses = [(await http.post("/graphql", json=QUERY, headers=bearer(token))).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert looked_up == [token] * 3


async def test_spellings_of_one_tokens_header_share_its_bucket(local: Client) -> None:
    token = await service_token("f")
    headers = [f"Bearer {token}", f"bearer {token}", f"BEARER    {token}", f"Bearer {token}\xa0"]
    # From addresses of their own: only the token's bucket can refuse.
    responses = [
        await local.at(f"10.0.2.{number}").post(
            "/graphql", json=QUERY, headers={b"authorization": header.encode("latin-1")}
        )
        for number, header in enumerate(headers)
    ]
    assert [response.status_code for response in responses[:3]] == [200, 200, 200]
    assert_refused(responses[3], 4)


async def test_made_up_tokens_count_against_their_address(local: Client) -> None:
    token = await service_token("e")
    http = local.at("10.0.0.9")
    assert (await http.post("/graphql", json=QUERY, headers=bearer(token))).status_code == 200  # verified now
    assert (await http.post("/graphql", json=QUERY, headers=bearer("made-up-1"))).status_code == 200
    # A fresh made-up token each time does not get a fresh bucket: the address's is empty.
    assert_refused(await http.post("/graphql", json=QUERY, headers=bearer("made-up-2")), 2)
    assert_refused(await http.post("/graphql", json=QUERY), 2)
    # A token that authenticated counts against its own bucket only.
    assert (await http.post("/graphql", json=QUERY, headers=bearer(token))).status_code == 200
    assert (await local.at("10.0.0.10").post("/graphql", json=QUERY, headers=bearer("made-up-3"))).status_code == 200


async def websocket_handshake(app: Any, address: str, extensions: bool = True) -> list[dict[str, Any]]:
    """Open a websocket to /graphql, and return what the app sent before it accepted or refused."""
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []
    decided = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        decided.set()

    scope = graphql_websocket_scope((address, 4001), {"websocket.http.response": {}} if extensions else {})
    task = asyncio.create_task(app(scope, incoming.get, send))
    await asyncio.wait_for(decided.wait(), 5)
    await incoming.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)
    return sent


async def test_websocket_handshakes_are_counted_per_address(local: Client) -> None:
    assert (await websocket_handshake(local.app, "10.0.0.5"))[0]["type"] == "websocket.accept"
    refused = await websocket_handshake(local.app, "10.0.0.5")
    assert refused[0]["type"] == "websocket.http.response.start"
    assert refused[0]["status"] == 429
    assert dict(refused[0]["headers"])[b"retry-after"] == b"1"
    assert refused[1]["type"] == "websocket.http.response.body"
    # A server without the http response extension: a close before accept (a 403 to the client).
    assert (await websocket_handshake(local.app, "10.0.0.5", extensions=False))[0] == {
        "type": "websocket.close",
        "code": 1013,
        "reason": "Too many connection attempts",
    }
    assert (await websocket_handshake(local.app, "10.0.0.6"))[0]["type"] == "websocket.accept"
    local.clock.now += 1
    assert (await websocket_handshake(local.app, "10.0.0.5"))[0]["type"] == "websocket.accept"


class Operations:
    """One graphql-transport-ws connection, driven through the app's ASGI interface."""

    def __init__(self, app: Any, address: str) -> None:
        self.app = app
        self.address = address
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        await self.sent.put(dict(message))

    async def next_message(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.sent.get(), 5)
        assert message["type"] == "websocket.send", message
        decoded: dict[str, Any] = json.loads(message["text"])
        return decoded

    async def send(self, message: dict[str, Any]) -> None:
        await self.incoming.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def open(self, token: str) -> None:
        scope = graphql_websocket_scope((self.address, 4002), {})
        await self.incoming.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(self.app(scope, self.incoming.get, self._send))
        assert (await asyncio.wait_for(self.sent.get(), 5))["type"] == "websocket.accept"
        await self.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        assert await self.next_message() == {"type": "connection_ack"}

    async def run(self, operation_id: str) -> list[dict[str, Any]]:
        """Send ``{ __typename }`` as an operation; what the server answered for it, to its last message."""
        await self.send({"id": operation_id, "type": "subscribe", "payload": QUERY})
        answers = [await self.next_message()]
        while answers[-1]["type"] == "next":
            answers.append(await self.next_message())
        return answers

    async def close(self) -> None:
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def answered(operation_id: str) -> list[dict[str, Any]]:
    return [
        {"id": operation_id, "type": "next", "payload": {"data": {"__typename": "Query"}}},
        {"id": operation_id, "type": "complete"},
    ]


def refused(operation_id: str, retry_after: int) -> list[dict[str, Any]]:
    error = {
        "message": f"Too many requests: retry in {retry_after} s",
        "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
    }
    return [{"id": operation_id, "type": "error", "payload": [error]}]


async def run_websocket_operations(client: Client) -> None:
    """Burst 3, 0.25 per second: on one websocket the 4th operation is refused (retry in 4 s) and the
    connection goes on; the token's HTTP requests spend the same bucket; another token's do not."""
    token, other = await service_token("ws-a"), await service_token("ws-b")
    ws = Operations(client.app, "10.0.1.1")
    await ws.open(token)
    for operation_id in ("1", "2", "3"):
        assert await ws.run(operation_id) == answered(operation_id)
    assert await ws.run("4") == refused("4", 4)
    assert_refused(await client.at("10.0.1.2").post("/graphql", json=QUERY, headers=bearer(token)), 4)
    other_ws = Operations(client.app, "10.0.1.3")
    await other_ws.open(other)
    assert await other_ws.run("1") == answered("1")
    assert (await client.at("10.0.1.3").post("/graphql", json=QUERY, headers=bearer(other))).status_code == 200
    client.clock.now += 1
    assert await ws.run("4") == refused("4", 3)  # the refused id may be sent again
    client.clock.now += 3
    assert await ws.run("4") == answered("4")
    # One budget: an HTTP request takes the next refill, and the websocket waits for the one after it.
    client.clock.now += 4
    assert (await client.at("10.0.1.2").post("/graphql", json=QUERY, headers=bearer(token))).status_code == 200
    assert await ws.run("5") == refused("5", 4)
    for connection in (ws, other_ws):
        await connection.close()


async def test_operations_on_a_websocket_spend_their_tokens_bucket(local: Client) -> None:
    await run_websocket_operations(local)


async def test_without_rate_limits_websocket_operations_are_not_counted(db: Backend) -> None:
    app = create_app(limited(rate_limit=False), manage_database=False, run_jobs=False)
    ws = Operations(app, "10.0.1.4")
    await ws.open(await service_token("ws-c"))
    for number in range(10):
        assert await ws.run(str(number)) == answered(str(number))
    await ws.close()


async def test_rate_limits_can_be_turned_off(db: Backend) -> None:
    app = create_app(limited(rate_limit=False), manage_database=False, run_jobs=False)
    assert app.state.rate_limiter is None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        statuses = {(await http.post("/graphql", json=QUERY)).status_code for _ in range(10)}
    assert statuses == {200}


def test_settings_read_the_rate_limits() -> None:
    settings = Settings.from_env(
        {
            "CREDITLINE_RATE_LIMIT": "0",
            "CREDITLINE_RATE_LIMIT_TOKEN_PER_SECOND": "7.5",
            "CREDITLINE_RATE_LIMIT_ANONYMOUS_BURST": "9",
        }
    )
    assert (settings.rate_limit, settings.rate_limit_token_per_second, settings.rate_limit_anonymous_burst) == (
        False,
        7.5,
        9,
    )
    defaults = Settings.from_env({})
    assert (defaults.rate_limit, defaults.rate_limit_token_per_second, defaults.rate_limit_token_burst) == (
        True,
        1000.0,
        2000,
    )
    with pytest.raises(SystemExit, match="CREDITLINE_RATE_LIMIT_TOKEN_PER_SECOND must be a positive number"):
        Settings.from_env({"CREDITLINE_RATE_LIMIT_TOKEN_PER_SECOND": "0"})


# Shared through Redis.


def redis_url() -> str:
    if not REDIS_URL:
        if REQUIRE_SERVICES:
            pytest.fail("CREDITLINE_TEST_REDIS_URL is not set (CREDITLINE_REQUIRE_SERVICES=1)")
        pytest.skip("Redis tests skipped: set CREDITLINE_TEST_REDIS_URL to run them")
    return REDIS_URL


@pytest.fixture
async def shared(db: Backend) -> AsyncIterator[tuple[Client, Client]]:
    """Two apps (two server processes) on one Redis, with a key prefix of this test's own."""
    settings = limited(redis_url=redis_url(), rate_limit_prefix=f"creditline-test:{uuid.uuid4().hex}")
    clock = FakeClock()
    first, second = await limited_client(settings, clock), await limited_client(settings, clock)
    yield first, second
    for client in (first, second):
        await client.close()
        await client.app.state.rate_limiter.close()


async def test_redis_buckets_refuse_like_local_ones(shared: tuple[Client, Client]) -> None:
    await run_token_bucket(shared[0])
    await run_anonymous_bucket(shared[0])


async def test_redis_buckets_count_websocket_operations(shared: tuple[Client, Client]) -> None:
    await run_websocket_operations(shared[0])


async def test_processes_on_one_redis_share_a_bucket(shared: tuple[Client, Client]) -> None:
    token = await service_token("d")
    first, second = (client.at("10.0.0.7") for client in shared)
    for http in (first, second, first):
        assert (await http.post("/graphql", json=QUERY, headers=bearer(token))).status_code == 200
    assert_refused(await second.post("/graphql", json=QUERY, headers=bearer(token)), 4)
    assert_refused(await first.post("/graphql", json=QUERY, headers=bearer(token)), 4)


async def test_past_its_own_bucket_a_process_refuses_without_asking_redis(shared: tuple[Client, Client]) -> None:
    limiter = shared[0].app.state.rate_limiter
    calls: list[str] = []
    script = limiter._script

    async def counting(keys: list[str], args: list[Any]) -> Any:
        calls.append(keys[0])
        return await script(keys=keys, args=args)

    limiter._script = counting
    http = shared[0].at("10.0.0.12")
    statuses = [(await http.post("/graphql", json=QUERY)).status_code for _ in range(6)]
    assert statuses == [200, 200, 429, 429, 429, 429]
    assert calls == [f"{limiter.prefix}:a:10.0.0.12"] * 2
    # The other process, on the same address, is refused by the shared bucket, and keeps its own unspent.
    other = shared[1].at("10.0.0.12")
    assert_refused(await other.post("/graphql", json=QUERY), 2)
    shared[0].clock.now += 2
    assert (await other.post("/graphql", json=QUERY)).status_code == 200


async def test_with_redis_down_requests_are_limited_in_process_and_it_is_logged_once(
    db: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    client = await limited_client(limited(redis_url="redis://127.0.0.1:1/0"), FakeClock())
    limiter = client.app.state.rate_limiter
    try:
        with caplog.at_level(logging.INFO, logger="creditline.rate_limit"):
            await run_token_bucket(client)
            limiter._redis_down_until = 0.0  # retry Redis now: still down, and not logged again
            assert (await client.at("10.0.0.8").post("/graphql", json=QUERY)).status_code == 200
        warnings = [r for r in caplog.records if r.name == "creditline.rate_limit"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert warnings[0].getMessage().startswith("rate limits: Redis does not answer (")
    finally:
        await client.close()
        await limiter.close()


async def test_a_frozen_redis_delays_a_request_briefly_and_fails_none(db: Backend) -> None:
    """A Redis that accepts connections and never answers: the call times out, the process counts alone."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    frozen = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = frozen.sockets[0].getsockname()[1]
    client = await limited_client(limited(redis_url=f"redis://127.0.0.1:{port}/0"), FakeClock())
    try:
        http = client.at("10.0.0.11")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await http.post("/graphql", json=QUERY)).status_code == 200
        assert loop.time() - started < 2  # one Redis timeout (0.25 s), then in-process
        started = loop.time()
        assert (await http.post("/graphql", json=QUERY)).status_code == 200
        assert_refused(await http.post("/graphql", json=QUERY), 2)  # local buckets still limit
        assert loop.time() - started < 0.5  # no second wait on Redis meanwhile
    finally:
        await client.close()
        await client.app.state.rate_limiter.close()
        for writer in held:
            writer.close()
        frozen.close()
        await frozen.wait_closed()


def test_uvicorns_error_after_a_refused_handshake_is_dropped_and_no_other() -> None:
    after_refusal = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "ASGI callable returned without completing handshake.", (), None
    )
    keep = RefusedHandshakeFilter()

    def in_refused_task() -> list[bool]:
        handshake_refused.set(True)
        other = logging.LogRecord("creditline.x", logging.ERROR, __file__, 1, "other", (), None)
        return [keep.filter(after_refusal), keep.filter(other)]

    assert contextvars.copy_context().run(in_refused_task) == [False, True]
    assert keep.filter(after_refusal) is True  # a handshake nobody refused: uvicorn's error stays
