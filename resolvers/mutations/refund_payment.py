from __future__ import annotations

from strawberry.types import Info

from billing import refunds as billing_refunds
from billing.errors import PaymentUnavailableError
from models import ledger, refunds
from models.ids import decode_id
from models.ledger import IdempotencyConflictError, IdempotencyKey
from models.tables import Transaction as TransactionRow
from resolvers.context import Context
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
    idem = IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "refundPayment",
        {"transaction": txn.id, "amount": input.amount, "reason": input.reason},
    )
    try:
        refund = await billing_refunds.refund(services, txn, amount=input.amount, reason=input.reason, idem=idem)
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    except IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except refunds.NotRefundableError as exc:
        return ValidationError(message=str(exc), field="amount" if exc.refundable else "transactionId")
    shown = Refund.of(refund, txn.currency)
    if refund.failure_reason is not None:
        return RefundFailed(
            message=f"The refund failed: {refund.failure_reason}", reason=refund.failure_reason, refund=shown
        )
    balance = await ledger.read_balances([txn.account_id], info.context.now())
    return RefundPaymentSuccess(
        refund=shown, transaction=Transaction.of(txn), balance=CreditBalance.of(balance[txn.account_id])
    )
