"""A real uvicorn server on a real socket, in the test's event loop, and a graphql-transport-ws client; a
server in a process of its own, and Redis when the tests have it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as redis
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from tests.support.backends import skip_or_fail
from tests.support.helpers import Api

PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]


@dataclass
class Live:
    api: Api
    http: str
    ws: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def serve(settings: Settings, clock: Clock) -> AsyncIterator[Live]:
    app = create_app(settings, clock=clock, manage_database=False, run_jobs=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    base = f"127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=f"http://{base}") as client:
        try:
            yield Live(Api(client, app, clock, settings), f"http://{base}", f"ws://{base}/graphql")
        finally:
            server.should_exit = True
            await task


async def connect(live: Live, token: str | None) -> ClientConnection:
    ws = await websockets.connect(live.ws, subprotocols=PROTOCOL)
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    return ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    return message


REDIS_URL = os.environ.get("CREDITLINE_TEST_REDIS_URL", "")


async def reachable_redis() -> str:
    """``CREDITLINE_TEST_REDIS_URL``, once it answers (the test is skipped without it, or fails under
    ``CREDITLINE_REQUIRE_SERVICES=1``)."""
    if not REDIS_URL:
        skip_or_fail("Redis tests skipped: set CREDITLINE_TEST_REDIS_URL to run them")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        skip_or_fail(f"Redis at {REDIS_URL} is unreachable: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


@contextlib.asynccontextmanager
async def server_process(database_url: str, **env: str) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """``creditline serve`` in a process of its own on a free port (``env``: more ``CREDITLINE_*``), once
    its /healthz answers; stopped after."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - a server process for the test, stopped below
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env={**os.environ, "CREDITLINE_DATABASE_URL": database_url, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz", timeout=1)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, "the server process exited"
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the server process did not start")
        await asyncio.sleep(0.3)  # its Redis listener (if any) starts with the lifespan
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def post_graphql(url: str, query: str, variables: dict[str, Any], token: str) -> Any:
    """A GraphQL request to a server in another process; its ``data``."""
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]
