"""Webhook delivery benchmark: events delivered per second to a local receiver, and commit-to-receipt latency.

Three kinds of process, as in production: the **server** (``creditline serve``: its delivery worker sends, woken
through Redis by the committed changes of other processes, as every server is), a **producer** process that
commits the events, and a **receiver** process (a minimal HTTP/1.1 server answering 200 at once and verifying
nothing: the figures are the sender's). For each backend (SQLite and PostgreSQL) a fresh database (a temporary
SQLite file, or a ``creditline_bench_<random>`` database next to ``BENCH_POSTGRES_URL``'s, dropped at the end)
with one enabled endpoint pointing at the receiver.

1. Steady stream: for ``BENCH_WEBHOOK_SECONDS`` (5), ``BENCH_WEBHOOK_RATE`` (1,000) events a second, each in a
   transaction of its own (``models.outbox.emit``, the one insert a spend that crosses a threshold adds to its
   transaction; each of another account, as the account's row lock would serialise one account's), followed by
   the publish of a balance change on the Redis bus, as the spend does after commit. The spend itself is not
   repeated here: its cost is the spend bench's (a crossing adds one insert to it).
   Latency: from the producer's commit returning to the receiver reading the request (wall clocks of one
   machine). Target p99 < 1 s.
2. Backlog: ``BENCH_WEBHOOK_BACKLOG`` (5,000) events committed while no server runs, then the server started:
   events per second delivered from the first arrival to the last (the ceiling of one process on one endpoint).

Every event must arrive, each ``webhook-id`` once. Without Redis (``BENCH_REDIS_URL``) the server only polls,
every 0.1 s. Run alone with ``python -m bench.webhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as redis
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.transactions import in_transaction

from bench import fixtures
from bench.http_run import REPO_ROOT, BenchError, free_port, server_process
from bench.live import cpu_seconds
from bench.loop import arun
from creditline import db
from creditline.events import EventBus, InProcessBus, RedisBus
from models.balance import Balance
from models.ledger import BalanceChange
from models.outbox import EventType, emit
from models.sql import Sql
from models.tables import WebhookEndpoint

TARGET_P99_SECONDS = 1.0
SECRET = "whsec_" + "YmVuY2hiZW5jaGJlbmNoYmVuY2hiZW5jaGJlbmNoMDE="
ARRIVAL_WAIT_SECONDS = 60.0


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


def _setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw else default


# --- the receiver process ---------------------------------------------------------------------------------


class Receiver:
    """Reads each request, answers 200, and appends ``<webhook-id> <wall-clock time>`` to a file (flushed every
    50 ms, so the parent can count arrivals while the run goes on)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lines: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: the sender reuses its connections
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                webhook_id = ""
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "webhook-id":
                        webhook_id = value.strip()
                await reader.readexactly(length)
                self.lines.append(f"{webhook_id} {time.time():.6f}\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run(self, port: int) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        with self.out.open("a") as out:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
                lines, self.lines = self.lines, []
                out.writelines(lines)
                out.flush()
        server.close()


# --- the producer process ---------------------------------------------------------------------------------


def _bus(redis_url: str, channel: str) -> EventBus:
    return RedisBus(redis_url, channel) if redis_url else InProcessBus()


PRODUCER_CONNECTIONS = 16
"""Transactions the producer has open at once (the pool holds 20): a spend's server runs about as many."""


async def _emit_one(bus: EventBus, account_id: int, slots: asyncio.Semaphore) -> tuple[str, float]:
    async with slots, in_transaction() as conn:
        event = await emit(
            Sql(conn), EventType.BALANCE_LOW, {"available": "1.5"}, datetime.now(UTC), account_id=account_id
        )
    committed = time.time()
    bus.publish([BalanceChange(account_id, 1, -1, "SPEND", Balance(0, 0, 0), datetime.now(UTC))])
    return event.public_id, committed


async def produce(url: str, rate: int, seconds: int, out: Path, redis_url: str, channel: str) -> None:
    """Commit ``rate`` events a second for ``seconds``, each in its own transaction and followed by a publish;
    write ``<public id> <commit time>`` lines to ``out``, then a last ``seconds <how long it took>``."""
    await db.init_db(url)
    bus = _bus(redis_url, channel)
    await bus.start()
    committed: list[tuple[str, float]] = []
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    pending: set[asyncio.Task[tuple[str, float]]] = set()
    slots = asyncio.Semaphore(PRODUCER_CONNECTIONS)
    began = time.monotonic()
    n = 0
    try:
        while time.monotonic() - began < seconds:
            for _ in range(per_tick):
                n += 1
                pending.add(asyncio.create_task(_emit_one(bus, n, slots)))
            done = {t for t in pending if t.done()}
            committed.extend(t.result() for t in done)
            pending -= done
            next_tick = began + tick * (n // per_tick)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        committed.extend(await asyncio.gather(*pending))
        took = time.monotonic() - began
    finally:
        await bus.stop()
        await db.close_db()
    _write_commits(out, committed, took)


def _write_commits(out: Path, committed: list[tuple[str, float]], took: float) -> None:
    out.write_text("".join(f"{i} {at:.6f}\n" for i, at in committed) + f"seconds {took:.6f}\n")


async def produce_backlog(url: str, count: int) -> None:
    await db.init_db(url)
    try:
        for start in range(0, count, 500):
            async with in_transaction() as conn:
                sql = Sql(conn)
                now = datetime.now(UTC)
                for n in range(start, min(count, start + 500)):
                    await emit(sql, EventType.BALANCE_LOW, {"n": n}, now, account_id=10_000_000 + n)
    finally:
        await db.close_db()


# --- the parent -------------------------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    woken_by: str = ""
    rate: int = 0
    events: int = 0
    delivered: int = 0
    duplicates: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    stream_per_second: float = 0.0
    backlog: int = 0
    backlog_per_second: float = 0.0
    server_cpu_ms: float = 0.0
    """The server's CPU time per event delivered while streaming (what the machine's other work does not move)."""
    load: str = ""
    failures: list[str] = field(default_factory=list)


def _python(*args: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", *args], cwd=REPO_ROOT, stdout=stdout, stdin=subprocess.DEVNULL
    )


@contextlib.contextmanager
def receiving(port: int, arrivals: Path) -> Iterator[None]:
    proc = _python("receive", str(port), str(arrivals), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise BenchError("the receiver did not start")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_arrivals(arrivals: Path) -> tuple[dict[str, float], int]:
    """Each webhook-id's first arrival, and how many arrived again."""
    first: dict[str, float] = {}
    again = 0
    with contextlib.suppress(FileNotFoundError):
        for line in arrivals.read_text().splitlines():
            webhook_id, _, at = line.partition(" ")
            if webhook_id in first:
                again += 1
            else:
                first[webhook_id] = float(at)
    return first, again


async def wait_for_arrivals(arrivals: Path, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # what never arrived is reported as such
        if len(read_arrivals(arrivals)[0]) >= count:
            return
        await asyncio.sleep(0.2)


def measure(result: Result, arrived: dict[str, float], committed: dict[str, float], emitted_for: float) -> None:
    result.rate = round(len(committed) / emitted_for)
    result.events = len(committed)
    latencies = sorted((arrived[i] - at) * 1000 for i, at in committed.items() if i in arrived)
    result.delivered = len(latencies)
    if latencies:
        result.p50_ms = statistics.median(latencies)
        result.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        result.max_ms = latencies[-1]
        last = max(arrived[i] for i in committed if i in arrived)
        result.stream_per_second = len(latencies) / (last - min(committed.values()))
    if result.delivered < result.events:
        result.failures.append(f"{result.events - result.delivered} of {result.events} events never arrived")
    if result.p99_ms > TARGET_P99_SECONDS * 1000:
        result.failures.append(f"commit-to-receipt p99 {result.p99_ms:.0f} ms is over {TARGET_P99_SECONDS:g} s")


async def _redis_reachable(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
        return True
    except (OSError, redis.RedisError):
        return False
    finally:
        await client.aclose()


async def _stream(result: Result, url: str, work: Path, arrivals: Path, redis_url: str) -> None:
    rate = _setting("BENCH_WEBHOOK_RATE", 1000)
    seconds = _setting("BENCH_WEBHOOK_SECONDS", 5)
    channel = f"creditline:bench-webhooks:{secrets.token_hex(4)}"
    env = {"CREDITLINE_WEBHOOK_ALLOW_PRIVATE": "1", "CREDITLINE_REDIS_URL": redis_url}
    env.update(CREDITLINE_REDIS_CHANNEL=channel, CREDITLINE_WEBHOOK_POLL_SECONDS="1" if redis_url else "0.1")
    say(f"{result.backend}: {rate:,} events/s for {seconds} s from a producer process, each in its own transaction")
    commits = work / f"commits-{result.backend}.txt"
    with server_process(url, work, env) as running:
        await asyncio.sleep(1.0)  # the worker's first pass and the Redis subscription
        cpu_before = cpu_seconds(running.pid)
        args = ("produce", url, str(rate), str(seconds), str(commits), redis_url, channel)
        producer = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.webhooks", *args, cwd=REPO_ROOT)
        if await producer.wait() != 0:
            raise BenchError(f"the producer exited with status {producer.returncode}")
        committed: dict[str, float] = {}
        emitted_for = 0.0
        for line in commits.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "seconds":
                emitted_for = float(value)
            else:
                committed[key] = float(value)
        await wait_for_arrivals(arrivals, len(committed), ARRIVAL_WAIT_SECONDS)
        server_cpu = cpu_seconds(running.pid) - cpu_before
    arrived, again = read_arrivals(arrivals)
    result.duplicates = again
    measure(result, arrived, committed, emitted_for)
    if result.delivered:
        result.server_cpu_ms = server_cpu * 1000 / result.delivered


async def _backlog(result: Result, url: str, work: Path, arrivals: Path) -> None:
    count = _setting("BENCH_WEBHOOK_BACKLOG", 5000)
    say(f"{result.backend}: a backlog of {count:,} events, then the server started")
    before, _ = read_arrivals(arrivals)
    await produce_backlog(url, count)
    with server_process(url, work, {"CREDITLINE_WEBHOOK_ALLOW_PRIVATE": "1"}):
        await wait_for_arrivals(arrivals, len(before) + count, 120)
    arrived, again = read_arrivals(arrivals)
    times = sorted(at for i, at in arrived.items() if i not in before)
    result.backlog = len(times)
    if len(times) > 1:
        result.backlog_per_second = (len(times) - 1) / (times[-1] - times[0])
    if result.backlog < count:
        result.failures.append(f"backlog: {count - result.backlog} of {count} events never arrived")
    result.duplicates = again


async def _run_backend(backend: str, admin_url: str, redis_url: str, work: Path) -> Result:
    result = Result(backend, woken_by="Redis" if redis_url else "polling", load=f"{os.getloadavg()[0]:.1f}")
    url = f"sqlite://{work}/webhooks.sqlite3" if backend == "sqlite" else ""
    try:
        if backend == "postgres":
            url = await fixtures.create_postgres_database(admin_url)
    except fixtures.PostgresUnavailable as exc:
        result.failures.append(f"skipped: PostgreSQL unavailable ({exc})")
        return result
    port = free_port()
    arrivals = work / f"arrivals-{backend}.txt"
    try:
        EXECUTOR_CACHE.clear()
        await db.migrate(url)
        await db.close_db()
        await db.init_db(url)
        now = datetime.now(UTC)
        await WebhookEndpoint.create(
            url=f"http://127.0.0.1:{port}/hooks", secret=SECRET, created_at=now, updated_at=now
        )
        await db.close_db()
        with receiving(port, arrivals):
            await _stream(result, url, work, arrivals, redis_url)
            await _backlog(result, url, work, arrivals)
    except Exception:
        result.failures.append("\n" + traceback.format_exc())
    finally:
        await db.close_db()
        if backend == "postgres":
            await fixtures.drop_postgres_database(admin_url, url)
    return result


def table(results: list[Result]) -> str:
    header = (
        "backend",
        "woken by",
        "events/s sent",
        "delivered",
        "dups",
        "p50 ms",
        "p99 ms",
        "max ms",
        "stream/s",
        "backlog/s",
        "server CPU ms/event",
        "load",
    )
    rows = [
        (
            r.backend,
            r.woken_by,
            f"{r.rate:,}",
            f"{r.delivered:,}/{r.events:,}",
            str(r.duplicates),
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            f"{r.stream_per_second:,.0f}",
            f"{r.backlog_per_second:,.0f}",
            f"{r.server_cpu_ms:.2f}",
            r.load,
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows])


async def run_webhooks_bench() -> bool:
    print("Webhook delivery: events delivered to a local receiver, commit-to-receipt latency")
    backends = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
    admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not await _redis_reachable(redis_url):
        say(f"Redis is not reachable at {redis_url}: the server polls every 0.1 s instead of being woken")
        redis_url = ""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="creditline-bench-webhooks-") as work:
        for backend in backends:
            results.append(await _run_backend(backend, admin_url, redis_url, Path(work)))
    print()
    print(table([r for r in results if r.events]))
    failed = False
    for r in results:
        for failure in r.failures:
            skipped = failure.startswith("skipped")
            failed = failed or not skipped
            print(f"{'   ' if skipped else '!!!'} {r.backend}: {failure}")
    print(f"target: commit-to-receipt p99 under {TARGET_P99_SECONDS:g} s at 1,000 events/s")
    return not failed


def main() -> None:
    if sys.argv[1:2] == ["receive"]:
        arun(Receiver(Path(sys.argv[3])).run(int(sys.argv[2])))
    elif sys.argv[1:2] == ["produce"]:
        url, rate, seconds, out, redis_url, channel = sys.argv[2:8]
        arun(produce(url, int(rate), int(seconds), Path(out), redis_url, channel))
    else:
        sys.exit(0 if arun(run_webhooks_bench()) else 1)


if __name__ == "__main__":
    main()
