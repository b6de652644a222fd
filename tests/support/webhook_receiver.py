"""A platform's webhook receiver for the tests: a small HTTP/1.1 server on a free local port that records what
it is sent and answers as told (a status, after a delay, with a ``Location``, once enough requests are in
flight), and can go down and come back on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook

from tests.support.live import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    at: float
    """``time.monotonic()`` when the request was read."""

    @property
    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verified(self, secret: str) -> dict[str, Any]:
        """The body, if its signature verifies with ``secret`` (raises ``WebhookVerificationError`` if not)."""
        parsed: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return parsed


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200
    delay: float = 0.0
    location: str | None = None
    answer: str = "ok"
    gate: int = 0
    """Hold every answer until this many requests are in flight at once (then answer as told from then on)."""
    received: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    """``webhook-id``s that arrived while a request with the same id was still being answered."""
    _server: asyncio.Server | None = None
    _gate_open: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"received {len(self.received)} of {count} webhooks")
            await asyncio.sleep(0.01)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            webhook_id = headers.get("webhook-id", "")
            if self.in_flight.get(webhook_id):
                self.overlaps.append(webhook_id)
            self.in_flight[webhook_id] = self.in_flight.get(webhook_id, 0) + 1
            try:
                self.received.append(Received(headers, body.decode(), time.monotonic()))
                if sum(self.in_flight.values()) >= self.gate:
                    self._gate_open.set()
                await self._gate_open.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                extra = f"location: {self.location}\r\n" if self.location else ""
                answer = self.answer.encode()
                status_line = (
                    f"HTTP/1.1 {self.status} X\r\ncontent-length: {len(answer)}\r\n{extra}connection: close\r\n\r\n"
                )
                writer.write(status_line.encode() + answer)
                await writer.drain()
            finally:
                self.in_flight[webhook_id] -= 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the sender gave up (its timeout), or the receiver is going down
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiving(**options: Any) -> AsyncIterator[Receiver]:
    receiver = Receiver(**options)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
