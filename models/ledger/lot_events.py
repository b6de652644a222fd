"""``credit.expiring`` and ``credit.expired``: the sweep's events about a lot (see README, "Events and webhooks").

Both are written in the sweep's transaction for the account, under its row lock: ``credit.expired`` with the
EXPIRE entry it records, ``credit.expiring`` with the ``credit_lots.expiring_notified_at`` that makes it once
per lot (a sweep in another process, waiting for the lock, re-reads the column and finds it set).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise import connections

from models.credits import format_credits
from models.event_data import emit_for, instant
from models.ids import encode_id
from models.outbox import EventType
from models.sql import Sql


def lot_data(lot: dict[str, Any], remaining: int) -> dict[str, Any]:
    return {
        "id": encode_id("CreditLot", int(lot["id"])),
        "kind": str(lot["kind"]),
        "remaining": format_credits(remaining),
        "expiresAt": instant(lot["expires_at"]),
    }


async def expiring_lots(now: datetime, until: datetime) -> set[int]:
    """The accounts with a live lot that expires by ``until`` and has not been warned of (read unlocked: the
    sweep re-reads each under the account's lock)."""
    rows = await Sql(connections.get("default")).fetch(
        "SELECT DISTINCT account_id FROM credit_lots WHERE status = 'ACTIVE' AND remaining > 0"
        " AND expiring_notified_at IS NULL AND expires_at > $1 AND expires_at <= $2",
        now,
        until,
    )
    return {int(row["account_id"]) for row in rows}


async def credit_expiring(sql: Sql, account: dict[str, Any], now: datetime, until: datetime) -> int:
    """Warn of each live lot of the locked ``account`` that expires after ``now`` and by ``until``, once: the
    lot is marked in the same transaction. Returns how many were warned of."""
    lots = await sql.fetch(
        "SELECT id, kind, remaining, expires_at FROM credit_lots WHERE account_id = $1 AND status = 'ACTIVE'"
        " AND remaining > 0 AND expiring_notified_at IS NULL AND expires_at > $2 AND expires_at <= $3 ORDER BY id",
        int(account["id"]),
        now,
        until,
    )
    for lot in lots:
        await sql.execute("UPDATE credit_lots SET expiring_notified_at = $1 WHERE id = $2", now, lot["id"])
        await emit_for(sql, EventType.CREDIT_EXPIRING, account, {"lot": lot_data(lot, int(lot["remaining"]))}, now)
    return len(lots)


async def credit_expired(sql: Sql, account: dict[str, Any], lot: dict[str, Any], now: datetime) -> None:
    """The lot ``lot`` (as read before its expiry was recorded) has expired with its remaining credit."""
    remaining = int(lot["remaining"])
    data = {"lot": lot_data(lot, 0), "expiredCredits": format_credits(remaining)}
    await emit_for(sql, EventType.CREDIT_EXPIRED, account, data, now)
