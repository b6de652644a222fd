"""Auto top-up (see docs/rules.md, "Auto top-up queueing"): configuration, the top-up a spend queues,
claiming it, and recording its outcome.

- A spend (or hold) that leaves the available balance below the threshold queues one PENDING AUTO_TOP_UP
  transaction in its own database transaction and points ``auto_top_ups.pending_transaction`` at it, so
  there is never more than one in flight per account. Everything that writes an auto top-up's state
  (queueing, configuring, settling) holds the account's row lock first, in that order.
- A worker charges it outside any database transaction. It first *claims* the row by moving
  ``next_attempt_at`` (the instant before which no worker acts on it) a lease into the future with one
  conditional UPDATE, so two processes never charge it at the same time; a worker that dies leaves a lease
  that runs out, and the sweep takes the row over. The gateway's idempotency key comes from our transaction
  id, so a charge made again answers with the first charge.
- Only spends and holds queue: a capture never lowers the available balance (it returns the rest of its
  hold), and an expiry is not a spend.
- A decline backs off (``RETRY_AFTER``), and the ``MAX_DECLINES``-th in a row switches auto top-up off with
  a reason the user sees. A success resets the count.
- ``monthly_cap`` bounds the credit bought by auto top-up per calendar month (UTC): pending and succeeded
  top-ups count, failed ones do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from models.balance import Balance
from models.credits import MICRO, format_credits
from models.event_data import emit_for, instant, transaction_data
from models.ledger.errors import LedgerError
from models.ledger.locking import lock_account
from models.ledger.lots import balance_locked
from models.money import Price
from models.outbox import EventType
from models.sql import Sql, as_datetime
from models.tables import AutoTopUp, Transaction, TransactionStatus

MAX_DECLINES = 3
"""Declined payments in a row after which auto top-up switches itself off."""


RETRY_AFTER = (timedelta(hours=1), timedelta(hours=6))
"""How long to wait after the first and the second decline in a row before trying again."""


CLAIM_LEASE = timedelta(minutes=5)
"""How long a worker owns a claimed top-up; past it, the sweep may take it over (the worker died)."""


CLAIM_BATCH = 100


@dataclass(frozen=True, slots=True)
class Terms:
    """What a queued top-up costs and which gateway charges it (from the settings and the gateway)."""

    price: Price
    gateway: str


@dataclass(frozen=True, slots=True)
class Config:
    """A complete auto top-up configuration; exactly one of ``amount`` and ``target`` is set."""

    enabled: bool
    threshold: int
    amount: int | None
    target: int | None
    monthly_cap: int
    payment_method_id: int | None


class CardUnavailableError(LedgerError):
    """The card is not (or no longer) saved on the account."""

    def __init__(self) -> None:
        super().__init__("Payment method not found on this account")


def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month in UTC: the monthly cap counts from here."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def top_up_size(amount: int | None, target: int | None, available: int) -> int:
    """Credit one top-up buys: the fixed amount, or what lifts ``available`` to ``target`` in whole credits."""
    if amount is not None:
        return amount
    assert target is not None
    return -(-(target - available) // MICRO) * MICRO


def smallest_top_up(amount: int | None, target: int | None, threshold: int) -> int:
    """The least one top-up can buy: it starts only below the threshold."""
    return top_up_size(amount, target, threshold)


# ------------------------------------------------------------------------------------------ queueing

_CONFIG = (
    "SELECT t.enabled, t.threshold, t.amount, t.target, t.monthly_cap, t.payment_method_id,"
    " t.pending_transaction_id, pm.reference AS card_reference,"
    " (SELECT COALESCE(SUM(x.credits), 0) FROM transactions x WHERE x.account_id = $1 AND x.type = 'AUTO_TOP_UP'"
    "  AND x.status <> 'FAILED' AND x.created_at >= $2) AS month_total,"
    " (SELECT COUNT(*) FROM transactions y WHERE y.account_id = $3 AND y.type = 'AUTO_TOP_UP') AS made"
    " FROM auto_top_ups t LEFT JOIN payment_methods pm ON pm.id = t.payment_method_id"
    " AND pm.removed_at IS NULL AND pm.gateway = $4 WHERE t.account_id = $5"
)


async def queue_locked(sql: Sql, account_id: int, available: int, terms: Terms, now: datetime) -> int | None:
    """Queue a top-up for an account whose row ``sql``'s transaction has locked, if auto top-up is on, none
    is in flight, ``available`` is below the threshold, the card is there and the monthly cap allows it.
    The caller has checked the back-off. Returns the new PENDING transaction's id.

    Everything is read again here: on PostgreSQL the auto top-up columns joined to the account lock can
    predate a spend that queued a top-up while this one waited for the lock (after the wait, READ COMMITTED
    re-reads only the locked row), and this new statement sees that spend's commit."""
    row = await sql.fetchrow(_CONFIG, account_id, month_start(now), account_id, terms.gateway, account_id)
    if row is None or not row["enabled"] or row["pending_transaction_id"] is not None:
        return None
    if available >= int(row["threshold"]) or row["card_reference"] is None:
        return None
    amount = None if row["amount"] is None else int(row["amount"])
    target = None if row["target"] is None else int(row["target"])
    credits = top_up_size(amount, target, available)
    if int(row["month_total"]) + credits > int(row["monthly_cap"]):
        return None  # capped until next month: the status shows it
    sequence = int(row["made"]) + 1
    inserted = await sql.fetchrow(
        "INSERT INTO transactions (account_id, type, status, credits, amount, currency, gateway,"
        " payment_method_id, card_reference, idempotency_scope, idempotency_key, request_hash, created_at)"
        " VALUES ($1, 'AUTO_TOP_UP', 'PENDING', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        account_id,
        credits,
        terms.price.of(credits),
        terms.price.currency,
        terms.gateway,
        row["payment_method_id"],
        row["card_reference"],
        f"auto-top-up:{account_id}",
        str(sequence),
        f"auto-top-up:{account_id}:{sequence}",
        now,
    )
    assert inserted is not None
    transaction_id = int(inserted["id"])
    await sql.execute(
        "UPDATE auto_top_ups SET pending_transaction_id = $1, next_attempt_at = NULL, updated_at = $2"
        " WHERE account_id = $3",
        transaction_id,
        now,
        account_id,
    )
    return transaction_id


