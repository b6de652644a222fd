"""Request body and websocket message limits, as pure ASGI layers (issue 9, points 4 and 18).

A body larger than ``CREDITLINE_MAX_BODY_BYTES`` is answered 413 without reading past the limit: a declared
``Content-Length`` over it is refused before the application runs, and a body without one (chunked) is
counted as it arrives and cut at the first chunk that passes the limit. A body that takes longer than
``CREDITLINE_BODY_TIMEOUT_SECONDS`` to arrive is answered 408. Either way the response says
``connection: close`` so that the server stops reading the rest.

A request without a body (no ``Content-Length``, no ``Transfer-Encoding``: every GET) passes through untouched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("creditline.http")


class BodyRefused(Exception):
    """Raised inside the application's ``receive`` when the body passes a limit; answered by the layer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _plain(status: int, message: str) -> tuple[Message, Message]:
    body = message.encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """Caps the size of request bodies and the time they take to arrive."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_seconds: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.deadlines = BodyDeadlines(min(1.0, body_timeout_seconds / 4))
        self.too_large = _plain(413, f"Request body larger than {max_body_bytes} bytes")
        self.too_slow = _plain(408, f"Request body not received within {body_timeout_seconds:g} s")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:
            await self.app(scope, receive, send)  # no body
            return
        if declared is not None and not chunked and (declared < 0 or declared > self.max_body_bytes):
            start, body = self.too_large if declared >= 0 else _plain(400, "Malformed Content-Length")
            await send(start)
            await send(body)
            return
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body_bytes
        deadlines = self.deadlines
        deadline = deadlines.loop_time() + self.body_timeout_seconds
        received = 0
        done = False
        refused: BodyRefused | None = None
        started = False
        left = False

        async def limited_receive() -> Message:
            nonlocal received, done, refused, left
            if done:
                return await receive()  # after the body: waiting for http.disconnect must not time out
            if refused is not None:
                raise refused
            task = deadlines.watch(deadline)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not deadlines.expired(task):
                    raise
                refused = BodyRefused(408, "body timeout")
                raise refused from None
            finally:
                deadlines.unwatch(task)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = BodyRefused(413, "body too large")
                    raise refused
                if not message.get("more_body", False):
                    done = True
            elif message["type"] == "http.disconnect":
                left = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the refusal is answered below, not whatever the application made of it
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ClientDisconnect:
            if not left:
                raise
            # The client went away before its body was in: there is no one to answer, and nothing went wrong
            # here (uvicorn would log the exception with its traceback, once per such client).
            log.info("client disconnected before sending its whole body: %s %s", scope["method"], scope["path"])
            return
        except Exception:
            if refused is None:
                raise
        if refused is not None and not started:
            start, body = self.too_large if refused.status == 413 else self.too_slow
            await send(start)
            await send(body)


class BodyDeadlines:
    """The deadlines of the bodies being read, checked by one timer for all of them.

    ``asyncio.timeout`` around each read costs 13-28 µs here (a timer scheduled and cancelled per read);
    this costs a dictionary entry. A read past its deadline is cancelled at the next check, so a body gets
    up to ``tick`` seconds more than its timeout.
    """

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.cancelled: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    def watch(self, deadline: float) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        self.reading[task] = deadline
        if self.timer is None or self.timer_loop is not task.get_loop():  # (tests run apps on several loops)
            self.timer_loop = task.get_loop()
            self.timer = self.timer_loop.call_later(self.tick, self._check)
        return task

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        self.reading.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """True (once) if ``task`` was cancelled here for its deadline; its cancellation is then undone."""
        if task not in self.cancelled:
            return False
        self.cancelled.discard(task)
        task.uncancel()
        return True

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in list(self.reading.items()):
            if task.get_loop() is not loop:
                continue
            if deadline <= now:
                del self.reading[task]
                self.cancelled.add(task)
                task.cancel()
        self.timer = loop.call_later(self.tick, self._check) if self.reading else None


class WebSocketMessageLimit:
    """A websocket ``receive`` that closes the connection (1009) on a message over ``max_bytes``.

    uvicorn enforces the same limit itself (``ws_max_size`` in ``creditline serve``); this is for other ASGI
    servers and tests.
    """

    __slots__ = ("closed", "max_bytes", "receive", "send")

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self.receive = receive
        self.send = send
        self.max_bytes = max_bytes
        self.closed = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "websocket.receive":
            data = message.get("text") or message.get("bytes") or b""
            size = len(data)
            if isinstance(data, str) and size * 4 > self.max_bytes:
                size = len(data.encode())  # characters, not bytes: count the UTF-8 only when it could matter
            if size > self.max_bytes:
                if not self.closed:
                    self.closed = True
                    await self.send({"type": "websocket.close", "code": 1009, "reason": "Message too big"})
                return {"type": "websocket.disconnect", "code": 1009}
        return message
