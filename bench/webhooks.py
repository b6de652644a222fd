"""Webhook delivery benchmark: events delivered per second to a local receiver, and commit-to-receipt latency.

For each backend (SQLite and PostgreSQL), a fresh database (a temporary SQLite file, or a
``creditline_bench_<random>`` database next to ``BENCH_POSTGRES_URL``'s, dropped at the end) with one enabled
endpoint pointing at a receiver on a local port (a minimal HTTP/1.1 server in this process, answering 200 at
once and verifying nothing: the figures are the sender's). The delivery worker (``creditline.webhooks.worker``,
its default concurrency) runs as in the server, woken by the bus as a committed spend wakes it.

1. Steady stream: for ``BENCH_WEBHOOK_SECONDS`` (5), ``BENCH_WEBHOOK_RATE`` (1,000) events a second, each in a
   transaction of its own (``models.outbox.emit``, as a spend that crosses a threshold writes its event; each
   of another account, as the account's row lock would serialise one account's), followed by the publish of a
   balance change on the bus, as the spend does after commit.
   Latency: from the commit returning to the receiver reading the request. Target p99 < 1 s.
2. Backlog: ``BENCH_WEBHOOK_BACKLOG`` (5,000) events committed first, then the worker started: events per
   second delivered until the last arrives (the ceiling of one process on one endpoint).

Every event must arrive, each ``webhook-id`` once. Run alone with ``python -m bench.webhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.transactions import in_transaction

from bench import fixtures
from bench.loop import arun
from creditline import db
from creditline.app import build_services
from creditline.clock import Clock
from creditline.services import Services
from creditline.settings import Settings
from creditline.webhooks.worker import DeliveryWorker
from models.balance import Balance
from models.ledger import BalanceChange
from models.outbox import EventType, emit
from models.sql import Sql
from models.tables import WebhookEndpoint

TARGET_P99_SECONDS = 1.0
SECRET = "whsec_" + "YmVuY2hiZW5jaGJlbmNoYmVuY2hiZW5jaGJlbmNoMDE="


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


def _setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw else default


class Receiver:
    """Reads each request, answers 200, and notes when each ``webhook-id`` arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: httpx reuses the connection
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
                if webhook_id in self.arrived:
                    self.duplicates += 1
                else:
                    self.arrived[webhook_id] = time.monotonic()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class Result:
    backend: str
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
    failures: list[str] = field(default_factory=list)


def _services() -> Services:
    settings = Settings(database_url="unused", webhook_allow_private=True, webhook_poll_seconds=1.0)
    return build_services(settings, Clock())


async def _emit_one(services: Services, account_id: int) -> tuple[str, float]:
    async with in_transaction() as conn:
        event = await emit(
            Sql(conn), EventType.BALANCE_LOW, {"available": "1.5"}, datetime.now(UTC), account_id=account_id
        )
    committed = time.monotonic()
    services.bus.publish([BalanceChange(account_id, 1, -1, "SPEND", Balance(0, 0, 0), datetime.now(UTC))])
    return event.public_id, committed


