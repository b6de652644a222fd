from __future__ import annotations

from datetime import timedelta

from strawberry.types import Info

from billing import auto_top_up as billing_auto_top_up
from models import ledger
from models.tables import Hold as HoldRow
from models.tables import UsageEvent as UsageEventRow
from resolvers import delegation
from resolvers.context import Context
from resolvers.mutations._common import (
    CREDIT_REFUSALS,
    Spender,
    conflict,
    credit_refusal,
    insufficient,
    limit_warnings,
    not_active,
    spender,
    token_row,
)
from resolvers.permissions import principal, require_scope
from resolvers.validation import check_identifier, check_key, check_positive, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.holds import (
    CaptureHoldInput,
    CaptureHoldResult,
    CaptureHoldSuccess,
    HoldCreditsInput,
    HoldCreditsResult,
    HoldCreditsSuccess,
    ReleaseHoldInput,
    ReleaseHoldResult,
    ReleaseHoldSuccess,
)
from schema.types import CreditBalance, Hold, UsageEvent

MAX_HOLD_SECONDS = 7 * 24 * 3600


def check_timeout(seconds: int | None) -> ValidationError | None:
    """A hold's timeout, when given (holdCredits, extendHold)."""
    if seconds is None or 1 <= seconds <= MAX_HOLD_SECONDS:
        return None
    return ValidationError(message=f"timeoutSeconds must be 1 to {MAX_HOLD_SECONDS}", field="timeoutSeconds")


def priced(
    info: Info[Context, None], activity: str, credits: int | None, quantity: int | None, field: str
) -> int | ValidationError:
    """The micro-credits to set aside: ``credits``, or ``quantity`` units of ``activity`` priced by the rate card
    as spendCredits prices them. Exactly one of the two is given (checked by the caller); ``field`` names the
    input an unpriced activity is blamed on."""
    if credits is not None:
        return int(credits)
    assert quantity is not None
    price = info.context.services.rate_card.price(activity, int(quantity))
    if price is None:
        return ValidationError(
            message=f"Activity {activity!r} is not on the rate card: give credits instead", field=field
        )
    return max(price, 1)


async def hold_credits(info: Info[Context, None], input: HoldCreditsInput) -> HoldCreditsResult:
    """Reserve credit for a long-running task. Service tokens with ``usage:write`` and admins only."""
    if denied := require_scope(info, "usage:write"):
        return denied
    if (input.quantity is None) == (input.credits is None):
        return ValidationError(message="Give exactly one of quantity or credits", field=None)
    if invalid := first_error(
        check_key(input.idempotency_key),
        check_identifier(input.agent_id, "agentId", 200),
        check_identifier(input.agent_run_id, "agentRunId", 200) if input.agent_run_id is not None else None,
        check_identifier(input.activity, "activity", 100),
        check_positive(input.credits, "credits"),
        check_positive(input.quantity, "quantity"),
        check_timeout(input.timeout_seconds),
    ):
        return invalid
    credits = priced(info, input.activity, input.credits, input.quantity, "activity")
    if isinstance(credits, ValidationError):
        return credits
    who = await spender(input.user_id, input.organization_id, input.external_user_id, input.external_organization_id)
    if denied := delegation.spend_refusal(principal(info), who, input.agent_id, input.activity):
        return denied
    if not isinstance(who, Spender):
        return who
    user_id, organization_id = who.user_id, who.organization_id
    ctx = info.context
    now = ctx.now()
    timeout = input.timeout_seconds or ctx.services.settings.hold_timeout_seconds
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "holdCredits",
        {
            "user": user_id,
            "organization": organization_id,
            "agent": input.agent_id,
            # Only when given: a key stored before runs existed replays as the same request.
            **({"run": input.agent_run_id} if input.agent_run_id is not None else {}),
            "activity": input.activity,
            "credits": input.credits,
            # Only when given, as the run: a key stored before holds took a quantity replays as before.
            **({"quantity": input.quantity} if input.quantity is not None else {}),
            "timeout": input.timeout_seconds,
        },
    )
    try:
        result = await ledger.hold(
            who.account,
            user_id=user_id,
            organization_id=organization_id,
            agent_id=input.agent_id,
            activity=input.activity,
            credits=credits,
            expires_at=now + timedelta(seconds=timeout),
            idem=idem,
            now=now,
            auto_top_up=billing_auto_top_up.terms(ctx.services),
            run_id=input.agent_run_id,
            token_id=token_row(principal(info).token_id),
            quantity=None if input.quantity is None else int(input.quantity),
        )
    except CREDIT_REFUSALS as exc:
        return credit_refusal(exc, "hold", ctx.services.bus)
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="User not found")
    ctx.services.bus.publish(result.changes)
    billing_auto_top_up.kick(ctx.services, result.queued_top_up)
    return HoldCreditsSuccess(
        hold=Hold.of(await HoldRow.get(id=result.hold_id)),
        balance=CreditBalance.of(result.balance),
        limit_warnings=limit_warnings(result.warnings),
    )


async def capture_hold(info: Info[Context, None], input: CaptureHoldInput) -> CaptureHoldResult:
    """Spend all or part of a hold; the rest goes back to ``available``."""
    if denied := require_scope(info, "usage:write"):
        return denied
    if invalid := first_error(check_key(input.idempotency_key), check_positive(input.credits, "credits")):
        return invalid
    hold_id = await delegation.named_hold(principal(info), input.hold_id)
    if not isinstance(hold_id, int):
        return hold_id
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "captureHold",
        {"hold": hold_id, "credits": input.credits},
    )
    try:
        result = await ledger.capture_hold(
            hold_id,
            credits=None if input.credits is None else int(input.credits),
            idem=idem,
            now=info.context.now(),
        )
    except ledger.ExceedsHoldError:
        return ValidationError(message="credits is more than the hold set aside", field="credits")
    except ledger.InsufficientCreditsError as exc:
        return insufficient(exc)
    except ledger.HoldNotActiveError as exc:
        return not_active(exc)
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="Hold not found")
    info.context.services.bus.publish(result.changes)
    usage_event = (
        UsageEvent.of(await UsageEventRow.get(id=result.usage_event_id)) if result.usage_event_id is not None else None
    )
    return CaptureHoldSuccess(
        hold=Hold.of(await HoldRow.get(id=hold_id)),
        usage_event=usage_event,
        balance=CreditBalance.of(result.balance),
    )


async def release_hold(info: Info[Context, None], input: ReleaseHoldInput) -> ReleaseHoldResult:
    """Give all of a hold back to ``available``."""
    if denied := require_scope(info, "usage:write"):
        return denied
    if invalid := check_key(input.idempotency_key):
        return invalid
    hold_id = await delegation.named_hold(principal(info), input.hold_id)
    if not isinstance(hold_id, int):
        return hold_id
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope, input.idempotency_key, "releaseHold", {"hold": hold_id}
    )
    try:
        result = await ledger.release_hold(hold_id, idem=idem, now=info.context.now())
    except ledger.HoldNotActiveError as exc:
        return not_active(exc)
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="Hold not found")
    info.context.services.bus.publish(result.changes)
    return ReleaseHoldSuccess(hold=Hold.of(await HoldRow.get(id=hold_id)), balance=CreditBalance.of(result.balance))
