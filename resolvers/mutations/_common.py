"""What the mutations share: resolving who spends, and turning ledger refusals into typed errors."""

from __future__ import annotations

from dataclasses import dataclass

from models import ledger
from models.ids import decode_id
from models.ledger import AccountSelector
from models.tables import CreditAccount, Membership
from schema.errors import BudgetExceeded, HoldNotActive, IdempotencyConflict, InsufficientCredits, NotFound
from schema.scalars import Credits


@dataclass(frozen=True, slots=True)
class Spender:
    """Who a spend is for, and the account it draws from: the organization's pool when it has one
    (docs/rules.md, Shared pool), else the user's own account (attributed to the organization when one is given)."""

    user_id: int
    organization_id: int | None
    account: AccountSelector


async def spender(user_id: str, organization_id: str | None) -> Spender | NotFound:
    user_pk = decode_id(user_id, "User")
    if user_pk is None:
        return NotFound(message="User not found")
    if organization_id is None:
        return Spender(user_pk, None, ("user_id", user_pk))
    org_pk = decode_id(organization_id, "Organization")
    if org_pk is None or not await Membership.exists(user_id=user_pk, organization_id=org_pk):
        return NotFound(message="Organization not found among the user's organizations")
    pooled = await CreditAccount.exists(organization_id=org_pk)
    return Spender(user_pk, org_pk, ("organization_id", org_pk) if pooled else ("user_id", user_pk))


def insufficient(exc: ledger.InsufficientCreditsError) -> InsufficientCredits:
    return InsufficientCredits(
        message="Not enough credit available",
        available=Credits(exc.available),
        required=Credits(exc.required),
    )


def over_budget(exc: ledger.BudgetExceededError, operation: str = "spend") -> BudgetExceeded:
    return BudgetExceeded(
        message=f"This {operation} would exceed the member's monthly budget in this organization",
        monthly_budget=Credits(exc.limit),
        spent_this_month=Credits(exc.spent),
        held=Credits(exc.held),
        required=Credits(exc.required),
    )


def conflict(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        message="This idempotencyKey was already used with a different request", idempotency_key=key
    )


def not_active(exc: ledger.HoldNotActiveError) -> HoldNotActive:
    return HoldNotActive(message=str(exc), status=exc.status)
