"""Naming a credit account in an input: ``accountId`` (a CreditAccount ID, or the ID of the User whose account
it is or of the Organization whose credit pool it is), or ``externalUserId`` / ``externalOrganizationId`` (the
platform's ids of that user or organization). Who may use the account is the caller's to check: this only
finds it, the same way for every form, so that no form tells more than another.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.ids import decode_any
from models.tables import CreditAccount, Organization
from resolvers.references import organization_pk, user_pk
from schema.errors import NotFound, ValidationError

ACCOUNT_NOT_FOUND = "Credit account not found"
NO_POOL = "This organization has no credit pool: enableCreditPool gives it one"
FIELDS = ("accountId", "externalUserId", "externalOrganizationId")


@dataclass(frozen=True, slots=True)
class NoPool:
    """The organization named exists but has no credit pool."""

    organization_id: int


Named = CreditAccount | NoPool | NotFound | ValidationError


def owners(named: CreditAccount | NoPool) -> tuple[int | None, int | None]:
    """The user and the organization whose account it is (or would be): who may use it depends on them."""
    if isinstance(named, NoPool):
        return None, named.organization_id
    return named.user_id, named.organization_id


async def named_account(
    account_id: str | None,
    external_user_id: str | None,
    external_organization_id: str | None,
    *,
    required: bool = False,
) -> Named | None:
    """The account named by at most one of the three forms (exactly one if ``required``); ``None`` when none
    is given (the caller's default). An unknown id of any form is ``NotFound`` (billing_account refuses an unknown
    externalId to anyone but an admin as another's account is)."""
    given = sum(value is not None for value in (account_id, external_user_id, external_organization_id))
    if given > 1 or (required and given == 0):
        how = "exactly" if required else "at most"
        return ValidationError(message=f"Give {how} one of {', '.join(FIELDS)}", field=FIELDS[0])
    if external_user_id is not None:
        user = await user_pk(None, external_user_id)
        return user if not isinstance(user, int) else await _account_of_user(user)
    if external_organization_id is not None:
        org = await organization_pk(None, external_organization_id)
        return org if not isinstance(org, int) else await _pool_of(org, exists=True)
    if account_id is None:
        return None
    kind, pk = decode_any(account_id) or ("", 0)
    if kind == "User":
        return await _account_of_user(pk)
    if kind == "Organization":
        return await _pool_of(pk, exists=False)
    account = await CreditAccount.filter(id=pk).first() if kind == "CreditAccount" else None
    return NotFound(message=ACCOUNT_NOT_FOUND) if account is None else account


async def _account_of_user(user_id: int) -> CreditAccount | NotFound:
    account = await CreditAccount.filter(user_id=user_id).first()
    return NotFound(message="User not found") if account is None else account


async def _pool_of(organization_id: int, *, exists: bool) -> CreditAccount | NoPool | NotFound:
    pool = await CreditAccount.filter(organization_id=organization_id).first()
    if pool is not None:
        return pool
    if exists or await Organization.exists(id=organization_id):
        return NoPool(organization_id)
    return NotFound(message="Organization not found")
