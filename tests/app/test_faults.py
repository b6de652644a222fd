"""A database that goes away (issue 9, point 13): every request gets a clear error within a bounded time,
service is back within seconds of the database's return without a restart, and the pool does not leak.

The PostgreSQL tests run the app in this process with its pool routed through a TCP proxy the test cuts,
freezes and restores (tests/support/tcp_proxy.py), and terminate its backends with pg_terminate_backend.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from tortoise import connections
from tortoise.backends.asyncpg.client import TransactionWrapper
from tortoise.backends.sqlite.client import SqliteTransactionWrapper
from tortoise.transactions import in_transaction

from creditline.app import create_app
from creditline.clock import Clock
from creditline.db_backends import SERVICE_UNAVAILABLE_MESSAGE, DatabaseUnavailable, SqliteImmediateTransaction
from creditline.settings import Settings
from models.credits import MICRO, format_credits
from models.tables import UsageEvent
from tests.support.backends import POSTGRES_URL, Backend
from tests.support.helpers import SPEND, Api, gid
from tests.support.live import PROTOCOL, serve
from tests.support.proxied import APPLICATION_NAME, proxied_database
from tests.support.tcp_proxy import TcpProxy

POOL_SIZE = 5
FAILED_BEGINS = 25
FAULT_SETTINGS = Settings(
    database_url="unused",
    token_cache_seconds=600,  # tokens are looked up once, before the fault: the spends themselves meet it
    db_acquire_timeout_seconds=2.0,
    db_statement_timeout_ms=2000,  # spends on one account wait for its row lock: room for a loaded machine
    readiness_timeout_seconds=1.0,
)
BOUND_SECONDS = 8.0
"""No request may take longer during a fault: acquire (2 s) or a command (2 s + 1 s), then giving a
suspect connection back (2 s), with slack for a loaded machine."""
UNAVAILABLE = {
    "message": SERVICE_UNAVAILABLE_MESSAGE,
    "path": ["spendCredits"],
    "extensions": {"code": "SERVICE_UNAVAILABLE"},
}


@dataclass
class Outcome:
    kind: str  # "ok", "unavailable" (GraphQL SERVICE_UNAVAILABLE) or "503"
    seconds: float


@dataclass
class World:
    api: Api
    proxy: TcpProxy
    user_id: int
    service: str
    database: str
    sent: set[str] = field(default_factory=set)
    """Every idempotency key spent with."""

    async def spend(self, key: str, credits: str = "0.01") -> Outcome:
        self.sent.add(key)
        started = time.monotonic()
        response = await self.api.client.post(
            "/graphql",
            json={
                "query": SPEND,
                "variables": {
                    "input": {
                        "userId": gid("User", self.user_id),
                        "agentId": "bot",
                        "activity": "answer",
                        "credits": credits,
                        "idempotencyKey": key,
                    }
                },
            },
            headers={"authorization": f"Bearer {self.service}"},
        )
        seconds = time.monotonic() - started
        if response.status_code == 503:
            assert response.json() == {
                "errors": [{"message": SERVICE_UNAVAILABLE_MESSAGE, "extensions": {"code": "SERVICE_UNAVAILABLE"}}]
            }
            return Outcome("503", seconds)
        assert response.status_code == 200, response.text
        body = response.json()
        if "errors" in body:
            assert body["data"] is None
            assert [{k: v for k, v in error.items() if k != "locations"} for error in body["errors"]] == [UNAVAILABLE]
            return Outcome("unavailable", seconds)
        assert body["data"]["spendCredits"]["__typename"] == "SpendCreditsSuccess", body
        return Outcome("ok", seconds)

    async def burst(self, prefix: str, count: int) -> list[Outcome]:
        return list(await asyncio.gather(*(self.spend(f"{prefix}-{i}") for i in range(count))))

    async def sessions(self) -> int:
        """The proxied pool's sessions on the server."""
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            count: int = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                self.database,
                APPLICATION_NAME,
            )
            return count
        finally:
            await admin.close()

    async def terminate_sessions(self) -> int:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            terminated: int = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = $2) AS t",
                self.database,
                APPLICATION_NAME,
            )
            return terminated
        finally:
            await admin.close()

    async def spend_succeeds_within(self, seconds: float, key_prefix: str) -> float:
        """Spend until one succeeds; how long that took."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            outcome = await self.spend(f"{key_prefix}-{attempt}")
            elapsed = time.monotonic() - started
            if outcome.kind == "ok":
                return elapsed
            assert elapsed < seconds, f"no spend succeeded within {seconds} s of the database's return"
            await asyncio.sleep(0.1)

    def pool_leaks(self) -> int:
        """Connections the pool has handed out and not got back (nothing is in flight when this is asked)."""
        pool = connections.get("default")._pool
        assert pool is not None
        return int(pool.get_size() - pool.get_idle_size())


@pytest.fixture
async def world(db: Backend, clock: Clock) -> AsyncIterator[World]:
    if db.name != "postgres":
        pytest.skip("fault tests cut the network to PostgreSQL (the SQLite half has no network)")
    async with proxied_database(db.url, FAULT_SETTINGS, maxsize=POOL_SIZE) as proxy:
        app = create_app(FAULT_SETTINGS, clock=clock, manage_database=False, run_jobs=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            api = Api(client, app, clock, FAULT_SETTINGS)
            user_id, _ = await api.user("ada@example.com", bonus=1000)
            service = await api.service()
            world = World(api, proxy, user_id, service, db.url.rsplit("/", 1)[1])
            # Warm up: the token is cached, and a burst opens every connection of the pool.
            assert {o.kind for o in await world.burst("warm", 2 * POOL_SIZE)} == {"ok"}
            assert await world.sessions() == POOL_SIZE
            yield world


async def test_a_cut_database_fails_every_spend_at_once_and_service_returns_within_seconds(world: World) -> None:
    world.proxy.cut()
    during = await world.burst("cut", 40)
    assert {o.kind for o in during} == {"unavailable"}
    assert max(o.seconds for o in during) < BOUND_SECONDS

    world.proxy.restore()
    back = await world.spend_succeeds_within(3.0, "back")
    assert back < 3.0
    after = await world.burst("after", 2 * POOL_SIZE)
    assert {o.kind for o in after} == {"ok"}
    assert await world.sessions() == POOL_SIZE  # every connection was opened again: none leaked
    assert world.pool_leaks() == 0
    assert await UsageEvent.all().count() == 2 * POOL_SIZE + 1 + 2 * POOL_SIZE  # warm-up, first back, after


async def test_an_uncached_token_during_a_cut_is_a_503(world: World) -> None:
    world.proxy.cut()
    response = await world.api.client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"authorization": "Bearer cls_not-cached"}
    )
    assert (response.status_code, response.headers["retry-after"], response.json()) == (
        503,
        "1",
        {"errors": [{"message": SERVICE_UNAVAILABLE_MESSAGE, "extensions": {"code": "SERVICE_UNAVAILABLE"}}]},
    )
    world.proxy.restore()
    await world.spend_succeeds_within(3.0, "back")


async def test_a_websocket_whose_token_cannot_be_looked_up_is_closed_with_try_again_later(
    world: World, clock: Clock
) -> None:
    async with serve(FAULT_SETTINGS, clock) as live:
        world.proxy.cut()
        async with websockets.connect(live.ws, subprotocols=PROTOCOL) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer cls_unknown"}}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), BOUND_SECONDS)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1013,
            "The database is unavailable; try again shortly",
        )
        world.proxy.restore()


async def test_a_frozen_database_fails_requests_within_the_bound_and_the_pool_heals(world: World) -> None:
    world.proxy.freeze()
    during = await world.burst("frozen", 12)
    assert {o.kind for o in during} == {"unavailable"}
    assert max(o.seconds for o in during) < BOUND_SECONDS
    world.proxy.restore()

    await world.spend_succeeds_within(3.0, "back")
    after = await world.burst("after", 2 * POOL_SIZE)
    assert {o.kind for o in after} == {"ok"}
    assert world.pool_leaks() == 0
    assert await world.sessions() == POOL_SIZE


async def test_terminated_backends_under_load_lose_nothing_and_apply_nothing_twice(world: World) -> None:
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            outcomes.append(await world.spend(f"load-{n}-{i}"))

    clients = [asyncio.create_task(client(n)) for n in range(8)]
    terminated = 0
    for _ in range(6):
        await asyncio.sleep(0.3)
        terminated += await world.terminate_sessions()
    stop.set()
    await asyncio.gather(*clients)
    assert terminated >= 6
    assert {o.kind for o in outcomes} <= {"ok", "unavailable"}
    assert max(o.seconds for o in outcomes) < BOUND_SECONDS
    assert sum(o.kind == "ok" for o in outcomes) > 0

    # Everything works again; every key, resent, was applied exactly once (an unavailable answer at commit
    # may have been applied: its replay answers the same success and moves nothing).
    await world.spend_succeeds_within(3.0, "back")
    sent = sorted(world.sent)
    replays: list[Outcome] = []
    for start in range(0, len(sent), POOL_SIZE):
        replays.extend(await asyncio.gather(*(world.spend(key) for key in sent[start : start + POOL_SIZE])))
    assert {o.kind for o in replays} == {"ok"}
    assert await UsageEvent.all().count() == len(sent)
    balance = await world.api.data(
        "query($id: ID!) { node(id: $id) { ... on User { credit { balance { total } } } } }",
        {"id": gid("User", world.user_id)},
        token=await world.api.admin(),
    )
    assert balance["node"]["credit"]["balance"]["total"] == format_credits(1000 * MICRO - len(sent) * 10_000)
    assert world.pool_leaks() == 0
    after = await world.burst("after", 2 * POOL_SIZE)
    assert {o.kind for o in after} == {"ok"}
    assert await world.sessions() == POOL_SIZE  # 1.1.9 lost some of them to failed BEGINs
    # The db fixture's audit then checks every account's ledger.


# Both backends: a BEGIN that fails gives its connection (PostgreSQL) or the connection's lock (SQLite) back.


@pytest.fixture
def failing_begin(db: Backend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next 25 BEGINs fail as a stalled network does (TimeoutError); returns the count of those left."""
    left = [FAILED_BEGINS]
    wrapper: Any = TransactionWrapper if db.name == "postgres" else SqliteImmediateTransaction
    original = wrapper.begin

    async def begin(self: Any) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise TimeoutError
        await original(self)

    monkeypatch.setattr(wrapper, "begin", begin)
    return left


async def test_failed_begins_give_their_connection_back(db: Backend, failing_begin: list[int]) -> None:
    # More than the pool has (20): with tortoise-orm 1.1.9's contexts each kept its connection (PostgreSQL),
    # and the first kept the connection's lock for ever (SQLite).
    for _ in range(FAILED_BEGINS):
        with pytest.raises(DatabaseUnavailable if db.name == "postgres" else TimeoutError):
            async with in_transaction():
                pass
    assert failing_begin == [0]

    async def a_transaction() -> int:
        async with in_transaction() as conn:
            _, rows = await conn.execute_query("SELECT 1 AS one")
            return int(rows[0]["one"])

    assert await asyncio.wait_for(a_transaction(), 5) == 1
    # Nor is the task's connection left set to a failed transaction.
    assert not isinstance(connections.get("default"), TransactionWrapper | SqliteTransactionWrapper)
