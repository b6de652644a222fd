"""A subscriber that never reads is closed (issue 9, point 16): against a real ``creditline serve`` process,
a raw socket completes the websocket handshake, subscribes, and then never reads while spends stream; the
server drops the connection within a bound instead of buffering for it, and serves everyone else."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import websockets

from tests.support.backends import Backend
from tests.support.helpers import SPEND, Api, gid
from tests.support.live import PROTOCOL, post_graphql, server_process

# Fat events, so that the socket's buffers fill after a few spends: each carries the account's last 100
# ledger entries.
FAT_WATCH = """subscription { balanceChanged { version balance { total }
  account { ledger(first: 100) { edges { cursor node { type delta balanceAfter createdAt } } } } } }"""
SUBSCRIPTIONS = 10
SEND_TIMEOUT_SECONDS = 2
TCP_ESTABLISHED = 1


def frame(payload: dict[str, Any]) -> bytes:
    """A masked text frame, as a client sends it."""
    data = json.dumps(payload).encode()
    mask = os.urandom(4)
    if len(data) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(data))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
    return header + mask + bytes(b ^ mask[n % 4] for n, b in enumerate(data))


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of the connection (``tcpi_state``), read without reading from the socket."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stalled_subscriber(port: int, token: str) -> socket.socket:
    """Handshake, connection_init, acknowledgement, subscriptions; from then on it never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's side fills
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 101"), received
    sock.sendall(frame({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    while b"connection_ack" not in received:
        received += sock.recv(4096)
    for n in range(SUBSCRIPTIONS):
        sock.sendall(frame({"id": str(n), "type": "subscribe", "payload": {"query": FAT_WATCH}}))
    return sock


async def test_a_subscriber_that_never_reads_is_dropped(db: Backend, api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=100_000, bonus_days=3650)  # the server's clock is real
    service = await api.service()
    async with server_process(
        db.url,
        CREDITLINE_WS_SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT_SECONDS),
        CREDITLINE_WS_MAX_BUFFERED_BYTES="262144",
    ) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        sock = await asyncio.to_thread(stalled_subscriber, port, token)
        try:
            loop = asyncio.get_running_loop()
            started, rss_before = loop.time(), rss_kb(proc.pid)
            spends = 0
            while tcp_state(sock) == TCP_ESTABLISHED and loop.time() - started < 30:
                variables = {
                    "userId": gid("User", user_id),
                    "agentId": "a",
                    "activity": "answer",
                    "credits": "1",
                    "idempotencyKey": f"k{spends}",
                }
                data = await post_graphql(url, SPEND, {"input": variables}, service)
                assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
                spends += 1
            gone_after = loop.time() - started
            # Cut, not merely closed: what the server held for it is gone (a clean close could never finish).
            assert tcp_state(sock) != TCP_ESTABLISHED, f"still connected after {spends} spends"
            assert gone_after < 20, gone_after
            # Spends go on; the server keeps nothing for the dropped subscriber.
            for n in range(20):
                variables["idempotencyKey"] = f"after-{n}"
                await post_graphql(url, SPEND, {"input": variables}, service)
            assert rss_kb(proc.pid) - rss_before < 30_000
        finally:
            sock.close()

        # Everyone else is served as before.
        async with websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=PROTOCOL) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
            assert json.loads(await ws.recv()) == {"type": "connection_ack"}
            watch = "subscription { balanceChanged { reason version } }"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": watch}}))
            first = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
            assert first["payload"]["data"]["balanceChanged"] == {"reason": "SNAPSHOT", "version": spends + 21}
