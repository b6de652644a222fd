"""The benchmark's steps for each backend, and the report."""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import signal
import statistics
import sys
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

import bench
from bench import fixtures
from bench.batch import run_batch_bench
from bench.ceiling import Ceiling, postgres_ceiling, sqlite_ceiling
from bench.config import (
    ALERT_LEVELS,
    ALERTED_TARGET_RATIO,
    LIMITED_TARGET_RATIO,
    SPEND_CREDITS,
    TARGET_RATIO,
    BenchConfig,
    LiveConfig,
)
from bench.cpu import Pids, sample_slots
from bench.http_run import (
    BenchError,
    NoopRun,
    Server,
    SlotPlan,
    SpendRun,
    run_noop,
    run_slots,
    server_process,
    server_workers,
    wrk_binary,
    wrk_version,
)
from bench.interleave import Spread, rate_spread, ratio_spread, rotated, slot_cpu, slot_rates, spread
from bench.live import report as live_report
from bench.live import run_live
from bench.loop import arun
from bench.query_cost import main as run_query_cost_bench
from bench.reports import run_reports_bench
from bench.webhooks import run_webhooks_bench
from creditline.db import sqlite_path
from models.ids import encode_id

_STARTED = time.monotonic()


def say(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"  · [{elapsed // 60}:{elapsed % 60:02d}] {message}", flush=True)


HTTP_SEGMENTS = ("plain", "control", "alerted", "limited", "hot")
"""The variants of the slotted wrk run (slots.lua): plain accounts, a second identical set (the control),
accounts with two alert levels not crossed, accounts with three limits applying (account, agent, token), and
one hot account."""
CEILING_SEGMENTS = ("ceiling", "minimal", "hot_minimal")
"""Raw-SQL segments: the app's statements and the minimal spend on the plain accounts, the minimal spend on
the hot account."""
SEGMENTS = (*HTTP_SEGMENTS, *CEILING_SEGMENTS)
LEAD_MS = 800
"""From starting wrk to its first slot: wrk's threads connect and warm up on the control accounts."""
SETTLE_SECONDS = 0.3
"""After each wrk run, untimed: the requests wrk left in flight commit before the ceilings start."""


@dataclass
class BackendResult:
    name: str
    skipped: str = ""
    noop: NoopRun | None = None
    cycles: list[dict[str, float]] = field(default_factory=list)
    """Per cycle of the slotted wrk runs: each HTTP variant's spends per second."""
    rates: list[dict[str, float]] = field(default_factory=list)
    """Per round: each raw-SQL segment's spends per second, and the median over the round's cycles of the
    plain and hot HTTP variants (what the ceilings of the round are compared with)."""
    runs: list[SpendRun] = field(default_factory=list)
    """The wrk runs, one per round."""
    cpu_cycles: list[dict[str, tuple[float, float]]] = field(default_factory=list)
    """Per cycle of the slotted wrk runs: each HTTP variant's CPU ms per counted spend, (server, database)."""
    ceiling_spends: int = 0
    events: int | None = None
    audit: fixtures.AuditOutcome | None = None
    alert_events: int | None = None
    load_after: tuple[float, float, float] | None = None
    failures: list[str] = field(default_factory=list)
    """What went wrong, each one a reason to exit non-zero."""

    def rate(self, segment: str) -> Spread | None:
        return rate_spread(self.cycles if segment in HTTP_SEGMENTS else self.rates, segment)

    def ratio(self, variant: str, base: str) -> Spread | None:
        """Two HTTP variants: within each cycle; otherwise within each round."""
        both_http = variant in HTTP_SEGMENTS and base in HTTP_SEGMENTS
        return ratio_spread(self.cycles if both_http else self.rates, variant, base)

    def cpu(self, segment: str) -> tuple[Spread | None, Spread | None]:
        """CPU ms per spend of an HTTP variant over the cycles: (server, database)."""
        server = spread([c[segment][0] for c in self.cpu_cycles if segment in c])
        database = spread([c[segment][1] for c in self.cpu_cycles if segment in c])
        return server, database

    def cpu_ratio(self, variant: str, base: str) -> Spread | None:
        """Within each cycle: ``base``'s CPU per spend (server + database) over ``variant``'s, the throughput
        ratio of a CPU-bound machine (higher is better, as for the rates)."""
        totals = [{k: sum(v) for k, v in c.items()} for c in self.cpu_cycles]
        return spread([c[base] / c[variant] for c in totals if c.get(variant) and base in c])

    def latency(self) -> tuple[float, float] | None:
        """The median over the rounds of the wrk run's p50 and p99 (ms), every variant together."""
        if not self.runs:
            return None
        return statistics.median(r.p50_ms for r in self.runs), statistics.median(r.p99_ms for r in self.runs)

    @property
    def http_runs(self) -> list[SpendRun]:
        return self.runs


