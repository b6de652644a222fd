"""``spendCreditsBatch``: many spends in one request and one transaction (models/ledger/batch.py). Each event
is checked, priced and authorized as ``spendCredits`` does it; the ledger applies the rest together."""

from __future__ import annotations

from strawberry.types import Info

from billing import auto_top_up as billing_auto_top_up
from models import ledger
from models.tables import UsageEvent as UsageEventRow
from resolvers.context import Context
from resolvers.mutations._common import token_row
from resolvers.mutations.spend_credits import Priced, SpenderLookup, price, refusal, success
from resolvers.permissions import principal, require_scope
from schema.errors import ValidationError
from schema.mutations.spend_credits import (
    SpendCreditsBatchInput,
    SpendCreditsBatchResult,
    SpendCreditsBatchSuccess,
    SpendCreditsResult,
)


async def spend_credits_batch(info: Info[Context, None], input: SpendCreditsBatchInput) -> SpendCreditsBatchResult:
    """Spend for many agent events at once. Who may: as ``spendCredits``, event by event."""
    if denied := require_scope(info, "usage:write"):
        return denied
    ctx = info.context
    most = ctx.services.settings.batch_max_events
    if not input.events:
        return ValidationError(message="Give at least one event", field="events")
    if len(input.events) > most:
        return ValidationError(
            message=f"At most {most:,} events per batch, not {len(input.events):,}: send the rest in another",
            field="events",
        )
    results: list[SpendCreditsResult | None] = [None] * len(input.events)
    known: SpenderLookup = {}
    spends: list[ledger.BatchSpend] = []
    placed: list[int] = []
    token = token_row(principal(info).token_id)
    for n, event in enumerate(input.events):
        priced = await price(info, event, known)
        if not isinstance(priced, Priced):
            if isinstance(priced, ValidationError):
                priced = ValidationError(
                    message=priced.message, field=f"events.{n}" + ("" if priced.field is None else f".{priced.field}")
                )
            results[n] = priced
            continue
        spends.append(
            ledger.BatchSpend(
                priced.who.account,
                priced.who.user_id,
                priced.who.organization_id,
                event.agent_id,
                event.activity,
                priced.credits,
                None if event.quantity is None else int(event.quantity),
                priced.idem,
                event.agent_run_id,
                token,
            )
        )
        placed.append(n)
    now = ctx.now()
    if spends:
        done = await ledger.spend_batch(spends, now=now, auto_top_up=billing_auto_top_up.terms(ctx.services))
        ctx.services.bus.publish(done.changes)
        for top_up in done.queued_top_ups:
            billing_auto_top_up.kick(ctx.services, top_up)  # charged outside the batch's transaction
        replayed = [o.usage_event_id for o in done.outcomes if isinstance(o, ledger.SpendResult) and o.replayed]
        rows = {row.id: row for row in await UsageEventRow.filter(id__in=replayed)} if replayed else {}
        for n, outcome in zip(placed, done.outcomes, strict=True):
            event = input.events[n]
            if isinstance(outcome, ledger.SpendResult):
                results[n] = success(event, outcome, rows.get(outcome.usage_event_id), now)
            else:
                results[n] = refusal(info, outcome, event)
    return SpendCreditsBatchSuccess(results=[r for r in results if r is not None])
