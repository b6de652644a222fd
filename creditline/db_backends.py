"""Tortoise's PostgreSQL and SQLite clients, made to survive a database that goes away (issue 9, point 13).

Tortoise (1.1.9) takes a connection from the pool (or the SQLite lock) in ``in_transaction().__aenter__``,
then sends ``BEGIN``; when ``BEGIN`` fails (a stalled network past the command timeout, a cancelled
request, a terminated backend) ``__aexit__`` never runs, so the connection is never returned and the
transaction stays set as the task's connection. A few such failures exhaust the pool and every later
request waits for ever. The transaction contexts here give the connection back (dropping it: it is
suspect) and reset the task's connection when ``BEGIN`` fails.

Every wait on PostgreSQL is bounded: taking a pooled connection (and connecting) by the acquire timeout,
every command by the statement timeout plus a margin on the client, and by ``statement_timeout`` on the
server. A failure that means "the database cannot answer now" is raised as ``DatabaseUnavailable``, which
the API answers as ``SERVICE_UNAVAILABLE`` (GraphQL) or 503 (other routes) instead of a masked error.

Tortoise loads this module by name (the ``engine`` of the connection in ``creditline.db``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from asyncpg.pool import Pool
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    BaseDBAsyncClient,
    NestedTransactionContext,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.connection import get_connections
from tortoise.exceptions import DBConnectionError, TransactionManagementError

from models.sql import in_read_snapshot

SERVICE_UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly (with the same idempotency key)."
"""What a client is told (GraphQL code ``SERVICE_UNAVAILABLE``, or HTTP 503): the details go to the log."""


class DatabaseUnavailable(DBConnectionError):
    """The database did not answer, or not in time: nothing was done, or (at commit) the outcome is unknown."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database is unavailable: {reason}")
        self.reason = reason


# What means "the connection or the server is gone or stuck" rather than a bad query.
_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    DBConnectionError,  # ours, and Tortoise's for a database that does not exist
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and a connection closed mid-operation
    asyncpg.exceptions.OperatorInterventionError,  # 57: terminated backend, statement timeout, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections
    # A backend terminated while a command was on its way leaves the protocol mid-operation: "cannot switch
    # to state 12; another operation is in progress".
    asyncpg.exceptions.InternalClientError,
)


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, _CONNECTION_FAILURES):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if isinstance(exc, TimeoutError):
        reason = "it did not answer in time"
    elif isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        reason = "a statement ran past CREDITLINE_DB_STATEMENT_TIMEOUT_MS"
    elif isinstance(exc, OSError | DBConnectionError):
        reason = str(exc) or type(exc).__name__
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return DatabaseUnavailable(reason)


