"""The delivery HTTP/1.1 client (``creditline.webhooks.http1``) against local asyncio servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from creditline.webhooks import http1

Answer = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers request number n (from 1) on a connection; returns whether to keep reading requests on it."""


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                number += 1
                if not await self.answer(number, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def replying(raw: bytes, keep: bool = True) -> Answer:
    async def answer(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return answer


async def post(client: http1.Client, server: Server, body: bytes = b"{}", tls: bool = False) -> http1.Response:
    return await client.request(
        "POST",
        "127.0.0.1",
        server.port,
        "hooks.example.test",
        tls,
        "/in?x=1",
        [("host", http1.host_header("hooks.example.test", server.port, tls)), ("content-type", "application/json")],
        body,
        4096,
    )


async def test_a_content_length_response_is_read_and_the_connection_reused() -> None:
    client = http1.Client()
    async with serving(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as server:
        first = await post(client, server, b'{"a":1}')
        second = await post(client, server)
    await client.aclose()
    assert (first.status, first.reason, first.body, first.complete) == (200, "OK", b"hello", True)
    assert (second.status, second.body) == (200, b"hello")
    assert (server.connections, client.connections_made) == (1, 1)
    assert (
        server.requests[0]
        == (
            f"POST /in?x=1 HTTP/1.1\r\nhost: hooks.example.test:{server.port}\r\ncontent-type: application/json\r\n"
            'content-length: 7\r\n\r\n{"a":1}'
        ).encode()
    )


async def test_a_chunked_body_is_joined_with_its_trailers_read_and_the_connection_reused() -> None:
    raw = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
    client = http1.Client()
    async with serving(replying(raw)) as server:
        first = await post(client, server)
        second = await post(client, server)
    await client.aclose()
    assert (first.status, first.body, first.complete, second.body) == (202, b"abcde", True, b"abcde")
    assert server.connections == 1


async def test_a_close_delimited_http_1_0_response_is_read_to_the_end_and_not_reused() -> None:
    client = http1.Client()
    async with serving(replying(b"HTTP/1.0 200 OK\r\n\r\nall of it", keep=False)) as server:
        first = await post(client, server)
        second = await post(client, server)
    await client.aclose()
    assert (first.status, first.body, first.complete, second.body) == (200, b"all of it", True, b"all of it")
    assert (server.connections, client.connections_made) == (2, 2)


async def test_connection_close_is_honoured() -> None:
    client = http1.Client()
    async with serving(replying(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")) as server:
        await post(client, server)
        await post(client, server)
    await client.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
)
async def test_a_huge_body_is_cut_at_the_read_limit_and_the_connection_closed(head: bytes) -> None:
    chunked = b"chunked" in head

    async def endless(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(head)
        for _ in range(200):  # far more than read, and the connection would never come clean
            writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n" if chunked else b"x" * 4096)
            await writer.drain()
        return True

    client = http1.Client()
    async with serving(endless) as server:
        first = await asyncio.wait_for(post(client, server), 5)
        second = await asyncio.wait_for(post(client, server), 5)
    await client.aclose()
    assert (first.status, len(first.body), first.body[:3], first.complete) == (200, 4096, b"xxx", False)
    assert len(second.body) == 4096
    assert (server.connections, client.connections_made) == (2, 2)


async def test_slow_headers_are_cut_by_the_callers_timeout_and_the_connection_not_reused() -> None:
    async def slow(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:  # the first request of all, not of the connection
            writer.write(b"HTTP/1.1 200 OK\r\n")
            await asyncio.sleep(5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    client = http1.Client()
    async with serving(slow) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await post(client, server)
        again = await asyncio.wait_for(post(client, server), 5)
    await client.aclose()
    assert again.status == 200
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_redirect_is_returned_not_followed() -> None:
    raw = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n"
    client = http1.Client()
    async with serving(replying(raw)) as server:
        response = await post(client, server)
    await client.aclose()
    assert (response.status, response.header("location"), response.body) == (302, "http://127.0.0.1:9/elsewhere", b"")
    assert len(server.requests) == 1


async def test_headers_over_the_limit_are_refused_and_interim_responses_skipped() -> None:
    client = http1.Client()
    huge = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (http1.HEADER_LIMIT + 10) + b"\r\n\r\n"
    async with serving(replying(huge)) as server:
        with pytest.raises(http1.ProtocolError, match="response headers longer than 65536 bytes"):
            await post(client, server)
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    async with serving(replying(interim)) as server:
        response = await post(client, server)
        await post(client, server)
    await client.aclose()
    assert (response.status, response.body, server.connections) == (204, b"", 1)


async def test_a_kept_alive_connection_closed_by_the_server_between_requests_is_replaced_before_sending() -> None:
    client = http1.Client()
    async with serving(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=False)) as server:
        await post(client, server)  # keep-alive as far as the client knows; the server closes after answering
        await asyncio.sleep(0.1)  # the server's close reaches the client
        second = await post(client, server, b'{"n":2}')
    await client.aclose()
    assert second.status == 200
    assert (server.connections, client.connections_made) == (2, 2)
    assert [r.endswith(b'{"n":2}') for r in server.requests] == [False, True]  # each request sent once


async def test_a_request_that_reached_the_server_is_never_resent_when_the_answer_is_lost() -> None:
    async def vanish(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False  # reads the request, closes without answering

    client = http1.Client()
    async with serving(vanish) as server:
        with pytest.raises(http1.HttpError, match="closed the connection without answering"):
            await post(client, server)
    await client.aclose()
    assert (len(server.requests), server.connections) == (1, 1)


async def test_a_connect_failure_is_a_connect_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    client = http1.Client()
    with pytest.raises(http1.ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
        await client.request("POST", "127.0.0.1", port, "h.test", False, "/", [("host", "h.test")], b"", 4096)


def test_header_injection_is_refused() -> None:
    client = http1.Client()
    with pytest.raises(ValueError, match="line break"):
        asyncio.run(client.request("POST", "127.0.0.1", 9, "h", False, "/", [("x", "a\r\nevil: 1")], b"", 4096))


def _certificate(tmp_path: Path, hostname: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_sends_the_urls_host_as_sni_and_verifies_the_certificate_against_it(tmp_path: Path) -> None:
    cert_path, key_path = _certificate(tmp_path, "hooks.example.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    seen_names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_names.append(name)
    trusting = ssl.create_default_context(cafile=str(cert_path))
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with serving(replying(raw), tls=server_context) as server:
        client = http1.Client(trusting)
        first = await post(client, server, tls=True)
        second = await post(client, server, tls=True)
        await client.aclose()
        wrong_name = http1.Client(trusting)
        with pytest.raises(http1.ConnectError, match="certificate verify failed"):
            await wrong_name.request(
                "POST", "127.0.0.1", server.port, "other.example.test", True, "/", [("host", "other")], b"", 4096
            )
        untrusted = http1.Client()  # the system's roots do not know this certificate
        with pytest.raises(http1.ConnectError, match="certificate verify failed"):
            await post(untrusted, server, tls=True)
    assert (first.body, second.body, len(server.requests)) == (b"ok", b"ok", 2)
    assert seen_names == ["hooks.example.test", "other.example.test", "hooks.example.test"]
