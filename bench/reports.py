"""Usage report benchmark: a 30-day daily report by activity at 10k and at 1M usage events.

Reports read the hourly rollups (``usage_rollups``, one row per hour and activity, agent or member), so
their cost should depend on the hours and keys in the range, not on the number of raw events. For each
backend (SQLite and PostgreSQL) and each size:

1. A fresh database (a temporary SQLite file, or ``creditline_bench_reports_<random>`` next to
   ``BENCH_POSTGRES_URL``'s database, dropped at the end), migrated with ``creditline.db.migrate``.
2. One user and its credit account, then N usage events written in bulk with raw SQL (COPY on PostgreSQL,
   one ``executemany`` transaction on SQLite), not through the API: spread uniformly over the 30 days, 5
   activities, 10 agents, small amounts. Beside them, the rollup rows the spends would have upserted (summed
   per account, organization 0, UTC hour and activity, agent or member), computed from the same generated
   events. A SQL query then checks that the stored rollups equal the stored events grouped that way. Only
   the tables a report reads are written: no lots, allocations or ledger rows (the account is not auditable).
3. ``models.reports.usage_report`` (daily buckets in UTC, grouped by activity, over exactly those 30 days),
   ``RUNS`` timed calls per size in ``ROUNDS`` blocks that alternate between the sizes (both databases stay
   loaded meanwhile), each block after ``init_db`` and one warm-up call. Every report must match the
   generated events exactly, row by row.

Printed: median and p95 wall time per backend and size, this process's CPU time per report (steadier than
wall time on a busy machine, but it leaves out the PostgreSQL server's work), the rows in the report, the
rollup rows it reads (the activity rows in its range) and all rows of ``usage_rollups``, and the ratio
1M / 10k of the medians (target at most ``TARGET_RATIO``).

PostgreSQL gets ``ANALYZE`` after the bulk load (autovacuum would do it soon after such a load in
production); SQLite is left as the app leaves it (no ``ANALYZE``).

Settings (environment): ``BENCH_BACKENDS`` ("sqlite,postgres"), ``BENCH_POSTGRES_URL``
(postgresql://postgres@127.0.0.1:5432/test). Run alone with ``python -m bench.reports``.
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import aiosqlite
import asyncpg

# Registers the adapter the app writes SQLite datetimes with (``val.isoformat(" ")``); the bulk load uses it.
import tortoise.backends.sqlite.executor  # noqa: F401
from tortoise.backends.base.executor import EXECUTOR_CACHE

from bench import fixtures
from bench.loop import arun
from creditline import db
from models.reports import Granularity, GroupBy, Report, usage_report

SIZES = (10_000, 1_000_000)
TARGET_RATIO = 1.5
RUNS = 20
ROUNDS = 4
DAYS = 30
SEED = 20_260_101
ACTIVITIES = ("answer", "web_search", "transcription", "summarize", "translate")
AGENTS = tuple(f"agent-{n:02d}" for n in range(10))
HOUR_US = 3_600_000_000
SPAN_US = DAYS * 24 * HOUR_US

EVENT_COLUMNS = (
    "account_id",
    "user_id",
    "organization_id",
    "hold_id",
    "agent_id",
    "activity",
    "quantity",
    "credits",
    "free_credits",
    "paid_credits",
    "occurred_at",
)
ROLLUP_COLUMNS = (
    "account_id",
    "organization_key",
    "dimension",
    "key",
    "bucket",
    "events",
    "credits",
    "free_credits",
    "paid_credits",
)

# The stored rollups against the stored events grouped the way the spends upsert them; 0 rows = consistent.
_FROM_EVENTS = """
WITH hourly AS (
    SELECT account_id, activity, agent_id, CAST(user_id AS TEXT) AS member, {hour} AS bucket,
           credits, free_credits, paid_credits
    FROM usage_events
), from_events AS (
    SELECT account_id, 0 AS organization_key, 'ACTIVITY' AS dimension, activity AS key, bucket, COUNT(*) AS events,
           SUM(credits) AS credits, SUM(free_credits) AS free_credits, SUM(paid_credits) AS paid_credits
    FROM hourly GROUP BY account_id, activity, bucket
    UNION ALL
    SELECT account_id, 0, 'AGENT', agent_id, bucket, COUNT(*), SUM(credits), SUM(free_credits), SUM(paid_credits)
    FROM hourly GROUP BY account_id, agent_id, bucket
    UNION ALL
    SELECT account_id, 0, 'MEMBER', member, bucket, COUNT(*), SUM(credits), SUM(free_credits), SUM(paid_credits)
    FROM hourly GROUP BY account_id, member, bucket
), stored AS (
    SELECT account_id, organization_key, dimension, key, bucket, events, credits, free_credits, paid_credits
    FROM usage_rollups
)
SELECT COUNT(*) FROM (SELECT * FROM (SELECT * FROM from_events EXCEPT SELECT * FROM stored) AS missing
                      UNION ALL SELECT * FROM (SELECT * FROM stored EXCEPT SELECT * FROM from_events) AS extra)
                      AS differences
