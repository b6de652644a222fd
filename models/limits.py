"""Spend limits: what one is (``LimitView``), and setting and removing them under the account lock (see
docs/rules.md, "Spend limits"). The ledger enforces them in the spend's and the hold's transaction.

Every change recounts ``credit_accounts.spend_limits`` under the lock: a spend reads that count with the
lock, and reads the limits only when there are some.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from models.ledger.locking import lock_account
from models.limit_rules import VIEW_COLUMNS_SQL, LimitSpec, LimitView
from models.sql import Sql, as_datetime


async def _recount(sql: Sql, account_id: int) -> None:
    await sql.execute(
        "UPDATE credit_accounts SET spend_limits = (SELECT COUNT(*) FROM spend_limits WHERE account_id = $1)"
        " WHERE id = $2",
        account_id,
        account_id,
    )


async def set_limit(account_id: int, spec: LimitSpec, now: datetime) -> tuple[LimitView, bool]:
    """Create the limit, or replace the one its subject has of that kind and window (keeping what was counted
    against it). Returns the limit and whether it is new."""
    async with in_transaction() as conn:
        return await set_limit_in(Sql(conn), account_id, spec, now)


async def set_limit_in(sql: Sql, account_id: int, spec: LimitSpec, now: datetime) -> tuple[LimitView, bool]:
    """``set_limit`` inside the caller's transaction (``sql``), so that what makes the limit's subject (an
    agent token) and its limit commit together or not at all."""
    await lock_account(sql, account_id)
    values = (
        spec.scope.value,
        spec.user_id,
        spec.agent_id,
        spec.token_id,
        spec.time_zone,
        spec.amount,
        spec.action.value,
        spec.warn_percent,
        spec.max_credits_per_run,
        spec.cooldown_seconds,
        now,
    )
    updated = await sql.fetch(
        "UPDATE spend_limits SET scope = $1, user_id = $2, agent_id = $3, token_id = $4, time_zone = $5,"
        " amount = $6, action = $7, warn_percent = $8, max_credits_per_run = $9, cooldown_seconds = $10,"
        ' updated_at = $11 WHERE account_id = $12 AND subject = $13 AND kind = $14 AND "window" = $15'
        " AND window_length = $16 RETURNING id",
        *values,
        account_id,
        spec.subject,
        spec.kind.value,
        spec.window.value,
        spec.window_length,
    )
    created = not updated
    if created:
        await sql.execute(
            "INSERT INTO spend_limits (scope, user_id, agent_id, token_id, time_zone, amount, action,"
            ' warn_percent, max_credits_per_run, cooldown_seconds, updated_at, account_id, subject, kind, "window",'
            " window_length, created_at, paused)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            *values,
            account_id,
            spec.subject,
            spec.kind.value,
            spec.window.value,
            spec.window_length,
            now,
            False,
        )
        await _recount(sql, account_id)
    row = await sql.fetchrow(
        f"SELECT {VIEW_COLUMNS_SQL} FROM spend_limits l WHERE l.account_id = $1 AND l.subject = $2"
        ' AND l.kind = $3 AND l."window" = $4 AND l.window_length = $5',
        account_id,
        spec.subject,
        spec.kind.value,
        spec.window.value,
        spec.window_length,
    )
    assert row is not None
    return LimitView.of(row), created


async def remove_limit(limit_id: int) -> LimitView | None:
    """Remove a limit and what was counted against it; None if there is no such limit."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        found = await sql.fetchrow("SELECT account_id FROM spend_limits WHERE id = $1", limit_id)
        if found is None:
            return None
        account_id = int(found["account_id"])
        await lock_account(sql, account_id)
        row = await sql.fetchrow(f"SELECT {VIEW_COLUMNS_SQL} FROM spend_limits l WHERE l.id = $1", limit_id)
        if row is None:  # removed by a concurrent call while this one waited for the lock
            return None
        await sql.execute("DELETE FROM spend_limit_usage WHERE limit_id = $1", limit_id)
        await sql.execute("DELETE FROM spend_limits WHERE id = $1", limit_id)
        await _recount(sql, account_id)
    return LimitView.of(row)


def paused_now(paused: Any, paused_until: Any, now: datetime) -> bool:
    """Whether a velocity limit's subject is paused at ``now`` (a pause with an end is over at that instant)."""
    if not paused:
        return False
    until = as_datetime(paused_until)
    return until is None or until > now
