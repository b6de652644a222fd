"""What the mutations share: resolving who spends, and turning ledger refusals into typed errors."""

from __future__ import annotations

from models import ledger
from models.tables import Membership
from resolvers.ids import decode_id
from schema.errors import HoldNotActive, IdempotencyConflict, InsufficientCredits, NotFound
from schema.scalars import Credits


async def spender(user_id: str, organization_id: str | None) -> tuple[int, int | None] | NotFound:
    """The user and (optional) organization a spend is made for, as primary keys."""
    user_pk = decode_id(user_id, "User")
    if user_pk is None:
        return NotFound(message="User not found")
    if organization_id is None:
        return user_pk, None
    org_pk = decode_id(organization_id, "Organization")
    if org_pk is None or not await Membership.exists(user_id=user_pk, organization_id=org_pk):
        return NotFound(message="Organization not found among the user's organizations")
    return user_pk, org_pk


def insufficient(exc: ledger.InsufficientCreditsError) -> InsufficientCredits:
    return InsufficientCredits(
        message="Not enough credit available",
        available=Credits(exc.available),
        required=Credits(exc.required),
    )


def conflict(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        message="This idempotencyKey was already used with a different request", idempotency_key=key
    )


def not_active(exc: ledger.HoldNotActiveError) -> HoldNotActive:
    return HoldNotActive(message=str(exc), status=exc.status)
