from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.errors import Forbidden, NotFound, ValidationError
from schema.payments import PaymentUnavailable


@strawberry.input(description="On the stripe gateway, cards are managed in Stripe's customer portal.")
class CreateCustomerPortalSessionInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()


@strawberry.type
class CreateCustomerPortalSessionSuccess:
    url: str = strawberry.field(description="A short-lived link to the portal; it returns to the billing page")


CreateCustomerPortalSessionResult = Annotated[
    CreateCustomerPortalSessionSuccess | PaymentUnavailable | ValidationError | Forbidden | NotFound,
    strawberry.union("CreateCustomerPortalSessionResult"),
]
