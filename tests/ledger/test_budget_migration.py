"""Migration 0014 makes member budgets spend limits on their organization's pool, and a month's budget usage
the limit's counter of that month; a budget of an organization without a pool is not carried over. Each
backend migrates a database of its own in a child process, so the session's Tortoise connection is left
alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.backends import POSTGRES_URL, skip_or_fail

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import UTC, datetime
    from tortoise import Tortoise, connections
    from tortoise.migrations.api.migrate import migrate
    from creditline.db import tortoise_config
    from models.sql import Sql

    URL = sys.argv[1]
    NOW = datetime(2026, 3, 10, tzinfo=UTC)

    async def main():
        await migrate(config=tortoise_config(URL), target="models.0013_spend_limits")
        sql = Sql(connections.get("default"))
        for n in (1, 2, 3):
            await sql.execute(
                "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)", n, f"u{n}@example.com", NOW
            )
        for n in (1, 2):
            await sql.execute("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)", n, f"o{n}", NOW)
        await sql.execute(
            "INSERT INTO credit_accounts (id, organization_id, balance, held, version, created_at)"
            " VALUES (10, 1, 0, 0, 0, $1)",
            NOW,
        )
        for org, user, limit in ((1, 1, 5_000_000), (1, 2, 7_000_000), (2, 3, 9_000_000)):  # org 2: no pool
            await sql.execute(
                "INSERT INTO member_budgets (organization_id, user_id, monthly_limit) VALUES ($1, $2, $3)",
                org, user, limit,
            )
        for org, user, month, spent in (
            (1, 1, "2026-02", 1_000_000), (1, 1, "2026-03", 2_500_000), (1, 2, "2024-12", 3),
            (1, 3, "2026-03", 4),  # no budget: no counter
            (2, 3, "2026-03", 5),  # no pool
        ):
            await sql.execute(
                "INSERT INTO budget_usage (organization_id, user_id, month, spent) VALUES ($1, $2, $3, $4)",
                org, user, month, spent,
            )
        await Tortoise.close_connections()
        await migrate(config=tortoise_config(URL))
        sql = Sql(connections.get("default"))
        limits = await sql.fetch(
            'SELECT id, account_id, scope, subject, user_id, kind, "window", window_length, time_zone, amount,'
            " action, paused FROM spend_limits ORDER BY id"
        )
        usage = await sql.fetch(
            "SELECT l.subject, u.run_id, u.period, u.spent FROM spend_limit_usage u"
            " JOIN spend_limits l ON l.id = u.limit_id ORDER BY l.subject, u.period"
        )
        counts = await sql.fetch("SELECT id, spend_limits FROM credit_accounts")
        tables = await sql.fetch(
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name IN ('member_budgets', 'budget_usage')"
            if sql.postgres else
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE name IN ('member_budgets', 'budget_usage')"
        )
        await Tortoise.close_connections()
        print(json.dumps({
            "limits": [
                [int(r["account_id"]), r["scope"], r["subject"], int(r["user_id"]), r["kind"], r["window"],
                 int(r["window_length"]), r["time_zone"], int(r["amount"]), r["action"], bool(r["paused"])]
                for r in limits
            ],
            "usage": [[r["subject"], r["run_id"], int(r["period"]), int(r["spent"])] for r in usage],
            "counts": sorted([int(r["id"]), int(r["spend_limits"])] for r in counts),
            "old_tables": int(tables[0]["n"]),
        }))

    asyncio.run(main())
    """
)

EXPECTED = {
    "limits": [
        [10, "MEMBER", "member:1", 1, "CAP", "MONTH", 1, "UTC", 5_000_000, "BLOCK", False],
        [10, "MEMBER", "member:2", 2, "CAP", "MONTH", 1, "UTC", 7_000_000, "BLOCK", False],
    ],
    "usage": [
        ["member:1", "", 1769904000, 1_000_000],  # 2026-02-01T00:00Z
        ["member:1", "", 1772323200, 2_500_000],  # 2026-03-01T00:00Z
        ["member:2", "", 1733011200, 3],  # 2024-12-01T00:00Z
    ],
    "counts": [[10, 2]],
    "old_tables": 0,
}


def migrated(url: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_sqlite_budgets_become_limits_on_the_pool(tmp_path: Path) -> None:
    assert migrated(f"sqlite://{tmp_path}/migrate.sqlite3") == EXPECTED


async def test_postgres_budgets_become_limits_on_the_pool() -> None:
    if not POSTGRES_URL:
        skip_or_fail("PostgreSQL half skipped: set CREDITLINE_TEST_POSTGRES_URL to run it")
    name = f"creditline_migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
            assert migrated(url) == EXPECTED
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
