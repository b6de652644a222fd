"""Batch spends over HTTP (``BENCH_PARTS=batch``): wrk POSTing ``spendCreditsBatch`` with ``BENCH_BATCH_EVENTS``
(100) spends per request over ``BENCH_CONNECTIONS`` connections, the events of a request spread over
``BENCH_BATCH_ACCOUNTS`` (10) of ``BENCH_ACCOUNTS`` accounts picked at random (a batch locks all of its
accounts until it commits: batches spread over many accounts of few wait for each other). Events per second
beside the raw-SQL ceiling's spends per second (bench/ceiling.py), measured in the same run on the same
database. Every event must succeed, the usage events written must match what wrk counted, and the audit must
pass."""

from __future__ import annotations

import os
import secrets
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench import fixtures
from bench.ceiling import CeilingRun, run_postgres, run_sqlite
from bench.config import BenchConfig
from bench.http_run import BenchError, _run_wrk, bench_lines, server
from bench.loop import arun
from creditline.db import sqlite_path
from models.ids import encode_id

LUA_SCRIPT = Path(__file__).resolve().parent / "batch.lua"
TARGET = 3.0
"""Events per second in batches of 100 against the ceiling's single spends per second (issue 15)."""


@dataclass(frozen=True)
class BatchRun:
    requests: int
    seconds: float
    events: int
    """Events answered SpendCreditsSuccess."""
    failures: int
    p50_ms: float
    p99_ms: float
    sample: str

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class BatchResult:
    name: str
    per_request: int
    accounts: int
    skipped: str = ""
    run: BatchRun | None = None
    ceiling: CeilingRun | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.run is None or self.ceiling is None or not self.ceiling.spends_per_second:
            return None
        return self.run.events_per_second / self.ceiling.spends_per_second


def run_wrk(base: str, config: BenchConfig, token: str, ids_file: Path, per_request: int, accounts: int) -> BatchRun:
    args = ["-t2", f"-c{config.connections}", f"-d{config.seconds}s", "--timeout", "20s", "-s", str(LUA_SCRIPT)]
    tag = "batch-" + secrets.token_hex(4)
    out = _run_wrk(
        [*args, base + "/graphql", "--", token, str(ids_file), tag, str(per_request), str(accounts)], config.seconds
    )
    f, sample = bench_lines(out, "batch.lua")
    return BatchRun(
        requests=f["requests"],
        seconds=f["duration_us"] / 1e6,
        events=f["events_ok"],
        failures=f["non2xx"] + f["not_success"] + f["connect"] + f["read"] + f["write"] + f["timeout"],
        p50_ms=f["p50_us"] / 1000,
        p99_ms=f["p99_us"] / 1000,
        sample=sample,
    )


def _measure(result: BatchResult, url: str, work: Path, config: BenchConfig) -> None:
    seeded = arun(fixtures.migrate_and_seed(url, config.accounts))
    ids_file = work / "user_ids.txt"
    ids_file.write_text("".join(encode_id("User", pk) + "\n" for pk in seeded.user_ids))
    with server(url, work) as base:
        print(f"  · wrk spendCreditsBatch ({result.per_request} events) for {config.seconds} s", flush=True)
        run = result.run = run_wrk(base, config, seeded.token, ids_file, result.per_request, result.accounts)
    if run.failures:
        result.failures.append(f"{run.failures} of {run.requests} batches FAILED; first: {run.sample}")
    written = arun(fixtures.count_usage_events(url))
    # wrk stops with batches in flight: the server may commit up to one per connection that wrk never counts.
    if not 0 <= written - run.events <= config.connections * result.per_request:
        result.failures.append(f"usage_events has {written} rows but wrk counted {run.events} successful events")
    audit = arun(fixtures.run_audit(url))
    if not audit.passed:
        result.failures.append(f"AUDIT FAILED after the batch run: {audit.problems[:5]}")
    print(f"  · raw-SQL ceiling for {config.seconds} s, {config.connections} workers", flush=True)
    if result.name == "sqlite":
        path = sqlite_path(url)
        assert path is not None
        result.ceiling = arun(run_sqlite(path, seeded.user_ids, config.seconds, config.connections))
    else:
        result.ceiling = arun(run_postgres(url, seeded.user_ids, config.seconds, config.connections))


def run_backend(name: str, config: BenchConfig, per_request: int, accounts: int) -> BatchResult:
    result = BatchResult(name, per_request, accounts)
    print(f"\n[{name}: batches]", flush=True)
    with fixtures.workdir() as tmp:
        work = Path(tmp)
        if name == "sqlite":
            url = f"sqlite://{work / 'bench.sqlite3'}"
        else:
            try:
                url = arun(fixtures.create_postgres_database(config.postgres_url))
            except fixtures.PostgresUnavailable as exc:
                result.skipped = f"PostgreSQL is not reachable at {config.postgres_url} ({exc}): skipped"
                return result
        try:
            _measure(result, url, work, config)
        except BenchError as exc:
            result.failures.append(f"the run could not complete: {exc}")
        except Exception:
            result.failures.append(f"the run could not complete:\n{traceback.format_exc()}")
        finally:
            if name == "postgres":
                arun(fixtures.drop_postgres_database(config.postgres_url, url))
    return result


def _cell(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def run_batch_bench(config: BenchConfig | None = None) -> bool:
    """Measure and print the table; whether every run succeeded."""
    config = config or BenchConfig.from_env()
    per_request = int(os.environ.get("BENCH_BATCH_EVENTS", "100"))
    accounts = int(os.environ.get("BENCH_BATCH_ACCOUNTS", "10"))
    print(
        f"Creditline benchmark: spendCreditsBatch, {per_request} events per request over {accounts} accounts,"
        f" {config.connections} connections, {config.accounts:,} accounts, {os.cpu_count()} CPUs"
    )
    results = [run_backend(name, config, per_request, accounts) for name in config.backends]
    shown = [r for r in results if not r.skipped]
    rows = [
        ("batches/s", [_cell(r.run.requests / r.run.seconds if r.run and r.run.seconds else None) for r in shown]),
        ("events/s", [_cell(r.run.events_per_second if r.run else None) for r in shown]),
        ("  latency p50 / p99 (ms)", [f"{r.run.p50_ms:.0f} / {r.run.p99_ms:.0f}" if r.run else "-" for r in shown]),
        ("raw-SQL ceiling (spends/s)", [_cell(r.ceiling.spends_per_second if r.ceiling else None) for r in shown]),
        ("ratio events/s / ceiling", [_cell(r.ratio, ".2f") for r in shown]),
        (
            f"  target >= {TARGET:g}",
            ["-" if r.ratio is None else ("met" if r.ratio >= TARGET else "not met") for r in shown],
        ),
    ]
    print()
    width = max(len(label) for label, _ in rows) + 2
    print(" " * width + "".join(r.name.rjust(12) for r in shown))
    for label, values in rows:
        print(label.ljust(width) + "".join(v.rjust(12) for v in values))
    for r in results:
        if r.skipped:
            print(f"note: {r.name}: {r.skipped}")
        for failure in r.failures:
            print(f"!!! {r.name.upper()}: {failure}")
    return not any(r.failures for r in results)
