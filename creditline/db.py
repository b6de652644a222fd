"""Database configuration, start-up, readiness and the one-server guard for SQLite."""

from __future__ import annotations

import asyncio
import fcntl
import os
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tortoise import Tortoise, connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.api import migrate as run_migrations
from tortoise.migrations.executor import MigrationExecutor

from creditline.db_backends import DatabaseUnavailable, is_connection_failure, unavailable
from creditline.settings import Settings

APP_LABEL = "models"
ENGINES = {"tortoise.backends.asyncpg", "tortoise.backends.sqlite"}
"""The engines whose clients creditline.db_backends replaces while serving."""
COMMAND_TIMEOUT_MARGIN_SECONDS = 1.0
"""The client waits this much longer than ``statement_timeout``, so that a live server's own, clearer,
timeout error arrives first; a frozen one still fails within the bound."""


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` as well as Tortoise's ``postgres://``/``asyncpg://`` and size the pool."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "asyncpg://" + url[len(prefix) :]
    if url.startswith("asyncpg://") and "maxsize=" not in url:
        url += ("&" if "?" in url else "?") + urlencode({"minsize": 2, "maxsize": 20})
    return url


def tortoise_config(database_url: str, connection: str | dict[str, Any] | None = None) -> dict[str, Any]:
    """Tortoise's configuration; migrations use Tortoise's own clients (its schema editor is chosen by the
    client's module), the server ``serving_connection``."""
    return {
        "connections": {"default": connection or normalize_url(database_url)},
        "apps": {
            APP_LABEL: {
                "models": ["models.tables"],
                "migrations": "models.migrations",
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def serving_connection(database_url: str, settings: Settings) -> str | dict[str, Any]:
    """The connection with creditline.db_backends' clients and every wait bounded (issue 9, point 13)."""
    expanded = expand_db_url(normalize_url(database_url))
    if expanded["engine"] not in ENGINES:
        return normalize_url(database_url)
    credentials: dict[str, Any] = dict(expanded["credentials"])
    statement_ms = settings.db_statement_timeout_ms
    if expanded["engine"] == "tortoise.backends.asyncpg":
        credentials["acquire_timeout"] = settings.db_acquire_timeout_seconds
        if statement_ms > 0:
            credentials["command_timeout"] = statement_ms / 1000 + COMMAND_TIMEOUT_MARGIN_SECONDS
            server_settings = dict(credentials.get("server_settings") or {})
            server_settings.setdefault("statement_timeout", str(statement_ms))
            credentials["server_settings"] = server_settings
        credentials.setdefault("application_name", "creditline")
    else:
        # The single connection waits this long for another process's write lock (the CLI beside the server).
        credentials.setdefault("busy_timeout", sqlite_busy_timeout_ms(settings))
    return {"engine": "creditline.db_backends", "credentials": credentials}


def sqlite_busy_timeout_ms(settings: Settings) -> int:
    """How long a SQLite transaction waits for another process's write lock before ``DatabaseBusy``."""
    return settings.db_statement_timeout_ms if settings.db_statement_timeout_ms > 0 else 5000


async def init_db(database_url: str, settings: Settings | None = None) -> None:
    config = tortoise_config(database_url, serving_connection(database_url, settings or Settings()))
    # Global fallback: uvicorn runs requests in tasks that do not inherit the lifespan task's context.
    await Tortoise.init(config=config, _enable_global_fallback=True)


async def migrate(database_url: str) -> None:
    await run_migrations(config=tortoise_config(database_url))


async def close_db() -> None:
    await Tortoise.close_connections()


def redacted(database_url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class DatabaseNotReady(RuntimeError):
    """Start-up or readiness found the database unusable; the message is one line naming what to fix."""


def sqlite_directory_problem(database_url: str) -> str | None:
    path = sqlite_path(database_url)
    if path is None:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"CREDITLINE_DATABASE_URL: the directory of the SQLite database {path} does not exist ({directory})"
    return None


async def pending_migrations() -> list[str]:
    """The migrations not applied yet to the initialised database."""
    config = tortoise_config("sqlite://:memory:")["apps"]
    steps = await MigrationExecutor(connections.get("default"), config).plan(None)
    return [f"{step.migration.app_label}.{step.migration.name}" for step in steps if not step.backward]


async def check_database(within: float, *, migrations: bool = True) -> None:
    """Raise ``DatabaseUnavailable`` unless the initialised database answers ``within`` seconds, and
    ``DatabaseNotReady`` when ``migrations`` and some are not applied."""
    try:
        await asyncio.wait_for(connections.get("default").execute_query("SELECT 1"), within)
        pending = await asyncio.wait_for(pending_migrations(), within) if migrations else []
    except Exception as exc:
        if is_connection_failure(exc):
            raise unavailable(exc) from exc
        raise
    if pending:
        raise DatabaseNotReady(
            f"the database needs {len(pending)} migration(s) ({', '.join(pending)}): run `creditline migrate`"
        )


async def ensure_ready(settings: Settings, *, migrations: bool = True) -> None:
    """Before a command uses the database: raise ``DatabaseNotReady`` with one line naming the setting."""
    problem = sqlite_directory_problem(settings.database_url)
    if problem:
        raise DatabaseNotReady(problem)
    await init_db(settings.database_url, settings)
    try:
        await check_database(settings.db_acquire_timeout_seconds + 1, migrations=migrations)
    except DatabaseNotReady:
        raise
    except Exception as exc:  # unreachable, refused, unknown database, wrong password, a file SQLite cannot open
        raise DatabaseNotReady(cannot_reach(settings.database_url, exc)) from exc
    finally:
        await close_db()


def cannot_reach(database_url: str, exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, DatabaseUnavailable) else str(exc) or type(exc).__name__
    return f"CREDITLINE_DATABASE_URL: cannot use the database at {redacted(database_url)}: {reason}"


def sqlite_path(database_url: str) -> str | None:
    """The file behind a ``sqlite://`` URL, or ``None`` for other databases and in-memory SQLite."""
    if not database_url.startswith("sqlite"):
        return None
    parts = urlsplit(database_url)
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    if path in ("", ":memory:", "/:memory:"):
        return None
    return path


class SecondServerError(RuntimeError):
    pass


class SqliteServerLock:
    """An exclusive lock beside a SQLite database file (``<database>.lock``), held by the server for its whole
    life and by ``creditline migrate`` while it changes the schema.

    A SQLite deployment is one server process: a second server is refused with a clear message instead of
    racing the first one's in-process guarantees (one connection, one transaction at a time, the job
    claims and the live feeds of one process). Short CLI commands do not take it: they write beside the
    server, each transaction taking SQLite's own write lock (``BEGIN IMMEDIATE``, waiting at most the busy
    timeout: ``creditline.db_backends.SqliteDatabase``). The lock dies with its process (``kill -9``).
    """

    def __init__(self, database_url: str) -> None:
        self.path = sqlite_path(database_url)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``SecondServerError`` at once (no waiting); nothing to do but PostgreSQL."""
        if self.path is None:
            return
        lock_path = os.path.abspath(self.path) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SecondServerError(
                f"Another Creditline server (or `creditline migrate`) is already running on the SQLite database"
                f" {self.path}. A SQLite deployment is a single server process: stop the other one, or use"
                " PostgreSQL (CREDITLINE_DATABASE_URL=postgresql://...) to run several."
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
