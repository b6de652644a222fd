"""removeSpendLimit: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound
from schema.limits import SpendLimit


@strawberry.input(
    description="Remove a spend limit and what was counted against it. Who may set it may remove it; removing it"
    " again is NotFound."
)
class RemoveSpendLimitInput:
    limit_id: strawberry.ID


@strawberry.type
class RemoveSpendLimitSuccess:
    limit: SpendLimit = strawberry.field(description="The limit as it was")


RemoveSpendLimitResult = Annotated[
    RemoveSpendLimitSuccess | Forbidden | NotFound, strawberry.union("RemoveSpendLimitResult")
]
