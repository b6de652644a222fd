"""What the mutations share: resolving who spends, and turning ledger refusals into typed errors."""

from __future__ import annotations

from dataclasses import dataclass

from creditline.events import EventBus
from models import ledger
from models.ids import decode_id
from models.ledger import AccountSelector
from models.tables import CreditAccount, Membership
from models.tokens import NO_TOKEN_ROW
from resolvers.references import organization_pk, user_pk
from schema.errors import (
    BudgetExceeded,
    HoldNotActive,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    SpendLimitExceeded,
    SpendPaused,
    ValidationError,
)
from schema.limits import SpendLimit, SpendLimitWarning
from schema.scalars import Credits


@dataclass(frozen=True, slots=True)
class Spender:
    """Who a spend is for, and the account it draws from: the organization's pool when it has one
    (docs/rules.md, Shared pool), else the user's own account (attributed to the organization when one is given)."""

    user_id: int
    organization_id: int | None
    account: AccountSelector


async def spender(
    user_id: str | None,
    organization_id: str | None,
    external_user_id: str | None = None,
    external_organization_id: str | None = None,
) -> Spender | NotFound | ValidationError:
    """The spender named by exactly one of ``userId``/``externalUserId`` and at most one of ``organizationId``/
    ``externalOrganizationId``. By global ID it costs no query for the user (the ledger finds none: NotFound)."""
    if user_id is not None and external_user_id is None:
        user = decode_id(user_id, "User")
        if user is None:
            return NotFound(message="User not found")
    else:
        named = await user_pk(user_id, external_user_id)
        if not isinstance(named, int):
            return named
        user = named
    if organization_id is None and external_organization_id is None:
        return Spender(user, None, ("user_id", user))
    org: int | None
    if external_organization_id is None:
        org = decode_id(organization_id or "", "Organization")
    else:
        found = await organization_pk(organization_id, external_organization_id)
        if isinstance(found, ValidationError):
            return found
        org = found if isinstance(found, int) else None
    # Not a member and no such organization are one answer, by either form of id.
    if org is None or not await Membership.exists(user_id=user, organization_id=org):
        return NotFound(message="Organization not found among the user's organizations")
    pooled = await CreditAccount.exists(organization_id=org)
    return Spender(user, org, ("organization_id", org) if pooled else ("user_id", user))


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


def over_limit(exc: ledger.SpendLimitExceededError, operation: str = "spend") -> SpendLimitExceeded:
    run = f" for run {exc.run_id!r}" if exc.run_id is not None else ""
    return SpendLimitExceeded(
        message=f"This {operation} would exceed a spend limit{run}",
        limit=SpendLimit.of(exc.limit),
        spent=Credits(exc.spent),
        held=Credits(exc.held),
        required=Credits(exc.required),
        resets_at=exc.resets_at,
        agent_run_id=exc.run_id,
    )


def paused(exc: ledger.SpendPausedError) -> SpendPaused:
    return SpendPaused(
        message="Spending is paused: a velocity limit tripped",
        limit=SpendLimit.of(exc.limit),
        tripped_at=exc.tripped_at,
        paused_until=exc.paused_until,
    )


def limit_warnings(warnings: tuple[ledger.LimitWarning, ...]) -> list[SpendLimitWarning]:
    return [
        SpendLimitWarning(
            limit=SpendLimit.of(w.limit), spent=Credits(w.spent), held=Credits(w.held), resets_at=w.resets_at
        )
        for w in warnings
    ]


def token_row(token_id: int) -> int | None:
    """The ``api_tokens`` id a spend is recorded under: None for a principal no row stands for (a JWT)."""
    return None if token_id == NO_TOKEN_ROW else token_id


CREDIT_REFUSALS = (
    ledger.InsufficientCreditsError,
    ledger.BudgetExceededError,
    ledger.SpendLimitExceededError,
    ledger.SpendPausedError,
)
"""What a new spend, hold or increase of a hold may be refused with for lack of credit or over a limit."""


def credit_refusal(
    exc: ledger.LedgerError, operation: str, bus: EventBus
) -> InsufficientCredits | BudgetExceeded | SpendLimitExceeded | SpendPaused:
    """The typed error of one of ``CREDIT_REFUSALS``. A refusal that tripped a velocity breaker committed the
    trip: its event is published here, after that commit."""
    if isinstance(exc, ledger.InsufficientCreditsError):
        return insufficient(exc)
    if isinstance(exc, ledger.BudgetExceededError):
        return over_budget(exc, operation)
    if isinstance(exc, ledger.SpendLimitExceededError):
        return over_limit(exc, operation)
    assert isinstance(exc, ledger.SpendPausedError), exc
    bus.publish(exc.changes)
    return paused(exc)
