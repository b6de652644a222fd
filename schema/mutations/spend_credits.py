from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import BudgetExceeded, Forbidden, IdempotencyConflict, InsufficientCredits, NotFound, ValidationError
from schema.scalars import Credits
from schema.types import CreditBalance, UsageEvent


@strawberry.input(description="Exactly one of `quantity` (priced by the rate card) or `credits`.")
class SpendCreditsInput:
    user_id: strawberry.ID
    organization_id: strawberry.ID | None = None
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
