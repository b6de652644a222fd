from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, HoldNotActive, IdempotencyConflict, NotFound, ValidationError
from schema.types import CreditBalance, Hold


@strawberry.input(
    description="Give an active hold a new timeout, counted from now (a running task's heartbeat). A hold lasts"
    " at most 30 days after it was placed."
)
class ExtendHoldInput:
    hold_id: strawberry.ID
    timeout_seconds: int = strawberry.field(description="Released by itself this long from now: 1 to 604800")
    idempotency_key: str


@strawberry.type
class ExtendHoldSuccess:
    hold: Hold
    balance: CreditBalance


ExtendHoldResult = Annotated[
    ExtendHoldSuccess | HoldNotActive | IdempotencyConflict | ValidationError | Forbidden | NotFound,
    strawberry.union("ExtendHoldResult"),
]
