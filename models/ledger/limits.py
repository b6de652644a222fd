"""Spend limits in the spend's and the hold's transaction (see docs/rules.md, "Spend limits"): which limits
apply, where each stands, what refuses, what warns, and what a spend counts.

An account without limits (``credit_accounts.spend_limits`` = 0, read with the lock) costs no statement here.
With limits: one read after the lock (``_standing``: every limit that applies, with its counters in its window
and the live holds that count against it) and, for a spend, a capture or a hold under a velocity breaker, one
write (``count``).

The usage contract: for a limit L at ``now`` with period p, spent = Σ counters (L, '', p.since..p.bucket);
a spend adds to counter (L, '', p.bucket) and, under a per-run cap, to (L, run, 0). Holds differ by kind:
- a CAP counts held = Σ active live holds of L's subject; a hold adds nothing to its counters (it counts as held
  while it is active), its capture adds the captured credits, its release or timeout gives back by leaving;
- a VELOCITY breaker measures a burn rate, what is committed in its window: a hold (and an increase of one)
  adds its credits to (L, '', p.bucket) when placed, as a spend does; its capture adds nothing more, its
  release gives nothing back; held is 0. So an old hold never trips a breaker, and a burst of holds does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from models.balance import Balance
from models.ledger.entries import _append, _change, _save_account, defer_counts
from models.ledger.errors import (
    BalanceChange,
    BudgetExceededError,
    LedgerError,
    LimitWarning,
    SpendLimitExceededError,
    SpendPausedError,
)
from models.ledger.locking import READ_WITH_LOCK
from models.limit_rules import (
    ROLLING_BUCKETS,
    VIEW_COLUMN_NAMES,
    VIEW_COLUMNS_SQL,
    LimitView,
    Period,
    counter_upsert,
    period,
)
from models.limits import paused_now
from models.sql import Sql, as_datetime
from models.tables import LedgerEntryType, LimitAction, LimitKind, LimitScope, LimitWindow

TRIPPED = "LIMIT_TRIPPED"
"""The reason of the balance event (and ledger row) a velocity breaker's trip is reported with."""

_SCOPE_ORDER = {LimitScope.ACCOUNT: 0, LimitScope.MEMBER: 1, LimitScope.AGENT: 2, LimitScope.TOKEN: 3}

# The holds that count against a limit: active, not past their timeout, and of the limit's subject.
_HOLDS_OF = (
    "SELECT COALESCE(SUM(h.amount), 0) FROM holds h WHERE h.account_id = l.account_id AND h.status = 'ACTIVE'"
    " AND h.expires_at > {at} AND (l.scope = 'ACCOUNT' OR (l.scope = 'MEMBER' AND h.user_id = l.user_id)"
    " OR (l.scope = 'AGENT' AND h.agent_id = l.agent_id) OR (l.scope = 'TOKEN' AND h.token_id = l.token_id))"
)
# The newest counter that can count now. A calendar counter is keyed by its period's start, and only the
# current period's counts: Python compares this with the period it computes in the limit's time zone.
_LATEST = (
    "(SELECT MAX(v.period) FROM spend_limit_usage v WHERE v.limit_id = l.id AND v.run_id = '' AND v.period <= {now})"
)
# A rolling window's oldest bucket, as models/limit_rules.py ``period`` computes it: 60 buckets of window_length
# minutes (ROLLING_HOURS) or seconds (ROLLING_MINUTES), integer arithmetic on Unix seconds (both databases
# divide integers as integers); a calendar window or TOTAL counts its one newest counter.
_SINCE = (
    "CASE l.\"window\" WHEN 'ROLLING_HOURS'"
    " THEN CAST({now} AS BIGINT) / (l.window_length * 60) * (l.window_length * 60)"
    f" - {ROLLING_BUCKETS - 1} * l.window_length * 60"
    " WHEN 'ROLLING_MINUTES' THEN CAST({now} AS BIGINT) / l.window_length * l.window_length"
    f" - {ROLLING_BUCKETS - 1} * l.window_length"
    f" ELSE {_LATEST} END"
)
_STATE_COLUMNS = ("paused", "tripped_at", "paused_until")


