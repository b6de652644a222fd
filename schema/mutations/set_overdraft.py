from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.errors import Forbidden, NotFound, ValidationError
from schema.scalars import Credits
from schema.types import CreditAccount, CreditBalance


@strawberry.input(
    description="How far below zero an account's `available` may go: spends and holds may then take it down to"
    " -`overdraft`, and the next grant or top-up pays back what they borrowed first. 0 (the default) switches it"
    " off. Lowering it below what the account owes is allowed: the debt stays, and nothing more may be borrowed"
    " until it is paid back below the new limit. Admin tokens only. Exactly one of accountId, externalUserId or"
    " externalOrganizationId names the account."
)
class SetOverdraftInput:
    account_id: strawberry.ID | None = references.account_id(references.ACCOUNT_ID)
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    overdraft: Credits = strawberry.field(description="The limit in credits, >= 0")


@strawberry.type
class SetOverdraftSuccess:
    account: CreditAccount
    balance: CreditBalance


SetOverdraftResult = Annotated[
    SetOverdraftSuccess | ValidationError | Forbidden | NotFound, strawberry.union("SetOverdraftResult")
]
