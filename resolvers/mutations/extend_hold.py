from __future__ import annotations

from datetime import timedelta

from strawberry.types import Info

from models import ledger
from models.tables import Hold as HoldRow
from resolvers import delegation
from resolvers.context import Context
from resolvers.mutations._common import conflict, not_active
from resolvers.mutations.holds import check_timeout
from resolvers.permissions import principal, require_scope
from resolvers.validation import check_key, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.extend_hold import ExtendHoldInput, ExtendHoldResult, ExtendHoldSuccess
from schema.types import CreditBalance, Hold


async def extend_hold(info: Info[Context, None], input: ExtendHoldInput) -> ExtendHoldResult:
    """Give a running task's hold a new timeout from now. Service tokens with ``usage:write`` and admins only."""
    if denied := require_scope(info, "usage:write"):
        return denied
    if invalid := first_error(check_key(input.idempotency_key), check_timeout(input.timeout_seconds)):
        return invalid
    hold_id = await delegation.named_hold(principal(info), input.hold_id)
    if not isinstance(hold_id, int):
        return hold_id
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "extendHold",
        {"hold": hold_id, "timeout": input.timeout_seconds},
    )
    try:
        result = await ledger.extend_hold(
            hold_id, lasting=timedelta(seconds=input.timeout_seconds), idem=idem, now=info.context.now()
        )
    except ledger.HoldLifeExceededError as exc:
        return ValidationError(
            message=f"A hold lasts at most {ledger.MAX_HOLD_LIFE.days} days after it was placed: this one may be"
            f" extended to {exc.latest.isoformat()} at the latest",
            field="timeoutSeconds",
        )
    except ledger.HoldNotActiveError as exc:
        return not_active(exc)
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="Hold not found")
    info.context.services.bus.publish(result.changes)
    return ExtendHoldSuccess(hold=Hold.of(await HoldRow.get(id=hold_id)), balance=CreditBalance.of(result.balance))
