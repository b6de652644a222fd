"""What the spend-limit mutations share: who may manage an account's limits, and naming the account
(docs/rules.md, Managing spend limits).

The account's owner (a user token, or a JWT, of its user), an organization's BILLING or OWNER member for its pool,
admins, and services with ``limits:write``. Portal sessions never: they read their account's limits and pay for
it; a limit is the account holder's or the platform's decision, not the page's.
"""

from __future__ import annotations

from strawberry.types import Info

from models.tables import CreditAccount as CreditAccountRow
from models.tables import TokenKind
from models.tokens import LIMITS_WRITE, Principal
from resolvers.accounts import NO_POOL, NoPool, named_account, owners
from resolvers.context import Context
from resolvers.permissions import BILLING_ROLES, PORTAL_MESSAGE, principal, roles_in, scope_message
from schema.errors import Forbidden, NotFound, ValidationError

MANAGING_NEEDS = (
    "Managing this account's spend limits needs its owner, the BILLING or OWNER role in its organization, an admin"
    f" token or a service token with the '{LIMITS_WRITE}' scope"
)
PORTAL_REFUSED = f"{PORTAL_MESSAGE}: managing its spend limits needs a user, admin or '{LIMITS_WRITE}' token"
LIMIT_NOT_FOUND = "Spend limit not found"


def any_account(who: Principal) -> bool:
    """Admins and ``limits:write`` services manage every account's limits (and are told which externalIds exist)."""
    return who.has_scope(LIMITS_WRITE)


def gate(who: Principal) -> Forbidden | None:
    """Kinds of token that manage no limits at all, before any lookup: portal sessions, services without the scope."""
    if who.kind is TokenKind.PORTAL:
        return Forbidden(message=PORTAL_REFUSED)
    if who.kind is TokenKind.SERVICE and LIMITS_WRITE not in who.scopes:
        return Forbidden(message=scope_message(LIMITS_WRITE))
    return None


async def may_manage(info: Info[Context, None], user_id: int | None, organization_id: int | None) -> bool:
    who = principal(info)
    if any_account(who) or (user_id is not None and user_id == who.user_id):
        return True
    if organization_id is None:
        return False
    return bool((await roles_in(info, organization_id) or frozenset()) & BILLING_ROLES)


async def managed_account(
    info: Info[Context, None],
    account_id: str | None,
    external_user_id: str | None,
    external_organization_id: str | None,
) -> CreditAccountRow | Forbidden | NotFound | ValidationError:
    """The account named (by default a user's own), if the caller may manage its limits. An unknown externalId is
    told apart only to those who manage any account; for anyone else it is refused as another's account is."""
    who = principal(info)
    if denied := gate(who):
        return denied
    named = await named_account(account_id, external_user_id, external_organization_id)
    external = external_user_id is not None or external_organization_id is not None
    if isinstance(named, NotFound) and external and not any_account(who):
        return Forbidden(message=MANAGING_NEEDS)
    if named is None:
        if who.user_id is None:
            return ValidationError(
                message="Give accountId, externalUserId or externalOrganizationId: this token has no account",
                field="accountId",
            )
        return await CreditAccountRow.get(user_id=who.user_id)
    if isinstance(named, NotFound | ValidationError):
        return named
    if not await may_manage(info, *owners(named)):
        return Forbidden(message=MANAGING_NEEDS)
    return NotFound(message=NO_POOL) if isinstance(named, NoPool) else named


async def check_manages(info: Info[Context, None], account_id: int) -> Forbidden | None:
    """For a mutation that names a limit: may the caller manage the limits of its account?"""
    if denied := gate(principal(info)):
        return denied
    account = await CreditAccountRow.get(id=account_id)
    if not await may_manage(info, account.user_id, account.organization_id):
        return Forbidden(message=MANAGING_NEEDS)
    return None
