from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.errors import (
    BudgetExceeded,
    Forbidden,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    SpendLimitExceeded,
    SpendPaused,
    ValidationError,
)
from schema.limits import SpendLimitWarning
from schema.plain_input import plain_input
from schema.scalars import Credits
from schema.types import CreditBalance, UsageEvent


@plain_input
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
    agent_run_id: str | None = strawberry.field(
        default=None, description="The agent run this belongs to: usage and reports group by it, and limits cap it"
    )
    activity: str
    quantity: Credits | None = None
    credits: Credits | None = None
    idempotency_key: str


@strawberry.type
class SpendCreditsSuccess:
    usage_event: UsageEvent
    balance: CreditBalance
    limit_warnings: list[SpendLimitWarning] = strawberry.field(
        default_factory=list,
        description="Limits at or past their warning threshold after this spend, and NOTIFY limits past their amount",
    )


SpendCreditsResult = Annotated[
    SpendCreditsSuccess
    | InsufficientCredits
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound
    | BudgetExceeded
    | SpendLimitExceeded
    | SpendPaused,
    strawberry.union("SpendCreditsResult"),
]


@plain_input
@strawberry.input(description="Spends to apply in one request, each what `spendCredits` makes of it.")
class SpendCreditsBatchInput:
    events: list[SpendCreditsInput] = strawberry.field(
        description="1 to CREDITLINE_BATCH_MAX_EVENTS (1,000) spends, each with its own idempotencyKey: applied"
        " in this order within an account, each refused or replayed on its own"
    )


@strawberry.type(description="One result per event, in the order of the input's events.")
class SpendCreditsBatchSuccess:
    results: list[SpendCreditsResult]


SpendCreditsBatchResult = Annotated[
    SpendCreditsBatchSuccess | ValidationError | Forbidden,
    strawberry.union("SpendCreditsBatchResult"),
]
