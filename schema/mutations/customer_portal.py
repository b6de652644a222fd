from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound
from schema.payments import PaymentUnavailable


@strawberry.input(description="On the stripe gateway, cards are managed in Stripe's customer portal.")
class CreateCustomerPortalSessionInput:
    account_id: strawberry.ID | None = strawberry.field(default=None, description="Default: your own account")


@strawberry.type
class CreateCustomerPortalSessionSuccess:
    url: str = strawberry.field(description="A short-lived link to the portal; it returns to the billing page")


CreateCustomerPortalSessionResult = Annotated[
    CreateCustomerPortalSessionSuccess | PaymentUnavailable | Forbidden | NotFound,
    strawberry.union("CreateCustomerPortalSessionResult"),
]
