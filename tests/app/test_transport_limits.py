"""Request bodies, websocket messages and connections have limits (issue 9, points 4 and 18).

The body limit is checked on the ASGI app with a ``receive`` that counts what the app took; the header
timeout, the connection cap and the file limit against a real ``creditline serve`` on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from creditline.app import create_app
from creditline.serving import FILE_RESERVE, connection_cap
from creditline.settings import Settings
from tests.support.asgi import graphql_websocket_scope
from tests.support.backends import Backend

LIMIT = 64 << 10
CHUNK = 16 << 10
POST_ROUTES = ["/graphql", "/webhooks/stripe", "/healthz", "/invoices/1", "/exports/usage.csv"]


class Upload:
    """An ASGI ``receive`` for an HTTP body, counting the bytes the app took."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.consumed = 0
        self.finished = False

    async def __call__(self) -> dict[str, Any]:
        if self.finished:
            await asyncio.sleep(3600)  # the client waits for the response
        chunk = next(self.chunks, None)
        if chunk is None:
            self.finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert self.status == 0, "a second response"
            self.status = message["status"]
            self.headers = dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def chunks(total: int, size: int = CHUNK) -> Iterator[bytes]:
    block = b"x" * size
    for _ in range(total // size):
        yield block


def http_scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


def limited_settings(**kwargs: Any) -> Settings:
    # The stripe gateway, so that the webhook route reads its body (on sandbox it answers 404 first).
    values: dict[str, Any] = {
        "database_url": "unused",
        "gateway": "stripe",
        "max_body_bytes": LIMIT,
        "token_cache_seconds": 0,
        **kwargs,
    }
    return Settings(**values)


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_a_declared_body_over_the_limit_is_refused_before_anything_is_read(path: str) -> None:
    app = create_app(limited_settings(), manage_database=False, run_jobs=False)
    upload = Upload(chunks(LIMIT + CHUNK))
    response = Response()
    await app(http_scope(path, [(b"content-length", str(LIMIT + 1).encode())]), upload, response)
    assert (response.status, response.body) == (413, f"Request body larger than {LIMIT} bytes".encode())
    assert response.headers[b"connection"] == b"close"
    assert upload.consumed == 0


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_a_chunked_body_is_cut_at_the_first_chunk_past_the_limit(path: str) -> None:
    app = create_app(limited_settings(), manage_database=False, run_jobs=False)
    upload = Upload(chunks(LIMIT * 4))
    response = Response()
    await app(http_scope(path, [(b"transfer-encoding", b"chunked")]), upload, response)
    if path in ("/graphql", "/webhooks/stripe"):  # the routes that read a body
        assert (response.status, response.body) == (413, f"Request body larger than {LIMIT} bytes".encode())
        assert response.headers[b"connection"] == b"close"
        assert upload.consumed == LIMIT + CHUNK
    else:  # the others answer without reading it
        assert response.status == 405
        assert upload.consumed == 0


async def test_a_300_mb_streamed_body_is_refused_after_the_limit_and_memory_stays_flat() -> None:
    app = create_app(limited_settings(max_body_bytes=1 << 20), manage_database=False, run_jobs=False)
    total = 300 << 20
    upload = Upload(chunks(total, 64 << 10))
    response = Response()
    tracemalloc.start()
    try:
        await app(http_scope("/graphql", [(b"transfer-encoding", b"chunked")]), upload, response)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 413
    assert upload.consumed == (1 << 20) + (64 << 10)  # the server stopped at the first chunk past 1 MiB
    assert next(upload.chunks, None) is not None  # and never asked for the rest
    assert peak < 8 << 20


async def test_a_body_within_the_limit_is_served(db: Backend) -> None:
    app = create_app(limited_settings(), manage_database=False, run_jobs=False)
    query = json.dumps({"query": "{ __typename }", "padding": "x" * (LIMIT - 100)}).encode()
    query = query[:-2] + b" " * (LIMIT - len(query)) + query[-2:]
    assert len(query) == LIMIT
    for headers in ([(b"content-length", str(len(query)).encode())], [(b"transfer-encoding", b"chunked")]):
        upload = Upload(iter([query[: LIMIT // 2], query[LIMIT // 2 :]]))
        response = Response()
        await app(http_scope("/graphql", headers), upload, response)
        assert (response.status, json.loads(response.body)) == (200, {"data": {"__typename": "Query"}})
        assert upload.consumed == LIMIT


async def test_a_body_that_stops_arriving_gets_408() -> None:
    app = create_app(limited_settings(body_timeout_seconds=0.2), manage_database=False, run_jobs=False)

    async def trickle() -> dict[str, Any]:
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b'{"query": ', "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    sent: list[bool] = []
    response = Response()
    started = time.monotonic()
    await asyncio.wait_for(app(http_scope("/graphql", [(b"content-length", b"100")]), trickle, response), timeout=5)
    assert (response.status, response.body) == (408, b"Request body not received within 0.2 s")
    assert 0.2 <= time.monotonic() - started < 2


async def test_a_websocket_message_over_the_limit_closes_the_connection_1009() -> None:
    app = create_app(limited_settings(ws_max_message_bytes=1000), manage_database=False, run_jobs=False)
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    closed = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if message["type"] == "websocket.close":
            closed.set()

    await incoming.put({"type": "websocket.connect"})
    await incoming.put({"type": "websocket.receive", "text": json.dumps({"type": "connection_init", "x": "é" * 600})})
    scope = graphql_websocket_scope(("127.0.0.1", 5001))
    task = asyncio.create_task(app(scope, incoming.get, send))
    await asyncio.wait_for(closed.wait(), 5)
    await incoming.put({"type": "websocket.disconnect", "code": 1009})
    await asyncio.wait_for(task, 5)
    assert sent[0]["type"] == "websocket.accept"
    assert sent[1] == {"type": "websocket.close", "code": 1009, "reason": "Message too big"}


# A real server: header timeout, connection cap, file limit, and the same body and message limits.

HEADER_TIMEOUT = 1.5
KEEP_ALIVE = 1
CAP = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _lower_soft_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    base = tmp_path_factory.mktemp("serve")
    env = {
        **os.environ,
        "CREDITLINE_DATABASE_URL": f"sqlite://{base}/serve.sqlite3",
        "CREDITLINE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "CREDITLINE_MAX_CONNECTIONS": str(CAP),
        "CREDITLINE_MAX_BODY_BYTES": str(1 << 20),
        "CREDITLINE_WS_MAX_MESSAGE_BYTES": "4096",
        "CREDITLINE_SWEEP_INTERVAL_SECONDS": "3600",
        "CREDITLINE_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
    }
    migrated = subprocess.run(
        [sys.executable, "-m", "creditline", "migrate"], env=env, capture_output=True, timeout=60, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log = (base / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_lower_soft_file_limit,
    )
    try:
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"server did not start: {Path(log.name).read_text()}")
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def get(port: int, path: str = "/livez") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        raw = _read_all(conn)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _read_all(conn: socket.socket) -> bytes:
    raw = b""
    while True:
        try:
            data = conn.recv(65536)
        except ConnectionResetError:
            return raw
        if not data:
            return raw
        raw += data


def idle_connections(port: int, count: int) -> list[socket.socket]:
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for conn in conns:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")  # a head that never ends
    return conns


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_serve_raises_its_file_limit_to_the_hard_limit(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    _, proc = served
    limits = Path(f"/proc/{proc.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard == str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def test_slowloris_connections_are_closed_after_the_header_timeout(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _ = served
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    partial = idle_connections(port, 1)[0]
    started = time.monotonic()
    # A byte now and then does not keep the head's timer from running.
    partial.sendall(b"s")
    time.sleep(HEADER_TIMEOUT / 3)
    partial.sendall(b"t\r\nX-A: 1\r\n")
    answers = [_read_all(partial), _read_all(silent)]
    waited = time.monotonic() - started
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert answer.endswith(b"\r\n\r\nRequest headers not received in time")
    assert HEADER_TIMEOUT - 0.2 <= waited < HEADER_TIMEOUT + 2
    partial.close()
    silent.close()


def test_an_idle_keep_alive_connection_is_closed(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(2):  # the connection is kept between requests
            conn.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = conn.recv(65536)
                assert chunk, f"closed before the whole answer: {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        idle = time.monotonic()
        assert conn.recv(65536) == b""  # closed by the server, without a response
        assert KEEP_ALIVE - 0.2 <= time.monotonic() - idle < KEEP_ALIVE + 2


def test_the_connection_cap_stays_below_the_file_limit(tmp_path: Path) -> None:
    assert connection_cap(4096, 20_000) == 4096
    assert connection_cap(4096, 1024) == 1024 - FILE_RESERVE
    assert connection_cap(4096, 100) == 1

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))

    env = {**os.environ, "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/db.sqlite3"}
    # serve refuses a database whose migrations are not applied
    migrated = subprocess.run(
        [sys.executable, "-m", "creditline", "migrate"], env=env, capture_output=True, timeout=60, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditline", "serve", "--port", str(free_port())],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        preexec_fn=low_limit,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert first == "creditline: CREDITLINE_MAX_CONNECTIONS=4096 lowered to 344: the open-file limit is 600\n"


def test_a_head_over_the_header_limit_gets_431(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before the 80th line
            for _ in range(80):
                conn.sendall(b"X-Filler: " + b"y" * 1000 + b"\r\n")
                time.sleep(0.002)
        answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_past_the_connection_cap_new_requests_get_503_and_service_comes_back(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _ = served
    time.sleep(HEADER_TIMEOUT + 0.5)  # no leftovers of other tests
    held = idle_connections(port, CAP - 10)
    try:
        assert get(port) == (200, b'{"status":"ok"}')  # many idle connections, and a request still succeeds
        held += idle_connections(port, 15)
        status, body = get(port)
        assert (status, body) == (503, b"Service Unavailable")
        # The idle ones time out; then there is room again.
        deadline = time.monotonic() + HEADER_TIMEOUT + 3
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if get(port)[0] == 200:
                break
        else:
            raise AssertionError("still refused after the idle connections timed out")
    finally:
        for conn in held:
            conn.close()


def test_a_300_mb_body_to_a_real_server_is_refused_and_its_memory_stays_flat(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = served
    before = rss_kb(proc.pid)
    block = b"x" * (256 << 10)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        conn.setblocking(False)
        deadline = time.monotonic() + 20
        while sent < 300 << 20 and time.monotonic() < deadline:
            try:
                answer += conn.recv(65536)
                break  # the server answered
            except BlockingIOError:
                pass
            try:
                sent += conn.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        conn.setblocking(True)
        conn.settimeout(5)
        answer += _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 32 << 20  # it stopped reading: the rest would not fit in the socket buffers
    assert rss_kb(proc.pid) - before < 30 << 10


async def test_a_websocket_message_over_the_limit_is_closed_by_the_server(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _ = served
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/graphql", subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"x": "y" * 5000}}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_a_head_over_the_header_limit_in_one_read_gets_431(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    """A 70,000-byte head sent at once was parsed whole before the guard compared its size, and answered 200:
    the documented 64 KiB limit held only for a head arriving in pieces."""
    port, _ = served
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: " + b"y" * 70_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(head)
        answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    within = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: " + b"y" * 60_000 + b"\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(within)
        answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
