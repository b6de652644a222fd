"""Webhook delivery across processes: a real ``creditline serve`` killed while it sends delivers the event after
its restart (at least once, the same ``webhook-id``); two ``creditline webhooks deliver`` processes on one
PostgreSQL database share the deliveries, and neither sends one that the other is sending."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from creditline.webhooks.worker import PER_ENDPOINT
from models.outbox import new_public_id
from tests.support.backends import scratch_postgres
from tests.support.processes import cli, served
from tests.support.webhook_receiver import Receiver, receiving

SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/hooks.sqlite3"
        return
    async with fresh_postgres() as url:
        yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_postgres() as url:
        yield url


def fresh_postgres() -> contextlib.AbstractAsyncContextManager[str]:
    return scratch_postgres("creditline_hooks")


def environment(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CREDITLINE_DATABASE_URL": database_url,
        "CREDITLINE_WEBHOOK_ALLOW_PRIVATE": "1",
        "CREDITLINE_WEBHOOK_TIMEOUT_SECONDS": "1",
        "CREDITLINE_WEBHOOK_POLL_SECONDS": "0.2",
        **extra,
    }


async def write(database_url: str, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Rows written as another program would (the platform's admin API is not this test's subject)."""
    if database_url.startswith("sqlite://"):
        with sqlite3.connect(database_url.removeprefix("sqlite://")) as conn:
            for text, args in statements:
                values = [str(a) if isinstance(a, datetime) else a for a in args]
                conn.execute(text.replace("$1", "?").replace("$2", "?").replace("$3", "?").replace("$4", "?"), values)
        return
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        for text, args in statements:
            await conn.execute(text, *args)
    finally:
        await conn.close()


def an_endpoint(url: str) -> tuple[str, tuple[Any, ...]]:
    now = datetime.now(UTC)
    return (
        "INSERT INTO webhook_endpoints (url, event_types, secret, status, created_at, updated_at)"
        " VALUES ($1, '', $2, 'ENABLED', $3, $4)",
        (url, SECRET, now, now),
    )


def an_event(public_id: str) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO events (public_id, type, data, created_at) VALUES ($1, 'payment.failed', $2, $3)",
        (public_id, '{"n":1}', datetime.now(UTC)),
    )


async def rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite://"):
        with sqlite3.connect(database_url.removeprefix("sqlite://")) as conn:
            return [tuple(r) for r in conn.execute(query).fetchall()]
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def test_a_server_killed_while_sending_delivers_after_its_restart(database_url: str) -> None:
    env = environment(database_url)
    assert cli(env, "migrate").returncode == 0
    async with receiving(delay=60) as receiver:  # holds the request: the server dies in mid-send
        event_id = new_public_id()
        await write(database_url, [an_endpoint(receiver.url), an_event(event_id)])
        with served(env, ready="/readyz") as (_, proc):
            await receiver.wait_for(1, within=20)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert await rows(database_url, "SELECT status, attempts FROM webhook_deliveries") == [("PENDING", 1)]
        receiver.delay = 0
        with served(env, ready="/readyz"):
            await receiver.wait_for(2, within=30)  # once the dead server's lease (4 × timeout + 5 s) ran out
            for _ in range(100):
                done = await rows(database_url, "SELECT status, attempts FROM webhook_deliveries")
                if done == [("SUCCEEDED", 2)]:
                    break
                await asyncio.sleep(0.1)
    assert done == [("SUCCEEDED", 2)]
    assert receiver.ids() == [event_id, event_id]
    assert [r.verified(SECRET)["data"] for r in receiver.received] == [{"n": 1, "sequence": None}] * 2


async def deliver(env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditline", "webhooks", "deliver", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    return out.decode().strip()


async def test_two_processes_share_the_deliveries_and_never_send_one_twice_at_once(postgres_url: str) -> None:
    env = environment(postgres_url, CREDITLINE_WEBHOOK_TIMEOUT_SECONDS="60")
    assert cli(env, "migrate").returncode == 0
    receiver: Receiver
    # No answer until more requests are in flight than one process sends to an endpoint at once: both processes
    # are then sending (racing them, the first could finish alone). The second starts once the first sends, so
    # the deliveries exist: started beside the first, it found nothing due while the first was making them
    # (their events locked, SKIP LOCKED) and ended its one pass with nothing to do.
    async with receiving(gate=PER_ENDPOINT + 1, delay=0.02) as receiver:
        ids = [new_public_id() for _ in range(300)]
        await write(postgres_url, [an_endpoint(receiver.url), *(an_event(i) for i in ids)])
        first = asyncio.ensure_future(deliver(env))
        await receiver.wait_for(1, within=60)
        outputs = await asyncio.gather(first, deliver(env))

    counts = [int(out.split()[1]) for out in outputs]
    assert sum(counts) == 300
    assert all(count > 0 for count in counts), outputs  # both took part
    assert sorted(receiver.ids()) == sorted(ids)  # each once: no process sent what the other had claimed
    assert receiver.overlaps == []
    assert await rows(postgres_url, "SELECT status, attempts, COUNT(*) FROM webhook_deliveries GROUP BY 1, 2") == [
        ("SUCCEEDED", 1, 300)
    ]
