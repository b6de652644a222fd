"""The sweep: records the expiry of lots past their ``expiresAt`` and releases holds past their timeout, and
tells the platform of both ends of a lot's life (``credit.expiring`` once per lot, ``credit.expired``) in the
transaction that records them."""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from models.balance import account_balance, is_live
from models.ledger import alerts
from models.ledger.entries import _append, _change, _save_account
from models.ledger.errors import Event, SweepReport
from models.ledger.holds import _release_locked
from models.ledger.locking import _lock_account
from models.ledger.lot_events import credit_expired, credit_expiring, expiring_lots
from models.ledger.lots import _held_now, _live_lots
from models.sql import Sql, as_datetime
from models.tables import CreditKind, CreditLot, Hold, HoldStatus, LedgerEntryType, LotStatus


async def sweep(now: datetime, expiring_within: timedelta | None = None) -> SweepReport:
    """Record expiries of lots past their ``expiresAt`` and release holds past their timeout; with
    ``expiring_within``, emit ``credit.expiring`` for the lots that expire within it (once per lot).

    Each account is swept in its own transaction under its row lock, and every row is re-read under that
    lock, so sweeps running in several processes never record the same expiry (or warn of one) twice.
    """
    report = SweepReport()
    due: set[int] = set()
    for due_lot in await CreditLot.filter(status=LotStatus.ACTIVE, expires_at__lte=now).only("id", "account_id"):
        due.add(due_lot.account_id)
    for due_hold in await Hold.filter(status=HoldStatus.ACTIVE, expires_at__lte=now).only("id", "account_id"):
        due.add(due_hold.account_id)
    if expiring_within is not None:
        for expiring in await expiring_lots(now, now + expiring_within):
            due.add(expiring)
    for account_id in sorted(due):
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, _ = await _lock_account(sql, "id", account_id, None)
            expired_delta = 0
            touched = False
            for lot in await sql.fetch(
                "SELECT id, kind, remaining, expires_at FROM credit_lots WHERE account_id = $1"
                " AND status = 'ACTIVE' AND expires_at IS NOT NULL",
                account_id,
            ):
                if is_live(as_datetime(lot["expires_at"]), now):
                    continue
                remaining = int(lot["remaining"])
                await sql.execute("UPDATE credit_lots SET status = 'EXPIRED', remaining = 0 WHERE id = $1", lot["id"])
                if remaining:
                    await credit_expired(sql, row, lot, now)
                await _append(
                    sql,
                    row,
                    LedgerEntryType.EXPIRE,
                    amount=-remaining,
                    free_amount=-remaining if lot["kind"] == CreditKind.FREE else 0,
                    paid_amount=-remaining if lot["kind"] == CreditKind.PAID else 0,
                    now=now,
                    lot_id=int(lot["id"]),
                    reason="Expired",
                )
                expired_delta -= remaining
                touched = True
                report.expired_lots += 1
            if expiring_within is not None:
                await credit_expiring(sql, row, now, now + expiring_within)
            if touched:
                await _save_account(sql, row)
            changes: list[Event] = []
            if expired_delta:
                balance = account_balance(
                    await _live_lots(sql, account_id), await _held_now(sql, account_id, int(row["held"]), now), row, now
                )
                changes.append(_change(row, expired_delta, "EXPIRE", balance, now))
            for held in await sql.fetch(
                "SELECT id, amount, expires_at FROM holds WHERE account_id = $1 AND status = 'ACTIVE'",
                account_id,
            ):
                if is_live(as_datetime(held["expires_at"]), now):
                    continue
                changes.append(await _release_locked(sql, row, held, HoldStatus.EXPIRED, "HOLD_TIMEOUT", now))
                report.released_holds += 1
            changes.extend(alerts.taken(row))
        report.changes.extend(changes)
    return report
