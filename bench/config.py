"""Benchmark settings, read from ``BENCH_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

from creditline.settings import MICRO

TARGET_RATIO = 0.5
LIMITED_TARGET_RATIO = 0.9
ALERTED_TARGET_RATIO = 0.95
"""Spends on accounts with balance-alert levels they do not cross, against plain spends (issue 13)."""
"""The spend with three limits applying, against the plain spend of the same run: within 10% (issue 12)."""
ALERT_LEVELS = "2000000,1000000"
"""1 and 2 credits: far below what a bench account holds, so no bench spend crosses them."""
SPEND_CREDITS = "0.001"
SPEND_MICRO = 1_000
"""``SPEND_CREDITS`` in micro-credits."""
SIGNUP_BONUS = 1_000_000 * MICRO
"""Every bench account starts with a million credits, so no spend is ever refused."""
SERVICE_NAME = "bench"
AGENT_ID = "bench"
ACTIVITY = "answer"


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class BenchConfig:
    seconds: int
    """Each raw-SQL segment of a round."""
    rounds: int
    """How many rounds: a slotted wrk run, then the raw-SQL segments."""
    cycles: int
    """Cycles per round's wrk run: one slot per HTTP variant each."""
    slot_ms: int
    """One variant's slot in the wrk run (its first quarter not counted)."""
    health_seconds: int
    connections: int
    accounts: int
    backends: tuple[str, ...]
    postgres_url: str
    parts: tuple[str, ...]

    @classmethod
    def from_env(cls) -> BenchConfig:
        backends = tuple(b.strip() for b in os.environ.get("BENCH_BACKENDS", "sqlite,postgres").split(",") if b.strip())
        unknown = set(backends) - {"sqlite", "postgres"}
        if unknown or not backends:
            raise SystemExit(f"BENCH_BACKENDS: choose from sqlite,postgres (got {os.environ.get('BENCH_BACKENDS')!r})")
        parts = tuple(
            p.strip()
            for p in os.environ.get("BENCH_PARTS", "spend,batch,live,reports,queries,webhooks").split(",")
            if p.strip()
        )
        if set(parts) - {"spend", "batch", "live", "reports", "queries", "webhooks"} or not parts:
            raise SystemExit(
                "BENCH_PARTS: choose from spend,batch,live,reports,queries,webhooks"
                f" (got {os.environ.get('BENCH_PARTS')!r})"
            )
        return cls(
            parts=parts,
            seconds=max(1, round(_number("BENCH_SECONDS", 2))),
            rounds=max(1, round(_number("BENCH_ROUNDS", 6))),
            cycles=max(1, round(_number("BENCH_CYCLES", 2))),
            slot_ms=max(200, round(_number("BENCH_SLOT_MS", 1000))),
            health_seconds=max(1, round(_number("BENCH_HEALTH_SECONDS", 3))),
            connections=int(_number("BENCH_CONNECTIONS", 16)),
            accounts=int(_number("BENCH_ACCOUNTS", 1000)),
            backends=backends,
            postgres_url=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        )


@dataclass(frozen=True)
class LiveConfig:
    subscribers: int
    spends: int
    rate: float
    redis_url: str

    @classmethod
    def from_env(cls) -> LiveConfig:
        return cls(
            subscribers=int(_number("BENCH_SUBSCRIBERS", 1000)),
            spends=int(_number("BENCH_SUB_SPENDS", 1500)),
            rate=_number("BENCH_SUB_RATE", 100),
            redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        )
