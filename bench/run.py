"""The benchmark's steps for each backend, and the report."""

from __future__ import annotations

import os
import platform
import secrets
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import bench
from bench import fixtures
from bench.batch import run_batch_bench
from bench.ceiling import CeilingRun, run_postgres, run_sqlite
from bench.config import (
    ALERT_LEVELS,
    ALERTED_TARGET_RATIO,
    LIMITED_TARGET_RATIO,
    SPEND_CREDITS,
    TARGET_RATIO,
    BenchConfig,
    LiveConfig,
)
from bench.http_run import BenchError, NoopRun, SpendRun, run_noop, run_spends, server, wrk_binary, wrk_version
from bench.live import report as live_report
from bench.live import run_live
from bench.loop import arun
from bench.query_cost import main as run_query_cost_bench
from bench.reports import run_reports_bench
from bench.webhooks import run_webhooks_bench
from creditline.db import sqlite_path
from models.ids import encode_id


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


@dataclass
class BackendResult:
    name: str
    skipped: str = ""
    noop: NoopRun | None = None
    http: SpendRun | None = None
    events_after_http: int | None = None
    audit_after_http: fixtures.AuditOutcome | None = None
    alerted: SpendRun | None = None
    """The same spends on accounts with two balance-alert levels that they do not cross."""
    limited: SpendRun | None = None
    """The same spends with three limits applying to each (account, agent, token)."""
    events_after_limited: int | None = None
    audit_after_limited: fixtures.AuditOutcome | None = None
    ceiling: CeilingRun | None = None
    events_after_ceiling: int | None = None
    audit_after_ceiling: fixtures.AuditOutcome | None = None
    failures: list[str] = field(default_factory=list)
    """What went wrong, each one a reason to exit non-zero."""

    @property
    def ratio(self) -> float | None:
        if self.http is None or self.ceiling is None or not self.ceiling.spends_per_second:
            return None
        return self.http.requests_per_second / self.ceiling.spends_per_second

    @property
    def alerted_ratio(self) -> float | None:
        if self.http is None or self.alerted is None or not self.http.requests_per_second:
            return None
        return self.alerted.requests_per_second / self.http.requests_per_second

    @property
    def limited_ratio(self) -> float | None:
        if self.http is None or self.limited is None or not self.http.requests_per_second:
            return None
        return self.limited.requests_per_second / self.http.requests_per_second


async def _count_and_audit(url: str) -> tuple[int, fixtures.AuditOutcome]:
    return await fixtures.count_usage_events(url), await fixtures.run_audit(url)


def _check_http(result: BackendResult, connections: int) -> None:
    assert result.http is not None
    assert result.events_after_http is not None
    _check_run(result, result.http, result.events_after_http, connections)


def _check_run(result: BackendResult, http: SpendRun, events: int, connections: int) -> None:
    # wrk stops with requests in flight: the server may commit up to one per connection that wrk never counts.
    if http.failures:
        result.failures.append(
            f"{http.failures} of {http.requests} requests FAILED: {http.non2xx} non-2xx, {http.not_success} not"
            f" SpendCreditsSuccess, {http.socket_errors} socket errors/timeouts"
            + (f"\n      first bad response: {http.sample}" if http.sample else "")
        )
    drift = events - http.successes
    if not 0 <= drift <= connections:
        result.failures.append(
            f"usage_events has {events} rows but wrk counted {http.successes} successful spends"
            f" (allowed: up to {connections} more rows, for requests in flight when wrk stopped)"
        )


def _check_audit(result: BackendResult, audit: fixtures.AuditOutcome, when: str) -> None:
    if not audit.passed:
        shown = "\n      ".join(audit.problems[:10])
        result.failures.append(f"AUDIT FAILED {when}: {len(audit.problems)} problems\n      {shown}")


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


def _measure(result: BackendResult, url: str, work: Path, config: BenchConfig) -> None:
    say(f"migrating and seeding {config.accounts:,} accounts")
    seeded = arun(fixtures.migrate_and_seed(url, config.accounts))
    ids_file = work / "user_ids.txt"
    ids_file.write_text("".join(encode_id("User", pk) + "\n" for pk in seeded.user_ids))

    with server(url, work) as base:
        say(f"server up at {base}; wrk no-op /livez for {config.health_seconds} s")
        result.noop = run_noop(base, config.health_seconds, config.connections)
        if result.noop.non2xx:
            result.failures.append(f"/livez answered {result.noop.non2xx} non-2xx responses")
        say(f"wrk spendCredits for {config.seconds} s, {config.connections} connections")
        result.http = run_spends(
            base, config.seconds, config.connections, seeded.token, ids_file, "http-" + secrets.token_hex(4)
        )
        result.events_after_http, result.audit_after_http = arun(_count_and_audit(url))
        _check_http(result, config.connections)
        _check_audit(result, result.audit_after_http, "after the HTTP run")

        levelled = arun(fixtures.set_alert_levels(url, ALERT_LEVELS))
        say(f"set alert levels on {levelled:,} accounts; wrk spendCredits for {config.seconds} s")
        result.alerted = run_spends(
            base, config.seconds, config.connections, seeded.token, ids_file, "alerted-" + secrets.token_hex(4)
        )
        arun(fixtures.set_alert_levels(url, None))  # the run with limits compares with the plain one
        if result.alerted.failures:
            result.failures.append(f"{result.alerted.failures} spends with alert levels FAILED")
        if fired := arun(fixtures.count_alert_events(url)):
            result.failures.append(f"the run with alert levels crossed one: {fired} events")
        limits_set = arun(fixtures.set_three_limits(url))
        say(f"set {limits_set:,} limits; wrk spendCredits with 3 limits applying for {config.seconds} s")
        result.limited = run_spends(
            base, config.seconds, config.connections, seeded.token, ids_file, "limited-" + secrets.token_hex(4)
        )
    events, result.audit_after_limited = arun(_count_and_audit(url))
    assert result.events_after_http is not None
    # Counted while the server ran on: the plain run's requests in flight may have landed after its count.
    alerted = result.alerted.successes if result.alerted else 0
    _check_run(result, result.limited, events - result.events_after_http - alerted, 3 * config.connections)
    _check_audit(result, result.audit_after_limited, "after the run with limits")
    result.events_after_limited = events

    say(f"raw-SQL ceiling for {config.seconds} s, {config.connections} workers")
    if result.name == "sqlite":
        path = sqlite_path(url)
        assert path is not None
        run = run_sqlite(path, seeded.user_ids, config.seconds, config.connections)
    else:
        run = run_postgres(url, seeded.user_ids, config.seconds, config.connections)
    result.ceiling = arun(run)
    result.events_after_ceiling, result.audit_after_ceiling = arun(_count_and_audit(url))
    written = result.events_after_ceiling - events
    if written != result.ceiling.spends:
        result.failures.append(f"the ceiling committed {result.ceiling.spends} spends but wrote {written} usage events")
    _check_audit(result, result.audit_after_ceiling, "after the ceiling run")


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
        f" load average {load} at start"
    )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _audit(outcome: fixtures.AuditOutcome | None) -> str:
    if outcome is None:
        return "-"
    return "passed" if outcome.passed else f"FAILED ({len(outcome.problems)})"