def _measures(now: str, at: str | None, run: str | None, holding: str | None) -> list[tuple[str, str]]:
    """What is read of each limit ``l`` besides its columns, as (name, expression): ``now`` the placeholder of
    now in Unix seconds, ``at`` of now as an instant (None: the account holds nothing, held is 0), ``run`` of
    the run (None: no run), ``holding`` a condition that the account holds anything (None: it does)."""
    holds_of = "" if at is None else _HOLDS_OF.format(at=at)
    # A breaker counted its holds when they were placed: none is held against it.
    if at is None:
        held = "0"
    elif holding is None:
        held = f"CASE WHEN l.kind = 'VELOCITY' THEN 0 ELSE ({holds_of}) END"
    else:
        held = f"CASE WHEN l.kind = 'VELOCITY' OR NOT ({holding}) THEN 0 ELSE ({holds_of}) END"
    found = [
        ("latest", _LATEST.format(now=now)),
        (
            "spent",
            "(SELECT COALESCE(SUM(u.spent), 0) FROM spend_limit_usage u WHERE u.limit_id = l.id AND u.run_id = ''"
            f" AND u.period <= {now} AND u.period >= {_SINCE.format(now=now)})",
        ),
        ("held", held),
    ]
    if run is not None:
        found.append(
            (
                "run_spent",
                "(SELECT COALESCE(SUM(r.spent), 0) FROM spend_limit_usage r WHERE r.limit_id = l.id"
                f" AND r.run_id = {run} AND r.period = 0)",
            )
        )
        if at is None:
            run_held = "0"
        elif holding is None:
            run_held = f"({holds_of} AND h.run_id = {run})"
        else:
            run_held = f"CASE WHEN NOT ({holding}) THEN 0 ELSE ({holds_of} AND h.run_id = {run}) END"
        found.append(("run_held", run_held))
    return found


def _placeholders(first: int, with_run: bool, with_holds: bool) -> tuple[str, str | None, str | None, int]:
    """The placeholders of now (Unix seconds), now (an instant, with holds) and the run (with a run), numbered
    from ``first``, and the number of the first subject's."""
    now, n = f"${first}", first + 1
    at = run = None
    if with_holds:
        at, n = f"${n}", n + 1
    if with_run:
        run, n = f"${n}", n + 1
    return now, at, run, n


@lru_cache(maxsize=8)
def _standing_sql(subjects: int, with_run: bool, with_holds: bool) -> str:
    """The read of its own (when the lock's could not be used): $1 the account, $2 now in Unix seconds, then
    now (with holds), the run (with a run), and the subjects. An account holding nothing (its cached held
    credit is 0) has no active hold to sum."""
    now, at, run, n = _placeholders(2, with_run, with_holds)
    measures = ", ".join(f"{expr} AS {name}" for name, expr in _measures(now, at, run, None))
    placeholders = ", ".join(f"${n + k}" for k in range(subjects))
    return (
        f"SELECT {VIEW_COLUMNS_SQL}, l.paused, l.tripped_at, l.paused_until, {measures}"
        f" FROM spend_limits l WHERE l.account_id = $1 AND l.subject IN ({placeholders})"
    )


@lru_cache(maxsize=16)
def _folded_sql(first: int, subjects: int, with_run: bool, postgres: bool) -> str:
    """The columns the lock's statement reads the limits with (``Fold``), from ``credit_accounts a`` locked:
    every limit that applies, with its measures, as one JSON array (``limits_read``), only when the account
    has limits. Placeholders from ``first``:
    now in Unix seconds, now as an instant, the run (with a run), the subjects."""
    now, at, run, n = _placeholders(first, with_run, True)
    fields = [(name, f'l."{name}"' if name == "window" else f"l.{name}") for name in VIEW_COLUMN_NAMES]
    fields += [(name, f"l.{name}") for name in _STATE_COLUMNS]
    fields += _measures(now, at, run, "a.held <> 0")
    pairs = ", ".join(f"'{name}', {expr}" for name, expr in fields)
    placeholders = ", ".join(f"${n + k}" for k in range(subjects))
    where = f"FROM spend_limits l WHERE l.account_id = a.id AND l.subject IN ({placeholders})"
    agg, obj = ("json_agg", "json_build_object") if postgres else ("json_group_array", "json_object")
    # Read as the statement began: on PostgreSQL the lock's statement runs again when it waited for a holder
    # that changed the row (models/ledger/locking.py ``_FRESH``), so what is read here is never stale.
    return f", CASE WHEN a.spend_limits > 0 THEN (SELECT {agg}({obj}({pairs})) {where}) END AS limits_read"