"""
CHECK_POSTGRES = _FROM_EVENTS.format(hour="date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
# SQLite keeps datetimes as isoformat(" ") text in UTC: "YYYY-MM-DD HH" + ":00:00+00:00" is the hour.
CHECK_SQLITE = _FROM_EVENTS.format(hour="substr(occurred_at, 1, 13) || ':00:00+00:00'")


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


class BenchFailure(Exception):
    """The data or a report is not what it must be."""


# ------------------------------------------------------------------------------------------------ data


Sums = list[int]
"""events, credits, free credits, paid credits"""


@dataclass
class Dataset:
    """N events over ``DAYS`` days from ``start`` (midnight UTC), regenerated identically from ``SEED``."""

    events: int
    start: datetime
    rollups: dict[tuple[str, int, int], Sums] = field(default_factory=dict)
    """(dimension, hour index, key index) -> sums, as the spends would have upserted them; the member
    dimension has one key (index 0: the one user)."""
    by_day: dict[tuple[int, int], Sums] = field(default_factory=dict)
    """(day index, activity index) -> sums: what the daily report by activity must show."""
    totals: Sums = field(default_factory=lambda: [0, 0, 0, 0])

    @property
    def rows_read(self) -> int:
        """The rollup rows the report reads: those of the activity dimension, all in its range."""
        return sum(1 for dimension, _, _ in self.rollups if dimension == "ACTIVITY")

    def raw(self) -> Iterator[tuple[int, int, int, int, int]]:
        """(microseconds after start, activity, agent, credits, free credits), in time order."""
        rng = random.Random(SEED + self.events)
        step = SPAN_US // self.events
        n_activities, n_agents = len(ACTIVITIES), len(AGENTS)
        for i in range(self.events):
            offset = i * SPAN_US // self.events + int(rng.random() * step)  # stratified: uniform, sorted
            credits = 100 + int(rng.random() * 19_901)  # 0.0001 to 0.02 credit
            kind = rng.random()
            free = credits if kind < 0.6 else 0 if kind < 0.9 else credits // 3  # free, paid, or both
            yield offset, int(rng.random() * n_activities), int(rng.random() * n_agents), credits, free

    def summarize(self) -> None:
        rollups: dict[tuple[str, int, int], Sums] = {}
        for offset, activity, agent, credits, free in self.raw():
            hour = offset // HOUR_US
            for key in (("ACTIVITY", hour, activity), ("AGENT", hour, agent), ("MEMBER", hour, 0)):
                sums = rollups.get(key)
                if sums is None:
                    rollups[key] = [1, credits, free, credits - free]
                else:
                    sums[0] += 1
                    sums[1] += credits
                    sums[2] += free
                    sums[3] += credits - free
        by_day: dict[tuple[int, int], Sums] = {}
        totals = [0, 0, 0, 0]
        for (dimension, hour, activity), sums in rollups.items():
            if dimension != "ACTIVITY":
                continue
            day = by_day.setdefault((hour // 24, activity), [0, 0, 0, 0])
            for i, value in enumerate(sums):
                day[i] += value
                totals[i] += value
        self.rollups, self.by_day, self.totals = rollups, by_day, totals
        if totals[0] != self.events:
            raise BenchFailure(f"generated {self.events} events but the rollups count {totals[0]}")

    def event_rows(self, account_id: int, user_id: int) -> Iterator[tuple[Any, ...]]:
        """usage_events rows in ``EVENT_COLUMNS`` order."""
        start = self.start
        for offset, activity, agent, credits, free in self.raw():
            yield (
                account_id,
                user_id,
                None,
                None,
                AGENTS[agent],
                ACTIVITIES[activity],
                None,
                credits,
                free,
                credits - free,
                start + timedelta(microseconds=offset),
            )

    def rollup_rows(self, account_id: int, user_id: int) -> list[tuple[Any, ...]]:
        """usage_rollups rows in ``ROLLUP_COLUMNS`` order."""
        keys = {"ACTIVITY": ACTIVITIES, "AGENT": AGENTS, "MEMBER": (str(user_id),)}
        return [
            (account_id, 0, dimension, keys[dimension][key], self.start + timedelta(hours=hour), *sums)
            for (dimension, hour, key), sums in sorted(self.rollups.items())
        ]

    def check(self, report: Report) -> None:
        """The report must show exactly the generated events, per day and activity."""
        got = {
            (row.bucket_start, row.key): [
                row.totals.events,
                row.totals.credits,
                row.totals.free_credits,
                row.totals.paid_credits,
            ]
            for row in report.rows
        }
        expected: dict[tuple[datetime, str | None], Sums] = {
            (self.start + timedelta(days=day), ACTIVITIES[activity]): sums
            for (day, activity), sums in self.by_day.items()
        }
        totals = [
            report.totals.events,
            report.totals.credits,
            report.totals.free_credits,
            report.totals.paid_credits,
        ]
        if totals != self.totals:
            raise BenchFailure(f"report totals {totals} != generated {self.totals} (events, credits, free, paid)")
        if len(got) != len(report.rows) or got != expected:
            wrong = sorted(k for k in got.keys() | expected.keys() if got.get(k) != expected.get(k))[:3]
            raise BenchFailure(
                f"report rows differ from the generated events ({len(report.rows)} rows, {len(expected)} expected);"
                f" e.g. {[(k, got.get(k), expected.get(k)) for k in wrong]}"
            )


# ------------------------------------------------------------------------------------------------ loading


async def _load_postgres(url: str, data: Dataset) -> tuple[int, int]:
    """Write the user, the account, the events and the rollups; return (account id, rollup rows)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        async with conn.transaction():
            now = datetime.now(UTC)
            user_id = await conn.fetchval(
                "INSERT INTO users (email, created_at) VALUES ($1, $2) RETURNING id", "reports@bench.local", now
            )
            account_id = await conn.fetchval(
                "INSERT INTO credit_accounts (user_id, organization_id, balance, held, version, created_at)"
                " VALUES ($1, NULL, 0, 0, 0, $2) RETURNING id",
                user_id,
                now,
            )
            # Checking each row's foreign keys by trigger would take most of the load; drop them, then add them
            # back, which checks every row at once.
            foreign_keys = await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint"
                " WHERE conrelid = 'usage_events'::regclass AND contype = 'f'"
            )
            for key in foreign_keys:
                await conn.execute(f'ALTER TABLE usage_events DROP CONSTRAINT "{key["conname"]}"')
            await conn.copy_records_to_table(
                "usage_events", records=data.event_rows(account_id, user_id), columns=EVENT_COLUMNS
            )
            for key in foreign_keys:
                await conn.execute(f'ALTER TABLE usage_events ADD CONSTRAINT "{key["conname"]}" {key["definition"]}')
            rollups = data.rollup_rows(account_id, user_id)
            await conn.copy_records_to_table("usage_rollups", records=rollups, columns=ROLLUP_COLUMNS)
        await conn.execute("ANALYZE")
        differences = await conn.fetchval(CHECK_POSTGRES)
    finally:
        await conn.close()
    if differences:
        raise BenchFailure(f"{differences} rollup rows differ from the events grouped by hour and dimension")
    return int(account_id), len(rollups)


