"""removeSpendLimit (README, Spend limits)."""

from __future__ import annotations

from strawberry.types import Info

from models import limits
from models.ids import decode_id
from models.tables import SpendLimit as SpendLimitRow
from resolvers.context import Context
from resolvers.mutations._limits import LIMIT_NOT_FOUND, check_manages, gate
from resolvers.permissions import principal
from schema.errors import NotFound
from schema.limits import SpendLimit
from schema.mutations.remove_spend_limit import (
    RemoveSpendLimitInput,
    RemoveSpendLimitResult,
    RemoveSpendLimitSuccess,
)


async def remove_spend_limit(info: Info[Context, None], input: RemoveSpendLimitInput) -> RemoveSpendLimitResult:
    if denied := gate(principal(info)):
        return denied
    pk = decode_id(input.limit_id, "SpendLimit")
    row = None if pk is None else await SpendLimitRow.filter(id=pk).only("id", "account_id").first()
    if row is None:
        return NotFound(message=LIMIT_NOT_FOUND)
    if denied := await check_manages(info, row.account_id):
        return denied
    removed = await limits.remove_limit(row.id)
    if removed is None:  # removed by a concurrent call meanwhile
        return NotFound(message=LIMIT_NOT_FOUND)
    return RemoveSpendLimitSuccess(limit=SpendLimit.of(removed))
