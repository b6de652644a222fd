from __future__ import annotations

from strawberry.types import Info

from billing import auto_top_up as billing_auto_top_up
from models import ledger
from models.ids import decode_id
from models.tables import Hold as HoldRow
from resolvers import delegation
from resolvers.context import Context
from resolvers.mutations._common import (
    CREDIT_REFUSALS,
    conflict,
    credit_refusal,
    limit_warnings,
    not_active,
)
from resolvers.mutations.holds import priced
from resolvers.permissions import principal, require_scope
from resolvers.validation import check_key, check_positive, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.increase_hold import IncreaseHoldInput, IncreaseHoldResult, IncreaseHoldSuccess
from schema.types import CreditBalance, Hold


async def increase_hold(info: Info[Context, None], input: IncreaseHoldInput) -> IncreaseHoldResult:
    """Set more credit aside on a running task's hold, checked as a new hold of the extra would be. Service
    tokens with ``usage:write`` and admins only."""
    if denied := require_scope(info, "usage:write"):
        return denied
    if (input.quantity is None) == (input.credits is None):
        return ValidationError(message="Give exactly one of quantity or credits", field=None)
    if invalid := first_error(
        check_key(input.idempotency_key),
        check_positive(input.credits, "credits"),
        check_positive(input.quantity, "quantity"),
    ):
        return invalid
    hold_id = decode_id(input.hold_id, "Hold")
    # The activity prices a quantity; it never changes, so reading it before the ledger locks anything is safe.
    held = None if hold_id is None else await HoldRow.get_or_none(id=hold_id).only("id", "activity")
    if hold_id is None or held is None:
        return NotFound(message="Hold not found")
    if refused := await delegation.hold_refusal(principal(info), hold_id):
        return refused
    credits = priced(info, held.activity, input.credits, input.quantity, "quantity")
    if isinstance(credits, ValidationError):
        return credits
    ctx = info.context
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "increaseHold",
        {"hold": hold_id, "credits": input.credits, "quantity": input.quantity},
    )
    try:
        result = await ledger.increase_hold(
            hold_id,
            credits=credits,
            quantity=None if input.quantity is None else int(input.quantity),
            idem=idem,
            now=ctx.now(),
            auto_top_up=billing_auto_top_up.terms(ctx.services),
        )
    except CREDIT_REFUSALS as exc:
        return credit_refusal(exc, "increase", ctx.services.bus)
    except ledger.HoldNotActiveError as exc:
        return not_active(exc)
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="Hold not found")
    ctx.services.bus.publish(result.changes)
    billing_auto_top_up.kick(ctx.services, result.queued_top_up)  # charged outside the increase's transaction
    return IncreaseHoldSuccess(
        hold=Hold.of(await HoldRow.get(id=hold_id)),
        balance=CreditBalance.of(result.balance),
        limit_warnings=limit_warnings(result.warnings),
    )
