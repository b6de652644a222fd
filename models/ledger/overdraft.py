"""An account's overdraft limit (docs/rules.md, "Overdraft"): how far below zero ``available`` may go.

Setting it moves no credit, so it appends no ledger row: it only decides what later spends, holds and
captures may borrow. Lowering it below what the account owes already is allowed; the debt stays and is paid
back by the next grants, and no new spend may borrow until ``owed`` is under the new limit.
"""

from __future__ import annotations

from datetime import datetime

from tortoise.transactions import in_transaction

from models.balance import Balance
from models.ledger import alerts
from models.ledger.alerts import AlertChanged
from models.ledger.locking import lock_account
from models.ledger.lots import balance_locked
from models.sql import Sql


async def set_overdraft(account_id: int, overdraft: int, now: datetime) -> tuple[Balance, tuple[AlertChanged, ...]]:
    """Set the account's overdraft limit (micro-credits, >= 0) under its lock; the balance it leaves and the
    alerts it raised or resolved (the caller publishes them after commit). Raises ``NotFoundError`` for an
    unknown account."""
    assert overdraft >= 0
    async with in_transaction() as conn:
        sql = Sql(conn)
        # Under the lock, so a spend deciding at the same time sees the old limit or the new one, whole.
        account = await lock_account(sql, account_id)
        was = alerts.available_of(account)
        await sql.execute("UPDATE credit_accounts SET overdraft = $1 WHERE id = $2", overdraft, account_id)
        account["overdraft"] = overdraft
        await alerts.check(sql, account, was, now)  # a lower limit can take available below a level (events only)
        return await balance_locked(sql, account, now), alerts.taken(account)
