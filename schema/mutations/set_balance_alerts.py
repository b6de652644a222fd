from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.alerts import AlertLevels
from schema.errors import Forbidden, NotFound, ValidationError
from schema.scalars import Credits
from schema.types import CreditAccount


@strawberry.input(
    description="The levels of available credit under which an account's balance.low alert fires (once per"
    " crossing; balance.recovered when it is back at or above one). At most 5 levels, each positive, no two alike;"
    " an empty list: none. useDefault: true goes back to the deployment's default instead (give no levels then)."
    " Removing a level resolves its open alert, without an event. Who may: as for spend limits (the account's"
    " user, BILLING or OWNER of the pool's organization, admins, services with limits:write). Exactly one of"
    " accountId, externalUserId or externalOrganizationId names the account (none: your own)."
)
class SetBalanceAlertsInput:
    account_id: strawberry.ID | None = references.account_id(references.ACCOUNT_ID)
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    levels: list[Credits] | None = strawberry.field(default=None, description="Levels in credits, each > 0")
    use_default: bool = strawberry.field(default=False, description="Back to the deployment's default level")


@strawberry.type
class SetBalanceAlertsSuccess:
    account: CreditAccount
    alert_levels: AlertLevels


SetBalanceAlertsResult = Annotated[
    SetBalanceAlertsSuccess | ValidationError | Forbidden | NotFound, strawberry.union("SetBalanceAlertsResult")
]
