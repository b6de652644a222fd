from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import (
    BudgetExceeded,
    Forbidden,
    HoldNotActive,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    SpendLimitExceeded,
    SpendPaused,
    ValidationError,
)
from schema.limits import SpendLimitWarning
from schema.scalars import Credits
from schema.types import CreditBalance, Hold


@strawberry.input(
    description="Set more credit aside on an active hold, checked as a new hold of the extra would be. Exactly"
    " one of `quantity` (units of the hold's activity, priced by the rate card) or `credits`."
)
class IncreaseHoldInput:
    hold_id: strawberry.ID
    quantity: Credits | None = None
    credits: Credits | None = None
    idempotency_key: str


@strawberry.type
class IncreaseHoldSuccess:
    hold: Hold
    balance: CreditBalance
    limit_warnings: list[SpendLimitWarning] = strawberry.field(
        default_factory=list,
        description="Limits at or past their warning threshold after this increase, and NOTIFY limits past their"
        " amount",
    )


IncreaseHoldResult = Annotated[
    IncreaseHoldSuccess
    | InsufficientCredits
    | BudgetExceeded
    | SpendLimitExceeded
    | SpendPaused
    | HoldNotActive
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound,
    strawberry.union("IncreaseHoldResult"),
]
