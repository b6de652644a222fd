"""Migration 0008 turns the rollups of 0003 (one row per hour and member x activity x agent) into one row per
hour and dimension, with the same totals. Each backend migrates a database of its own in a child process, so
the session's Tortoise connection is left alone."""

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
    from models.sql import Sql, as_datetime

    URL = sys.argv[1]
    TEN, ELEVEN = datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 11, tzinfo=UTC)
    OLD_ROWS = [  # account, organization, user, activity, agent, hour, events, credits, free, paid
        (1, 0, 7, "answer", "a", TEN, 2, 10, 10, 0),
        (1, 0, 7, "answer", "b", TEN, 1, 5, 2, 3),
        (1, 0, 8, "search", "a", TEN, 1, 3, 0, 3),
        (1, 0, 7, "answer", "a", ELEVEN, 4, 40, 40, 0),
        (2, 9, 7, "answer", "a", TEN, 1, 1, 1, 0),
    ]

    async def main():
        await migrate(config=tortoise_config(URL), target="models.0006_subscriptions_auto_top_up_webhooks")
        sql = Sql(connections.get("default"))
        for row in OLD_ROWS:
            await sql.execute(
                "INSERT INTO usage_rollups (account_id, organization_key, user_id, activity, agent_id, bucket,"
                " events, credits, free_credits, paid_credits) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                *row,
            )
        await Tortoise.close_connections()
        await migrate(config=tortoise_config(URL))
        rows = await Sql(connections.get("default")).fetch(
            "SELECT account_id, organization_key, dimension, key, bucket, events, credits, free_credits,"
            " paid_credits FROM usage_rollups"
        )
        await Tortoise.close_connections()
        print(json.dumps(sorted(
            [r["account_id"], r["organization_key"], r["dimension"], r["key"], as_datetime(r["bucket"]).isoformat(),
             int(r["events"]), int(r["credits"]), int(r["free_credits"]), int(r["paid_credits"])]
            for r in rows
        )))

    asyncio.run(main())
    """
)

EXPECTED = [
    [1, 0, "ACTIVITY", "answer", "2026-01-01T10:00:00+00:00", 3, 15, 12, 3],
    [1, 0, "ACTIVITY", "answer", "2026-01-01T11:00:00+00:00", 4, 40, 40, 0],
    [1, 0, "ACTIVITY", "search", "2026-01-01T10:00:00+00:00", 1, 3, 0, 3],
    [1, 0, "AGENT", "a", "2026-01-01T10:00:00+00:00", 3, 13, 10, 3],
    [1, 0, "AGENT", "a", "2026-01-01T11:00:00+00:00", 4, 40, 40, 0],
    [1, 0, "AGENT", "b", "2026-01-01T10:00:00+00:00", 1, 5, 2, 3],
    [1, 0, "MEMBER", "7", "2026-01-01T10:00:00+00:00", 3, 15, 12, 3],
    [1, 0, "MEMBER", "7", "2026-01-01T11:00:00+00:00", 4, 40, 40, 0],
    [1, 0, "MEMBER", "8", "2026-01-01T10:00:00+00:00", 1, 3, 0, 3],
    [2, 9, "ACTIVITY", "answer", "2026-01-01T10:00:00+00:00", 1, 1, 1, 0],
    [2, 9, "AGENT", "a", "2026-01-01T10:00:00+00:00", 1, 1, 1, 0],
    [2, 9, "MEMBER", "7", "2026-01-01T10:00:00+00:00", 1, 1, 1, 0],
]


def migrated_rows(url: str) -> list[list[object]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows: list[list[object]] = json.loads(done.stdout)
    return rows


def test_sqlite_rollups_keep_their_totals_per_dimension(tmp_path: Path) -> None:
    assert migrated_rows(f"sqlite://{tmp_path}/migrate.sqlite3") == EXPECTED


async def test_postgres_rollups_keep_their_totals_per_dimension() -> None:
    if not POSTGRES_URL:
        skip_or_fail("PostgreSQL half skipped: set CREDITLINE_TEST_POSTGRES_URL to run it")
    name = f"creditline_migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
            assert migrated_rows(url) == EXPECTED
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
