"""Refunds of successful payments: the money goes back through the gateway, the credit it bought is voided.

The refund is written PENDING under the account's lock (``models.refunds.start``), the processor is asked
outside any database transaction with a key made from the refund's id, and the answer is recorded under the
lock again while the refund is still PENDING (see docs/rules.md, "Refunds"). A resend with the same key
finds the first refund: PENDING (its answer was lost) asks the processor again, which answers the same.
"""

from __future__ import annotations

from billing.errors import PaymentUnavailableError
from creditline.services import Services
from gateway.base import GatewayError, GatewayUnavailable
from models import refunds
from models.ledger import IdempotencyKey
from models.tables import Refund, RefundStatus, Transaction


def processor_refund_key(refund_id: int) -> str:
    """The idempotency key of every request to the processor about one of our refunds."""
    return f"creditline-refund-{refund_id}"


async def refund(
    services: Services, txn: Transaction, *, amount: int | None, reason: str | None, idem: IdempotencyKey
) -> Refund:
    """Refund ``amount`` minor units of ``txn`` (all that is left when ``None``). Returns the refund, whose
    ``failure_reason`` says why the processor refused it. Raises ``PaymentUnavailableError`` when the payment
    was made on another gateway or the processor cannot be asked now (nothing is written), or when its
    answer is unknown (the same key asks again); ``models.refunds.NotRefundableError`` and
    ``IdempotencyConflictError`` as ``models.refunds.start`` does."""
    gateway = services.gateway
    if txn.gateway != gateway.name:
        raise PaymentUnavailableError(f"This payment was made on the {txn.gateway} gateway, which is not active")
    if unavailable := gateway.unavailable_reason():
        raise PaymentUnavailableError(unavailable)
    row, _ = await refunds.start(txn, amount=amount, reason=reason, idem=idem, now=services.clock.now())
    if row.status != RefundStatus.PENDING:
        return row
    try:
        answer = await gateway.refund(
            charge=txn.gateway_reference or "",
            amount=row.amount,
            currency=txn.currency,
            idempotency_key=processor_refund_key(row.id),
        )
        succeeded, reference, failure = answer.succeeded, answer.reference, answer.failure_reason
    except GatewayUnavailable as exc:
        succeeded, reference, failure = False, None, str(exc)
    except GatewayError:  # the outcome is unknown: the same key asks again and gets the first answer
        raise PaymentUnavailableError("The payment processor could not be reached: try again") from None
    row, changes = await refunds.complete(
        row.id, succeeded=succeeded, reference=reference, failure_reason=failure, now=services.clock.now()
    )
    services.bus.publish(changes)  # after refunds.complete's commit
    return row
