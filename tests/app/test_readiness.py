"""Liveness and readiness (issue 9, point 14): /livez says the process answers; /readyz (and /healthz, its
alias) that requests can succeed: the database answers through the pool, its migrations are applied, Redis
answers when configured. Otherwise 503 with a JSON body naming what failed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from tortoise import connections

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from tests.support.backends import MIGRATIONS, REQUIRE_SERVICES, Backend
from tests.support.live import closed_port
from tests.support.proxied import proxied_database

READY = {"status": "ready", "checks": {"database": "ok"}}


def client_for(settings: Settings, clock: Clock) -> httpx.AsyncClient:
    app = create_app(settings, clock=clock, manage_database=False, run_jobs=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings, clock) as client:
        yield client


async def test_livez_answers_while_the_process_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_and_healthz_say_ready_with_the_database_migrated(client: httpx.AsyncClient) -> None:
    for path in ("/readyz", "/healthz"):
        response = await client.get(path)
        assert (path, response.status_code, response.json()) == (path, 200, READY)


async def test_readyz_names_a_migration_not_applied(db: Backend, clock: Clock, settings: Settings) -> None:
    conn = connections.get("default")
    last = MIGRATIONS[-1].removeprefix("models.")
    _, rows = await conn.execute_query(f"SELECT applied_at FROM tortoise_migrations WHERE name = '{last}'")
    await conn.execute_script(f"DELETE FROM tortoise_migrations WHERE name = '{last}'")
    try:
        async with client_for(settings, clock) as client:
            response = await client.get("/readyz")
    finally:
        await conn.execute_query(
            "INSERT INTO tortoise_migrations (app, name, applied_at) VALUES ('models', $1, $2)"
            if db.name == "postgres"
            else "INSERT INTO tortoise_migrations (app, name, applied_at) VALUES ('models', ?, ?)",
            [last, rows[0]["applied_at"]],
        )
    assert (response.status_code, response.json()) == (
        503,
        {
            "status": "unavailable",
            "failed": ["database"],
            "checks": {
                "database": f"the database needs 1 migration(s) (models.{last}): run `creditline migrate`",
            },
        },
    )


async def test_readyz_names_redis_when_it_does_not_answer(db: Backend, clock: Clock) -> None:
    port = closed_port()
    settings = Settings(database_url="unused", redis_url=f"redis://127.0.0.1:{port}/0", readiness_timeout_seconds=1)
    async with client_for(settings, clock) as client:
        response = await client.get("/readyz")
    body = response.json()
    assert (response.status_code, body["status"], body["failed"], body["checks"]["database"]) == (
        503,
        "unavailable",
        ["redis"],
        "ok",
    )
    assert body["checks"]["redis"] == (
        f"Error 111 connecting to 127.0.0.1:{port}. Connect call failed ('127.0.0.1', {port})."
    )


async def test_readyz_in_production_names_what_failed_but_not_why(db: Backend, clock: Clock) -> None:
    settings = Settings(
        env="production",
        database_url="unused",
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        readiness_timeout_seconds=1,
        allow_sandbox_in_production=True,
        secret_key="test-secret-key-0123456789abcdefghij",
    )
    async with client_for(settings, clock) as client:
        response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "unavailable", "failed": ["redis"], "checks": {"database": "ok", "redis": "unavailable"}},
    )


async def test_readyz_checks_redis_when_it_is_configured(db: Backend, clock: Clock) -> None:
    url = os.environ.get("CREDITLINE_TEST_REDIS_URL", "")
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail("CREDITLINE_TEST_REDIS_URL is not set (CREDITLINE_REQUIRE_SERVICES=1)")
        pytest.skip("set CREDITLINE_TEST_REDIS_URL to check readiness with Redis")
    async with client_for(Settings(database_url="unused", redis_url=url), clock) as client:
        response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ready", "checks": {"database": "ok", "redis": "ok"}},
    )


PROXIED = Settings(
    database_url="unused", token_cache_seconds=0, db_acquire_timeout_seconds=1, readiness_timeout_seconds=1
)


async def test_readyz_with_postgres_cut_off_is_503_at_once_and_ready_again_after(db: Backend, clock: Clock) -> None:
    if db.name != "postgres":
        pytest.skip("cuts the network to PostgreSQL")
    async with proxied_database(db.url, PROXIED) as proxy, client_for(PROXIED, clock) as client:
        assert (await client.get("/readyz")).json() == READY
        proxy.cut()
        started = time.monotonic()
        response = await client.get("/readyz")
        assert time.monotonic() - started < 2
        body = response.json()
        assert (response.status_code, body["status"], body["failed"]) == (503, "unavailable", ["database"])
        assert body["checks"]["database"].startswith("the database is unavailable: ")
        assert (await client.get("/livez")).status_code == 200  # alive, not ready: do not restart it

        proxy.restore()
        started = time.monotonic()
        while (response := await client.get("/readyz")).status_code != 200:
            assert time.monotonic() - started < 3, response.json()
            await asyncio.sleep(0.1)
        assert response.json() == READY


async def test_readyz_with_postgres_frozen_answers_503_within_its_timeout(db: Backend, clock: Clock) -> None:
    if db.name != "postgres":
        pytest.skip("freezes the network to PostgreSQL")
    async with proxied_database(db.url, PROXIED) as proxy, client_for(PROXIED, clock) as client:
        assert (await client.get("/readyz")).json() == READY
        proxy.freeze()
        started = time.monotonic()
        response = await client.get("/readyz")
        elapsed = time.monotonic() - started
        assert (response.status_code, response.json()) == (
            503,
            {"status": "unavailable", "failed": ["database"], "checks": {"database": "no answer within 1 s"}},
        )
        assert elapsed < 2
        proxy.restore()