async def _wait_for(receiver: Receiver, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while len(receiver.arrived) < count:
        if time.monotonic() > deadline:
            return  # what never arrived is reported as such
        await asyncio.sleep(0.01)


async def _stream(result: Result, receiver: Receiver, rate: int, seconds: int) -> None:
    services = _services()
    worker = DeliveryWorker(services)
    task = asyncio.create_task(worker.run())
    committed: dict[str, float] = {}
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    began = time.monotonic()
    try:
        await _produce(services, committed, rate, seconds, began, tick, per_tick, receiver)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _measure(result, receiver, committed, time.monotonic() - began)


async def _produce(
    services: Services,
    committed: dict[str, float],
    rate: int,
    seconds: int,
    began: float,
    tick: float,
    per_tick: int,
    receiver: Receiver,
) -> None:
    n = 0
    pending: set[asyncio.Task[tuple[str, float]]] = set()
    while time.monotonic() - began < seconds:
        for _ in range(per_tick):
            n += 1
            pending.add(asyncio.create_task(_emit_one(services, n)))
        done = {t for t in pending if t.done()}
        for t in done:
            public_id, at = t.result()
            committed[public_id] = at
        pending -= done
        next_tick = began + tick * (n // per_tick)
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    for public_id, at in await asyncio.gather(*pending):
        committed[public_id] = at
    emitted_for = time.monotonic() - began
    committed["__seconds__"] = emitted_for
    await _wait_for(receiver, len(committed) - 1, 60)


def _measure(result: Result, receiver: Receiver, committed: dict[str, float], _: float) -> None:
    emitted_for = committed.pop("__seconds__")
    result.rate = round(len(committed) / emitted_for)
    result.events = len(committed)
    latencies = sorted((receiver.arrived[i] - at) * 1000 for i, at in committed.items() if i in receiver.arrived)
    result.delivered = len(latencies)
    result.duplicates = receiver.duplicates
    if latencies:
        result.p50_ms = statistics.median(latencies)
        result.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        result.max_ms = latencies[-1]
        last = max(receiver.arrived[i] for i in committed if i in receiver.arrived)
        result.stream_per_second = len(latencies) / (last - min(committed.values()))
    if result.delivered < result.events:
        result.failures.append(f"{result.events - result.delivered} of {result.events} events never arrived")
    if result.p99_ms > TARGET_P99_SECONDS * 1000:
        result.failures.append(f"commit-to-receipt p99 {result.p99_ms:.0f} ms is over {TARGET_P99_SECONDS:g} s")


async def _backlog(result: Result, receiver: Receiver, count: int) -> None:
    services = _services()
    before = len(receiver.arrived)
    for start in range(0, count, 500):
        async with in_transaction() as conn:
            sql = Sql(conn)
            now = datetime.now(UTC)
            for n in range(start, min(count, start + 500)):
                await emit(sql, EventType.BALANCE_LOW, {"n": n}, now, account_id=10_000_000 + n)
    worker = DeliveryWorker(services)
    began = time.monotonic()
    task = asyncio.create_task(worker.run())
    try:
        await _wait_for(receiver, before + count, 120)
        elapsed = time.monotonic() - began
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    result.backlog = len(receiver.arrived) - before
    result.backlog_per_second = result.backlog / elapsed
    if result.backlog < count:
        result.failures.append(f"backlog: {count - result.backlog} of {count} events never arrived")
    result.duplicates = receiver.duplicates


async def _run_backend(backend: str, admin_url: str, work: str) -> Result:
    result = Result(backend)
    url = f"sqlite://{work}/webhooks.sqlite3" if backend == "sqlite" else ""
    try:
        if backend == "postgres":
            url = await fixtures.create_postgres_database(admin_url)
    except fixtures.PostgresUnavailable as exc:
        result.failures.append(f"skipped: PostgreSQL unavailable ({exc})")
        return result
    receiver = Receiver()
    try:
        EXECUTOR_CACHE.clear()
        await db.migrate(url)
        await db.close_db()
        await db.init_db(url)
        await receiver.start()
        now = datetime.now(UTC)
        await WebhookEndpoint.create(
            url=f"http://127.0.0.1:{receiver.port}/hooks", secret=SECRET, created_at=now, updated_at=now
        )
        rate = _setting("BENCH_WEBHOOK_RATE", 1000)
        seconds = _setting("BENCH_WEBHOOK_SECONDS", 5)
        say(f"{backend}: {rate:,} events/s for {seconds} s, each in its own transaction")
        await _stream(result, receiver, rate, seconds)
        backlog = _setting("BENCH_WEBHOOK_BACKLOG", 5000)
        say(f"{backend}: a backlog of {backlog:,} events")
        await _backlog(result, receiver, backlog)
    except Exception:
        result.failures.append("\n" + traceback.format_exc())
    finally:
        await receiver.stop()
        await db.close_db()
        if backend == "postgres":
            await fixtures.drop_postgres_database(admin_url, url)
    return result


def table(results: list[Result]) -> str:
    header = ("backend", "events/s sent", "delivered", "dups", "p50 ms", "p99 ms", "max ms", "stream/s", "backlog/s")
    rows = [
        (
            r.backend,
            f"{r.rate:,}",
            f"{r.delivered:,}/{r.events:,}",
            str(r.duplicates),
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.max_ms:.1f}",
            f"{r.stream_per_second:,.0f}",
            f"{r.backlog_per_second:,.0f}",
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows])


async def run_webhooks_bench() -> bool:
    print("Webhook delivery: events delivered to a local receiver, commit-to-receipt latency")
    backends = [b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
    admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="creditline-bench-webhooks-") as work:
        for backend in backends:
            results.append(await _run_backend(backend, admin_url, work))
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
    sys.exit(0 if arun(run_webhooks_bench()) else 1)


if __name__ == "__main__":
    main()
