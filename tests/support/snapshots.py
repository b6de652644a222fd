"""Every row of every table, to tell what a billing call changed: a refused call must change none of them."""

from __future__ import annotations

from typing import Any

from tortoise import connections

from tests.support.backends import TABLES

Snapshot = dict[str, list[tuple[tuple[str, Any], ...]]]


async def snapshot() -> Snapshot:
    conn = connections.get("default")
    tables: Snapshot = {}
    for table in TABLES:
        rows = await conn.execute_query_dict(f"SELECT * FROM {table}")
        tables[table] = sorted((tuple(sorted(row.items())) for row in rows), key=repr)
    return tables


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    """The tables whose rows differ between the two snapshots."""
    return {table for table in TABLES if before[table] != after[table]}
