"""The server under test (``creditline serve`` in a subprocess) and the wrk runs against it."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "spend.lua"
SLOTS_SCRIPT = Path(__file__).resolve().parent / "slots.lua"
REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0


class BenchError(Exception):
    """The run could not be carried out (as opposed to a run that measured failures)."""


@dataclass(frozen=True)
class NoopRun:
    requests_per_second: float
    non2xx: int


@dataclass(frozen=True)
class SpendRun:
    requests: int
    seconds: float
    non2xx: int
    not_success: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    sample: str
    """The first response that was not a SpendCreditsSuccess, if any."""

    @property
    def failures(self) -> int:
        return self.non2xx + self.not_success + self.socket_errors

    @property
    def successes(self) -> int:
        return self.requests - self.non2xx - self.not_success

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    return found


def wrk_version() -> str:
    out = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@dataclass(frozen=True)
class Server:
    base: str
    """``http://127.0.0.1:PORT``."""
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return "ws" + self.base.removeprefix("http") + "/graphql"


@contextmanager
def server(database_url: str, workdir: Path) -> Iterator[str]:
    """Run ``creditline serve`` on a free port until the block ends; yield its base URL."""
    with server_process(database_url, workdir) as running:
        yield running.base


@contextmanager
def server_process(database_url: str, workdir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``creditline serve`` on a free port (with ``extra_env`` added to its environment) until the block
    ends; yield it once it answers /healthz."""
    port = free_port()
    env = dict(os.environ)
    env.update(CREDITLINE_DATABASE_URL=database_url, CREDITLINE_SWEEP_INTERVAL_SECONDS="3600")
    env.update(extra_env or {})
    log_path = workdir / f"server-{port}.log"
    # ``-m`` from the repository root: the code of this checkout, not whichever one the environment's
    # ``creditline`` script was installed from (a worktree shares the venv of the main checkout).
    command = [sys.executable, "-m", "creditline", "serve", "--host", "127.0.0.1", "--port", str(port)]
    workers = server_workers()
    if workers > 1 and database_url.startswith("postgres"):  # SQLite is served by one process
        command += ["--workers", str(workers)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise BenchError(f"the server exited with status {proc.returncode}:\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"the server did not answer /healthz within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.1)
        yield Server(base, proc, log_path)
    finally:
        stop(proc)


def server_workers() -> int:
    """``BENCH_WORKERS``: the server's worker processes (``serve --workers``; 1, the default: one process)."""
    raw = os.environ.get("BENCH_WORKERS", "") or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise BenchError(f"BENCH_WORKERS must be a positive whole number, got {raw!r}")
    return int(raw)


def log_tail(path: Path, lines: int = 30) -> str:
    return _log_tail(path, lines)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop our server process (SIGINT lets uvicorn run its shutdown), and kill it if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _run_wrk(args: list[str], seconds: int) -> str:
    command = [wrk_binary(), *args]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(command)}") from exc
    if out.returncode != 0:
        raise BenchError(f"wrk failed (status {out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def run_noop(base: str, seconds: int, connections: int) -> NoopRun:
    """wrk against /livez: how many requests per second the generator and uvicorn manage with no work."""
    out = _run_wrk(["-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", base + "/livez"], seconds)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rate is None:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return NoopRun(float(rate.group(1)), int(non2xx.group(1)) if non2xx else 0)


def bench_lines(out: str, script: str) -> tuple[dict[str, int], str]:
    """What a wrk script's ``done()`` printed: its "BENCH key=value ..." line, and its "BENCH_SAMPLE" (or "")."""
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise BenchError(f"{script} printed no BENCH line; wrk said:\n{out}")
    fields = {key: int(value) for key, value in (item.split("=", 1) for item in line.split()[1:])}
    sample = next((ln[len("BENCH_SAMPLE ") :] for ln in out.splitlines() if ln.startswith("BENCH_SAMPLE ")), "")
    return fields, sample


def _spend_run(out: str) -> SpendRun:
    fields, sample = bench_lines(out, "the wrk script")
    return SpendRun(
        requests=fields["requests"],
        seconds=fields["duration_us"] / 1e6,
        non2xx=fields["non2xx"],
        not_success=fields["not_success"],
        socket_errors=fields["connect"] + fields["read"] + fields["write"] + fields["timeout"],
        p50_ms=fields["p50_us"] / 1000,
        p90_ms=fields["p90_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        sample=sample,
    )


def parse_slots(out: str) -> dict[tuple[int, int], int]:
    """slots.lua's ``BENCH_SLOT cycle=c variant=v sent=n`` lines: counted requests by (cycle, variant index
    from 0)."""
    found: dict[tuple[int, int], int] = {}
    for line in out.splitlines():
        if not line.startswith("BENCH_SLOT "):
            continue
        fields = {key: int(value) for key, value in (item.split("=", 1) for item in line.split()[1:])}
        found[fields["cycle"], fields["variant"] - 1] = (
            found.get((fields["cycle"], fields["variant"] - 1), 0) + (fields["sent"])
        )
    return found


@dataclass(frozen=True)
class SlotPlan:
    """One slotted wrk run (slots.lua): ``cycles`` cycles of one ``slot_ms`` slot per variant, from ``t0_ms``
    on CLOCK_MONOTONIC (``time.monotonic()``), the first ``guard_ms`` of each slot not counted."""

    t0_ms: float
    slot_ms: int
    guard_ms: int
    cycles: int
    round_no: int


def run_slots(
    base: str, connections: int, token: str, tag: str, plan: SlotPlan, warm_file: Path, files: list[Path]
) -> tuple[SpendRun, dict[tuple[int, int], int]]:
    """wrk through slots.lua until the plan's last cycle has ended: the whole run, and the requests counted
    in each (cycle, variant index) slot."""
    end = plan.t0_ms + plan.cycles * len(files) * plan.slot_ms
    seconds = max(1, math.ceil((end - time.monotonic() * 1000) / 1000 + 0.2))
    args = ["-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SLOTS_SCRIPT)]
    plan_args = [f"{plan.t0_ms:.0f}", str(plan.slot_ms), str(plan.guard_ms), str(plan.cycles), str(plan.round_no)]
    out = _run_wrk([*args, base + "/graphql", "--", token, tag, *plan_args, str(warm_file), *map(str, files)], seconds)
    return _spend_run(out), parse_slots(out)


def run_spends(base: str, seconds: int, connections: int, token: str, ids_file: Path, tag: str) -> SpendRun:
    """wrk POSTing spendCredits (see spend.lua) for ``seconds``."""
    args = ["-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA_SCRIPT)]
    return _spend_run(_run_wrk([*args, base + "/graphql", "--", token, str(ids_file), tag], seconds))
