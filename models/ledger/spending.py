"""Spends: take credit from the lots in the spend order (the part an overdraft covers beyond them is owed),
record the usage and its rollups, keep a pool member's monthly budget (see docs/rules.md, "Spend order",
"Refusal whole", "Overdraft" and "Budgets"), and queue an auto top-up when the spend leaves the available
balance below the threshold ("Auto top-up queueing").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from models.balance import Balance, is_live
from models.ledger.auto_top_up import Terms, _queue_auto_top_up
from models.ledger.entries import _append, _change, _save_account
from models.ledger.errors import (
    BudgetExceededError,
    IdempotencyKey,
    InsufficientCreditsError,
    LedgerError,
    SpendResult,
    UsageRecorded,
)
from models.ledger.locking import AccountSelector, _raise_if_refused, _read_stored, _refuse, _Replay, _store_response
from models.ledger.lots import _open, _take_from_lots
from models.sql import Sql, as_datetime
from models.tables import LedgerEntryType

ROLL_UP_USAGE = (
    "INSERT INTO usage_rollups (account_id, organization_key, dimension, key, bucket, events, credits,"
    " free_credits, paid_credits) VALUES ($1, $2, 'ACTIVITY', $3, $6, 1, $7, $8, $9),"
    " ($1, $2, 'AGENT', $4, $6, 1, $7, $8, $9), ($1, $2, 'MEMBER', $5, $6, 1, $7, $8, $9)"
    " ON CONFLICT (account_id, dimension, bucket, key, organization_key) DO UPDATE SET"
    " events = usage_rollups.events + 1, credits = usage_rollups.credits + excluded.credits,"
    " free_credits = usage_rollups.free_credits + excluded.free_credits,"
    " paid_credits = usage_rollups.paid_credits + excluded.paid_credits"
)
"""The hour's rollups of one usage event (``bench/ceiling.py`` runs the same statement)."""


async def _insert_usage(
    sql: Sql,
    *,
    account_id: int,
    user_id: int,
    organization_id: int | None,
    hold_id: int | None,
    agent_id: str,
    activity: str,
    quantity: int | None,
    credits: int,
    free: int,
    paid: int,
    allocations: list[tuple[dict[str, Any], int]],
    now: datetime,
    run_id: str | None = None,
    token_id: int | None = None,
) -> int:
    """Record a usage event of ``credits``: ``free`` and ``paid`` from the lots, the rest owed (overdraft)."""
    row = await sql.fetchrow(
        "INSERT INTO usage_events (account_id, user_id, organization_id, hold_id, agent_id, activity,"
        " quantity, credits, free_credits, paid_credits, owed_credits, occurred_at, run_id, token_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        account_id,
        user_id,
        organization_id,
        hold_id,
        agent_id,
        activity,
        quantity,
        credits,
        free,
        paid,
        credits - free - paid,
        now,
        run_id,
        token_id,
    )
    assert row is not None
    usage_event_id = int(row["id"])
    values: list[Any] = []
    placeholders = []
    for n, (lot, take) in enumerate(allocations):
        base = n * 4
        placeholders.append(f"(${base + 1}, ${base + 2}, ${base + 3}, ${base + 4})")
        values += [usage_event_id, lot["id"], lot["kind"], take]
    if placeholders:
        await sql.execute(
            "INSERT INTO usage_allocations (usage_event_id, lot_id, kind, amount) VALUES " + ", ".join(placeholders),
            *values,
        )
    # Reports read these hourly rollups, never the raw events: one row per dimension, in one round trip.
    await sql.execute(
        ROLL_UP_USAGE,
        account_id,
        organization_id or 0,
        activity,
        agent_id,
        str(user_id),
        now.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
        credits,
        free,
        paid,
    )
    return usage_event_id


async def _refusal(
    sql: Sql,
    row: dict[str, Any],
    account: AccountSelector,
    before: Balance,
    organization_id: int | None,
    user_id: int,
    credits: int,
    idem: IdempotencyKey,
    now: datetime,
) -> tuple[PoolBudget | None, LedgerError | None]:
    """Why a spend or hold of ``credits`` is refused (a pool member's budget, then the available credit),
    stored under the caller's key so a replay is refused the same way; and the member's budget, if any."""
    budget = (
        await _pool_budget(sql, int(row["id"]), organization_id, user_id, now)
        if account[0] == "organization_id"
        else None
    )
    if budget is not None and (over := _over_budget(budget, credits)) is not None:
        return budget, await _refuse(sql, idem, over, now)
    if credits > before.spendable:  # may take available down to -overdraft, not below
        return budget, await _refuse(sql, idem, InsufficientCreditsError(before.available, credits), now)
    return budget, None


