"""The subscription benchmark: 1,000 live ``balanceChanged`` subscribers and a steady stream of spends.

On a fresh PostgreSQL database with ``BENCH_SUBSCRIBERS`` users (each with a user token) and a service token:

1. **One process** (``creditline serve``, in-process event bus). After a warm-up (one subscription, spends
   until three of their events arrived), the server's resident memory is read from ``/proc/<pid>/status``
   (VmRSS). Then every user opens its own websocket (graphql-transport-ws, ``connection_init`` payload
   ``{"authorization": "Bearer <token>"}``) and subscribes to ``balanceChanged`` of its own account; once
   every SNAPSHOT has arrived and the connections have sat idle for ``IDLE_SECONDS``, VmRSS is read again:
   (after - before) / subscribers is the resident memory per idle subscriber (target at most 40 KB). The
   client offers permessage-deflate, as browsers do (``BENCH_WS_DEFLATE=0``: it does not).
2. **Latency**: ``BENCH_SUB_SPENDS`` spends of 0.001 credit go over HTTP (spendCredits, 16 keep-alive
   connections) at a steady ``BENCH_SUB_RATE`` per second (open loop: each spend is due at its instant
   whatever happened to the previous ones), round-robin over the subscribed users. Each spend is matched to
   the event its subscriber receives by (user, version), and the event must carry delta -0.001 and the
   expected total. A missed event fails the run; the figure is p50/p99 from commit to receipt (target p99
   at most 50 ms).
3. **Two processes through Redis**: servers A and B on the same database with ``CREDITLINE_REDIS_URL``;
   subscribers connect to A, spends go to B, the same measurement. A listener on the servers' Redis channel
   (in this process) splits the path into B's part (response -> on the channel) and A's (channel -> receipt).

Commit to receipt is measured **from the moment the spend's HTTP response arrives** to the moment its event
arrives. The server publishes an event right after its transaction commits, in the same task, and only then
finishes and writes the HTTP response, so the response instant is a close, slightly late proxy for the commit
(the figure can be negative when the event wins the race). Beside it, the **upper bound** is measured from the
instant just before the request was written, which adds the spend's own parsing, validation and transaction.
One blind spot: on one process, a pause of the whole server right after a commit (a full garbage collection,
say) delays the response and the event alike and hides from the first figure; the upper bound shows it.

All timestamps come from this one client process (``time.perf_counter``), which sends the spends and holds
every websocket, so no clocks are compared across processes. Its CPU use during the stream is reported (a
busy client would inflate every figure), and so is the servers' and the load average: on a shared machine
other work shows up as spends sent late and long round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import secrets
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import redis.asyncio as redis
import websockets
from websockets.asyncio.client import ClientConnection

from bench import fixtures
from bench.config import ACTIVITY, AGENT_ID, SPEND_CREDITS, LiveConfig
from bench.http_run import BenchError, Server, log_tail, server_process
from bench.loop import arun
from creditline.events import RedisBus, decode
from models.ids import encode_id
from models.ledger import BalanceChange

TARGET_P99_MS = 50.0
TARGET_KB_PER_SUBSCRIBER = 40.0

WATCH = "subscription { balanceChanged { version delta balance { total } } }"
SPEND = (
    "mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename"
    " ... on SpendCreditsSuccess { balance { available } } ... on Error { message } } }"
)
PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]
DELTA = "-" + SPEND_CREDITS
STEP = Decimal(SPEND_CREDITS)
OPEN_CONCURRENCY = 50
"""Websockets opened at once while subscribing everyone."""
HTTP_CONNECTIONS = 16
"""Keep-alive connections the spends are sent over."""
IDLE_SECONDS = 2.0
"""How long the subscribers sit idle before the second memory reading."""
GRACE_SECONDS = 5.0
"""After the last spend, events still on their way are awaited until none has arrived for this long..."""
MAX_WAIT_SECONDS = 60.0
"""... or this long has passed; what has not arrived by then is missed."""
TIMEOUT = 30.0
COMPRESSION: Literal["deflate"] | None = None if os.environ.get("BENCH_WS_DEFLATE", "1") == "0" else "deflate"
"""The client offers permessage-deflate, as browsers do (``BENCH_WS_DEFLATE=0``: it does not)."""


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class LatencyRun:
    label: str
    spends: int = 0
    seconds: float = 0.0
    failed_spends: int = 0
    first_failure: str = ""
    matched: int = 0
    wrong: int = 0
    """Events that matched a spend by user and version but carried another delta or total."""
    unexpected: int = 0
    """Events that matched no spend of this run."""
    closed: int = 0
    """Subscriber connections that ended during the run."""
    from_response_ms: list[float] = field(default_factory=list)
    """Commit to receipt: from the spend's HTTP response to its event (see the module docstring)."""
    from_send_ms: list[float] = field(default_factory=list)
    """The upper bound: from just before the spend was written to its event."""
    spend_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    """How late each spend was sent after its due time (a busy client or too few connections show here)."""
    to_redis_ms: list[float] = field(default_factory=list)
    """Through Redis: from the spend's response to the event's appearance on the Redis channel."""
    from_redis_ms: list[float] = field(default_factory=list)
    """Through Redis: from the event's appearance on the channel to its receipt over the websocket."""
    client_cpu: float = 0.0
    """CPU time of this (client) process over the stream, as a fraction of one core."""
    server_cpu: dict[str, float] = field(default_factory=dict)
    """CPU time of each server process over the stream, as a fraction of one core."""
    server_errors: dict[str, int] = field(default_factory=dict)
    """Errors each server logged (uvicorn's ``ERROR:`` lines), from its start to the end of the run."""
    first_server_error: str = ""

    @property
    def missed(self) -> int:
        return self.spends - self.failed_spends - self.matched

    @property
    def rate(self) -> float:
        return self.spends / self.seconds if self.seconds else 0.0


