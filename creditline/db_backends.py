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
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from asyncpg.pool import Pool
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import (
    NestedTransactionContext,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionContext, SqliteTransactionWrapper
from tortoise.connection import get_connections
from tortoise.exceptions import DBConnectionError, TransactionManagementError

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


class SqliteDatabase(SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return SqliteTransaction(SqliteTransactionWrapper(self), self._lock)


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
