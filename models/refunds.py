"""Refunds of successful payments (docs/rules.md, Refunds): the money goes back, the credit it bought is voided.

A refund is written PENDING under the account lock (so two refunds never return more than was paid), the
gateway is asked outside any transaction with an idempotency key made from the refund's id, and the
answer is recorded under the lock again, only while the refund is PENDING.
"""

from __future__ import annotations

from datetime import datetime

from tortoise.transactions import in_transaction

from models import event_data, ledger
from models.ledger import Event, IdempotencyConflictError, IdempotencyKey
from models.sql import Sql
from models.tables import Refund, RefundStatus, Transaction, TransactionStatus


class NotRefundableError(Exception):
    """Only a SUCCEEDED payment with money left to return can be refunded."""

    def __init__(self, message: str, refundable: int) -> None:
        super().__init__(message)
        self.refundable = refundable


async def refundable(sql: Sql, transaction_id: int) -> int:
    """Minor units of the payment not yet refunded (nor being refunded)."""
    row = await sql.fetchrow(
        "SELECT t.amount - COALESCE(SUM(r.amount), 0) AS left_over FROM transactions t"
        " LEFT JOIN refunds r ON r.transaction_id = t.id AND r.status IN ('PENDING', 'SUCCEEDED')"
        " WHERE t.id = $1 GROUP BY t.amount",
        transaction_id,
    )
    assert row is not None
    return int(row["left_over"])


async def start(
    transaction: Transaction, *, amount: int | None, reason: str | None, idem: IdempotencyKey, now: datetime
) -> tuple[Refund, bool]:
    """Write a PENDING refund of ``amount`` minor units (default: all that is left), or find the one this
    key wrote before. Returns it and whether it is new. A refusal is stored under the key and replayed as
    such, even once the payment could be refunded (another refund failed meanwhile)."""
    refusal: NotRefundableError | None = None
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, transaction.account_id)
        earlier = await Refund.filter(idempotency_scope=idem.scope, idempotency_key=idem.key).using_db(conn).first()
        if earlier is not None:
            if earlier.request_hash != idem.fingerprint:
                raise IdempotencyConflictError()
            return earlier, False
        if (stored := await ledger.stored_refusal(sql, idem)) is not None:
            raise NotRefundableError(str(stored["message"]), int(stored["refundable"]))
        left, refusal = await _refusal(sql, transaction.id, amount)
        if refusal is not None:
            response = {"refused": "not_refundable", "message": str(refusal), "refundable": refusal.refundable}
            await ledger.store_refusal(sql, idem, response, now)
        else:
            refund = await Refund.create(
                transaction_id=transaction.id,
                account_id=transaction.account_id,
                status=RefundStatus.PENDING,
                amount=left if amount is None else amount,
                reason=reason,
                idempotency_scope=idem.scope,
                idempotency_key=idem.key,
                request_hash=idem.fingerprint,
                created_at=now,
                using_db=conn,
            )
    if refusal is not None:
        raise refusal
    return refund, True


async def _refusal(sql: Sql, transaction_id: int, amount: int | None) -> tuple[int, NotRefundableError | None]:
    """What is left to refund of the payment, and why ``amount`` of it cannot be refunded, if it cannot."""
    status = await sql.fetchrow("SELECT status FROM transactions WHERE id = $1", transaction_id)
    assert status is not None
    left = await refundable(sql, transaction_id)
    if status["status"] != TransactionStatus.SUCCEEDED:
        return left, NotRefundableError("Only a SUCCEEDED payment can be refunded", 0)
    if left <= 0:
        return left, NotRefundableError("The payment has been refunded in full", 0)
    if amount is not None and amount > left:
        return left, NotRefundableError(f"At most {left} (minor units) of this payment can be refunded", left)
    return left, None


async def complete(
    refund_id: int, *, succeeded: bool, reference: str | None, failure_reason: str | None, now: datetime
) -> tuple[Refund, tuple[Event, ...]]:
    """Record the gateway's answer. Success voids the credit in proportion to the money returned: refunds
    that add up to the whole payment void all of its credit, as far as it is unspent."""
    refund = await Refund.get(id=refund_id)
    changes: tuple[Event, ...] = ()
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await ledger.lock_account(sql, refund.account_id)
        current = await sql.fetchrow("SELECT status FROM refunds WHERE id = $1", refund_id)
        assert current is not None
        if current["status"] != RefundStatus.PENDING:
            return await Refund.get(id=refund_id), ()
        if not succeeded:
            await sql.execute(
                "UPDATE refunds SET status = 'FAILED', failure_reason = $1, gateway_reference = $2,"
                " completed_at = $3 WHERE id = $4",
                failure_reason or "Refund failed",
                reference,
                now,
                refund_id,
            )
            return await Refund.get(id=refund_id), ()
        txn = await sql.fetchrow(
            "SELECT t.credits, t.amount, t.lot_id, COALESCE(SUM(r.amount), 0) AS refunded_before"
            " FROM transactions t LEFT JOIN refunds r ON r.transaction_id = t.id AND r.status = 'SUCCEEDED'"
            " WHERE t.id = $1 GROUP BY t.credits, t.amount, t.lot_id",
            refund.transaction_id,
        )
        assert txn is not None
        credits, paid, before = int(txn["credits"]), int(txn["amount"]), int(txn["refunded_before"])
        share = credits * (before + refund.amount) // paid - credits * before // paid
        voided, changes = await ledger.void_lot_locked(
            sql, account, int(txn["lot_id"]), share, refund.reason or "Refund", now
        )
        await sql.execute(
            "UPDATE refunds SET status = 'SUCCEEDED', credits = $1, gateway_reference = $2, completed_at = $3"
            " WHERE id = $4",
            voided,
            reference,
            now,
            refund_id,
        )
        await event_data.refund_created(sql, account, refund_id, now)
    return await Refund.get(id=refund_id), changes
