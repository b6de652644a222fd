"""Redis fan-out: a spend served by one process reaches subscribers on another; a Redis restart costs no
final state."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
import redis.asyncio as redis

from creditline.clock import Clock
from creditline.events import UNREADABLE_LOGGED, RedisBus
from creditline.settings import Settings
from tests.support.backends import REQUIRE_SERVICES, Backend
from tests.support.helpers import SPEND, spend_variables
from tests.support.live import Live, connect, free_port, receive, serve

REDIS_URL = os.environ.get("CREDITLINE_TEST_REDIS_URL", "")
WATCH = "subscription { balanceChanged { delta reason version balance { total } } }"


def _skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CREDITLINE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture
async def redis_url() -> str:
    if not REDIS_URL:
        _skip_or_fail("Redis tests skipped: set CREDITLINE_TEST_REDIS_URL to run them")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        _skip_or_fail(f"Redis at {REDIS_URL} is unreachable: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
def own_redis() -> Iterator[tuple[str, list[str]]]:
    """A private redis-server on a free port, so the test may stop and restart it."""
    binary = shutil.which("redis-server")
    if binary is None:
        _skip_or_fail("redis-server is not installed: the Redis restart test needs it")
        raise AssertionError("unreachable")
    port = free_port()
    workdir = tempfile.mkdtemp()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    yield f"redis://127.0.0.1:{port}/0", command
    subprocess.run(["pkill", "-f", f"redis-server 127.0.0.1:{port}"], check=False)
    shutil.rmtree(workdir, ignore_errors=True)


def _start_redis(command: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = int(command[command.index("--port") + 1])
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


async def spend(live_or_url: Live | str, service: str, user_id: int, credits: str, key: str) -> None:
    variables = spend_variables(user_id, credits, key)
    if isinstance(live_or_url, Live):
        data = await live_or_url.api.data(SPEND, variables, service)
    else:
        request = urllib.request.Request(
            f"{live_or_url}/graphql",
            data=json.dumps({"query": SPEND, "variables": variables}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {service}"},
        )
        body = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(request, timeout=10).read()))
        data = body["data"]
    assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"


@pytest.fixture
async def redis_live(db: Backend, clock: Clock, settings: Settings, redis_url: str) -> AsyncIterator[Live]:
    async with serve(replace(settings, redis_url=redis_url), clock) as live:
        bus = live.api.app.state.services.bus
        assert isinstance(bus, RedisBus)
        await asyncio.wait_for(bus.connected.wait(), timeout=5)
        yield live


async def test_a_spend_on_another_process_reaches_this_ones_subscribers(
    db: Backend, redis_live: Live, redis_url: str
) -> None:
    if db.name != "postgres":
        pytest.skip("two server processes share a database only on PostgreSQL (SQLite is one process)")
    # The other process runs on the real clock: the bonus must outlive the test clock's frozen date.
    user_id, user_token = await redis_live.api.user("ada@example.com", bonus=10, bonus_days=3650)
    service = await redis_live.api.service()
    port = free_port()
    other = subprocess.Popen(  # noqa: ASYNC220 - a server process for the test, waited for below
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env={**os.environ, "CREDITLINE_DATABASE_URL": db.url, "CREDITLINE_REDIS_URL": redis_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    other_url = f"http://127.0.0.1:{port}"
    ws = await connect(redis_live, user_token)
    try:
        for _ in range(100):
            try:
                await asyncio.to_thread(lambda: urllib.request.urlopen(f"{other_url}/healthz", timeout=1).close())
                break
            except OSError:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the other process's Redis listener starts with its lifespan
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"

        for n in range(3):
            await spend(other_url, service, user_id, "1.5", f"remote-{n}")
        events = [(await receive(ws))["payload"]["data"]["balanceChanged"] for _ in range(3)]
        assert events == [
            {"delta": "-1.5", "reason": "SPEND", "version": 2, "balance": {"total": "8.5"}},
            {"delta": "-1.5", "reason": "SPEND", "version": 3, "balance": {"total": "7"}},
            {"delta": "-1.5", "reason": "SPEND", "version": 4, "balance": {"total": "5.5"}},
        ]
    finally:
        await ws.close()
        other.terminate()
        other.wait(timeout=10)


async def test_messages_this_version_cannot_read_are_skipped_and_fan_out_goes_on(
    db: Backend, redis_live: Live, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another version's message kinds (a rolling deploy) or anything else on the channel: skipped, and the
    events after them still arrive (a listener that raised on one would end fan-out for the process). The
    first few are logged one by one, not all: a newer version may send one with every commit."""
    caplog.set_level(logging.WARNING, "creditline.events")
    user_id, user_token = await redis_live.api.user("ada@example.com", bonus=10)
    service = await redis_live.api.service()
    bus = redis_live.api.app.state.services.bus
    assert isinstance(bus, RedisBus)
    ws = await connect(redis_live, user_token)
    client = redis.Redis.from_url(redis_url)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        for junk in ("not json", "[]", "{}", '["z", 1, 2, "2026-01-15T12:00:00+00:00"]', '["b", 1]', '["m"]'):
            await client.publish(bus.channel, junk)
        await spend(redis_live, service, user_id, "1.5", "after-junk")
        assert (await receive(ws))["payload"]["data"]["balanceChanged"] == {
            "delta": "-1.5",
            "reason": "SPEND",
            "version": 2,
            "balance": {"total": "8.5"},
        }
        assert bus.unreadable == 6
        said = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
        assert [m.rsplit("; ", 1)[1] for m in said] == [f"{n} so far)" for n in range(1, UNREADABLE_LOGGED + 1)]
    finally:
        await client.aclose()
        await ws.close()


async def test_redis_restart_gives_a_fresh_snapshot_then_later_events(
    db: Backend, clock: Clock, settings: Settings, own_redis: tuple[str, list[str]]
) -> None:
    url, command = own_redis
    proc = _start_redis(command)
    try:
        async with serve(replace(settings, redis_url=url), clock) as live:
            bus = live.api.app.state.services.bus
            assert isinstance(bus, RedisBus)
            await asyncio.wait_for(bus.connected.wait(), timeout=5)
            user_id, user_token = await live.api.user("ada@example.com", bonus=10)
            service = await live.api.service()
            ws = await connect(live, user_token)
            try:
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
                assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 1
                await spend(live, service, user_id, "1", "before")
                assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 2

                proc.terminate()
                proc.wait(timeout=10)
                await spend(live, service, user_id, "2", "while-down")  # committed; its event may be lost
                proc = _start_redis(command)
                for _ in range(200):
                    if bus.reconnects >= 1 and bus.connected.is_set():
                        break
                    await asyncio.sleep(0.05)
                assert bus.reconnects >= 1

                # Whatever was lost, the subscriber ends up with a snapshot of the state after the outage.
                seen = []
                while True:
                    event = (await receive(ws))["payload"]["data"]["balanceChanged"]
                    seen.append(event)
                    if event["reason"] == "SNAPSHOT":
                        break
                assert seen[-1] == {"delta": "0", "reason": "SNAPSHOT", "version": 3, "balance": {"total": "7"}}

                await spend(live, service, user_id, "0.5", "after")
                event = (await receive(ws))["payload"]["data"]["balanceChanged"]
                assert event == {"delta": "-0.5", "reason": "SPEND", "version": 4, "balance": {"total": "6.5"}}
            finally:
                await ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
