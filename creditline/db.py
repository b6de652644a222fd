"""Database configuration, start-up and the one-writer guard for SQLite."""

from __future__ import annotations

import fcntl
import os
from typing import Any
from urllib.parse import urlencode, urlsplit

from tortoise import Tortoise
from tortoise.migrations.api import migrate as run_migrations

APP_LABEL = "models"


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` as well as Tortoise's ``postgres://``/``asyncpg://`` and size the pool."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "asyncpg://" + url[len(prefix) :]
    if url.startswith("asyncpg://") and "maxsize=" not in url:
        url += ("&" if "?" in url else "?") + urlencode({"minsize": 2, "maxsize": 20})
    return url


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": normalize_url(database_url)},
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


async def init_db(database_url: str) -> None:
    # Global fallback: uvicorn runs requests in tasks that do not inherit the lifespan task's context.
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)


async def migrate(database_url: str) -> None:
    await run_migrations(config=tortoise_config(database_url))


async def close_db() -> None:
    await Tortoise.close_connections()


def sqlite_path(database_url: str) -> str | None:
    """The file behind a ``sqlite://`` URL, or ``None`` for other databases and in-memory SQLite."""
    if not database_url.startswith("sqlite"):
        return None
    parts = urlsplit(database_url)
    path = (parts.netloc + parts.path) if parts.netloc else parts.path
    if path in ("", ":memory:", "/:memory:"):
        return None
    return path


class SecondWriterError(RuntimeError):
    pass


class SqliteWriterLock:
    """Holds an exclusive lock beside a SQLite database file for as long as this process writes to it.

    A SQLite deployment is one process: a second server (or a CLI command that writes while a server runs)
    is refused with a clear message instead of racing the first one.
    """

    def __init__(self, database_url: str) -> None:
        self.path = sqlite_path(database_url)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        lock_path = os.path.abspath(self.path) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SecondWriterError(
                f"Another Creditline process is already writing to the SQLite database {self.path}. "
                "A SQLite deployment is a single process: stop the other one, or use PostgreSQL "
                "(CREDITLINE_DATABASE_URL=postgresql://...) to run several."
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