async def spend(
    account: AccountSelector,
    *,
    user_id: int,
    organization_id: int | None,
    agent_id: str,
    activity: str,
    credits: int,
    quantity: int | None,
    idem: IdempotencyKey,
    now: datetime,
    auto_top_up: Terms | None = None,
    run_id: str | None = None,
    token_id: int | None = None,
) -> SpendResult:
    """Spend ``credits`` micro-credits from an account, FREE first. Refuses an overspend whole.

    ``run_id`` is the agent run the spend belongs to, ``token_id`` the API token spending (None: no token row).

    With ``auto_top_up`` terms, a spend that leaves the available balance below the account's auto top-up
    threshold queues the top-up in its own transaction (``queued_top_up``)."""
    assert credits > 0
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, lots, before = await _open(sql, account, idem, now)
            budget, refusal = await _refusal(sql, row, account, before, organization_id, user_id, credits, idem, now)
            if refusal is None:
                if budget is not None:
                    await _count_pool_spend(sql, organization_id, user_id, credits, now)
                allocations, free, paid, owed = await _take_from_lots(sql, lots, credits, now, before)
                usage_event_id = await _insert_usage(
                    sql,
                    account_id=int(row["id"]),
                    user_id=user_id,
                    organization_id=organization_id,
                    hold_id=None,
                    agent_id=agent_id,
                    activity=activity,
                    quantity=quantity,
                    credits=credits,
                    free=free,
                    paid=paid,
                    allocations=allocations,
                    now=now,
                    run_id=run_id,
                    token_id=token_id,
                )
                await _append(
                    sql,
                    row,
                    LedgerEntryType.SPEND,
                    amount=-(free + paid),
                    free_amount=-free,
                    paid_amount=-paid,
                    owed_delta=owed,
                    now=now,
                    usage_event_id=usage_event_id,
                )
                await _save_account(sql, row)
                after = Balance(
                    free=before.free - free,
                    paid=before.paid - paid,
                    held=before.held,
                    owed=before.owed + owed,
                    overdraft=before.overdraft,
                )
                result = SpendResult(usage_event_id, credits, free, paid, after)
                await _store_response(sql, idem, _spend_json(result), now)
                queued = await _queue_auto_top_up(sql, row, after, auto_top_up, now)
    except _Replay as replay:
        return _spend_replay(replay.response or await _read_stored(idem))
    if refusal is not None:
        raise refusal
    return SpendResult(
        result.usage_event_id,
        credits,
        result.free_credits,
        result.paid_credits,
        result.balance,
        changes=(
            _change(row, -(result.free_credits + result.paid_credits), "SPEND", result.balance, now),
            *_usage(organization_id, result.usage_event_id, row, user_id, agent_id, activity, credits, result, now),
        ),
        queued_top_up=queued,
    )


def _usage(
    organization_id: int | None,
    usage_event_id: int | None,
    account: dict[str, Any],
    user_id: int,
    agent_id: str,
    activity: str,
    credits: int,
    split: SpendResult,
    now: datetime,
) -> tuple[UsageRecorded, ...]:
    if organization_id is None or usage_event_id is None:
        return ()
    return (
        UsageRecorded(
            organization_id,
            usage_event_id,
            int(account["id"]),
            user_id,
            agent_id,
            activity,
            credits,
            split.free_credits,
            split.paid_credits,
            now,
        ),
    )


@dataclass(frozen=True, slots=True)
class PoolBudget:
    """A member's monthly budget in a pool (``None``: no limit), what they spent from it this month (UTC),
    and what their active holds on it set aside (read only under a limit)."""

    limit: int | None
    spent: int
    held: int


async def _pool_budget(
    sql: Sql, pool_account_id: int, organization_id: int | None, user_id: int, now: datetime
) -> PoolBudget:
    """Read under the pool account's lock, so concurrent spends, holds and captures of one member see each
    other's counts and holds."""
    assert organization_id is not None
    row = await sql.fetchrow(
        "SELECT (SELECT monthly_limit FROM member_budgets WHERE organization_id = $1 AND user_id = $2) AS lim,"
        " (SELECT spent FROM budget_usage WHERE organization_id = $3 AND user_id = $4 AND month = $5) AS spent",
        organization_id,
        user_id,
        organization_id,
        user_id,
        now.strftime("%Y-%m"),
    )
    assert row is not None
    if row["lim"] is None:
        return PoolBudget(None, int(row["spent"] or 0), 0)
    # An active hold counts against the budget until it is captured (then its capture counts as spent),
    # released or timed out; a hold past its timeout stops counting at that instant, swept or not.
    holds = await sql.fetch(
        "SELECT amount, expires_at FROM holds WHERE account_id = $1 AND status = 'ACTIVE' AND user_id = $2",
        pool_account_id,
        user_id,
    )
    held = sum(int(h["amount"]) for h in holds if is_live(as_datetime(h["expires_at"]), now))
    return PoolBudget(int(row["lim"]), int(row["spent"] or 0), held)


def _over_budget(budget: PoolBudget, credits: int) -> BudgetExceededError | None:
    if budget.limit is None or budget.spent + budget.held + credits <= budget.limit:
        return None
    return BudgetExceededError(budget.limit, budget.spent, credits, budget.held)


async def _count_pool_spend(sql: Sql, organization_id: int | None, user_id: int, credits: int, now: datetime) -> None:
    await sql.execute(
        "INSERT INTO budget_usage (organization_id, user_id, month, spent) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (organization_id, user_id, month) DO UPDATE SET spent = budget_usage.spent + excluded.spent",
        organization_id,
        user_id,
        now.strftime("%Y-%m"),
        credits,
    )


def _spend_json(result: SpendResult) -> dict[str, Any]:
    return {
        "usage_event_id": result.usage_event_id,
        "credits": result.credits,
        "free": result.free_credits,
        "paid": result.paid_credits,
        "balance": result.balance.to_json(),
    }


def _spend_replay(stored: dict[str, Any]) -> SpendResult:
    _raise_if_refused(stored)
    return SpendResult(
        int(stored["usage_event_id"]),
        int(stored["credits"]),
        int(stored["free"]),
        int(stored["paid"]),
        Balance.from_json(stored["balance"]),
        replayed=True,
    )
