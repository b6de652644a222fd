"""The test harness: every test that takes ``db`` runs once on SQLite and once on PostgreSQL.

PostgreSQL runs when ``CREDITLINE_TEST_POSTGRES_URL`` is set (a fresh database is created for the run and
dropped after). Without it that half is skipped, and says so; with ``CREDITLINE_REQUIRE_SERVICES=1`` a
missing or unreachable service fails instead. After every test the ledger audit must find nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from tortoise import Tortoise
from tortoise.backends.base import executor

from creditline import db as dbmod
from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from models import ledger
from tests.support.backends import POSTGRES_URL, T0, Backend, reset, skip_or_fail
from tests.support.helpers import Api
from tests.support.stripe_standin import StripeStandIn, running

# The suite runs in parallel processes (pytest-xdist), each with its own databases. Redis is shared: each
# process gets its own channel and rate-limit prefix, which the server processes the tests start inherit, so
# one process's balance events never reach another's subscribers.
RUN_ID = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:8]}"
os.environ["CREDITLINE_REDIS_CHANNEL"] = f"creditline:test:{RUN_ID}"
os.environ["CREDITLINE_RATE_LIMIT_PREFIX"] = f"creditline-test:{RUN_ID}"


async def _fresh_postgres() -> tuple[str, str]:
    parts = urlsplit(POSTGRES_URL)
    name = f"creditline_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        skip_or_fail(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(parts._replace(path=f"/{name}")), name


async def _drop_postgres(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backend]:
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path_factory.mktemp('sqlite')}/test.sqlite3"
    else:
        if not POSTGRES_URL:
            skip_or_fail("PostgreSQL half skipped: set CREDITLINE_TEST_POSTGRES_URL to run it")
        url, pg_name = await _fresh_postgres()
    # Tortoise caches insert statements per connection name, not per dialect: start each backend clean.
    executor.EXECUTOR_CACHE.clear()
    await dbmod.migrate(url)
    await dbmod.close_db()
    await dbmod.init_db(url)
    try:
        yield Backend(request.param, url)
    finally:
        await dbmod.close_db()
        if pg_name:
            await _drop_postgres(pg_name)


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Backend]:
    """A clean database; after the test the ledger invariant must hold for every account."""
    await reset(backend)
    yield backend
    assert Tortoise._inited
    findings = await ledger.audit()
    assert findings == [], f"ledger audit found drift: {findings}"


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.freeze(T0)
    return clock


NO_WEB_BUILD = str(Path(__file__).resolve().parent / "no-web-build")


@pytest.fixture
def settings() -> Settings:
    # Every test client comes from one address: rate limits (tests/app/test_rate_limit.py) would throttle the
    # anonymous requests of fuzzing and loops, and a 429 would pass for a client error.
    return Settings(
        database_url="unused",
        token_cache_seconds=0,
        rate_limit=False,
        redis_channel=os.environ["CREDITLINE_REDIS_CHANNEL"],
        rate_limit_prefix=os.environ["CREDITLINE_RATE_LIMIT_PREFIX"],
        # The same GraphiQL (strawberry's) whether or not this checkout built web/: tests/app/test_web_page.py
        # serves builds of its own.
        web_dist=NO_WEB_BUILD,
    )


@pytest.fixture
async def api(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings, clock=clock, manage_database=False, run_jobs=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(client, app, clock, settings)


@pytest.fixture(scope="session")
async def stripe_standin() -> AsyncIterator[StripeStandIn]:
    """The local stand-in for Stripe's API (tests/support/stripe_standin.py), one server for the run."""
    async with running() as standin:
        yield standin


# Modules whose tests start servers, browsers or CLI processes (seconds to tens of seconds each). pytest-xdist
# hands tests out in collection order: one of these dealt last kept a worker busy minutes after the other ran
# dry, so they go first, in their own order, and the quick tests fill in behind them.
SLOW_FIRST = (
    "tests/web/",
    "tests/app/test_cli.py",
    "tests/app/test_cli_beside_server.py",
    "tests/app/test_cli_demo.py",
    "tests/app/test_webhook_processes.py",
    "tests/app/test_workers.py",
    "tests/app/test_startup.py",
    "tests/app/test_transport_limits.py",
)


@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by their session-scoped backend
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((n for n, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the order within a module, and the backend grouping, stay
