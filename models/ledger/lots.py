"""Live lots and the spend order (see docs/rules.md, "Spend order" and "Expiry at the instant"); balances.

A lot or a hold past its ``expires_at`` stops counting at that instant, for reads and spends alike, whether
or not the sweep has recorded it yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tortoise import connections

from models.balance import Balance, account_balance, is_live
from models.ledger.errors import IdempotencyKey
from models.ledger.locking import ACTIVE_HOLDS, LIVE_LOTS, AccountSelector, ReadWithLock, _lock_account, _Replay
from models.sql import Sql, as_datetime
from models.tables import CreditKind


async def _held_now(sql: Sql, account_id: int, cached_held: int, now: datetime) -> int:
    """Credit held at ``now``: a hold past its timeout stops counting at that instant, swept or not."""
    if cached_held == 0:
        return 0
    rows = await sql.fetch(
        "SELECT amount, expires_at FROM holds WHERE account_id = $1 AND status = 'ACTIVE'", account_id
    )
    return sum(int(r["amount"]) for r in rows if is_live(as_datetime(r["expires_at"]), now))


async def _live_lots(sql: Sql, account_id: int) -> list[dict[str, Any]]:
    return await sql.fetch(
        "SELECT id, kind, remaining, expires_at, granted_at FROM credit_lots"
        " WHERE account_id = $1 AND status = 'ACTIVE' AND remaining > 0",
        account_id,
    )


async def _open(
    sql: Sql, account: AccountSelector, idem: IdempotencyKey, now: datetime, also: ReadWithLock | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], Balance]:
    """Lock the account (reading ``also``, the live lots and the active holds with it, in one statement),
    answer a replayed key with its stored response, and read the live balance."""
    row, stored = await _lock_account(sql, account[0], account[1], idem, also, live=True)
    if stored is not None:
        raise _Replay(stored)
    lots = _read_json(row.pop(LIVE_LOTS))
    holds = _read_json(row.pop(ACTIVE_HOLDS))
    held = sum(int(h["amount"]) for h in holds if is_live(as_datetime(h["expires_at"]), now))
    return row, lots, account_balance(lots, held, row, now)


def _read_json(read: Any) -> list[dict[str, Any]]:
    """A JSON array the lock's statement read (text, or decoded by the driver; None: no row)."""
    rows: list[dict[str, Any]] = (json.loads(read) if isinstance(read, str) else read) or []
    return rows


def _spend_order(lot: Mapping[str, Any]) -> tuple[int, int, datetime, datetime, int]:
    expires_at = as_datetime(lot["expires_at"])
    granted_at = as_datetime(lot["granted_at"])
    assert granted_at is not None
    never = datetime.max.replace(tzinfo=granted_at.tzinfo)
    return (
        0 if lot["kind"] == CreditKind.FREE else 1,
        1 if expires_at is None else 0,
        expires_at or never,
        granted_at,
        int(lot["id"]),
    )


def allocate(
    lots: list[dict[str, Any]], amount: int, now: datetime, *, may_owe: int = 0
) -> list[tuple[dict[str, Any], int]]:
    """Split ``amount`` over live lots in spending order. The caller has checked that enough is live, up to
    ``may_owe`` (what an overdraft still covers) short of it."""
    allocations: list[tuple[dict[str, Any], int]] = []
    left = amount
    for lot in sorted((lot for lot in lots if is_live(as_datetime(lot["expires_at"]), now)), key=_spend_order):
        if left == 0:
            break
        take = min(left, int(lot["remaining"]))
        allocations.append((lot, take))
        left -= take
    assert left <= may_owe, "allocate() called for more than the live balance and the overdraft"
    return allocations


