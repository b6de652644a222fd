"""The databases the tests run on: SQLite always, PostgreSQL when ``CREDITLINE_TEST_POSTGRES_URL`` is set (the
``backend`` fixture of tests/conftest.py makes each), every table they empty between tests, and the instant the
tests' clock is frozen at."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from tortoise import connections

from creditline.db_backends import DatabaseUnavailable

REQUIRE_SERVICES = os.environ.get("CREDITLINE_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("CREDITLINE_TEST_POSTGRES_URL", "")
TABLES = (
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "events",
    "alerts",
    "auto_top_ups",
    "webhook_events",
    "refunds",
    "invoices",
    "invoice_sequence",
    "transactions",
    "subscriptions",
    "gateway_customers",
    "payment_methods",
    "usage_rollups",
    "spend_limit_usage",
    "spend_limits",
    "ledger_entries",
    "usage_allocations",
    "usage_events",
    "holds",
    "credit_lots",
    "portal_codes",
    "credit_accounts",
    "api_tokens",
    "invitations",
    "memberships",
    "organizations",
    "users",
    "idempotency_records",
)
T0 = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
MIGRATIONS = sorted(
    f"models.{path.stem}" for path in (Path(__file__).resolve().parents[2] / "models" / "migrations").glob("[0-9]*.py")
)


@dataclass(frozen=True)
class Backend:
    name: str
    url: str


def skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CREDITLINE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def scratch_postgres(prefix: str, query: str = "") -> AsyncIterator[str]:
    """A PostgreSQL database of its own for a test that starts server or CLI processes on it (the URL, with
    ``query`` appended), dropped after; skipped (or failed, with CREDITLINE_REQUIRE_SERVICES=1) without one."""
    if not POSTGRES_URL:
        skip_or_fail("PostgreSQL half skipped: set CREDITLINE_TEST_POSTGRES_URL to run it")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    finally:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def reset(backend: Backend) -> None:
    """Empty every table (the per-test fixture and property tests that need a clean slate per example)."""
    conn = connections.get("default")
    if backend.name == "postgres":
        # TRUNCATE takes every table's exclusive lock: on a loaded machine (the suite runs in parallel processes)
        # it can outlast the pool's bounds once, while a previous test's connection is still being let go.
        for attempt in range(3):
            try:
                await conn.execute_script(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
                return
            except DatabaseUnavailable:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.5)
    else:
        await conn.execute_script("".join(f"DELETE FROM {table};" for table in TABLES) + "DELETE FROM sqlite_sequence;")


async def row_counts() -> dict[str, int]:
    """How many rows every table holds: a refused request must not add or remove any."""
    conn = connections.get("default")
    counts: dict[str, int] = {}
    for table in TABLES:
        rows = await conn.execute_query_dict(f"SELECT COUNT(*) AS n FROM {table}")
        counts[table] = int(rows[0]["n"])
    return counts
