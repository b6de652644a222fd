"""What a spend limit is (``LimitSpec`` as set, ``LimitView`` as shown and stored in refusals) and its periods:
which counter a spend adds to, which counters count now, and when a window
resets (see docs/rules.md, "Spend limits").

Counters are keyed by the start of their period in Unix seconds. A calendar window (DAY, WEEK from Monday,
MONTH) has one counter per period, its start at local midnight in the limit's time zone; TOTAL has one, at 0.
A rolling window slides over 60 buckets, the current one and the 59 before it, aligned to Unix time:
ROLLING_MINUTES n counts buckets of n seconds, ROLLING_HOURS n buckets of n minutes. So a window of one minute is
exact to the second, and any window is exact to a sixtieth of its length: a burst split across a minute's edge
counts whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from models.tables import LimitAction, LimitKind, LimitScope, LimitWindow

MAX_ROLLING_HOURS = 24 * 31
MAX_ROLLING_MINUTES = 24 * 60
ROLLING_BUCKETS = 60
"""How many buckets a rolling window counts (models/ledger/limits.py ``_SINCE`` computes the same in SQL)."""


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # The host's zoneinfo also has files that are no IANA zone: "localtime" (the host's own setting, which can
    # change under a limit), "posixrules", "Factory" and the "posix/" and "right/" copies.
    return frozenset(
        name
        for name in available_timezones()
        if name not in ("localtime", "posixrules", "Factory") and not name.startswith(("posix/", "right/"))
    )


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo | None:
    """The IANA time zone ``name``, or None if there is no such zone."""
    if name not in _zone_names():
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class Period:
    """Where one limit stands at an instant.

    ``bucket``: the counter a spend now adds to. ``since``: the oldest counter that counts now (the counters
    from ``since`` to ``bucket`` sum to the usage; a rolling window's ``since`` is 59 buckets before ``bucket``).
    ``resets_at``: when usage next drops, the end of a calendar period or, for a rolling window, the end of the
    current bucket (when the oldest bucket stops counting); None for TOTAL."""

    bucket: int
    since: int
    resets_at: datetime | None


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # A midnight that a daylight-saving change skips resolves to the first instant of that day.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _epoch(instant: datetime) -> int:
    return int(instant.timestamp())


def period(window: LimitWindow, length: int, time_zone: str, now: datetime) -> Period:
    """The period of a limit with ``window`` (and ``length`` hours or minutes for a rolling one) at ``now``.

    A rolling window of ``length`` hours (minutes) is ``ROLLING_BUCKETS`` buckets of ``length`` minutes
    (seconds): the current one and the 59 before it.

    A calendar limit whose stored zone this host does not know (its zoneinfo lacks it) counts in UTC: its spends
    go on, rather than fail."""
    if window is LimitWindow.TOTAL:
        return Period(0, 0, None)
    if window in (LimitWindow.ROLLING_HOURS, LimitWindow.ROLLING_MINUTES):
        size = length * (60 if window is LimitWindow.ROLLING_HOURS else 1)
        bucket = _epoch(now) // size * size
        return Period(bucket, bucket - (ROLLING_BUCKETS - 1) * size, datetime.fromtimestamp(bucket + size, UTC))
    tz = zone(time_zone) or ZoneInfo("UTC")
    today = now.astimezone(tz).date()
    if window is LimitWindow.DAY:
        first, following = today, today + timedelta(days=1)
    elif window is LimitWindow.WEEK:
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    else:
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    start = _epoch(_local_midnight(first, tz))
    return Period(start, start, _local_midnight(following, tz))


def subject_of(scope: LimitScope, *, user_id: int | None, agent_id: str | None, token_id: int | None) -> str:
    """The one string that names a limit's subject within its account."""
    if scope is LimitScope.ACCOUNT:
        return "account"
    if scope is LimitScope.MEMBER:
        assert user_id is not None
        return f"member:{user_id}"
    if scope is LimitScope.AGENT:
        assert agent_id is not None
        return f"agent:{agent_id}"
    assert token_id is not None
    return f"token:{token_id}"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A limit as it is set. ``amount`` and ``max_credits_per_run`` in micro-credits; ``window_length`` in
    hours (ROLLING_HOURS) or minutes (ROLLING_MINUTES), else 1."""

    scope: LimitScope
    amount: int
    window: LimitWindow
    window_length: int = 1
    time_zone: str = "UTC"
    kind: LimitKind = LimitKind.CAP
    action: LimitAction = LimitAction.BLOCK
    warn_percent: int | None = None
    max_credits_per_run: int | None = None
    cooldown_seconds: int | None = None
    user_id: int | None = None
    agent_id: str | None = None
    token_id: int | None = None

    @property
    def subject(self) -> str:
        return subject_of(self.scope, user_id=self.user_id, agent_id=self.agent_id, token_id=self.token_id)


_VIEW_COLUMNS = (
    "id",
    "account_id",
    "scope",
    "subject",
    "user_id",
    "agent_id",
    "token_id",
    "kind",
    "window",
    "window_length",
    "time_zone",
    "amount",
    "action",
    "warn_percent",
    "max_credits_per_run",
    "cooldown_seconds",
)
VIEW_COLUMN_NAMES = _VIEW_COLUMNS
"""The names of those columns (the keys of a stored ``LimitView``)."""
VIEW_COLUMNS_SQL = ", ".join(f'l."{c}"' if c == "window" else f"l.{c}" for c in _VIEW_COLUMNS)
"""The columns a ``LimitView`` is made of, from ``spend_limits l`` (``window`` is a keyword: quoted)."""


@dataclass(frozen=True, slots=True)
class LimitView:
    """A limit as a listing or a refusal shows it (a refusal stores it, so a replay shows the limit as it was)."""

    id: int
    account_id: int
    scope: LimitScope
    subject: str
    user_id: int | None
    agent_id: str | None
    token_id: int | None
    kind: LimitKind
    window: LimitWindow
    window_length: int
    time_zone: str
    amount: int
    action: LimitAction
    warn_percent: int | None
    max_credits_per_run: int | None
    cooldown_seconds: int | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> LimitView:
        def maybe(name: str) -> int | None:
            return None if row.get(name) is None else int(row[name])

        return cls(
            id=int(row["id"]),
            account_id=int(row["account_id"]),
            scope=LimitScope(row["scope"]),
            subject=str(row["subject"]),
            user_id=maybe("user_id"),
            agent_id=row.get("agent_id"),
            token_id=maybe("token_id"),
            kind=LimitKind(row["kind"]),
            window=LimitWindow(row["window"]),
            window_length=int(row["window_length"]),
            time_zone=str(row["time_zone"]),
            amount=int(row["amount"]),
            action=LimitAction(row["action"]),
            warn_percent=maybe("warn_percent"),
            max_credits_per_run=maybe("max_credits_per_run"),
            cooldown_seconds=maybe("cooldown_seconds"),
        )

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _VIEW_COLUMNS}


def counter_upsert(counts: dict[tuple[int, str, int], int], first: int = 1) -> tuple[str, list[Any]]:
    """The statement adding credits to limit counters ((limit id, run or '', bucket) -> credits), with its
    arguments numbered from ``$first`` (so that it can lead another statement as a CTE on PostgreSQL)."""
    values: list[Any] = []
    for (limit_id, run, bucket), credits in counts.items():
        values += [limit_id, run, bucket, credits]
    at = range(first, first + 4 * len(counts), 4)
    placeholders = ", ".join(f"(${n}, ${n + 1}, ${n + 2}, ${n + 3})" for n in at)
    return (
        f"INSERT INTO spend_limit_usage (limit_id, run_id, period, spent) VALUES {placeholders}"
        " ON CONFLICT (limit_id, run_id, period) DO UPDATE SET spent = spend_limit_usage.spent + excluded.spent",
        values,
    )