def run_backend(name: str, config: BenchConfig) -> BackendResult:
    result = BackendResult(name)
    print(f"\n[{name}]", flush=True)
    with fixtures.workdir() as tmp:
        work = Path(tmp)
        if name == "sqlite":
            url = f"sqlite://{work / 'bench.sqlite3'}"
        else:
            try:
                url = arun(fixtures.create_postgres_database(config.postgres_url))
            except fixtures.PostgresUnavailable as exc:
                result.skipped = f"PostgreSQL is not reachable at {config.postgres_url} ({exc}): skipped"
                say(result.skipped)
                return result
            say(f"created database {url.rsplit('/', 1)[1]}")
        try:
            _measure(result, url, work, config)
        except BenchError as exc:
            result.failures.append(f"the run could not complete: {exc}")
        except Exception:  # report it, and still clean up and run the other backend
            result.failures.append(f"the run could not complete:\n{traceback.format_exc()}")
        finally:
            if name == "postgres":
                arun(fixtures.drop_postgres_database(config.postgres_url, url))
                say("dropped the database")
    return result


def _ids_file(work: Path, name: str, user_ids: list[int]) -> Path:
    path = work / f"user_ids_{name}.txt"
    path.write_text("".join(encode_id("User", pk) + "\n" for pk in user_ids))
    return path


def _ceiling(name: str, url: str, connections: int) -> AbstractAsyncContextManager[Ceiling]:
    if name == "sqlite":
        path = sqlite_path(url)
        assert path is not None
        return sqlite_ceiling(path, connections)
    return postgres_ceiling(url, connections)


def _measure(result: BackendResult, url: str, work: Path, config: BenchConfig) -> None:
    n = config.accounts
    say(f"migrating and seeding 4 x {n:,} accounts (plain, control, alerted, limited) and one hot account")
    seeded = arun(fixtures.migrate_and_seed(url, 4 * n + 1))
    ids = seeded.user_ids
    sets = {"plain": ids[:n], "control": ids[n : 2 * n], "alerted": ids[2 * n : 3 * n]}
    sets |= {"limited": ids[3 * n : 4 * n], "hot": ids[4 * n :]}
    levelled = arun(fixtures.set_alert_levels(url, ALERT_LEVELS, sets["alerted"]))
    limits_set = arun(fixtures.set_three_limits(url, sets["limited"]))
    say(f"set alert levels on {levelled:,} accounts and {limits_set:,} limits")
    files = {segment: _ids_file(work, segment, sets[segment]) for segment in HTTP_SEGMENTS}
    ceiling_ids = {"ceiling": sets["plain"], "minimal": sets["plain"], "hot_minimal": sets["hot"]}

    with server_process(url, work) as running:
        base = running.base
        say(f"server up at {base}; wrk no-op /livez for {config.health_seconds} s")
        result.noop = run_noop(base, config.health_seconds, config.connections)
        if result.noop.non2xx:
            result.failures.append(f"/livez answered {result.noop.non2xx} non-2xx responses")
        say(
            f"{config.rounds} rounds: one wrk run of {config.cycles} cycles of {config.slot_ms} ms slots, one"
            f" per variant ({', '.join(HTTP_SEGMENTS)}; the first {config.slot_ms // 4} ms of each slot not"
            f" counted), then {', '.join(CEILING_SEGMENTS)} (raw SQL, {config.seconds} s each); orders rotating"
        )
        arun(_rounds(result, url, running, seeded.token, files, ceiling_ids, config))
    result.load_after = os.getloadavg()
    result.events, result.audit = arun(_count_and_audit(url))
    result.alert_events = arun(fixtures.count_alert_events(url))
    _check(result, config.connections)


