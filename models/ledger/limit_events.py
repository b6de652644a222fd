"""``spend_limit.warning`` / ``spend_limit.reached``, ``budget.warning`` / ``budget.reached`` and ``agent.paused``:
the spend limits' events, written in the transaction of the spend or hold that causes them (README, "Events
and webhooks"; docs/rules.md, "Limit events").

A limit's usage is what ``judge`` compares with its amount: spent + held in its current period. Under the
account lock, a spend, a hold or an increase of one that passes the limits raises the usage of every limit that
applies by its credits, so a crossing is derived from ``before`` (the standing read under the lock) and
``before + credits``, with no statement when nothing is crossed:

- warning: ``before < amount × warnPercent / 100 <= after`` (once per crossing; spends below re-cross nothing);
- reached, by a success: ``before < amount <= after`` (a BLOCK cap let it reach its amount exactly, a NOTIFY
  limit or breaker reached or passed it);
- reached, by a refusal: the first refusal of a BLOCK cap (over its amount, not a per-run cap) in its period.
  A refusal changes no usage, so its once-ness is kept on the limit's row: ``spend_limits.reached_period`` is
  the bucket (``Period.bucket``) in which the cap was last reached, set under the lock by a passing spend that
  reaches the amount and by a refusal that emits. A refusal emits only if that bucket no longer counts
  (``reached_period < Period.since``), in one conditional UPDATE, on the refused path only. For a calendar
  window (and TOTAL) bucket = since: once per period. For a rolling window this is once per breach episode,
  an episode lasting until the bucket it was reached in has left the window (one window length at most): the
  usage that reached the amount is no longer all counted. ``reached_period`` decides events only, never
  whether a spend passes, so it need not be read in the lock's statement (the spend-limit fold's rule that
  state deciding a spend is written on the account row does not apply).
- ``agent.paused``: a BLOCK breaker trips (``limits.trip``), once: while paused, spends are refused before it.

A member's budget (``Standing.is_budget``: the BLOCK CAP MONTH UTC limit of a member on a pool) emits
``budget.*`` instead of ``spend_limit.*``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from models.credits import format_credits
from models.event_data import emit_for, instant
from models.ids import encode_id
from models.ledger.errors import BudgetExceededError, LedgerError, SpendLimitExceededError, SpendPausedError
from models.ledger.limits import Standing
from models.limit_rules import LimitView
from models.outbox import EventType
from models.sql import Sql
from models.tables import LimitKind, LimitWindow


def limit_data(limit: LimitView) -> dict[str, Any]:
    return {
        "id": encode_id("SpendLimit", limit.id),
        "scope": limit.scope.value,
        "kind": limit.kind.value,
        "window": limit.window.value,
        "windowLength": limit.window_length,
        "timeZone": limit.time_zone,
        "action": limit.action.value,
        "amount": format_credits(limit.amount),
        "warnPercent": limit.warn_percent,
        "userId": None if limit.user_id is None else encode_id("User", limit.user_id),
        "agentId": limit.agent_id,
        "tokenId": None if limit.token_id is None else encode_id("ApiToken", limit.token_id),
    }


def _period_start(s: Standing) -> str | None:
    """The start of the limit's current period as an instant (the oldest counting bucket of a rolling window);
    None for TOTAL."""
    if s.limit.window is LimitWindow.TOTAL:
        return None
    return instant(datetime.fromtimestamp(s.period.since, UTC))  # buckets are Unix seconds


def _data(s: Standing, used: int, credits: int) -> dict[str, Any]:
    return {
        "limit": limit_data(s.limit),
        "used": format_credits(used),
        "requested": format_credits(credits),
        "periodStart": _period_start(s),
        "resetsAt": instant(s.period.resets_at),
    }


async def crossed(
    sql: Sql, account: dict[str, Any], limits: tuple[Standing, ...], credits: int, *, pool: bool, now: datetime
) -> None:
    """The warnings and reached amounts a passing spend or hold of ``credits`` crosses (no statement if none)."""
    for s in limits:
        before = s.spent + s.held
        after = before + credits
        amount, percent = s.limit.amount, s.limit.warn_percent
        budget = s.is_budget(pool)
        if percent is not None and before * 100 < amount * percent <= after * 100:
            kind = EventType.BUDGET_WARNING if budget else EventType.SPEND_LIMIT_WARNING
            await emit_for(sql, kind, account, _data(s, after, credits), now)
        if before < amount <= after:
            kind = EventType.BUDGET_REACHED if budget else EventType.SPEND_LIMIT_REACHED
            await emit_for(sql, kind, account, _data(s, after, credits), now)
            if s.limit.kind is LimitKind.CAP and s.blocks:  # the refusals after it are the same episode
                await _mark_reached(sql, s)


def _refused_by(limits: tuple[Standing, ...], refusal: LedgerError, credits: int, pool: bool) -> Standing | None:
    """The BLOCK cap whose amount refused the operation (not a per-run cap, not a breaker)."""
    for s in limits:
        if s.limit.kind is not LimitKind.CAP or not s.blocks or s.spent + s.held + credits <= s.limit.amount:
            continue
        if isinstance(refusal, BudgetExceededError) and s.is_budget(pool):
            return s
        if isinstance(refusal, SpendLimitExceededError) and refusal.run_id is None and refusal.limit.id == s.limit.id:
            return s
    return None


async def refused(
    sql: Sql,
    account: dict[str, Any],
    limits: tuple[Standing, ...],
    refusal: LedgerError,
    credits: int,
    *,
    pool: bool,
    now: datetime,
) -> None:
    """The ``reached`` of a BLOCK cap refusing for the first time in its period, or the ``agent.paused`` of a
    breaker this refusal trips; written in the transaction that stores the refusal (and the trip)."""
    if isinstance(refusal, SpendPausedError):
        if refusal.changes:  # tripped by this call: ``limits.trip`` gave it its balance event
            await _paused(sql, account, limits, refusal, credits, now)
        return
    s = _refused_by(limits, refusal, credits, pool)
    if s is None:
        return
    kind = EventType.BUDGET_REACHED if s.is_budget(pool) else EventType.SPEND_LIMIT_REACHED
    first = await sql.fetchrow(
        "UPDATE spend_limits SET reached_period = $1 WHERE id = $2"
        " AND (reached_period IS NULL OR reached_period < $3) RETURNING id",
        s.period.bucket,
        s.limit.id,
        s.period.since,
    )
    if first is None:  # reached already in this period or episode (by a success or an earlier refusal)
        return
    await emit_for(sql, kind, account, _data(s, s.spent + s.held, credits), now)


async def _mark_reached(sql: Sql, s: Standing) -> None:
    await sql.execute("UPDATE spend_limits SET reached_period = $1 WHERE id = $2", s.period.bucket, s.limit.id)


async def _paused(
    sql: Sql,
    account: dict[str, Any],
    limits: tuple[Standing, ...],
    tripped: SpendPausedError,
    credits: int,
    now: datetime,
) -> None:
    used = next((s.spent + s.held for s in limits if s.limit.id == tripped.limit.id), 0)
    data = {
        "limit": limit_data(tripped.limit),
        "used": format_credits(used),
        "requested": format_credits(credits),
        "trippedAt": instant(tripped.tripped_at),
        "pausedUntil": instant(tripped.paused_until),
    }
    await emit_for(sql, EventType.AGENT_PAUSED, account, data, now)
