"""Ledger rows: appended, never updated; each moves the account's cached balance, held credit, what it owes
(``owed_delta``: plus for the part of a spend an overdraft covered, minus for what a grant paid back) and
version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.balance import Balance
from models.ledger import alerts
from models.ledger.errors import BalanceChange
from models.limit_rules import counter_upsert
from models.sql import Sql
from models.tables import LedgerEntryType

LEDGER_INTO = (
    "INSERT INTO ledger_entries (account_id, entry_type, amount, free_amount, paid_amount, held_delta,"
    " owed_delta, balance_after, held_after, version, lot_id, usage_event_id, hold_id, reason, created_at)"
)
"""The columns of a ledger row, in the order ``_append`` gives them (models/ledger/batch.py inserts many)."""

SAVE_ACCOUNT = "UPDATE credit_accounts SET balance = $1, held = $2, owed = $3, version = $4 WHERE id = $5"


async def _append(
    sql: Sql,
    account: dict[str, Any],
    entry_type: LedgerEntryType,
    *,
    amount: int = 0,
    free_amount: int = 0,
    paid_amount: int = 0,
    held_delta: int = 0,
    owed_delta: int = 0,
    now: datetime,
    lot_id: int | None = None,
    usage_event_id: int | None = None,
    hold_id: int | None = None,
    reason: str | None = None,
) -> None:
    """Append one ledger row and move the account's cached balance, held credit, owed and version with it."""
    values = _entry(
        account,
        entry_type,
        amount=amount,
        free_amount=free_amount,
        paid_amount=paid_amount,
        held_delta=held_delta,
        owed_delta=owed_delta,
        now=now,
        lot_id=lot_id,
        usage_event_id=usage_event_id,
        hold_id=hold_id,
        reason=reason,
    )
    await sql.execute(LEDGER_INTO + _LEDGER_VALUES, *values)


_LEDGER_VALUES = " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"


USAGE_EVENT_COLUMN = 11
"""The position of ``usage_event_id`` in the values of ``_entry`` (a folded write gives its own)."""


def _entry(
    account: dict[str, Any],
    entry_type: LedgerEntryType,
    *,
    amount: int = 0,
    free_amount: int = 0,
    paid_amount: int = 0,
    held_delta: int = 0,
    owed_delta: int = 0,
    now: datetime,
    lot_id: int | None = None,
    usage_event_id: int | None = None,
    hold_id: int | None = None,
    reason: str | None = None,
) -> list[Any]:
    """Move the account's cached balance, held credit, owed and version by one ledger row, and return the row's
    values in the order of ``LEDGER_INTO`` (for ``_append``, or a statement that writes more with it)."""
    alerts.remember(account, now)  # the available before the change, for the alerts it crosses
    account["balance"] = int(account["balance"]) + amount
    account["held"] = int(account["held"]) + held_delta
    account["owed"] = int(account["owed"]) + owed_delta
    account["version"] = int(account["version"]) + 1
    return [
        account["id"],
        entry_type.value,
        amount,
        free_amount,
        paid_amount,
        held_delta,
        owed_delta,
        account["balance"],
        account["held"],
        account["version"],
        lot_id,
        usage_event_id,
        hold_id,
        reason,
        now,
    ]


PENDING_COUNTS = "_pending_limit_counts"
"""The key of a locked account's row under which limit counters wait for ``_save_account``."""


def defer_counts(account: dict[str, Any], counts: dict[tuple[int, str, int], int]) -> None:
    """Have ``_save_account`` add these credits to limit counters ((limit id, run or '', bucket) -> credits)."""
    if counts:
        pending: dict[tuple[int, str, int], int] = account.setdefault(PENDING_COUNTS, {})
        for key, credits in counts.items():
            pending[key] = pending.get(key, 0) + credits


async def _save_account(sql: Sql, account: dict[str, Any]) -> None:
    saved = [account["balance"], account["held"], account["owed"], account["version"], account["id"]]
    counts: dict[tuple[int, str, int], int] = account.pop(PENDING_COUNTS, {})
    if counts and sql.postgres:  # one round trip: the counters' upsert as a data-modifying CTE of the update
        upsert, values = counter_upsert(counts, first=len(saved) + 1)
        await sql.execute(f"WITH counted AS ({upsert}) {SAVE_ACCOUNT}", *saved, *values)
    else:  # SQLite has no data-modifying CTE (and its round trips stay in the process)
        if counts:
            upsert, values = counter_upsert(counts)
            await sql.execute(upsert, *values)
        await sql.execute(SAVE_ACCOUNT, *saved)
    await alerts.saved(sql, account)  # balance.low/depleted/recovered: no statement unless a level is crossed


def _change(account: dict[str, Any], delta: int, reason: str, balance: Balance, now: datetime) -> BalanceChange:
    return BalanceChange(int(account["id"]), int(account["version"]), delta, reason, balance, now)
