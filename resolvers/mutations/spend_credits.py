from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
from schema.errors import Forbidden, NotFound, ValidationError
from schema.mutations.spend_credits import SpendCreditsInput, SpendCreditsResult, SpendCreditsSuccess
from schema.scalars import Credits
from schema.types import CreditBalance, UsageEvent

SpenderLookup = dict[tuple[str | None, str | None, str | None, str | None], Spender | NotFound | ValidationError]
"""Spenders resolved already (by the input's four references): a batch names each one once."""


@dataclass(frozen=True, slots=True)
class Priced:
    """A spend's input checked, priced and resolved: what the ledger takes."""

    who: Spender
    credits: int
    idem: ledger.IdempotencyKey


async def spend_credits(info: Info[Context, None], input: SpendCreditsInput) -> SpendCreditsResult:
    """Spend credit for an agent's work. Service tokens with ``usage:write`` and admins only."""
    if denied := require_scope(info, "usage:write"):
        return denied
    priced = await price(info, input)
    if not isinstance(priced, Priced):
        return priced
    ctx = info.context
    now = ctx.now()
    try:
        result = await ledger.spend(
            priced.who.account,
            user_id=priced.who.user_id,
            organization_id=priced.who.organization_id,
            agent_id=input.agent_id,
            activity=input.activity,
            credits=priced.credits,
            quantity=input.quantity,
            idem=priced.idem,
            now=now,
            auto_top_up=billing_auto_top_up.terms(ctx.services),
            run_id=input.agent_run_id,
            token_id=token_row(principal(info).token_id),
        )
    except ledger.LedgerError as exc:
        return refusal(info, exc, input)
    ctx.services.bus.publish(result.changes)
    billing_auto_top_up.kick(ctx.services, result.queued_top_up)  # charged outside the spend's transaction
    usage_row = await UsageEventRow.get(id=result.usage_event_id) if result.replayed else None
    return success(input, result, usage_row, now)


async def price(
    info: Info[Context, None], input: SpendCreditsInput, known: SpenderLookup | None = None
) -> Priced | ValidationError | Forbidden | NotFound:
    """Check a spend's input, price it (rate card or credits), resolve its spender and its key (``known``:
    spenders resolved before, kept there), and check that the caller may spend so (no statement but the
    spender's lookup)."""
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
        rated = info.context.services.rate_card.price(input.activity, int(input.quantity))
        if rated is None:
            return ValidationError(
                message=f"Activity {input.activity!r} is not on the rate card: give credits instead",
                field="activity",
            )
        credits = max(rated, 1)
    names = (input.user_id, input.organization_id, input.external_user_id, input.external_organization_id)
    who = None if known is None else known.get(names)
    if who is None:
        who = await spender(*names)
        if known is not None:
            known[names] = who
    if denied := delegation.spend_refusal(principal(info), who, input.agent_id, input.activity):
        return denied
    if not isinstance(who, Spender):
        return who
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "spendCredits",
        {
            "user": who.user_id,
            "organization": who.organization_id,
            "agent": input.agent_id,
            # Only when given: a key stored before runs existed replays as the same request.
            **({"run": input.agent_run_id} if input.agent_run_id is not None else {}),
            "activity": input.activity,
            "credits": input.credits,
            "quantity": input.quantity,
        },
    )
    return Priced(who, credits, idem)


def refusal(info: Info[Context, None], exc: ledger.LedgerError, input: SpendCreditsInput) -> SpendCreditsResult:
    """The typed error of a spend the ledger refused."""
    if isinstance(exc, CREDIT_REFUSALS):
        return credit_refusal(exc, "spend", info.context.services.bus)
    if isinstance(exc, ledger.IdempotencyConflictError):
        return conflict(input.idempotency_key)
    if isinstance(exc, ledger.NotFoundError):
        return NotFound(message="User not found")
    raise exc


def success(
    input: SpendCreditsInput, result: ledger.SpendResult, usage_row: UsageEventRow | None, now: datetime
) -> SpendCreditsSuccess:
    """A spend's success; a replay's usage event as it was recorded (``usage_row``)."""
    if usage_row is not None:
        usage_event = UsageEvent.of(usage_row)
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