@dataclass(frozen=True, slots=True)
class Who:
    """What an operation is, for the limits: who spends, through which agent and token, in which run."""

    user_id: int
    agent_id: str | None
    token_id: int | None
    run_id: str | None

    def subjects(self) -> list[str]:
        found = ["account", f"member:{self.user_id}"]
        if self.agent_id is not None:
            found.append(f"agent:{self.agent_id}")
        if self.token_id is not None:
            found.append(f"token:{self.token_id}")
        return found


@dataclass(frozen=True, slots=True)
class Standing:
    """One limit that applies to an operation, and where it stands before it."""

    limit: LimitView
    period: Period
    spent: int
    held: int
    run_spent: int
    run_held: int
    paused: bool
    tripped_at: datetime | None
    paused_until: datetime | None

    @property
    def blocks(self) -> bool:
        return self.limit.action is LimitAction.BLOCK

    def is_budget(self, pool: bool) -> bool:
        """A pool member's monthly budget (``setMemberBudget``): refused as ``BudgetExceeded``, as always."""
        lim = self.limit
        return (
            pool
            and lim.scope is LimitScope.MEMBER
            and lim.kind is LimitKind.CAP
            and lim.action is LimitAction.BLOCK
            and lim.window is LimitWindow.MONTH
            and lim.time_zone == "UTC"
            and lim.max_credits_per_run is None
        )


@dataclass(frozen=True, slots=True)
class Applied:
    """The limits a spend or hold passed: what its success counts (``count``) and reports (``warnings``)."""

    standing: tuple[Standing, ...]
    who: Who
    warnings: tuple[LimitWarning, ...]


def _epoch(now: datetime) -> int:
    return int(now.timestamp())


@dataclass(frozen=True, slots=True)
class Fold:
    """The limits of ``who`` at ``now``, read in the statement that takes the account's lock (passed to
    ``models/ledger/locking.py`` ``_lock_account``): a spend, a hold, an increase or a capture then runs no
    statement of its own to read them."""

    who: Who
    now: datetime

    def columns(self, first: int, postgres: bool) -> tuple[str, list[Any]]:
        """The lock statement's extra columns, with their arguments numbered from ``first``."""
        subjects = self.who.subjects()
        at = self.now.astimezone(UTC)
        args: list[Any] = [_epoch(at), at]
        if self.who.run_id is not None:
            args.append(self.who.run_id)
        return _folded_sql(first, len(subjects), self.who.run_id is not None, postgres), [*args, *subjects]


async def standing(sql: Sql, account: dict[str, Any], who: Who, now: datetime) -> tuple[Standing, ...]:
    """Every limit of the locked ``account`` that applies to ``who``, in the order they are checked (account,
    member, agent, token). No statement when the account has none, nor when the lock's statement read them
    (``Fold``); otherwise one."""
    if not int(account.get("spend_limits") or 0):
        return ()
    folded = account.get(READ_WITH_LOCK)
    if folded == Fold(who, now):
        read = account["limits_read"]
        rows = (json.loads(read) if isinstance(read, str) else read) or []
    else:
        rows = await _read_standing(sql, account, who, now)
    found = [_standing_of(row, now) for row in rows]
    found.sort(key=lambda s: (_SCOPE_ORDER[s.limit.scope], s.limit.kind != LimitKind.CAP, s.limit.id))
    return tuple(found)