async def _load_sqlite(path: str, data: Dataset) -> tuple[int, int]:
    """Write the user, the account, the events and the rollups; return (account id, rollup rows)."""
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA foreign_keys=ON")  # as the app's connections do
        now = datetime.now(UTC)
        cursor = await conn.execute("INSERT INTO users (email, created_at) VALUES (?, ?)", ("reports@bench.local", now))
        user_id = cursor.lastrowid
        cursor = await conn.execute(
            "INSERT INTO credit_accounts (user_id, organization_id, balance, held, version, created_at)"
            " VALUES (?, NULL, 0, 0, 0, ?)",
            (user_id, now),
        )
        account_id = cursor.lastrowid
        assert user_id is not None
        assert account_id is not None
        marks = ", ".join("?" * len(EVENT_COLUMNS))
        await conn.executemany(
            f"INSERT INTO usage_events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})",
            data.event_rows(account_id, user_id),
        )
        rollups = data.rollup_rows(account_id, user_id)
        marks = ", ".join("?" * len(ROLLUP_COLUMNS))
        await conn.executemany(f"INSERT INTO usage_rollups ({', '.join(ROLLUP_COLUMNS)}) VALUES ({marks})", rollups)
        await conn.commit()
        async with conn.execute(CHECK_SQLITE) as rows:
            row = await rows.fetchone()
    assert row is not None
    if row[0]:
        raise BenchFailure(f"{row[0]} rollup rows differ from the events grouped by hour and dimension")
    return account_id, len(rollups)


