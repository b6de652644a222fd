"""refundPayment: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Error, Forbidden, IdempotencyConflict, NotFound, ValidationError
from schema.payments import PaymentUnavailable, Refund, Transaction
from schema.types import CreditBalance


@strawberry.input(description="Return money for a successful payment; the credit it bought is voided in proportion.")
class RefundPaymentInput:
    transaction_id: strawberry.ID
    amount: int | None = strawberry.field(
        default=None, description="Minor units of the payment currency; default: all that is not yet refunded"
    )
    reason: str | None = None
    idempotency_key: str


@strawberry.type
class RefundPaymentSuccess:
    refund: Refund
    transaction: Transaction
    balance: CreditBalance


@strawberry.type(description="The gateway refused the refund: it is FAILED with the reason, and credit is kept.")
class RefundFailed(Error):
    reason: str
    refund: Refund


RefundPaymentResult = Annotated[
    RefundPaymentSuccess
    | RefundFailed
    | PaymentUnavailable
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound,
    strawberry.union("RefundPaymentResult"),
]
