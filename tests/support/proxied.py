"""The test process's Tortoise connection rerouted through a ``TcpProxy`` to the backend's PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from creditline import db as dbmod
from creditline.settings import Settings
from tests.support.tcp_proxy import TcpProxy, running_proxy

APPLICATION_NAME = "creditline-proxied"
"""The ``application_name`` of the proxied pool's sessions, to count them in ``pg_stat_activity``."""


@contextlib.asynccontextmanager
async def proxied_database(url: str, settings: Settings, *, maxsize: int = 5) -> AsyncIterator[TcpProxy]:
    """Re-initialise Tortoise on ``url`` through a proxy (pool of ``maxsize``), then back on ``url`` directly."""
    parts = urlsplit(url)
    async with running_proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
        query = f"minsize=1&maxsize={maxsize}&application_name={APPLICATION_NAME}"
        proxied = urlunsplit(parts._replace(netloc=netloc, query=query))
        await dbmod.close_db()
        await dbmod.init_db(proxied, settings)
        try:
            yield proxy
        finally:
            proxy.restore()
            await dbmod.close_db()
            await dbmod.init_db(url)