# ------------------------------------------------------------------------------------------------ timing


@dataclass
class Measurement:
    backend: str
    data: Dataset
    url: str
    account_id: int
    rollup_rows: int
    load_seconds: float
    report_rows: int = 0
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    """This process's CPU time per report (the event loop and aiosqlite's thread; not the PostgreSQL server)."""

    @property
    def events(self) -> int:
        return self.data.events

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def _time_block(m: Measurement, runs: int) -> None:
    """Warm up once, then ``runs`` timed reports; every report is checked (outside the timed part)."""
    EXECUTOR_CACHE.clear()  # Tortoise caches INSERTs by connection name, not dialect
    await db.init_db(m.url)
    try:
        zone = ZoneInfo("UTC")

        async def report() -> Report:
            return await usage_report(
                ("account_id", m.account_id),
                start=m.data.start,
                end=m.data.start + timedelta(days=DAYS),
                granularity=Granularity.DAY,
                group_by=GroupBy.ACTIVITY,
                zone=zone,
            )

        warm = await report()
        m.data.check(warm)
        m.report_rows = len(warm.rows)
        for _ in range(runs):
            began, cpu = time.perf_counter(), time.process_time()
            timed = await report()
            m.times_ms.append((time.perf_counter() - began) * 1000)
            m.cpu_ms.append((time.process_time() - cpu) * 1000)
            m.data.check(timed)
    finally:
        await db.close_db()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _create_postgres_database(admin_url: str) -> str:
    name = f"creditline_bench_reports_{secrets.token_hex(4)}"
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise fixtures.PostgresUnavailable(f"{type(exc).__name__}: {exc}") from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def _prepare(backend: str, data: Dataset, url: str) -> Measurement:
    """Migrate the fresh database at ``url`` and load ``data`` into it."""
    EXECUTOR_CACHE.clear()
    await db.migrate(url)
    await db.close_db()
    began = time.perf_counter()
    if backend == "sqlite":
        path = db.sqlite_path(url)
        assert path is not None
        account_id, rollup_rows = await _load_sqlite(path, data)
    else:
        account_id, rollup_rows = await _load_postgres(url, data)
    loaded = time.perf_counter() - began
    say(f"{data.events:,} events and {rollup_rows:,} rollup rows written and cross-checked in {loaded:.1f} s")
    return Measurement(backend, data, url, account_id, rollup_rows, loaded)


async def _run_backend(
    backend: str, datasets: list[Dataset], admin_url: str, work: Path, failures: list[str]
) -> list[Measurement]:
    """Load every size into its own fresh database, then time them in alternating blocks (so a change in the
    machine's load during the run weighs on every size alike). PostgreSQL databases are dropped at the end."""
    loaded: list[Measurement] = []
    created: list[str] = []
    try:
        for data in datasets:
            if backend == "sqlite":
                url = f"sqlite://{work / f'reports-{data.events}.sqlite3'}"
            else:
                url = await _create_postgres_database(admin_url)
                created.append(url)
                say(f"created database {url.rsplit('/', 1)[1]}")
            try:
                loaded.append(await _prepare(backend, data, url))
            except Exception as exc:
                failures.append(f"{backend}, {data.events:,} events: could not load the data: {_describe(exc)}")
        say(f"timing {RUNS} reports per size, in {ROUNDS} alternating blocks of {RUNS // ROUNDS}")
        timing = list(loaded)
        for _ in range(ROUNDS):
            for m in list(timing):
                try:
                    await _time_block(m, RUNS // ROUNDS)
                except Exception as exc:
                    failures.append(f"{backend}, {m.events:,} events: the report failed: {_describe(exc)}")
                    timing.remove(m)
                    loaded.remove(m)
    finally:
        for url in created:
            await fixtures.drop_postgres_database(admin_url, url)
        if created:
            say(f"dropped {len(created)} database{'s' if len(created) > 1 else ''}")
    return loaded


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BenchFailure) else "\n" + traceback.format_exc()