@dataclass
class MemoryReading:
    subscribers: int
    rss_before_kb: int
    rss_after_kb: int
    open_seconds: float
    idle_cpu: float
    """Server CPU over the idle wait after subscribing, as a fraction of one core."""

    @property
    def per_subscriber_kb(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.subscribers if self.subscribers else 0.0


@dataclass
class LiveResult:
    subscribers: int
    spends: int
    rate: float
    skipped: str = ""
    memory: MemoryReading | None = None
    memory_redis: MemoryReading | None = None
    local: LatencyRun | None = None
    redis: LatencyRun | None = None
    redis_skipped: str = ""
    load_before: str = ""
    load_after: str = ""
    failures: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ process readings


def rss_kb(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def logged_errors(log_path: Path) -> tuple[int, str]:
    """How many lines a server logged at ERROR level (an exception in the app shows up as one), and the
    first of them with the lines that follow it (its traceback)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, ""
    at = [n for n, line in enumerate(lines) if line.startswith("ERROR")]
    return len(at), "\n".join(lines[at[0] : at[0] + 25]) if at else ""


def raise_fd_limit(needed: int) -> None:
    """Lift the soft open-files limit (inherited by the servers started afterwards) when it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < needed:
            raise BenchError(f"the open-files limit is {hard} (hard); the subscription bench needs {needed}")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


# ------------------------------------------------------------------------------------------- the client


@dataclass
class Pending:
    sent: float
    total: Decimal
    """The balance total the event must show."""
    answered: float | None = None
    received: float | None = None


class Subscriber:
    """One websocket with one ``balanceChanged`` subscription for its user's own account."""

    def __init__(self, index: int, token: str) -> None:
        self.index = index
        self.token = token
        self.ws: ClientConnection | None = None
        self.version = 0
        self.total = Decimal(0)
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        ws = await websockets.connect(
            url, subprotocols=PROTOCOL, open_timeout=TIMEOUT, max_queue=None, compression=COMPRESSION
        )
        self.ws = ws
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {self.token}"}}
        await ws.send(json.dumps(init))
        ack = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if ack.get("type") != "connection_ack":
            raise BenchError(f"subscriber {self.index}: expected connection_ack, got {ack}")
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        event = _event(message)
        if event is None or event["delta"] != "0":
            raise BenchError(f"subscriber {self.index}: expected the SNAPSHOT, got {message}")
        self.version = int(event["version"])
        self.total = Decimal(event["balance"]["total"])

    def listen(self, on_message: Callable[[Subscriber, float, str | bytes], None]) -> None:
        assert self.ws is not None
        ws = self.ws

        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    on_message(self, time.perf_counter(), raw)

        self.reader = asyncio.create_task(read())

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader


def _event(message: dict[str, Any]) -> dict[str, Any] | None:
    if message.get("type") != "next":
        return None
    data = (message.get("payload") or {}).get("data") or {}
    event: dict[str, Any] | None = data.get("balanceChanged")
    return event


async def open_all(url: str, subscribers: list[Subscriber]) -> float:
    """Open every subscriber (at most ``OPEN_CONCURRENCY`` at once); return the seconds it took."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    start = time.perf_counter()

    async def one(sub: Subscriber) -> None:
        async with gate:
            await sub.open(url)

    await asyncio.gather(*(one(sub) for sub in subscribers))
    return time.perf_counter() - start


async def close_all(subscribers: list[Subscriber]) -> None:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY * 4)

    async def one(sub: Subscriber) -> None:
        async with gate:
            await sub.close()

    await asyncio.gather(*(one(sub) for sub in subscribers))


class HttpConnection:
    """One keep-alive HTTP/1.1 connection for POSTing spends: a few lines of asyncio instead of a general
    client, so that sending 100s of requests a second costs the measuring process little CPU."""

    def __init__(self, base: str, token: str) -> None:
        parts = urlsplit(base)
        assert parts.hostname is not None
        assert parts.port is not None
        self.host, self.port = parts.hostname, parts.port
        self.head = (
            f"POST /graphql HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
        length = headers.get("content-length")
        if length is None:
            raise BenchError(f"a response without Content-Length: {head!r}")
        payload = await self.reader.readexactly(int(length))
        if headers.get("connection", "").strip() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def spend_body(user_id: int, key: str) -> bytes:
    variables = {
        "input": {
            "userId": encode_id("User", user_id),
            "agentId": AGENT_ID,
            "activity": ACTIVITY,
            "credits": SPEND_CREDITS,
            "idempotencyKey": key,
        }
    }
    return json.dumps({"query": SPEND, "variables": variables}).encode()


async def spend_once(conn: HttpConnection, user_id: int, key: str) -> str:
    """One spend; ``""`` when it succeeded, else what went wrong."""
    try:
        status, payload = await asyncio.wait_for(conn.post(spend_body(user_id, key)), TIMEOUT)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, BenchError) as exc:
        await conn.close()
        return f"{type(exc).__name__}: {exc}"
    if status != 200 or b'"SpendCreditsSuccess"' not in payload:
        return f"HTTP {status}: {payload[:300].decode(errors='replace')}"
    return ""


class RedisTap:
    """A listener on the servers' Redis channel, beside server A, that splits the Redis path's latency:
    when each event was on Redis (published by B after its commit), and when it reached the subscriber."""

    def __init__(self, url: str, channel: str, index_of_account: dict[int, int]) -> None:
        self.url = url
        self.channel = channel
        self.index_of_account = index_of_account
        self.seen: dict[tuple[int, int], float] = {}
        """(subscriber index, version) -> when the event came through Redis."""
        self._client: redis.Redis | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client = redis.Redis.from_url(self.url, socket_connect_timeout=2)
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)

        async def read() -> None:
            try:
                async for message in pubsub.listen():
                    at = time.perf_counter()
                    if message.get("type") != "message":
                        continue
                    with contextlib.suppress(ValueError, TypeError):
                        event = decode(message["data"])
                        if not isinstance(event, BalanceChange):
                            continue
                        index = self.index_of_account.get(event.account_id)
                        if index is not None:
                            self.seen.setdefault((index, event.version), at)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

        self._task = asyncio.create_task(read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.aclose()


async def stream(
    label: str,
    subscribers: list[Subscriber],
    user_ids: list[int],
    spend_base: str,
    token: str,
    count: int,
    rate: float,
    servers: dict[str, Server],
    tap: RedisTap | None = None,
) -> LatencyRun:
    """``count`` spends at ``rate`` per second, round-robin over the subscribers' users; match the events.

    A scheduler puts each spend on a queue at its due time; ``HTTP_CONNECTIONS`` workers, each with its own
    keep-alive connection, send them. One spend per user is in flight at a time, so each one's version is
    known before it is sent (with 1,000 users at 100/s, a user's previous spend finished seconds ago).
    """
    run = LatencyRun(label)
    pending: dict[tuple[int, int], Pending] = {}
    expected_version = [sub.version for sub in subscribers]
    expected_total = [sub.total for sub in subscribers]
    in_flight: list[asyncio.Event | None] = [None] * len(subscribers)
    tag = f"sub-{secrets.token_hex(4)}"
    outstanding = 0
    """Spends sent whose event has not arrived yet."""
    progress = asyncio.Event()

    def on_message(sub: Subscriber, at: float, raw: str | bytes) -> None:
        nonlocal outstanding
        try:
            event = _event(json.loads(raw))
        except ValueError:
            event = None
        entry = None if event is None else pending.get((sub.index, int(event["version"])))
        if event is None or entry is None or entry.received is not None:
            run.unexpected += 1
            return
        entry.received = at
        outstanding -= 1
        progress.set()
        if event["delta"] != DELTA or Decimal(event["balance"]["total"]) != entry.total:
            run.wrong += 1

    for sub in subscribers:
        sub.listen(on_message)

    jobs: asyncio.Queue[tuple[int, int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal outstanding
        conn = HttpConnection(spend_base, token)
        try:
            while (job := await jobs.get()) is not None:
                n, index, due = job
                previous = in_flight[index]
                if previous is not None:
                    await previous.wait()
                done = in_flight[index] = asyncio.Event()
                expected_version[index] += 1
                expected_total[index] -= STEP
                key = (index, expected_version[index])
                entry = pending[key] = Pending(time.perf_counter(), expected_total[index])
                run.send_lag_ms.append((entry.sent - due) * 1000)
                outstanding += 1
                error = await spend_once(conn, user_ids[index], f"{tag}-{n}")
                entry.answered = time.perf_counter()
                if error:
                    run.failed_spends += 1
                    run.first_failure = run.first_failure or error
                    if entry.received is None:
                        outstanding -= 1
                    del pending[key]
                    expected_version[index] -= 1
                    expected_total[index] += STEP
                done.set()
        finally:
            await conn.close()

    cpu_client = time.process_time()
    cpu_servers = {name: cpu_seconds(s.pid) for name, s in servers.items()}
    workers = [asyncio.create_task(worker()) for _ in range(HTTP_CONNECTIONS)]
    start = time.perf_counter()
    try:
        for n in range(count):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            jobs.put_nowait((n, n % len(subscribers), due))
        for _ in workers:
            jobs.put_nowait(None)
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    run.seconds = time.perf_counter() - start
    run.spends = count
    give_up = time.perf_counter() + MAX_WAIT_SECONDS
    while outstanding > 0 and time.perf_counter() < give_up:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), min(GRACE_SECONDS, give_up - time.perf_counter()))
        except TimeoutError:
            break  # nothing arrived for GRACE_SECONDS
    elapsed = time.perf_counter() - start
    run.client_cpu = (time.process_time() - cpu_client) / elapsed
    run.server_cpu = {name: (cpu_seconds(s.pid) - cpu_servers[name]) / elapsed for name, s in servers.items()}

    for key, entry in pending.items():
        assert entry.answered is not None
        run.spend_ms.append((entry.answered - entry.sent) * 1000)
        if entry.received is not None:
            run.matched += 1
            run.from_send_ms.append((entry.received - entry.sent) * 1000)
            run.from_response_ms.append((entry.received - entry.answered) * 1000)
            on_redis = None if tap is None else tap.seen.get(key)
            if on_redis is not None:
                run.to_redis_ms.append((on_redis - entry.answered) * 1000)
                run.from_redis_ms.append((entry.received - on_redis) * 1000)
    run.closed = sum(1 for sub in subscribers if sub.reader is not None and sub.reader.done())
    return run


async def warm_up(subscribe_url: str, spend_base: str, token: str, user_token: str, user_id: int) -> None:
    """One subscription, and spends until three of their events arrived on it (through Redis: once both
    processes listen), so lazily loaded code and pools are in place before the memory reading."""
    sub = Subscriber(-1, user_token)
    await sub.open(subscribe_url)
    assert sub.ws is not None
    conn = HttpConnection(spend_base, token)
    try:
        deadline = time.perf_counter() + TIMEOUT
        received = 0
        while received < 3:
            if time.perf_counter() > deadline:
                raise BenchError(f"warm-up: spends sent, but no event reached the subscriber in {TIMEOUT:.0f} s")
            error = await spend_once(conn, user_id, f"warm-{secrets.token_hex(6)}")
            if error:
                raise BenchError(f"warm-up spend failed: {error}")
            with contextlib.suppress(TimeoutError):
                while True:
                    event = _event(json.loads(await asyncio.wait_for(sub.ws.recv(), 0.5)))
                    if event is not None and event["delta"] == DELTA:
                        received += 1
    finally:
        await conn.close()
        await sub.close()


async def idle_reading(pid: int) -> tuple[int, float]:
    """After ``IDLE_SECONDS`` of nothing: the server's RSS in KB, and its CPU use meanwhile (of one core)."""
    cpu, start = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(IDLE_SECONDS)
    return rss_kb(pid), (cpu_seconds(pid) - cpu) / (time.perf_counter() - start)


# -------------------------------------------------------------------------------------------- the phases


async def _phase(
    label: str,
    subscribe_to: Server,
    spend_to: Server,
    servers: dict[str, Server],
    seeded: fixtures.SeededSubscribers,
    config: LiveConfig,
    channel: str = "",
) -> tuple[MemoryReading, LatencyRun]:
    warm_index = 0
    await warm_up(
        subscribe_to.ws_url, spend_to.base, seeded.token, seeded.user_tokens[warm_index], seeded.user_ids[warm_index]
    )
    before, _ = await idle_reading(subscribe_to.pid)
    subscribers = [Subscriber(i, token) for i, token in enumerate(seeded.user_tokens)]
    try:
        say(f"{label}: opening {len(subscribers):,} websockets, one balanceChanged subscription each")
        opened = await open_all(subscribe_to.ws_url, subscribers)
        after, idle_cpu = await idle_reading(subscribe_to.pid)
        memory = MemoryReading(len(subscribers), before, after, opened, idle_cpu)
        say(
            f"{label}: all subscribed in {opened:.1f} s; server RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB"
            f" ({memory.per_subscriber_kb:.1f} KB per subscriber)"
        )
        say(f"{label}: {config.spends:,} spends at {config.rate:g}/s")
        tap = None
        if spend_to is not subscribe_to:
            tap = RedisTap(config.redis_url, channel, {account: i for i, account in enumerate(seeded.account_ids)})
            await tap.start()
        try:
            run = await stream(
                label,
                subscribers,
                seeded.user_ids,
                spend_to.base,
                seeded.token,
                config.spends,
                config.rate,
                servers,
                tap,
            )
        finally:
            if tap is not None:
                await tap.stop()
        for name, running in servers.items():
            if running.proc.poll() is not None:
                raise BenchError(f"server {name} exited (status {running.proc.returncode}) during the run")
            run.server_errors[name], first = logged_errors(running.log_path)
            run.first_server_error = run.first_server_error or first
        say(
            f"{label}: {run.matched:,} of {run.spends:,} events received, commit -> receipt p99"
            f" {percentile(run.from_response_ms, 99):.1f} ms; client CPU {run.client_cpu:.0%} of a core"
        )
        return memory, run
    finally:
        await close_all(subscribers)


def _check_run(result: LiveResult, run: LatencyRun) -> None:
    if run.failed_spends:
        result.failures.append(
            f"{run.label}: {run.failed_spends} of {run.spends} spends failed; first: {run.first_failure}"
        )
    if run.missed:
        result.failures.append(f"{run.label}: {run.missed} of {run.spends - run.failed_spends} events MISSED")
    if run.wrong:
        result.failures.append(f"{run.label}: {run.wrong} events carried the wrong delta or total")
    if run.closed:
        result.failures.append(f"{run.label}: {run.closed} subscriber connections were closed during the run")


@contextmanager
def _servers(url: str, work: Path, env: dict[str, str], names: tuple[str, ...]) -> Iterator[dict[str, Server]]:
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(server_process(url, work, env)) for name in names}


async def _redis_reachable(url: str) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return ""


def run_live(config: LiveConfig, postgres_url: str) -> LiveResult:
    """The whole subscription benchmark; never raises (what went wrong is in ``failures``)."""
    result = LiveResult(config.subscribers, config.spends, config.rate, load_before=_load())
    print("\n[live]", flush=True)
    try:
        # Each subscriber holds a socket here and one in the server; the server inherits the limit.
        raise_fd_limit(2 * config.subscribers + 512)
    except (BenchError, ValueError, OSError) as exc:
        result.failures.append(f"the subscription run could not start: {exc}")
        return result
    with fixtures.workdir() as tmp:
        work = Path(tmp)
        try:
            url = arun(fixtures.create_postgres_database(postgres_url))
        except fixtures.PostgresUnavailable as exc:
            result.skipped = f"PostgreSQL is not reachable at {postgres_url} ({exc}): skipped"
            say(result.skipped)
            return result
        say(f"created database {url.rsplit('/', 1)[1]}")
        servers: dict[str, Server] = {}
        try:
            say(f"migrating and seeding {config.subscribers:,} users, each with a user token")
            seeded = arun(fixtures.seed_subscribers(url, config.subscribers))

            with _servers(url, work, {}, ("A",)) as servers:
                a = servers["A"]
                say(f"server A up at {a.base} (in-process event bus)")
                result.memory, result.local = arun(_phase("one process", a, a, servers, seeded, config))
            _check_run(result, result.local)

            problem = arun(_redis_reachable(config.redis_url))
            if problem:
                result.redis_skipped = f"Redis is not reachable at {config.redis_url} ({problem}): skipped"
                say(result.redis_skipped)
            else:
                # A channel of its own: other servers on the same Redis neither see nor disturb this run.
                channel = f"{RedisBus.CHANNEL}:bench-{secrets.token_hex(4)}"
                env = {"CREDITLINE_REDIS_URL": config.redis_url, "CREDITLINE_REDIS_CHANNEL": channel}
                with _servers(url, work, env, ("A", "B")) as servers:
                    a, b = servers["A"], servers["B"]
                    say(f"servers A at {a.base} and B at {b.base}, both on Redis {config.redis_url}")
                    result.memory_redis, result.redis = arun(
                        _phase("A + B via Redis", a, b, servers, seeded, config, channel)
                    )
                _check_run(result, result.redis)
            audit = arun(fixtures.run_audit(url))
            if not audit.passed:
                shown = "\n      ".join(audit.problems[:10])
                result.failures.append(
                    f"AUDIT FAILED after the subscription runs: {len(audit.problems)}\n      {shown}"
                )
        except BenchError as exc:
            result.failures.append(f"the subscription run could not complete: {exc}")
        except Exception as exc:
            logs = "".join(
                f"\n      server {name} log tail:\n{log_tail(s.log_path, 15)}" for name, s in servers.items()
            )
            result.failures.append(
                f"the subscription run could not complete ({type(exc).__name__}):\n{traceback.format_exc()}{logs}"
            )
        finally:
            arun(fixtures.drop_postgres_database(postgres_url, url))
            say("dropped the database")
    result.load_after = _load()
    return result


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------------------ report


def _verdict(value: float, target: float) -> str:
    if math.isnan(value):
        return "not measured"
    return "met" if value <= target else "NOT MET"


def _ms(values: list[float], *pcts: float) -> str:
    if not values:
        return "-"
    return " / ".join(f"{percentile(values, pct):.1f}" for pct in pcts)


def report(result: LiveResult) -> str:
    """The section printed after the spend table."""
    head = (
        f"Subscriptions: {result.subscribers:,} balanceChanged subscribers (graphql-transport-ws, one websocket"
        f" each), {result.spends:,} spends at {result.rate:g}/s, PostgreSQL"
    )
    if result.skipped:
        return f"{head}\n  {result.skipped}"
    columns: list[tuple[str, MemoryReading | None, LatencyRun | None]] = [("one process", result.memory, result.local)]
    if result.redis is not None or result.memory_redis is not None:
        columns.append(("A + B via Redis", result.memory_redis, result.redis))
    rows: list[tuple[str, list[str]]] = [
        ("subscribed in (s)", [f"{m.open_seconds:.1f}" if m else "-" for _, m, _ in columns]),
        (
            "server RSS before -> after (MB)",
            [f"{m.rss_before_kb / 1024:.1f} -> {m.rss_after_kb / 1024:.1f}" if m else "-" for _, m, _ in columns],
        ),
        ("memory per idle subscriber (KB)", [f"{m.per_subscriber_kb:.1f}" if m else "-" for _, m, _ in columns]),
        ("server CPU while idle (of a core)", [f"{m.idle_cpu:.0%}" if m else "-" for _, m, _ in columns]),
        ("spends sent (per s)", [f"{r.spends:,} ({r.rate:.0f}/s)" if r else "-" for _, _, r in columns]),
        ("events received / missed", [f"{r.matched:,} / {r.missed:,}" if r else "-" for _, _, r in columns]),
        (
            "commit -> receipt p50 / p99 / max (ms)",
            [_ms(r.from_response_ms, 50, 99, 100) if r else "-" for *_, r in columns],
        ),
        ("  upper bound, from send p50 / p99 (ms)", [_ms(r.from_send_ms, 50, 99) if r else "-" for *_, r in columns]),
        ("spend round trip p50 / p99 (ms)", [_ms(r.spend_ms, 50, 99) if r else "-" for *_, r in columns]),
        ("spends sent late p50 / p99 (ms)", [_ms(r.send_lag_ms, 50, 99) if r else "-" for *_, r in columns]),
        ("  B: response -> on Redis p50 / p99 (ms)", [_ms(r.to_redis_ms, 50, 99) if r else "-" for *_, r in columns]),
        ("  A: Redis -> receipt p50 / p99 (ms)", [_ms(r.from_redis_ms, 50, 99) if r else "-" for *_, r in columns]),
        (
            "CPU during the stream (of a core)",
            [
                " ".join([f"client {r.client_cpu:.0%}", *(f"{n} {c:.0%}" for n, c in r.server_cpu.items())])
                if r
                else "-"
                for *_, r in columns
            ],
        ),
        (
            "failed spends / wrong / unexpected events",
            [f"{r.failed_spends} / {r.wrong} / {r.unexpected}" if r else "-" for *_, r in columns],
        ),
        (
            "errors in the server logs",
            [" ".join(f"{n} {c}" for n, c in r.server_errors.items()) if r else "-" for *_, r in columns],
        ),
    ]
    label_width = max(len(label) for label, _ in rows) + 2
    widths = [max(len(name), *(len(values[i]) for _, values in rows)) + 3 for i, (name, *_) in enumerate(columns)]
    lines = [head, f"  load average {result.load_before} at start, {result.load_after} at end"]
    lines.append(" " * label_width + "".join(name.rjust(w) for (name, *_), w in zip(columns, widths, strict=True)))
    lines += [
        label.ljust(label_width) + "".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        for label, values in rows
    ]
    lines.append("")
    if result.memory is not None:
        kb = result.memory.per_subscriber_kb
        lines.append(
            f"  memory per idle subscriber: {kb:.1f} KB, target <= {TARGET_KB_PER_SUBSCRIBER:.0f} KB:"
            f" {_verdict(kb, TARGET_KB_PER_SUBSCRIBER)}"
        )
    for name, _, run in columns:
        if run is not None:
            p99 = percentile(run.from_response_ms, 99)
            lines.append(
                f"  p99 commit -> receipt, {name}: {p99:.1f} ms, target <= {TARGET_P99_MS:.0f} ms:"
                f" {_verdict(p99, TARGET_P99_MS)}"
            )
    if result.redis_skipped:
        lines.append(f"  A + B via Redis: {result.redis_skipped}")
    for name, _, run in columns:
        if run is not None and run.first_server_error:
            shown = "\n      ".join(run.first_server_error.splitlines())
            lines.append(f"  note: {name}: the first error a server logged:\n      {shown}")
    return "\n".join(lines)