def table(results: list[BackendResult]) -> str:
    shown = [r for r in results if not r.skipped]
    rows: list[tuple[str, list[str]]] = [
        ("wrk no-op /livez (req/s)", [_rate(r.noop.requests_per_second if r.noop else None) for r in shown]),
        ("spendCredits over HTTP (req/s)", [_rate(r.http.requests_per_second if r.http else None) for r in shown]),
        (
            "  latency p50 / p99 (ms)",
            [f"{r.http.p50_ms:.1f} / {r.http.p99_ms:.1f}" if r.http else "-" for r in shown],
        ),
        (
            "spendCredits, 2 alert levels (req/s)",
            [_rate(r.alerted.requests_per_second if r.alerted else None) for r in shown],
        ),
        ("ratio alert levels / plain", ["-" if r.alerted_ratio is None else f"{r.alerted_ratio:.2f}" for r in shown]),
        (
            f"  target >= {ALERTED_TARGET_RATIO}",
            [
                "-" if r.alerted_ratio is None else ("met" if r.alerted_ratio >= ALERTED_TARGET_RATIO else "not met")
                for r in shown
            ],
        ),
        (
            "spendCredits, 3 limits applying (req/s)",
            [_rate(r.limited.requests_per_second if r.limited else None) for r in shown],
        ),
        (
            "  latency p50 / p99 (ms)",
            [f"{r.limited.p50_ms:.1f} / {r.limited.p99_ms:.1f}" if r.limited else "-" for r in shown],
        ),
        ("ratio 3 limits / plain", ["-" if r.limited_ratio is None else f"{r.limited_ratio:.2f}" for r in shown]),
        (
            f"  target >= {LIMITED_TARGET_RATIO}",
            [
                "-" if r.limited_ratio is None else ("met" if r.limited_ratio >= LIMITED_TARGET_RATIO else "not met")
                for r in shown
            ],
        ),
        ("raw-SQL ceiling (spends/s)", [_rate(r.ceiling.spends_per_second if r.ceiling else None) for r in shown]),
        ("ratio HTTP / ceiling", ["-" if r.ratio is None else f"{r.ratio:.2f}" for r in shown]),
        (
            f"  target >= {TARGET_RATIO}",
            ["-" if r.ratio is None else ("met" if r.ratio >= TARGET_RATIO else "not met") for r in shown],
        ),
        ("requests (HTTP run)", [f"{r.http.requests:,}" if r.http else "-" for r in shown]),
        (
            "failed (non-2xx/not success/socket)",
            [
                f"{r.http.failures:,} ({r.http.non2xx}/{r.http.not_success}/{r.http.socket_errors})" if r.http else "-"
                for r in shown
            ],
        ),
        (
            "usage events / successes",
            [
                f"{r.events_after_http:,} / {r.http.successes:,}" if r.http and r.events_after_http is not None else "-"
                for r in shown
            ],
        ),
        ("audit after HTTP run", [_audit(r.audit_after_http) for r in shown]),
        ("audit after run with limits", [_audit(r.audit_after_limited) for r in shown]),
        ("audit after ceiling run", [_audit(r.audit_after_ceiling) for r in shown]),
    ]
    label_width = max(len(label) for label, _ in rows) + 2
    widths = [max(len(r.name), *(len(values[i]) for _, values in rows)) + 2 for i, r in enumerate(shown)]
    lines = [" " * label_width + "".join(r.name.rjust(w) for r, w in zip(shown, widths, strict=True))]
    lines += [
        label.ljust(label_width) + "".join(v.rjust(w) for v, w in zip(values, widths, strict=True))
        for label, values in rows
    ]
    return "\n".join(lines)


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
    print("Creditline benchmark: spendCredits over HTTP vs. the raw-SQL ceiling of the same writes")
    print(machine())
    print(
        f"runs:    {config.seconds} s each, {config.connections} connections (HTTP) / workers (ceiling),"
        f" {config.accounts:,} accounts, {SPEND_CREDITS} credit per spend"
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
