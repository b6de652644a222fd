from __future__ import annotations

from strawberry.types import Info

from gateway.base import GatewayError, GatewayUnavailable
from models import ledger, refunds
from models.ledger import IdempotencyConflictError, IdempotencyKey
from models.tables import RefundStatus
from models.tables import Transaction as TransactionRow
from resolvers.context import Context
from resolvers.ids import decode_id
from resolvers.mutations._common import conflict
from resolvers.permissions import principal, require_admin
from resolvers.validation import check_key, check_optional_text, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.refund_payment import RefundFailed, RefundPaymentInput, RefundPaymentResult, RefundPaymentSuccess
from schema.payments import PaymentUnavailable, Refund, Transaction
from schema.types import CreditBalance


async def refund_payment(info: Info[Context, None], input: RefundPaymentInput) -> RefundPaymentResult:
    """Return money for a successful payment through its gateway. Admin tokens only."""
    if denied := require_admin(info):
        return denied
    services = info.context.services
    if invalid := first_error(
        check_key(input.idempotency_key),
        check_optional_text(input.reason, "reason", 500),
        ValidationError(message="amount must be a positive number of minor units", field="amount")
        if input.amount is not None and input.amount <= 0
        else None,
    ):
        return invalid
    pk = decode_id(input.transaction_id, "Transaction")
    txn = None if pk is None else await TransactionRow.filter(id=pk).first()
    if txn is None:
        return NotFound(message="Transaction not found")
    if txn.gateway != services.gateway.name:
        return PaymentUnavailable(message=f"This payment was made on the {txn.gateway} gateway, which is not active")
    if reason := services.gateway.unavailable_reason():
        return PaymentUnavailable(message=reason)
    idem = IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "refundPayment",
        {"transaction": txn.id, "amount": input.amount, "reason": input.reason},
    )
    try:
        refund, _ = await refunds.start(
            txn, amount=input.amount, reason=input.reason, idem=idem, now=info.context.now()
        )
    except IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except refunds.NotRefundableError as exc:
        return ValidationError(message=str(exc), field="amount" if exc.refundable else "transactionId")
    if refund.status == RefundStatus.PENDING:  # new, or its answer was lost: the same key gets the first answer
        try:
            answer = await services.gateway.refund(
                charge=txn.gateway_reference or "",
                amount=refund.amount,
                currency=txn.currency,
                idempotency_key=f"creditline-refund-{refund.id}",
            )
            succeeded, reference, reason = answer.succeeded, answer.reference, answer.failure_reason
        except GatewayUnavailable as exc:
            succeeded, reference, reason = False, None, str(exc)
        except GatewayError:  # the outcome is unknown: the same key asks again and gets the first answer
            return PaymentUnavailable(message="The payment processor could not be reached: try again")
        refund, changes = await refunds.complete(
            refund.id, succeeded=succeeded, reference=reference, failure_reason=reason, now=services.clock.now()
        )
        services.bus.publish(changes)
    shown = Refund.of(refund, txn.currency)
    if refund.failure_reason is not None:
        return RefundFailed(
            message=f"The refund failed: {refund.failure_reason}", reason=refund.failure_reason, refund=shown
        )
    balance = await ledger.read_balances([txn.account_id], info.context.now())
    return RefundPaymentSuccess(
        refund=shown, transaction=Transaction.of(txn), balance=CreditBalance.of(balance[txn.account_id])
    )
