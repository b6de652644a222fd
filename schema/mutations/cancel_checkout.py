"""cancelCheckout: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Error, Forbidden, NotFound, ValidationError
from schema.payments import PaymentUnavailable, Transaction


@strawberry.input(
    description="Drop the unfinished Checkout page of a PENDING top-up (the stripe gateway), e.g. when the customer"
    " comes back from it with checkout=canceled: the page is closed at Stripe, then the transaction is FAILED"
    ' ("The checkout was canceled") and no credit is granted. Whoever may top up the account may cancel.'
)
class CancelCheckoutInput:
    transaction_id: strawberry.ID = strawberry.field(description="The top-up's Transaction")


@strawberry.type
class CancelCheckoutSuccess:
    transaction: Transaction = strawberry.field(
        description="The top-up as it is now: FAILED, with the reason; SUCCEEDED if Stripe's webhook recorded the"
        " payment while the page was being closed. Canceling again answers the same FAILED transaction"
    )


@strawberry.type(
    description="The customer finished the checkout: Stripe is confirming the payment, which can no longer be"
    " canceled. The transaction stays PENDING until Stripe's webhook settles it; nothing changed."
)
class CheckoutCompleted(Error):
    transaction: Transaction


CancelCheckoutResult = Annotated[
    CancelCheckoutSuccess | CheckoutCompleted | PaymentUnavailable | ValidationError | Forbidden | NotFound,
    strawberry.union("CancelCheckoutResult"),
]
