from __future__ import annotations

from strawberry.types import Info

from models import ledger
from models.tables import CreditAccount as CreditAccountRow
from resolvers.accounts import NO_POOL, NoPool, named_account
from resolvers.context import Context
from resolvers.permissions import require_admin
from schema.errors import NotFound, ValidationError
from schema.mutations.set_overdraft import SetOverdraftInput, SetOverdraftResult, SetOverdraftSuccess
from schema.types import CreditAccount, CreditBalance


async def set_overdraft(info: Info[Context, None], input: SetOverdraftInput) -> SetOverdraftResult:
    """Set an account's overdraft limit. Admin tokens only: an overdraft is credit the platform extends.

    No balance change is published: no credit moves, so no ledger version is taken; subscribers see the new
    limit with the account's next change (or a snapshot). The alerts the new limit raised or resolved are
    (alertRaised), after the commit."""
    if denied := require_admin(info):
        return denied
    if input.overdraft < 0:
        return ValidationError(message="overdraft must not be negative", field="overdraft")
    named = await named_account(input.account_id, input.external_user_id, input.external_organization_id, required=True)
    if isinstance(named, NoPool):
        return NotFound(message=NO_POOL)
    if not isinstance(named, CreditAccountRow):
        assert named is not None, "required: None is a ValidationError"
        return named
    try:
        balance, alerts = await ledger.set_overdraft(int(named.id), int(input.overdraft), info.context.now())
    except ledger.NotFoundError:
        return NotFound(message="Credit account not found")
    info.context.services.bus.publish(alerts)
    return SetOverdraftSuccess(account=CreditAccount(id=int(named.id)), balance=CreditBalance.of(balance))
