"""A lean HTTP/1.1 client for webhook deliveries, on asyncio streams, with a keep-alive pool.

Why not httpx: it costs about 6 ms of CPU per request here, which caps one process at a few hundred deliveries
a second. A delivery needs one thing: POST a small body to an address already checked (the SSRF rule in
``sending``: the client connects to the IP it is given and never resolves a name), read the status and at
most ``read_limit`` bytes of the body.

- Connections are keyed by (IP, port, host, TLS): a name that resolves elsewhere later gets a new connection,
  and the TLS server name (SNI and the certificate's hostname check) is always the URL's host.
- A connection goes back to the pool only when its response was read to the end and neither side said
  ``Connection: close`` (an HTTP/1.0 response never). One that errored, timed out or whose body was cut at
  ``read_limit`` is closed: draining a huge or endless body would cost the worker time and memory.
- Idempotency: a pooled connection the server has closed is noticed before anything is written and replaced
  by a new one. Once a byte of the request is written, the request may have reached the receiver: any failure
  after that is the attempt's outcome, never retried here (the worker's back-off sends it again, with the
  same ``webhook-id``).
- Redirects are not followed (the caller sees the 3xx). The caller bounds the whole request with a timeout;
  a cancelled request closes its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass

HEADER_LIMIT = 64 * 1024
"""Bytes of status line plus headers read at most (asyncio's stream limit; beyond it the response is refused)."""
IDLE_PER_KEY = 16
"""Idle connections kept per (IP, port, host, TLS): the worker sends at most this many at once to one endpoint."""
IDLE_TOTAL = 256
"""Idle connections kept in all; the least recently used beyond it is closed."""
IDLE_SECONDS = 4.0
"""An idle connection older than this is closed instead of reused: servers commonly close theirs after 5 s,
and writing into a connection the server is closing is the one case a request is lost without an answer."""


class HttpError(Exception):
    """The exchange failed (the message says how); the request may have reached the server."""


class ConnectError(HttpError):
    """The TCP connection or the TLS handshake failed: nothing was sent (another address may be tried)."""


class ProtocolError(HttpError):
    """The response is not HTTP/1.x as this client reads it."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    """At most ``read_limit`` bytes of the body."""
    complete: bool
    """The whole body was read (it was not cut at ``read_limit``)."""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


Key = tuple[str, int, str, bool]


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Still open, nothing unread (a server that closed sends EOF), and not idle for too long."""
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]  # bytes nobody asked for: not a clean state
            and now - self.idle_since < IDLE_SECONDS
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Client:
    """Sends requests over pooled HTTP/1.1 connections. ``connections_made`` counts new connections (tests)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, idle_per_key: int = IDLE_PER_KEY) -> None:
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.idle_per_key = idle_per_key
        self._idle: OrderedDict[Key, list[_Connection]] = OrderedDict()
        self._idle_count = 0
        self.connections_made = 0

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    async def request(
        self,
        method: str,
        address: str,
        port: int,
        host: str,
        tls: bool,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        read_limit: int,
    ) -> Response:
        """``method target`` to ``address:port`` with ``Host: host`` (``host`` also being the TLS server name;
        a port that is not the scheme's default belongs in ``headers``' host instead: see ``host_header``)."""
        head = _request_head(method, target, headers, len(body))
        key: Key = (address, port, host, tls)
        connection = self._take(key)
        if connection is None:
            connection = await self._connect(key)
        reusable = False
        try:
            connection.writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                connection.writer.write(body)
            await connection.writer.drain()
            response, reusable = await _read_response(connection.reader, method, read_limit)
            return response
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise _failure(exc) from exc
        finally:
            if reusable:
                self._put(key, connection)
            else:
                connection.close()

    async def _connect(self, key: Key) -> _Connection:
        address, port, host, tls = key
        try:
            reader, writer = await asyncio.open_connection(
                address,
                port,
                ssl=self.ssl_context if tls else None,
                server_hostname=host if tls else None,
                limit=HEADER_LIMIT,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {address}:{port}: {exc}") from exc
        self.connections_made += 1
        return _Connection(reader, writer)

    def _take(self, key: Key) -> _Connection | None:
        connections = self._idle.get(key)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            self._idle_count -= 1
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _put(self, key: Key, connection: _Connection) -> None:
        connections = self._idle.setdefault(key, [])
        self._idle.move_to_end(key)
        if len(connections) >= self.idle_per_key:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        connections.append(connection)
        self._idle_count += 1
        while self._idle_count > IDLE_TOTAL:
            oldest_key, oldest = next(iter(self._idle.items()))
            if not oldest:
                del self._idle[oldest_key]
                continue
            oldest.pop(0).close()
            self._idle_count -= 1


def host_header(host: str, port: int, tls: bool) -> str:
    """The ``Host`` value: the host, with the port unless it is the scheme's default (IPv6 in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if tls else 80) else f"{shown}:{port}"