async def _rounds(
    result: BackendResult,
    url: str,
    running: Server,
    token: str,
    files: dict[str, Path],
    ceiling_ids: dict[str, list[int]],
    config: BenchConfig,
) -> None:
    """Every round, in one event loop: a slotted wrk run (in a thread while the loop waits for it), then the
    raw-SQL segments, whose connections stay open across the rounds."""
    guard = config.slot_ms // 4
    counted_seconds = (config.slot_ms - guard) / 1000
    n = len(HTTP_SEGMENTS)
    async with _ceiling(result.name, url, config.connections) as ceiling, _database_pids(url) as pids:
        for round_no in range(config.rounds):
            plan = SlotPlan(time.monotonic() * 1000 + LEAD_MS, config.slot_ms, guard, config.cycles, round_no)
            sampling = asyncio.create_task(
                sample_slots(running.pid, pids, plan.t0_ms, plan.slot_ms, guard, plan.cycles * n)
            )
            run, slots = await asyncio.to_thread(
                run_slots,
                running.base,
                config.connections,
                token,
                f"r{round_no}-{secrets.token_hex(4)}",
                plan,
                files["control"],
                [files[v] for v in HTTP_SEGMENTS],
            )
            result.runs.append(run)
            cycles = slot_rates(slots, HTTP_SEGMENTS, config.cycles, counted_seconds)
            result.cycles += cycles
            result.cpu_cycles += slot_cpu(await sampling, slots, HTTP_SEGMENTS, plan.cycles, round_no)
            rates = {v: statistics.median(c[v] for c in cycles) for v in ("plain", "hot")}
            await asyncio.sleep(SETTLE_SECONDS)  # let the requests wrk left in flight commit, untimed
            for segment in rotated(CEILING_SEGMENTS, round_no):
                spent = await ceiling(ceiling_ids[segment], config.seconds, segment != "ceiling")
                result.ceiling_spends += spent.spends
                rates[segment] = spent.spends_per_second
            result.rates.append(rates)
            shown = " | ".join(", ".join(f"{k} {c[k]:,.0f}" for k in HTTP_SEGMENTS) for c in cycles)
            say(f"round {round_no + 1}: {shown} | " + ", ".join(f"{k} {rates[k]:,.0f}" for k in CEILING_SEGMENTS))


@asynccontextmanager
async def _database_pids(url: str) -> AsyncIterator[Pids]:
    """The backends of the bench database (its PostgreSQL processes); none for SQLite."""
    if not url.startswith("postgres"):

        async def none() -> Sequence[int]:
            return ()

        yield none
        return
    conn = await asyncpg.connect(url)
    try:

        async def backends() -> Sequence[int]:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [int(row["pid"]) for row in rows]

        yield backends
    finally:
        await conn.close()


async def _count_and_audit(url: str) -> tuple[int, fixtures.AuditOutcome]:
    return await fixtures.count_usage_events(url), await fixtures.run_audit(url)


def _check(result: BackendResult, connections: int) -> None:
    runs = result.http_runs
    failed = [run for run in runs if run.failures]
    if failed:
        total = sum(run.failures for run in failed)
        sample = next((run.sample for run in failed if run.sample), "")
        result.failures.append(
            f"{total} requests FAILED: {sum(r.non2xx for r in failed)} non-2xx,"
            f" {sum(r.not_success for r in failed)} not SpendCreditsSuccess,"
            f" {sum(r.socket_errors for r in failed)} socket errors/timeouts"
            + (f"\n      first bad response: {sample}" if sample else "")
        )
    # wrk stops with requests in flight: the server may commit up to one per connection that wrk never
    # counted, after each wrk segment.
    assert result.events is not None
    expected = sum(run.successes for run in runs) + result.ceiling_spends
    drift = result.events - expected
    if not 0 <= drift <= connections * len(runs):
        result.failures.append(
            f"usage_events has {result.events:,} rows but wrk counted {expected - result.ceiling_spends:,} successful"
            f" spends and the ceilings {result.ceiling_spends:,} (allowed: up to {connections} more rows per wrk"
            " segment, for requests in flight when wrk stopped)"
        )
    if result.alert_events:
        result.failures.append(f"the spends on accounts with alert levels crossed one: {result.alert_events} events")
    if result.audit is not None and not result.audit.passed:
        shown = "\n      ".join(result.audit.problems[:10])
        result.failures.append(f"AUDIT FAILED after the runs: {len(result.audit.problems)} problems\n      {shown}")


# ------------------------------------------------------------------------------------------------ report