async def _translated(call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        return await call()
    except Exception as exc:
        if is_connection_failure(exc):
            raise unavailable(exc) from exc
        raise


class BoundedPool(Pool):  # type: ignore[misc]  # asyncpg.pool is untyped
    """asyncpg's pool, whose ``acquire`` (and so ``release``, which asyncpg bounds by the same timeout)
    waits at most ``acquire_timeout`` when the caller gives none: Tortoise never gives one."""

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


class PostgresClient(AsyncpgDBClient):
    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    async def create_pool(self, **kwargs: Any) -> asyncpg.Pool:
        kwargs.setdefault("max_queries", 50000)
        kwargs.setdefault("max_inactive_connection_lifetime", 300.0)
        kwargs.setdefault("record_class", asyncpg.Record)
        if self.acquire_timeout is not None:
            kwargs.setdefault("timeout", self.acquire_timeout)  # asyncpg's connect timeout (default 60 s)
        pool = BoundedPool(None, **kwargs)
        pool.acquire_timeout = self.acquire_timeout
        await pool
        return pool

    async def create_connection(self, with_db: bool) -> None:
        await _translated(lambda: super(PostgresClient, self).create_connection(with_db))

    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await _translated(lambda: super(PostgresClient, self)._translate_exceptions(func, *args, **kwargs))

    def _in_transaction(self) -> TransactionContext:
        return PooledTransaction(PostgresTransaction(self), self._pool_init_lock)


class PostgresTransaction(TransactionWrapper):
    async def _translate_exceptions(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await _translated(lambda: super(PostgresTransaction, self)._translate_exceptions(func, *args, **kwargs))

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(PostgresTransaction(self))

    async def commit(self) -> None:
        await _translated(super().commit)

    async def rollback(self) -> None:
        await _translated(super().rollback)


class PooledTransaction(TransactionContextPooled):
    """Tortoise's, except that a failed ``BEGIN`` gives its connection back and leaves the task's connection
    as it was; a ``BEGIN`` on a connection found dead (a terminated backend) is tried once more on a new one."""

    async def __aenter__(self) -> TransactionalDBClient:
        await _translated(self.ensure_connection)
        pool = self.client._parent._pool
        for attempt in (1, 2):
            try:
                self.client._connection = await pool.acquire()
            except Exception as exc:
                if is_connection_failure(exc):
                    raise unavailable(exc) from exc
                raise
            try:
                await self.client.begin()
                break
            except BaseException as exc:
                _discard(self.client._connection)
                self.client._connection = None
                if attempt == 1 and isinstance(exc, DatabaseUnavailable) and _connection_died(exc):
                    continue
                if isinstance(exc, Exception) and is_connection_failure(exc):
                    raise unavailable(exc) from exc
                raise
        self.token = get_connections().set(self.connection_name, self.client)
        return self.client

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Tortoise's, except that a connection that failed is dropped, not pooled again; a failed rollback
        or release does not hide the body's own error; a failed release after a commit does not fail it."""
        connection = self.client._connection
        pool = self.client._parent._pool
        try:
            if not self.client._finalized:
                if exc_type is None:
                    try:
                        await self.client.commit()  # a DatabaseUnavailable here: the outcome is unknown
                    except BaseException as exc:
                        if not isinstance(exc, Exception) or is_connection_failure(exc):
                            _discard(connection)
                        raise
                elif exc_type is not TransactionManagementError:  # a transaction that failed cannot roll back
                    try:
                        await self.client.rollback()
                    except BaseException as exc:
                        _discard(connection)
                        if not isinstance(exc, Exception):
                            raise
        finally:
            try:
                if pool is not None:
                    await pool.release(connection)
            except Exception:
                _discard(connection)
            finally:
                get_connections().reset(self.token)


def _connection_died(exc: DatabaseUnavailable) -> bool:
    cause = exc.__cause__
    return isinstance(cause, asyncpg.PostgresConnectionError | asyncpg.exceptions.AdminShutdownError) or (
        isinstance(cause, asyncpg.InterfaceError) and "connection is closed" in str(cause)
    )


def _discard(connection: Any) -> None:
    """Close a pooled connection at once: asyncpg then gives its slot back to the pool by itself."""
    if connection is not None and getattr(connection, "_con", None) is not None:
        with contextlib.suppress(Exception):
            connection.terminate()


class DatabaseBusy(DatabaseUnavailable):
    """SQLite: another process held the database's write lock for longer than the busy timeout."""


def is_sqlite_busy(exc: BaseException) -> bool:
    """Whether ``exc`` (or the sqlite3 error Tortoise wrapped in it) is SQLITE_BUSY: the write lock was
    held by another process (or connection) for longer than the busy timeout."""
    seen: BaseException | None = exc
    while seen is not None:
        for candidate in (seen, *(arg for arg in seen.args if isinstance(arg, BaseException))):
            if isinstance(candidate, sqlite3.OperationalError) and (
                getattr(candidate, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                or str(candidate) == "database is locked"
            ):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def _busy(client: BaseDBAsyncClient) -> DatabaseBusy:
    timeout = getattr(client, "pragmas", {}).get("busy_timeout", 5000)
    return DatabaseBusy(
        f"the SQLite database is busy: another process held its write lock for more than {timeout} ms"
        " (CREDITLINE_DB_STATEMENT_TIMEOUT_MS)"
    )


async def _sqlite_translated(client: BaseDBAsyncClient, call: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await call
    except Exception as exc:
        if is_sqlite_busy(exc):
            raise _busy(client) from exc
        raise


class _SqliteBusyTranslation(SqliteClient):
    """SQLITE_BUSY raised as ``DatabaseBusy`` (a ``DatabaseUnavailable``: the API answers
    ``SERVICE_UNAVAILABLE``, the CLI says the database is busy), from every statement."""

    def _busy_client(self) -> BaseDBAsyncClient:
        return self

    async def execute_insert(self, query: str, values: list[Any]) -> int:
        return int(await _sqlite_translated(self._busy_client(), super().execute_insert(query, values)))

    async def execute_many(self, query: str, values: list[list[Any]]) -> None:
        await _sqlite_translated(self._busy_client(), super().execute_many(query, values))

    async def execute_query(self, query: str, values: list[Any] | None = None) -> Any:
        return await _sqlite_translated(self._busy_client(), super().execute_query(query, values))

    async def execute_query_dict(self, query: str, values: list[Any] | None = None) -> Any:
        return await _sqlite_translated(self._busy_client(), super().execute_query_dict(query, values))

    async def execute_script(self, query: str) -> None:
        await _sqlite_translated(self._busy_client(), super().execute_script(query))

    async def execute_in_thread(self, statements: str, steps: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``steps`` on aiosqlite's thread with its ``sqlite3`` connection: several statements in one hop
        to that thread instead of one each (``models.sql.Sql.in_writer_thread``). ``statements``: what they
        run, for logs and the tests that count statements."""
        async with self.acquire_connection() as connection:
            self.log.debug("in one hop: %s", statements)
            return await _sqlite_translated(self._busy_client(), connection._execute(steps, connection._conn))


class SqliteDatabase(_SqliteBusyTranslation):
    """Tortoise's SQLite client, whose transactions begin ``IMMEDIATE``.

    Why: on SQLite ``SELECT ... FOR UPDATE`` does not exist (``Sql.for_update`` is empty), so a ledger
    transaction's read-then-write is safe only if no other connection writes between its read and its
    write. Inside one process Tortoise's single connection and its lock run one transaction at a time. A
    CLI command beside the server is another process: ``BEGIN IMMEDIATE`` takes the database's write lock
    at the start of every transaction (waiting up to the busy timeout for the other process to commit), so
    two processes' transactions never interleave, and no transaction is refused half-way with
    SQLITE_BUSY_SNAPSHOT (which a deferred transaction that read before a concurrent commit gets when it
    tries to write). A transaction opened by ``models.sql.read_snapshot`` begins deferred: in WAL mode it
    reads one consistent state and takes no lock, so a long audit does not hold the server's writes back.
    """

    def _in_transaction(self) -> TransactionContext:
        return SqliteTransaction(SqliteImmediateTransaction(self), self._lock)


class SqliteImmediateTransaction(_SqliteBusyTranslation, SqliteTransactionWrapper):
    def _busy_client(self) -> BaseDBAsyncClient:
        return self._parent

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(SqliteImmediateTransaction(self))

    async def begin(self) -> None:
        statement = "BEGIN" if in_read_snapshot() else "BEGIN IMMEDIATE"
        try:
            await self._connection.commit()
            await self._connection.execute(statement)
        except sqlite3.OperationalError as exc:
            if is_sqlite_busy(exc):
                raise _busy(self._parent) from exc
            raise TransactionManagementError(exc) from exc

    async def commit(self) -> None:
        await _sqlite_translated(self._parent, super().commit())


class SqliteTransaction(SqliteTransactionContext):
    """Tortoise's, except that a failed ``BEGIN`` releases the connection's lock (else every later
    transaction of the process waits for ever) and leaves the task's connection as it was."""

    async def __aenter__(self) -> TransactionalDBClient:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
            try:
                await self.connection.begin()
            except BaseException:
                get_connections().reset(self.token)
                raise
        except BaseException:
            self._trxlock.release()
            raise
        return self.connection  # type: ignore[no-any-return]


def get_client_class(db_info: dict[str, Any]) -> type[PostgresClient] | type[SqliteDatabase]:
    return SqliteDatabase if "file_path" in db_info.get("credentials", {}) else PostgresClient
