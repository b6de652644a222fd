from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from models.tables import CreditKind
from schema import references
from schema.errors import Forbidden, IdempotencyConflict, NotFound, ValidationError
from schema.scalars import Credits
from schema.types import CreditBalance, CreditLot


@strawberry.input(
    description="FREE grants are promotions, PAID grants adjustments. Admin tokens only. Exactly one of"
    " accountId, externalUserId or externalOrganizationId names the account."
)
class GrantCreditsInput:
    account_id: strawberry.ID | None = references.account_id(references.ACCOUNT_ID)
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    credits: Credits
    kind: CreditKind
    expires_at: datetime | None = None
    reason: str | None = None
    idempotency_key: str


@strawberry.type
class GrantCreditsSuccess:
    lot: CreditLot
    balance: CreditBalance


GrantCreditsResult = Annotated[
    GrantCreditsSuccess | IdempotencyConflict | ValidationError | Forbidden | NotFound,
    strawberry.union("GrantCreditsResult"),
]