# ------------------------------------------------------------------------------------------------ report


def table(results: list[Measurement]) -> str:
    header = ("backend", "events", "rollup rows", "rows read", "report rows", "median ms", "p95 ms", "cpu ms", "load s")
    rows = [
        (
            r.backend,
            f"{r.events:,}",
            f"{r.rollup_rows:,}",
            f"{r.data.rows_read:,}",
            f"{r.report_rows:,}",
            f"{r.median_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{statistics.median(r.cpu_ms):.1f}",
            f"{r.load_seconds:.1f}",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    lines = [line(header), *(line(row) for row in rows)]
    small, large = min(SIZES), max(SIZES)
    for backend in dict.fromkeys(r.backend for r in results):
        by_size = {r.events: r for r in results if r.backend == backend}
        if small in by_size and large in by_size:
            ratio = by_size[large].median_ms / by_size[small].median_ms
            cpu_ratio = statistics.median(by_size[large].cpu_ms) / statistics.median(by_size[small].cpu_ms)
            verdict = "met" if ratio <= TARGET_RATIO else "not met"
            lines.append(
                f"{backend}: median at {large:,} / at {small:,} events = {ratio:.2f}"
                f" (target <= {TARGET_RATIO}: {verdict}); the same ratio of cpu ms: {cpu_ratio:.2f}"
            )
    lines.append(
        "(rollup rows: all of usage_rollups, every one in the report's range; rows read: the rollup rows of the"
        " activity dimension, which the report reads; report rows: days x activities;"
        " cpu ms: this process's CPU time per report, which excludes the PostgreSQL server)"
    )
    return "\n".join(lines)


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _backends() -> list[str]:
    raw = os.environ.get("BENCH_BACKENDS", "sqlite,postgres")
    return [b.strip() for b in raw.split(",") if b.strip() in ("sqlite", "postgres")]


async def run_reports_bench() -> bool:
    """Run the report benchmark and print its table; False when a run failed or a report was wrong."""
    admin_url = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    print(
        f"Creditline benchmark: a {DAYS}-day daily usage report by activity (UTC) at"
        f" {' and '.join(f'{n:,}' for n in SIZES)} usage events ({len(ACTIVITIES)} activities, {len(AGENTS)} agents,"
        f" 1 user), read from the hourly rollups; median and p95 of {RUNS} runs",
        flush=True,
    )
    print(f"load average {_load_average()} at start", flush=True)
    datasets = []
    for size in SIZES:
        began = time.perf_counter()
        data = Dataset(size, start)
        data.summarize()
        datasets.append(data)
        say(
            f"generated {size:,} events ({len(data.rollups):,} hourly rollup rows, {data.rows_read:,} of activities)"
            f" in {time.perf_counter() - began:.1f} s"
        )
    results: list[Measurement] = []
    failures: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="creditline-bench-reports-") as tmp:
        for backend in _backends():
            print(f"\n[{backend}]", flush=True)
            try:
                results += await _run_backend(backend, datasets, admin_url, Path(tmp), failures)
            except fixtures.PostgresUnavailable as exc:
                notes.append(f"{backend}: PostgreSQL is not reachable at {admin_url} ({exc}): skipped")
                say(notes[-1])
            except Exception:
                failures.append(f"{backend}: the run could not complete:\n{traceback.format_exc()}")
    print(f"\nload average {_load_average()} at the end")
    if results:
        print(table(results))
    for note in notes:
        print(f"note: {note}")
    for failure in failures:
        print(f"!!! REPORTS: {failure}")
    return not failures


if __name__ == "__main__":
    sys.exit(0 if arun(run_reports_bench()) else 1)