def machine(with_wrk: bool = True) -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {usable} CPUs (nproc), {model}; {platform.system()} {platform.release()}\n"
        f"         Python {platform.python_version()},{f' wrk {wrk_version()},' if with_wrk else ''}"
        f" load average {load} at start; server workers: {server_workers()}"
    )


def _spread(value: Spread | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return str(value) if digits == 2 else value.short(digits)


def _target(value: Spread | None, target: float) -> str:
    if value is None:
        return "-"
    return "met" if value.median >= target else "not met"


CPU_LABELS = (
    ("plain", "plain"),
    ("control", "control"),
    ("alerted", "2 alert levels"),
    ("limited", "3 limits"),
    ("hot", "hot account"),
)


def _cpu(result: BackendResult, segment: str) -> str:
    server, database = result.cpu(segment)
    if server is None or database is None:
        return "-"
    return f"{server.median:.2f} + {database.median:.2f}"


def _latency(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.1f} / {value[1]:.1f}"


def _audit(outcome: fixtures.AuditOutcome | None) -> str:
    if outcome is None:
        return "-"
    return "passed" if outcome.passed else f"FAILED ({len(outcome.problems)})"


def table(results: list[BackendResult]) -> str:
    shown = [r for r in results if not r.skipped]

    def rates(segment: str) -> list[str]:
        return [_spread(r.rate(segment), 0) for r in shown]

    def ratios(variant: str, base: str) -> list[str]:
        return [_spread(r.ratio(variant, base)) for r in shown]

    def cpu_ratios(variant: str, base: str) -> list[str]:
        return [_spread(r.cpu_ratio(variant, base)) for r in shown]

    def targets(variant: str, base: str, target: float) -> list[str]:
        return [_target(r.ratio(variant, base), target) for r in shown]

    rows: list[tuple[str, list[str]]] = [
        ("wrk no-op /livez (req/s)", [f"{r.noop.requests_per_second:,.0f}" if r.noop else "-" for r in shown]),
        ("wrk latency p50 / p99 (ms), all variants", [_latency(r.latency()) for r in shown]),
        ("spends/s, median (min-max) over cycles/rounds", ["" for _ in shown]),
        ("  plain spendCredits over HTTP", rates("plain")),
        ("  control: a second set of plain accounts", rates("control")),
        ("  2 alert levels, not crossed", rates("alerted")),
        ("  3 limits applying", rates("limited")),
        ("  raw-SQL ceiling, app's statements", rates("ceiling")),
        ("  raw-SQL ceiling, minimal spend", rates("minimal")),
        ("  hot account: spendCredits over HTTP", rates("hot")),
        ("  hot account: minimal raw-SQL spend", rates("hot_minimal")),
        ("CPU ms per spend, server + database, median", ["" for _ in shown]),
        *[(f"  {label}", [_cpu(r, segment) for r in shown]) for segment, label in CPU_LABELS],
        ("ratios within a cycle/round, median (min-max)", ["" for _ in shown]),
        ("  control / plain (the method's noise)", ratios("control", "plain")),
        ("    the same from CPU per spend", cpu_ratios("control", "plain")),
        ("  alert levels / plain", ratios("alerted", "plain")),
        ("    the same from CPU per spend", cpu_ratios("alerted", "plain")),
        (f"    target >= {ALERTED_TARGET_RATIO}", targets("alerted", "plain", ALERTED_TARGET_RATIO)),
        ("  3 limits / plain", ratios("limited", "plain")),
        ("    the same from CPU per spend", cpu_ratios("limited", "plain")),
        (f"    target >= {LIMITED_TARGET_RATIO}", targets("limited", "plain", LIMITED_TARGET_RATIO)),
        ("  HTTP / ceiling (app's statements)", ratios("plain", "ceiling")),
        ("  HTTP / minimal ceiling", ratios("plain", "minimal")),
        (f"    target >= {TARGET_RATIO}", targets("plain", "minimal", TARGET_RATIO)),
        ("  hot account: HTTP / minimal ceiling", ratios("hot", "hot_minimal")),
        (f"    target >= {TARGET_RATIO}", targets("hot", "hot_minimal", TARGET_RATIO)),
        ("rounds / cycles", [f"{len(r.rates)} / {len(r.cycles)}" for r in shown]),
        ("requests (all wrk segments)", [f"{sum(x.requests for x in r.http_runs):,}" for r in shown]),
        ("failed (non-2xx/not success/socket)", [_failed(r.http_runs) for r in shown]),
        ("usage events / counted spends", [_counted(r) for r in shown]),
        ("audit after the runs", [_audit(r.audit) for r in shown]),
        (
            "load average after the runs",
            ["-" if r.load_after is None else ", ".join(f"{x:.2f}" for x in r.load_after) for r in shown],
        ),
    ]
    label_width = max(len(label) for label, _ in rows) + 2
    widths = [max(len(r.name), *(len(values[i]) for _, values in rows)) + 2 for i, r in enumerate(shown)]
    lines = [" " * label_width + "".join(r.name.rjust(w) for r, w in zip(shown, widths, strict=True))]
    lines += [
        label.ljust(label_width) + "".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        for label, values in rows
    ]
    return "\n".join(lines)


def _failed(runs: list[SpendRun]) -> str:
    non2xx = sum(r.non2xx for r in runs)
    not_success = sum(r.not_success for r in runs)
    socket_errors = sum(r.socket_errors for r in runs)
    return f"{non2xx + not_success + socket_errors:,} ({non2xx}/{not_success}/{socket_errors})"


def _counted(result: BackendResult) -> str:
    if result.events is None:
        return "-"
    return f"{result.events:,} / {sum(r.successes for r in result.http_runs) + result.ceiling_spends:,}"


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind, so the server is stopped and the scratch database dropped


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(bench.__doc__)
        return
    signal.signal(signal.SIGTERM, _terminated)
    config = BenchConfig.from_env()
    spend = _spend_part(config) if "spend" in config.parts else None
    live = None
    if "live" in config.parts:
        if spend is None:
            print("Creditline benchmark: live balance subscriptions")
            print(machine(with_wrk=False))
        live = run_live(LiveConfig.from_env(), config.postgres_url)
        print()
        print(live_report(live))
        if live.failures:
            print("\n!!! LIVE SUBSCRIPTIONS: THE RUN HAD ERRORS")
            for failure in live.failures:
                print(f"!!!   {failure}")
    if "batch" in config.parts and not run_batch_bench(config):
        spend = "failed"  # bench/batch.py printed what failed
    reports_ok = True
    if "reports" in config.parts:
        print()
        reports_ok = arun(run_reports_bench())
    queries_ok = True
    if "queries" in config.parts:
        print()
        queries_ok = run_query_cost_bench()
    webhooks_ok = True
    if "webhooks" in config.parts:
        print()
        webhooks_ok = arun(run_webhooks_bench())
    if spend == "failed" or (live is not None and live.failures) or not reports_ok or not queries_ok or not webhooks_ok:
        print("\nbench: FAILED", flush=True)
        sys.exit(1)
    print()
    if spend == "skipped":
        print("bench: nothing was measured (every backend was skipped)", flush=True)
    elif spend == "passed":
        print("bench: all requests succeeded and the audit passed", flush=True)
    if live is not None:
        if live.skipped:
            print("bench: live subscriptions were not measured", flush=True)
        else:
            print("bench: every subscriber received every event of every spend", flush=True)


def _spend_part(config: BenchConfig) -> str:
    """The spend benchmark and its table: "passed", "failed" or "skipped" (every backend was)."""
    wrk_binary()  # fail early, with the hint, when wrk is missing
    print("Creditline benchmark: spendCredits over HTTP vs. the raw-SQL ceilings of the same writes")
    print(machine())
    print(
        f"runs:    {config.rounds} rounds of {config.cycles} cycles of {config.slot_ms} ms slots, raw-SQL segments"
        f" {config.seconds} s, {config.connections} connections (HTTP) / workers (ceiling), {config.accounts:,}"
        f" accounts per set, {SPEND_CREDITS} credit per spend"
    )
    results = [run_backend(name, config) for name in config.backends]

    print()
    if any(not r.skipped for r in results):
        print(table(results))
    for r in results:
        if r.skipped:
            print(f"\nnote: {r.name}: {r.skipped}")
    failed = [r for r in results if r.failures]
    for r in failed:
        print(f"\n!!! {r.name.upper()}: THE RUN HAD ERRORS")
        for failure in r.failures:
            print(f"!!!   {failure}")
    if failed:
        return "failed"
    return "skipped" if all(r.skipped for r in results) else "passed"
