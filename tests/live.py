"""A real uvicorn server on a real socket, in the test's event loop, and a graphql-transport-ws client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from tests.helpers import Api

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
