"""Raw SQL on a Tortoise connection, written once for SQLite and PostgreSQL.

The ledger's hot paths use a handful of plain statements instead of ORM objects: each spend is one
transaction of a few round trips. Statements use PostgreSQL's ``$1`` placeholders; on SQLite they are
rewritten to ``?`` with the arguments reordered to match.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

_PLACEHOLDER = re.compile(r"\$(\d+)")
T = TypeVar("T")


@lru_cache(maxsize=512)
def _to_qmark(sql: str) -> tuple[str, tuple[int, ...]]:
    order = tuple(int(n) - 1 for n in _PLACEHOLDER.findall(sql))
    return _PLACEHOLDER.sub("?", sql), order


def is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


class Sql:
    """A thin wrapper that runs ``$n`` statements on either database and returns dict rows."""

    __slots__ = ("conn", "postgres")

    def __init__(self, conn: BaseDBAsyncClient) -> None:
        self.conn = conn
        self.postgres = is_postgres(conn)

    def _prepare(self, sql: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
        if self.postgres:
            return sql, list(args)
        text, order = _to_qmark(sql)
        return text, [args[i] for i in order]

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        text, values = self._prepare(sql, args)
        return await self.conn.execute_query_dict(text, values)

    async def fetch_values(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        """Rows as sequences of column values, in the statement's column order: for reads of many rows,
        where building a dict per row would cost more than the query."""
        text, values = self._prepare(sql, args)
        _, rows = await self.conn.execute_query(text, values)
        # Typed as dicts by Tortoise, but they are asyncpg Records or sqlite3 Rows, which index by position.
        return cast("Sequence[Sequence[Any]]", rows)

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement and return the number of rows it changed."""
        text, values = self._prepare(sql, args)
        count, _ = await self.conn.execute_query(text, values)
        return count

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of arguments, as one batch (a single call to the driver)."""
        prepared = [self._prepare(sql, row) for row in rows]
        await self.conn.execute_many(prepared[0][0], [values for _, values in prepared])

    async def in_writer_thread(self, statements: Sequence[str], steps: Callable[[ThreadSql], T]) -> T:
        """SQLite only: run ``steps`` on the connection's thread (aiosqlite's), where it runs ``statements``
        through the ``ThreadSql`` it is given, one after another, in one hop to that thread and back (a hop
        per statement otherwise). Whatever it raises is raised here."""
        assert not self.postgres
        run = cast("Any", self.conn).execute_in_thread  # creditline/db_backends.py, the SQLite clients
        result: T = await run("; ".join(statements), lambda raw: steps(ThreadSql(raw)))
        return result

    def for_update(self, of: str | None = None, *, skip_locked: bool = False) -> str:
        """Row lock clause: PostgreSQL locks the row (of table alias ``of``; with ``skip_locked``, passing over
        rows another transaction holds, as job queues do); SQLite has one writer already (one transaction at a
        time in a process; across processes every transaction begins IMMEDIATE: ``creditline.db_backends``)."""
        if not self.postgres:
            return ""
        return (f" FOR UPDATE OF {of}" if of else " FOR UPDATE") + (" SKIP LOCKED" if skip_locked else "")


class ThreadSql:
    """``$n`` statements on a ``sqlite3`` connection, from its own thread (``Sql.in_writer_thread``)."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        text, order = _to_qmark(sql)
        return self.raw.execute(text, [args[i] for i in order]).fetchall()


def as_datetime(value: Any) -> datetime | None:
    """A timestamp read by raw SQL: asyncpg returns ``datetime``, SQLite the text Tortoise wrote."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_READ_SNAPSHOT: ContextVar[bool] = ContextVar("creditline_read_snapshot", default=False)


def in_read_snapshot() -> bool:
    """Whether the transaction beginning now is a ``read_snapshot`` (the SQLite client begins it deferred)."""
    return _READ_SNAPSHOT.get()


@contextlib.asynccontextmanager
async def read_snapshot() -> AsyncIterator[Sql]:
    """Reads across several statements that see one consistent state, while writers go on: a REPEATABLE
    READ, READ ONLY transaction on PostgreSQL; on SQLite (WAL) a deferred transaction, which takes no lock
    (every other transaction begins IMMEDIATE: ``creditline.db_backends``). Only reads belong in it."""
    token = _READ_SNAPSHOT.set(True)
    begun = False
    try:
        async with in_transaction() as conn:
            _READ_SNAPSHOT.reset(token)  # only this transaction's BEGIN, not those of tasks it starts
            begun = True
            sql = Sql(conn)
            if sql.postgres:
                await sql.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield sql
    finally:
        if not begun:
            _READ_SNAPSHOT.reset(token)


def _try_flock(path: str) -> int | None:
    """The descriptor of ``path`` locked exclusively, or ``None`` when another holder has it (no waiting)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.asynccontextmanager
async def job_lock(conn: BaseDBAsyncClient, name: str) -> AsyncIterator[bool]:
    """Claim a background job across processes: yields whether this process holds it (PostgreSQL: a session
    advisory lock on a connection kept for the run, so it is never held across a commit and dies with the
    process; SQLite: an exclusive ``flock`` on ``<database>.<name>.lock``, which also dies with the process,
    as the server and a ``creditline sweep`` beside it may both run the job)."""
    if not is_postgres(conn):
        path = getattr(conn, "filename", "")
        if path in ("", ":memory:"):
            yield True
            return
        fd = _try_flock(f"{path}.{name}.lock")
        try:
            yield fd is not None
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock
        return
    key = int.from_bytes(hashlib.sha256(f"creditline-job:{name}".encode()).digest()[:8], "big", signed=True)
    async with conn.acquire_connection() as raw:
        held = bool(await raw.fetchval("SELECT pg_try_advisory_lock($1)", key))
        try:
            yield held
        finally:
            if held:
                await raw.execute("SELECT pg_advisory_unlock($1)", key)