def take(
    lots: list[dict[str, Any]], amount: int, now: datetime, before: Balance
) -> tuple[list[tuple[dict[str, Any], int]], int, int, int]:
    """Allocate ``amount`` in the spend order over the lots with credit left, as far as they go, and take it
    from their ``remaining`` (in the rows only: the caller writes them); return the allocations, the free/paid
    split and the rest, owed: at most what the overdraft of ``before`` still covers, which the caller has
    checked (0 without an overdraft)."""
    left = [lot for lot in lots if int(lot["remaining"]) > 0]
    allocations = allocate(left, amount, now, may_owe=max(0, before.overdraft - before.owed))
    free = paid = 0
    for lot, taken in allocations:
        lot["remaining"] = int(lot["remaining"]) - taken
        if lot["kind"] == CreditKind.FREE:
            free += taken
        else:
            paid += taken
    return allocations, free, paid, amount - free - paid


TAKE_FROM_LOT = (
    "UPDATE credit_lots SET remaining = remaining - $1,"
    " status = CASE WHEN remaining - $2 = 0 THEN 'DEPLETED' ELSE status END WHERE id = $3"
)
"""Take ``$1`` (and ``$2``, the same) from lot ``$3``."""


async def _take_from_lots(
    sql: Sql, lots: list[dict[str, Any]], amount: int, now: datetime, before: Balance
) -> tuple[list[tuple[dict[str, Any], int]], int, int, int]:
    """``take``, and decrement the lots' rows."""
    allocations, free, paid, owed = take(lots, amount, now, before)
    for lot, taken in allocations:
        await sql.execute(TAKE_FROM_LOT, taken, taken, lot["id"])
    return allocations, free, paid, owed


async def balance_locked(sql: Sql, account: dict[str, Any], now: datetime) -> Balance:
    """The live balance of an account that ``sql``'s transaction has locked."""
    account_id = int(account["id"])
    return account_balance(
        await _live_lots(sql, account_id), await _held_now(sql, account_id, int(account["held"]), now), account, now
    )


async def read_balances(account_ids: list[int], now: datetime) -> dict[int, Balance]:
    """Balances of several accounts in two queries, whatever their number."""
    if not account_ids:
        return {}
    sql = Sql(connections.get("default"))
    marks = ", ".join(f"${n + 1}" for n in range(len(account_ids)))
    held_rows = await sql.fetch(
        f"SELECT id, held, owed, overdraft FROM credit_accounts WHERE id IN ({marks})", *account_ids
    )
    lot_rows = await sql.fetch(
        "SELECT account_id, kind, remaining, expires_at FROM credit_lots"
        f" WHERE status = 'ACTIVE' AND remaining > 0 AND account_id IN ({marks})",
        *account_ids,
    )
    by_account: dict[int, list[dict[str, Any]]] = {}
    for lot in lot_rows:
        by_account.setdefault(int(lot["account_id"]), []).append(lot)
    held = {int(row["id"]): 0 for row in held_rows}
    holding = [int(row["id"]) for row in held_rows if int(row["held"])]
    if holding:
        marks = ", ".join(f"${n + 1}" for n in range(len(holding)))
        for hold_row in await sql.fetch(
            f"SELECT account_id, amount, expires_at FROM holds WHERE status = 'ACTIVE' AND account_id IN ({marks})",
            *holding,
        ):
            if is_live(as_datetime(hold_row["expires_at"]), now):
                held[int(hold_row["account_id"])] += int(hold_row["amount"])
    return {
        int(row["id"]): account_balance(by_account.get(int(row["id"]), []), held[int(row["id"])], row, now)
        for row in held_rows
    }


async def account_state(account_id: int, now: datetime) -> tuple[Balance, int] | None:
    """An account's balance and ledger version, read in one statement so that they agree."""
    rows = await Sql(connections.get("default")).fetch(
        "SELECT a.held, a.version, a.owed, a.overdraft, l.kind, l.remaining, l.expires_at FROM credit_accounts a"
        " LEFT JOIN credit_lots l ON l.account_id = a.id AND l.status = 'ACTIVE' AND l.remaining > 0"
        " WHERE a.id = $1",
        account_id,
    )
    if not rows:
        return None
    lots = [row for row in rows if row["kind"] is not None]
    held = (await read_balances([account_id], now))[account_id].held if int(rows[0]["held"]) else 0
    return account_balance(lots, held, rows[0], now), int(rows[0]["version"])
