"""Webhook delivery benchmark: events delivered per second to a local receiver, and commit-to-receipt latency.

Three kinds of process, as in production: the **server** (``creditline serve``: its delivery worker sends, woken
through Redis by the committed changes of other processes, as every server is), a **producer** process that
commits the events, and a **receiver** process (a minimal HTTP/1.1 server answering 200 at once and verifying
nothing: the figures are the sender's). For each backend (SQLite and PostgreSQL) a fresh database (a temporary
SQLite file, or a ``creditline_bench_<random>`` database next to ``BENCH_POSTGRES_URL``'s, dropped at the end)
with one enabled endpoint pointing at the receiver.

1. Steady stream: for ``BENCH_WEBHOOK_SECONDS`` (5), ``BENCH_WEBHOOK_RATE`` (1,000) spends a second that each
   cross an alert level, from ``BENCH_WEBHOOK_PRODUCERS`` (2) producer processes: ``models.ledger.spend_batch``
   (what ``spendCreditsBatch`` runs), ``BENCH_WEBHOOK_BATCH`` (50) spends of as many accounts a transaction, each
   of 10 credits on an account with five levels 10 credits apart (one ``balance.low`` a spend), the changes
   published on the Redis bus after commit as the resolver does.
   Latency: from the producer's commit returning to the receiver reading the request (wall clocks of one
   machine). Target p99 < 1 s, at the rate asked (a run whose producers committed under 95% of it misses).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as redis
from tortoise import connections
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.transactions import in_transaction

from bench import fixtures
from bench.http_run import REPO_ROOT, BenchError, free_port, server_process
from bench.live import cpu_seconds
from bench.loop import arun
from creditline import db
from creditline.events import EventBus, InProcessBus, RedisBus
from models.credits import MICRO
from models.ledger import BatchSpend, IdempotencyKey, SpendResult, create_user, spend_batch
from models.ledger.alerts import AlertChanged, store_levels
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


# --- the producer processes --------------------------------------------------------------------------------

SPEND = 10 * MICRO
"""Each bench spend: 10 credits."""
START_CREDITS = 100 * MICRO
"""What each stream account starts with (its signup bonus)."""
STREAM_LEVELS = tuple(level * MICRO for level in (95, 85, 75, 65, 55))
"""The stream accounts' alert levels: each of an account's first five 10-credit spends crosses one of them
(100 -> 90 crosses 95, ... 60 -> 50 crosses 55): one ``balance.low`` per spend."""
CROSSINGS_PER_ACCOUNT = len(STREAM_LEVELS)


def _bus(redis_url: str, channel: str) -> EventBus:
    return RedisBus(redis_url, channel) if redis_url else InProcessBus()


@dataclass(frozen=True)
class ProducerPlan:
    """What one producer process does: ``rate`` spends a second for ``seconds``, in batches of ``batch``
    (each spend of another account of its share), at most ``in_flight`` batches (transactions) at once."""

    index: int
    producers: int
    rate: float
    seconds: int
    batch: int
    in_flight: int

    def args(self) -> tuple[str, ...]:
        return tuple(str(v) for v in (self.index, self.producers, self.rate, self.seconds, self.batch, self.in_flight))

    @classmethod
    def of(cls, args: list[str]) -> ProducerPlan:
        return cls(int(args[0]), int(args[1]), float(args[2]), int(args[3]), int(args[4]), int(args[5]))


async def _spend_once(bus: EventBus, spends: list[BatchSpend], slots: asyncio.Semaphore) -> list[tuple[str, float]]:
    async with slots:
        done = await spend_batch(spends, now=datetime.now(UTC))
    committed = time.time()
    bus.publish(done.changes)  # after commit, as the resolver does (the server is woken by it)
    refused = [o for o in done.outcomes if not isinstance(o, SpendResult)]
    if refused:
        raise BenchError(f"a bench spend was refused: {refused[0]!r}")
    return [(c.event_id, committed) for c in done.changes if isinstance(c, AlertChanged)]


async def produce(url: str, plan: ProducerPlan, out: Path, redis_url: str, channel: str) -> None:
    """Real spends crossing thresholds: ``plan.rate`` a second through ``models.ledger.spend_batch`` (what
    ``spendCreditsBatch`` runs), each spend of 10 credits on an account of this producer's share crossing one
    of its alert levels (one ``balance.low`` each), the batch's changes published after its commit as the
    resolver publishes them. Writes ``<event id> <commit time>`` lines, then ``seconds <how long it took>``."""
    await db.init_db(url)
    bus = _bus(redis_url, channel)
    await bus.start()
    rows = await Sql(connections.get("default")).fetch("SELECT id, user_id FROM credit_accounts ORDER BY id")
    accounts = [(int(r["id"]), int(r["user_id"])) for r in rows][plan.index :: plan.producers]
    total = round(plan.rate * plan.seconds)
    if total > len(accounts) * CROSSINGS_PER_ACCOUNT:
        raise BenchError(f"{total} spends need {total / CROSSINGS_PER_ACCOUNT:.0f} accounts, not {len(accounts)}")
    committed: list[tuple[str, float]] = []
    pending: set[asyncio.Task[list[tuple[str, float]]]] = set()
    slots = asyncio.Semaphore(plan.in_flight)
    interval = plan.batch / plan.rate
    began = time.monotonic()
    n = 0
    try:
        while n < total:
            spends = []
            for _ in range(min(plan.batch, total - n)):
                account_id, user_id = accounts[n % len(accounts)]
                key = f"bench-{plan.index}-{n}"
                idem = IdempotencyKey("bench", key, "spendCredits", key)
                spends.append(BatchSpend(("id", account_id), user_id, None, "bench", "answer", SPEND, None, idem))
                n += 1
            pending.add(asyncio.create_task(_spend_once(bus, spends, slots)))
            done = {t for t in pending if t.done()}
            for task in done:
                committed.extend(task.result())
            pending -= done
            await asyncio.sleep(max(0.0, began + interval * (n / plan.batch) - time.monotonic()))
        for part in await asyncio.gather(*pending):
            committed.extend(part)
        took = time.monotonic() - began
    finally:
        await bus.stop()
        await db.close_db()
    _write_commits(out, committed, took)


def _write_commits(out: Path, committed: list[tuple[str, float]], took: float) -> None:
    out.write_text("".join(f"{i} {at:.6f}\n" for i, at in committed) + f"seconds {took:.6f}\n")


async def seed_stream_accounts(url: str, count: int) -> None:
    """``count`` users, each with an account holding ``START_CREDITS`` and the ``STREAM_LEVELS``."""
    await db.init_db(url)
    try:
        now = datetime.now(UTC)
        async with in_transaction():
            for n in range(count):
                await create_user(
                    f"hooks{n}@bench.local", signup_bonus=START_CREDITS, bonus_lifetime=timedelta(days=30), now=now
                )
        await Sql(connections.get("default")).execute(
            "UPDATE credit_accounts SET alert_levels = $1", store_levels(STREAM_LEVELS)
        )
    finally:
        await db.close_db()


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


PRODUCERS = 2
"""Producer processes (``BENCH_WEBHOOK_PRODUCERS``): one Python process cannot commit 1,000 spends a second
on this shared 2-core machine; production has many API processes."""
BATCH = 50
"""Spends per ``spend_batch`` (``BENCH_WEBHOOK_BATCH``; 1: one spend a transaction, as ``spendCredits``)."""
IN_FLIGHT = 4
"""Transactions one producer has open at once (its pool holds 20)."""


async def _stream(result: Result, url: str, work: Path, arrivals: Path, redis_url: str) -> None:
    rate = _setting("BENCH_WEBHOOK_RATE", 1000)
    seconds = _setting("BENCH_WEBHOOK_SECONDS", 5)
    producers = _setting("BENCH_WEBHOOK_PRODUCERS", PRODUCERS)
    batch = _setting("BENCH_WEBHOOK_BATCH", BATCH)
    channel = f"creditline:bench-webhooks:{secrets.token_hex(4)}"
    env = {"CREDITLINE_WEBHOOK_ALLOW_PRIVATE": "1", "CREDITLINE_REDIS_URL": redis_url}
    env.update(CREDITLINE_REDIS_CHANNEL=channel, CREDITLINE_WEBHOOK_POLL_SECONDS="1" if redis_url else "0.1")
    accounts = -(-rate * seconds // CROSSINGS_PER_ACCOUNT) + producers
    await seed_stream_accounts(url, accounts)
    say(
        f"{result.backend}: {rate:,} spends/s crossing an alert level for {seconds} s (one balance.low each), from"
        f" {producers} producer processes, {batch} spends of {batch} accounts per spend_batch transaction"
    )
    with server_process(url, work, env) as running:
        await asyncio.sleep(1.0)  # the worker's first pass and the Redis subscription
        cpu_before = cpu_seconds(running.pid)
        load_before = os.getloadavg()[0]
        procs = []
        for index in range(producers):
            plan = ProducerPlan(index, producers, rate / producers, seconds, batch, IN_FLIGHT)
            args = ("produce", url, str(work / f"commits-{result.backend}-{index}.txt"), redis_url, channel)
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.webhooks", *args, *plan.args(), cwd=REPO_ROOT
                )
            )
        for proc in procs:
            if await proc.wait() != 0:
                raise BenchError(f"a producer exited with status {proc.returncode}")
        committed: dict[str, float] = {}
        emitted_for = 0.0
        for index in range(producers):
            for line in (work / f"commits-{result.backend}-{index}.txt").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "seconds":
                    emitted_for = max(emitted_for, float(value))
                else:
                    committed[key] = float(value)
        await wait_for_arrivals(arrivals, len(committed), ARRIVAL_WAIT_SECONDS)
        server_cpu = cpu_seconds(running.pid) - cpu_before
        result.load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
    arrived, again = read_arrivals(arrivals)
    result.duplicates = again
    measure(result, arrived, committed, emitted_for)
    if result.rate < rate * 0.95:
        result.failures.append(f"the producers committed {result.rate:,} spends/s, not the {rate:,} asked")
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
        url, out, redis_url, channel = sys.argv[2:6]
        arun(produce(url, ProducerPlan.of(sys.argv[6:]), Path(out), redis_url, channel))
    else:
        sys.exit(0 if arun(run_webhooks_bench()) else 1)


if __name__ == "__main__":
    main()