async def _read_standing(sql: Sql, account: dict[str, Any], who: Who, now: datetime) -> list[dict[str, Any]]:
    subjects = who.subjects()
    holds = int(account["held"]) != 0
    at = now.astimezone(UTC)
    args: list[Any] = [int(account["id"]), _epoch(at)]
    if holds:
        args.append(at)
    if who.run_id is not None:
        args.append(who.run_id)
    return await sql.fetch(_standing_sql(len(subjects), who.run_id is not None, holds), *args, *subjects)


def _standing_of(row: dict[str, Any], now: datetime) -> Standing:
    limit = LimitView.of(row)
    p = period(limit.window, limit.window_length, limit.time_zone, now)
    spent = int(row["spent"] or 0)
    if limit.window not in (LimitWindow.ROLLING_HOURS, LimitWindow.ROLLING_MINUTES) and row["latest"] != p.bucket:
        spent = 0  # the newest counter is an earlier period's
    return Standing(
        limit=limit,
        period=p,
        spent=spent,
        held=int(row["held"] or 0),
        run_spent=int(row.get("run_spent") or 0),
        run_held=int(row.get("run_held") or 0),
        paused=bool(row["paused"]),
        tripped_at=as_datetime(row["tripped_at"]),
        paused_until=as_datetime(row["paused_until"]),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the limits say about an operation: its refusal (None: it may go on), a velocity limit it trips, and
    the warnings of its success."""

    refusal: LedgerError | None
    trips: Standing | None
    warnings: tuple[LimitWarning, ...]


def judge(limits: tuple[Standing, ...], credits: int, who: Who, *, hold: bool, pool: bool, now: datetime) -> Verdict:
    """Decide on a spend (or, with ``hold``, a hold) of ``credits``: a paused breaker refuses first, then the
    first BLOCK cap (account, member, agent, token) it would take past its amount or its per-run cap, then a
    BLOCK breaker it would take past its amount (and trips)."""
    for s in limits:
        if s.limit.kind is LimitKind.VELOCITY and paused_now(s.paused, s.paused_until, now):
            assert s.tripped_at is not None
            return Verdict(SpendPausedError(s.limit, s.tripped_at, s.paused_until), None, ())
    for s in limits:
        if s.limit.kind is not LimitKind.CAP or not s.blocks:
            continue
        if s.spent + s.held + credits > s.limit.amount:
            if s.is_budget(pool):
                return Verdict(BudgetExceededError(s.limit.amount, s.spent, credits, s.held), None, ())
            return Verdict(SpendLimitExceededError(s.limit, s.spent, s.held, credits, s.period.resets_at), None, ())
        cap = s.limit.max_credits_per_run
        if cap is not None and who.run_id is not None and s.run_spent + s.run_held + credits > cap:
            return Verdict(
                SpendLimitExceededError(s.limit, s.run_spent, s.run_held, credits, None, who.run_id), None, ()
            )
    for s in limits:
        if s.limit.kind is LimitKind.VELOCITY and s.blocks and s.spent + s.held + credits > s.limit.amount:
            cooldown = s.limit.cooldown_seconds
            until = None if cooldown is None else now + timedelta(seconds=cooldown)
            return Verdict(SpendPausedError(s.limit, now, until), s, ())
    return Verdict(None, None, tuple(w for s in limits if (w := _warning(s, credits, hold)) is not None))


def _warning(s: Standing, credits: int, hold: bool) -> LimitWarning | None:
    """At or past the warning threshold after the operation (or, for a NOTIFY limit, past its amount)."""
    # A hold is held against a cap, and committed (counted as spent) to a breaker.
    held_here = hold and s.limit.kind is LimitKind.CAP
    spent, held = (s.spent, s.held + credits) if held_here else (s.spent + credits, s.held)
    used = spent + held
    threshold = s.limit.warn_percent is not None and used * 100 >= s.limit.amount * s.limit.warn_percent
    over = s.limit.action is LimitAction.NOTIFY and used > s.limit.amount
    if not (threshold or over):
        return None
    return LimitWarning(s.limit, spent, held, s.period.resets_at)


async def trip(sql: Sql, account: dict[str, Any], tripped: SpendPausedError, balance: Balance, now: datetime) -> None:
    """Pause a velocity limit's subject, in the transaction that stores the refusal (so the trip commits with
    it), and record it on the ledger: a row of no amount whose new version puts the balance event, with the
    reason ``LIMIT_TRIPPED``, in order in the live balance stream. The event rides on the refusal
    (``tripped.changes``) for the caller to publish after commit."""
    await sql.execute(
        "UPDATE spend_limits SET paused = $1, tripped_at = $2, paused_until = $3 WHERE id = $4",
        True,
        now,
        tripped.paused_until,
        tripped.limit.id,
    )
    await _append(sql, account, LedgerEntryType.ADJUSTMENT, now=now, reason=TRIPPED)
    await _save_account(sql, account)
    tripped.changes = (_change(account, 0, TRIPPED, balance, now),)


Counted = Literal["spend", "hold", "capture"]
"""What ``count`` counts: a spend counts against every limit, a hold (or an increase of one) against the
breakers only, a capture against the caps only (its breakers counted the hold when it was placed)."""

_COUNTED: dict[str, frozenset[LimitKind]] = {
    "spend": frozenset({LimitKind.CAP, LimitKind.VELOCITY}),
    "hold": frozenset({LimitKind.VELOCITY}),
    "capture": frozenset({LimitKind.CAP}),
}


def counted_rows(
    limits: tuple[Standing, ...], run_id: str | None, what: Counted = "spend"
) -> list[tuple[int, str, int]]:
    """The counters a spend, a hold or a capture (``what``) adds its credits to: (limit id, run or '', bucket),
    the window's counter of every limit it counts against and, under a per-run cap, the run's."""
    kinds = _COUNTED[what]
    rows: list[tuple[int, str, int]] = []
    for s in limits:
        if s.limit.kind not in kinds:
            continue
        rows.append((s.limit.id, "", s.period.bucket))
        if run_id is not None and s.limit.max_credits_per_run is not None:
            rows.append((s.limit.id, run_id, 0))
    return rows


async def count(
    sql: Sql, limits: tuple[Standing, ...], run_id: str | None, credits: int, what: Counted = "spend"
) -> None:
    """Add the ``credits`` of a spend, a hold or a capture (``what``) to every limit it counts against, in one
    statement (none when there is none): the window's counter and, under a per-run cap, the run's."""
    await add_counts(sql, {row: credits for row in counted_rows(limits, run_id, what)})


async def add_counts(sql: Sql, counts: dict[tuple[int, str, int], int]) -> None:
    """Add credits to counters ((limit id, run or '', bucket) -> credits), in one statement (none if none)."""
    if counts:
        statement, values = counter_upsert(counts)
        await sql.execute(statement, *values)


def count_with_save(
    account: dict[str, Any], limits: tuple[Standing, ...], run_id: str | None, credits: int, what: Counted = "spend"
) -> None:
    """``count``, written by the account's ``_save_account`` (one statement with it on PostgreSQL: a spend
    with limits costs the round trips of one without)."""
    defer_counts(account, {row: credits for row in counted_rows(limits, run_id, what)})


def changes_of(refusal: LedgerError) -> tuple[BalanceChange, ...]:
    """The events a refusal carries for publishing after its commit (a velocity trip's)."""
    return refusal.changes if isinstance(refusal, SpendPausedError) else ()


def warnings_json(warnings: tuple[LimitWarning, ...]) -> list[dict[str, Any]]:
    """Warnings as a success stores them under its key, so that a replay reports the same ones."""
    return [
        {
            "limit": w.limit.to_json(),
            "spent": w.spent,
            "held": w.held,
            "resets_at": None if w.resets_at is None else w.resets_at.isoformat(),
        }
        for w in warnings
    ]


def warnings_of(stored: list[dict[str, Any]]) -> tuple[LimitWarning, ...]:
    return tuple(
        LimitWarning(
            LimitView.of(w["limit"]),
            int(w["spent"]),
            int(w["held"]),
            None if w["resets_at"] is None else datetime.fromisoformat(w["resets_at"]),
        )
        for w in stored
    )