def _request_head(method: str, target: str, headers: list[tuple[str, str]], length: int) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {length}")
    if any("\r" in line or "\n" in line or "\x00" in line for line in lines):
        raise ValueError("a header or the target holds a line break")  # a header injection would split the request
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _failure(exc: BaseException) -> HttpError:
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, asyncio.IncompleteReadError):
        return HttpError("the server closed the connection before the response ended")
    if isinstance(exc, asyncio.LimitOverrunError):
        return ProtocolError(f"response headers longer than {HEADER_LIMIT} bytes")
    return HttpError(f"{type(exc).__name__}: {exc}")


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, int, str, list[tuple[str, str]]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"response headers longer than {HEADER_LIMIT} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise HttpError("the server closed the connection without answering") from exc
        raise HttpError("the server closed the connection inside the response headers") from exc
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"malformed response header: {line[:100]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return version, int(code), reason, headers


async def _read_response(reader: asyncio.StreamReader, method: str, read_limit: int) -> tuple[Response, bool]:
    """The response, and whether the connection may carry another request."""
    version, status, reason, headers = await _read_head(reader)
    while 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the final response follows
        if status == 101:
            raise ProtocolError("the server switched protocols")
        version, status, reason, headers = await _read_head(reader)
    tokens = {t.strip().lower() for name, value in headers if name == "connection" for t in value.split(",")}
    keep_alive = version == "HTTP/1.1" and "close" not in tokens
    codings = [t.strip().lower() for name, value in headers if name == "transfer-encoding" for t in value.split(",")]
    lengths = {value for name, value in headers if name == "content-length"}
    if method == "HEAD" or status in (204, 304):
        body, complete, delimited = b"", True, True
    elif codings:
        if codings[-1] != "chunked":
            body, complete = await _read_until_close(reader, read_limit)
            delimited = False
        else:
            body, complete = await _read_chunked(reader, read_limit)
            delimited = True
    elif lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise ProtocolError(f"bad content-length: {sorted(lengths)}")
        length = int(next(iter(lengths)))
        body = await reader.readexactly(min(length, read_limit))
        complete, delimited = length <= read_limit, True
    else:
        body, complete = await _read_until_close(reader, read_limit)
        delimited = False
    response = Response(status, reason, headers, body, complete)
    return response, keep_alive and delimited and complete


async def _read_until_close(reader: asyncio.StreamReader, read_limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    while len(body) < read_limit:
        chunk = await reader.read(read_limit - len(body))
        if not chunk:
            return bytes(body), True
        body += chunk
    return bytes(body), reader.at_eof()


async def _read_chunked(reader: asyncio.StreamReader, read_limit: int) -> tuple[bytes, bool]:
    """The chunked body up to ``read_limit``; complete when the last chunk and the trailers were read."""
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
        if size == 0:
            trailers = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, up to the empty line
                trailers += len(line)
                if trailers > HEADER_LIMIT:
                    raise ProtocolError(f"trailers longer than {HEADER_LIMIT} bytes")
            return bytes(body), True
        if len(body) + size > read_limit:
            body += await reader.readexactly(read_limit - len(body))
            return bytes(body), False
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("a chunk does not end with CRLF")
