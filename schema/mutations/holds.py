from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
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
from schema.types import CreditBalance, Hold, UsageEvent


@strawberry.input(
    description="Set credit aside for a long-running agent task. Exactly one of `quantity` (priced by the rate"
    " card) or `credits`; exactly one of `userId` or `externalUserId`; at most one of `organizationId` or"
    " `externalOrganizationId`."
)
class HoldCreditsInput:
    user_id: strawberry.ID | None = references.user_id()
    external_user_id: str | None = references.external_user_id()
    organization_id: strawberry.ID | None = None
    external_organization_id: str | None = references.external_organization_id()
    agent_id: str
    agent_run_id: str | None = strawberry.field(
        default=None, description="The agent run this belongs to: usage and reports group by it, and limits cap it"
    )
    activity: str
    quantity: Credits | None = strawberry.field(
        default=None, description="Units of `activity`, priced by the rate card as a spend of them would be"
    )
    credits: Credits | None = None
    timeout_seconds: int | None = strawberry.field(
        default=None, description="Released by itself after this long; default from settings"
    )
    idempotency_key: str


@strawberry.type
class HoldCreditsSuccess:
    hold: Hold
    balance: CreditBalance
    limit_warnings: list[SpendLimitWarning] = strawberry.field(
        default_factory=list,
        description="Limits at or past their warning threshold after this hold, and NOTIFY limits past their amount",
    )


HoldCreditsResult = Annotated[
    HoldCreditsSuccess
    | InsufficientCredits
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound
    | BudgetExceeded
    | SpendLimitExceeded
    | SpendPaused,
    strawberry.union("HoldCreditsResult"),
]


@strawberry.input(description="Spend all of a hold, or part of it (`credits`); the rest is returned.")
class CaptureHoldInput:
    hold_id: strawberry.ID
    credits: Credits | None = None
    idempotency_key: str


@strawberry.type
class CaptureHoldSuccess:
    hold: Hold
    usage_event: UsageEvent | None = strawberry.field(description="None when nothing was captured")
    balance: CreditBalance


CaptureHoldResult = Annotated[
    CaptureHoldSuccess
    | HoldNotActive
    | InsufficientCredits
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound,
    strawberry.union("CaptureHoldResult"),
]


@strawberry.input
class ReleaseHoldInput:
    hold_id: strawberry.ID
    idempotency_key: str


@strawberry.type
class ReleaseHoldSuccess:
    hold: Hold
    balance: CreditBalance


ReleaseHoldResult = Annotated[
    ReleaseHoldSuccess | HoldNotActive | IdempotencyConflict | ValidationError | Forbidden | NotFound,
    strawberry.union("ReleaseHoldResult"),
]
