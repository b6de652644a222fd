from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.errors import BudgetExceeded, Forbidden, IdempotencyConflict, InsufficientCredits, NotFound, ValidationError
from schema.scalars import Credits
from schema.types import CreditBalance, UsageEvent


@strawberry.input(
    description="Exactly one of `quantity` (priced by the rate card) or `credits`; exactly one of `userId` or"
    " `externalUserId`; at most one of `organizationId` or `externalOrganizationId`."
)
class SpendCreditsInput:
    user_id: strawberry.ID | None = references.user_id()
    external_user_id: str | None = references.external_user_id()
    organization_id: strawberry.ID | None = None
    external_organization_id: str | None = references.external_organization_id()
    agent_id: str
    activity: str
    quantity: Credits | None = None
    credits: Credits | None = None
    idempotency_key: str


@strawberry.type
class SpendCreditsSuccess:
    usage_event: UsageEvent
    balance: CreditBalance


SpendCreditsResult = Annotated[
    SpendCreditsSuccess
    | InsufficientCredits
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound
    | BudgetExceeded,
    strawberry.union("SpendCreditsResult"),
]
