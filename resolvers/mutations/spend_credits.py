from __future__ import annotations

from strawberry.types import Info

from billing import auto_top_up as billing_auto_top_up
from models import ledger
from models.tables import UsageEvent as UsageEventRow
from resolvers import delegation
from resolvers.context import Context
from resolvers.mutations._common import (
    CREDIT_REFUSALS,
    Spender,
    conflict,
    credit_refusal,
    limit_warnings,
    spender,
    token_row,
)
from resolvers.permissions import principal, require_scope
from resolvers.validation import check_identifier, check_key, check_positive, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.spend_credits import SpendCreditsInput, SpendCreditsResult, SpendCreditsSuccess
from schema.scalars import Credits
from schema.types import CreditBalance, UsageEvent


async def spend_credits(info: Info[Context, None], input: SpendCreditsInput) -> SpendCreditsResult:
    """Spend credit for an agent's work. Service tokens with ``usage:write`` and admins only."""
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
    ):
        return invalid
    if input.credits is not None:
        credits = int(input.credits)
    else:
        assert input.quantity is not None
        priced = info.context.services.rate_card.price(input.activity, int(input.quantity))
        if priced is None:
            return ValidationError(
                message=f"Activity {input.activity!r} is not on the rate card: give credits instead",
                field="activity",
            )
        credits = max(priced, 1)
    who = await spender(input.user_id, input.organization_id, input.external_user_id, input.external_organization_id)
    if denied := delegation.spend_refusal(principal(info), who, input.agent_id, input.activity):
        return denied
    if not isinstance(who, Spender):
        return who
    user_id, organization_id = who.user_id, who.organization_id
    ctx = info.context
    now = ctx.now()
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "spendCredits",
        {
            "user": user_id,
            "organization": organization_id,
            "agent": input.agent_id,
            # Only when given: a key stored before runs existed replays as the same request.
            **({"run": input.agent_run_id} if input.agent_run_id is not None else {}),
            "activity": input.activity,
            "credits": input.credits,
            "quantity": input.quantity,
        },
    )
    try:
        result = await ledger.spend(
            who.account,
            user_id=user_id,
            organization_id=organization_id,
            agent_id=input.agent_id,
            activity=input.activity,
            credits=credits,
            quantity=input.quantity,
            idem=idem,
            now=now,
            auto_top_up=billing_auto_top_up.terms(ctx.services),
            run_id=input.agent_run_id,
            token_id=token_row(principal(info).token_id),
        )
    except CREDIT_REFUSALS as exc:
        return credit_refusal(exc, "spend", ctx.services.bus)
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="User not found")
    ctx.services.bus.publish(result.changes)
    billing_auto_top_up.kick(ctx.services, result.queued_top_up)  # charged outside the spend's transaction
    if result.replayed:
        usage_event = UsageEvent.of(await UsageEventRow.get(id=result.usage_event_id))
    else:
        usage_event = UsageEvent(
            id=result.usage_event_id,
            credits=Credits(result.credits),
            free_credits=Credits(result.free_credits),
            paid_credits=Credits(result.paid_credits),
            activity=input.activity,
            agent_id=input.agent_id,
            occurred_at=now,
            agent_run_id=input.agent_run_id,
        )
    return SpendCreditsSuccess(
        usage_event=usage_event,
        balance=CreditBalance.of(result.balance),
        limit_warnings=limit_warnings(result.warnings),
    )
