"""What ``creditline serve`` adds to uvicorn: a header timeout, a head size cap and the file limit (issue 9,
point 18).

uvicorn (0.54) closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency`` open connections, but it waits for ever for the headers of a request: a client that
sends a few bytes now and then (slowloris) holds its connection, and enough of them used up the process's
file descriptors. Here a request's head (request line and headers) must arrive within
``CREDITLINE_HEADER_TIMEOUT_SECONDS`` of its first byte (or of the connection, for the first request) and
be at most ``CREDITLINE_MAX_HEADER_BYTES``; otherwise the connection gets 408 or 431 and is closed.

The guard needs no parser hooks: a request's head is complete when the protocol starts a new request cycle
(``self.cycle`` changes) or upgrades to a websocket.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

try:
    import httptools  # noqa: F401  (uvicorn[standard] installs it; uvicorn's "auto" prefers it too)
except ImportError:  # pragma: no cover
    HAS_HTTPTOOLS = False
else:
    HAS_HTTPTOOLS = True

log = logging.getLogger("creditline.serve")

OVER_CAP_HEADER_TIMEOUT = 1.0
FILE_RESERVE = 256
"""File descriptors kept for what is not a client connection: the database pool, Redis, logs, the listener."""


def raise_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY:
        return hard
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def connection_cap(wanted: int, file_limit: int) -> int:
    """``wanted``, or less so that the cap stays below the file limit with ``FILE_RESERVE`` to spare."""
    return max(1, min(wanted, file_limit - FILE_RESERVE))


def _response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
        + str(len(message)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + message
    )


_TIMED_OUT = _response(b"408 Request Timeout", b"Request headers not received in time")
_TOO_LARGE = _response(b"431 Request Header Fields Too Large", b"Request headers too large")


class ServeConfig(uvicorn.Config):
    """uvicorn's configuration, and what the guarded protocols read."""

    def __init__(self, *args: Any, header_timeout_seconds: float, max_header_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_seconds = header_timeout_seconds
        self.max_header_bytes = max_header_bytes


def guarded_protocol() -> type[asyncio.Protocol]:
    """httptools where it is installed (uvicorn's own choice), else h11; with the head guard."""
    return GuardedHttpToolsProtocol if HAS_HTTPTOOLS else GuardedH11Protocol


class HeadGuard:
    """The head timer and byte count of one connection."""

    __slots__ = ("awaiting", "cycle", "protocol", "received", "timer")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.timer: asyncio.TimerHandle | None = None
        self.cycle: object = None
        self.received = 0
        self.awaiting = False

    def start(self) -> None:
        """A request's head begins: time it from now."""
        protocol = self.protocol
        self.cancel()
        self.awaiting = True
        self.cycle = protocol.cycle
        self.received = 0
        config = protocol.config
        timeout = config.header_timeout_seconds
        if config.limit_concurrency is not None and len(protocol.connections) > config.limit_concurrency:
            # Past the cap the request gets 503 anyway: a second to say it, so that a flood of connections
            # holds few file descriptors for long.
            timeout = min(timeout, OVER_CAP_HEADER_TIMEOUT)
        self.timer = protocol.loop.call_later(timeout, self.expired)

    def cancel(self) -> None:
        self.awaiting = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def before(self, data: bytes) -> bool:
        """Count ``data`` into the head; ``False`` when it makes the head too large (refused with 431 here,
        before the parser sees it: a whole head arriving in one read was parsed before ``after`` compared)."""
        protocol = self.protocol
        if not self.awaiting:
            cycle = protocol.cycle
            if cycle is None or cycle.response_complete:
                self.start()  # the next request on a keep-alive connection
        if not self.awaiting:
            return True
        end = data.find(b"\r\n\r\n")
        head = self.received + (len(data) if end < 0 else end + 4)  # a body after the head is not counted
        self.received += len(data)
        if head > protocol.config.max_header_bytes:
            self.refuse(_TOO_LARGE)
            return False
        return True

    def after(self) -> None:
        if not self.awaiting:
            return
        protocol = self.protocol
        if protocol.cycle is not self.cycle:
            self.cancel()  # the head was parsed: a request cycle started
        elif self.received > protocol.config.max_header_bytes:
            self.refuse(_TOO_LARGE)

    def expired(self) -> None:
        self.timer = None
        if self.awaiting and self.protocol.cycle is self.cycle:
            self.refuse(_TIMED_OUT)

    def refuse(self, response: bytes) -> None:
        self.cancel()
        transport = self.protocol.transport
        if transport.is_closing():
            return
        cycle = self.protocol.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # a response is being sent: let it finish, then close
            return
        transport.write(response)
        transport.close()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_guard = HeadGuard(self)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_guard.start()

    def data_received(self, data: bytes) -> None:
        if self.head_guard.before(data):
            super().data_received(data)
            self.head_guard.after()

    def handle_websocket_upgrade(self) -> None:
        self.head_guard.cancel()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_guard.cancel()
        super().connection_lost(exc)


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_guard = HeadGuard(self)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_guard.start()

    def data_received(self, data: bytes) -> None:
        if self.head_guard.before(data):
            super().data_received(data)
            self.head_guard.after()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self.head_guard.cancel()
        super().handle_websocket_upgrade(*args)

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_guard.cancel()
        super().connection_lost(exc)