async def _queue_auto_top_up(
    sql: Sql, account: dict[str, Any], after: Balance, terms: Terms | None, now: datetime
) -> int | None:
    """Queue an auto top-up when this change left the available balance below the account's threshold.
    The columns the lock read decide; only then does it cost more statements."""
    threshold = account.get("atu_threshold")
    if terms is None or threshold is None or after.available >= int(threshold):
        return None
    if not account["atu_enabled"] or account["atu_pending"] is not None:
        return None
    next_attempt_at = as_datetime(account["atu_next"])
    if next_attempt_at is not None and next_attempt_at > now:
        return None  # backing off after a decline, or a worker holds it
    return await queue_locked(sql, int(account["id"]), after.available, terms, now)


async def configure(account_id: int, config: Config, *, terms: Terms, now: datetime) -> int | None:
    """Save an account's configuration; if the balance is below the threshold already, queue a top-up.

    Switching auto top-up on, or giving it another card, clears the declines and their back-off. Returns
    the id of a queued transaction. Raises ``CardUnavailableError`` if the card was removed meanwhile."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await lock_account(sql, account_id)  # the card cannot be removed under us
        card = (
            None
            if config.payment_method_id is None
            else await sql.fetchrow(
                "SELECT id FROM payment_methods WHERE id = $1 AND account_id = $2 AND removed_at IS NULL",
                config.payment_method_id,
                account_id,
            )
        )
        if card is None:
            raise CardUnavailableError()
        existing = await AutoTopUp.filter(account_id=account_id).using_db(conn).first()
        fresh_start = config.enabled and (
            existing is None or not existing.enabled or existing.payment_method_id != config.payment_method_id
        )
        values: dict[str, Any] = {
            "enabled": config.enabled,
            "threshold": config.threshold,
            "amount": config.amount,
            "target": config.target,
            "monthly_cap": config.monthly_cap,
            "payment_method_id": config.payment_method_id,
            "updated_at": now,
        }
        if fresh_start:
            values |= {"declines": 0, "disabled_reason": None}
            if existing is None or existing.pending_transaction_id is None:
                values["next_attempt_at"] = None
        if existing is None:
            await AutoTopUp.create(using_db=conn, account_id=account_id, **values)
            in_back_off = False
        else:
            await AutoTopUp.filter(id=existing.id).using_db(conn).update(**values)
            next_at = values.get("next_attempt_at", existing.next_attempt_at)
            in_back_off = next_at is not None and next_at > now
        if not config.enabled or in_back_off:
            return None
        balance = await balance_locked(sql, account, now)
        return await queue_locked(sql, account_id, balance.available, terms, now)


# ------------------------------------------------------------------------------------------ the worker


async def claim(transaction_id: int, now: datetime) -> bool:
    """Take a queued top-up for charging: true for exactly one caller until the lease runs out."""
    async with in_transaction() as conn:
        changed = await Sql(conn).execute(
            "UPDATE auto_top_ups SET next_attempt_at = $1 WHERE pending_transaction_id = $2"
            " AND (next_attempt_at IS NULL OR next_attempt_at <= $3)",
            now + CLAIM_LEASE,
            transaction_id,
            now,
        )
    return changed == 1


@dataclass(frozen=True, slots=True)
class Claimed:
    account_id: int
    pending_transaction_id: int | None
    """The top-up to charge; ``None``: a back-off ran out, and the balance decides whether to queue one."""


async def claim_due(now: datetime) -> list[Claimed]:
    """Claim what the sweep should act on: queued top-ups nobody is charging (a worker died, or none was
    started), and auto top-ups whose back-off after a decline has run out. Rows another process is
    claiming at the same moment are skipped (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        rows = await sql.fetch(
            "UPDATE auto_top_ups SET next_attempt_at = $1 WHERE id IN (SELECT id FROM auto_top_ups WHERE"
            " (pending_transaction_id IS NOT NULL AND (next_attempt_at IS NULL OR next_attempt_at <= $2))"
            " OR (pending_transaction_id IS NULL AND enabled AND declines > 0 AND next_attempt_at <= $3)"
            f" ORDER BY id LIMIT {CLAIM_BATCH}" + sql.for_update(skip_locked=True) + ")"
            " RETURNING account_id, pending_transaction_id",
            now + CLAIM_LEASE,
            now,
            now,
        )
    return [Claimed(int(r["account_id"]), r["pending_transaction_id"]) for r in rows]


async def retry_locked(account_id: int, terms: Terms, now: datetime) -> int | None:
    """After a back-off ran out: queue a top-up if the balance is still below the threshold; otherwise
    nothing is due, and the next spend below the threshold queues one."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await lock_account(sql, account_id)
        balance = await balance_locked(sql, account, now)
        queued = await queue_locked(sql, account_id, balance.available, terms, now)
        if queued is None:
            await sql.execute(
                "UPDATE auto_top_ups SET next_attempt_at = NULL WHERE account_id = $1"
                " AND pending_transaction_id IS NULL",
                account_id,
            )
    return queued


async def settle(transaction_id: int, now: datetime) -> None:
    """Record a charged top-up's outcome on its auto top-up, once: a success resets the declines, a decline
    backs off or, the ``MAX_DECLINES``-th in a row, switches auto top-up off with the reason."""
    account_id = (await Transaction.get(id=transaction_id)).account_id
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await lock_account(sql, account_id)
        row = await sql.fetchrow(
            "SELECT t.declines, x.status, x.failure_reason FROM auto_top_ups t"
            " JOIN transactions x ON x.id = t.pending_transaction_id"
            " WHERE t.account_id = $1 AND t.pending_transaction_id = $2",
            account_id,
            transaction_id,
        )
        if row is None:
            return  # settled already
        if row["status"] == TransactionStatus.PENDING:
            return  # the charge did not get an answer: the sweep tries again when the lease runs out
        if row["status"] == TransactionStatus.SUCCEEDED:
            await sql.execute(
                "UPDATE auto_top_ups SET pending_transaction_id = NULL, declines = 0, next_attempt_at = NULL,"
                " updated_at = $1 WHERE account_id = $2",
                now,
                account_id,
            )
            await _settled_event(sql, EventType.AUTO_TOP_UP_SUCCEEDED, account, transaction_id, {}, now)
            return
        declines = int(row["declines"]) + 1
        if declines >= MAX_DECLINES:
            reason = f"Switched off after {declines} declined payments in a row: {row['failure_reason']}"
            await sql.execute(
                "UPDATE auto_top_ups SET pending_transaction_id = NULL, declines = $1, next_attempt_at = NULL,"
                " enabled = $2, disabled_reason = $3, updated_at = $4 WHERE account_id = $5",
                declines,
                False,
                reason[:500],
                now,
                account_id,
            )
            failed: dict[str, Any] = {"declines": declines, "nextAttemptAt": None}
            await _settled_event(sql, EventType.AUTO_TOP_UP_FAILED, account, transaction_id, failed, now)
            disabled: dict[str, Any] = {"declines": declines, "reason": reason[:500]}
            await _settled_event(sql, EventType.AUTO_TOP_UP_DISABLED, account, transaction_id, disabled, now)
            return
        retry_at = now + RETRY_AFTER[min(declines, len(RETRY_AFTER)) - 1]
        await sql.execute(
            "UPDATE auto_top_ups SET pending_transaction_id = NULL, declines = $1, next_attempt_at = $2,"
            " updated_at = $3 WHERE account_id = $4",
            declines,
            retry_at,
            now,
            account_id,
        )
        retried: dict[str, Any] = {"declines": declines, "nextAttemptAt": instant(retry_at)}
        await _settled_event(sql, EventType.AUTO_TOP_UP_FAILED, account, transaction_id, retried, now)


async def _settled_event(
    sql: Sql, event_type: EventType, account: dict[str, Any], transaction_id: int, data: dict[str, Any], now: datetime
) -> None:
    """An ``auto_top_up.*`` event, written where ``settle`` records the outcome (once per top-up)."""
    await emit_for(sql, event_type, account, {"transaction": await transaction_data(sql, transaction_id), **data}, now)


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class State:
    """An auto top-up as its owner sees it."""

    row: AutoTopUp
    topped_up_this_month: int
    status: str
    message: str


async def topped_up_this_month(account_id: int, now: datetime) -> int:
    """Credit bought by auto top-up since the start of this calendar month (UTC), pending included."""
    row = await Sql(connections.get("default")).fetchrow(
        "SELECT COALESCE(SUM(credits), 0) AS total FROM transactions WHERE account_id = $1"
        " AND type = 'AUTO_TOP_UP' AND status <> 'FAILED' AND created_at >= $2",
        account_id,
        month_start(now),
    )
    return 0 if row is None else int(row["total"])


async def state(account_id: int, balance: Balance, now: datetime) -> State | None:
    row = await AutoTopUp.filter(account_id=account_id).first()
    if row is None:
        return None
    bought = await topped_up_this_month(account_id, now)
    status, message = _status(row, bought, balance.available, now)
    return State(row, bought, status, message)


def _status(row: AutoTopUp, bought: int, available: int, now: datetime) -> tuple[str, str]:
    size = top_up_size(row.amount, row.target, min(available, row.threshold))
    what = (
        f"Tops up {format_credits(row.amount)} credits"
        if row.amount is not None
        else f"Tops up to {format_credits(row.target or 0)} credits"
    )
    if not row.enabled:
        return "OFF", row.disabled_reason or "Auto top-up is switched off"
    if row.pending_transaction_id is not None:
        return "PENDING", "A top-up is being charged"
    next_at = as_datetime(row.next_attempt_at)
    if row.declines and next_at is not None and next_at > now:
        return "RETRY_SCHEDULED", (
            f"A payment was declined ({row.declines} in a row): auto top-up tries again after"
            f" {next_at.astimezone(UTC).isoformat()}"
        )
    if bought + size > row.monthly_cap:
        return "CAP_REACHED", (
            f"This month's cap is reached: {format_credits(bought)} of {format_credits(row.monthly_cap)} credits"
            f" topped up, and the next top-up of {format_credits(size)} would exceed it. Auto top-up resumes on"
            f" {next_month_start(now).date().isoformat()}"
        )
    return "ACTIVE", f"{what} when the available balance goes below {format_credits(row.threshold)}"
