"""Subscriptions on a hosted gateway (stripe): the processor bills each period and renews, and what it says moves ours.

Its events (billing/subscription_events.py, which translates them into the primitives here) record the paid
invoices (``record_invoice_paid``), the failed ones (``record_invoice_failed``) and the subscription's state
(``sync``), each once, under the account lock, whatever their order (docs/rules.md, Hosted
subscriptions and Webhooks once). The row helpers are models/subscriptions.py's, shared with card-on-file subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from models import event_data, ledger, payments
from models.ledger import Event
from models.outbox import EventType
from models.plans import PlanCatalog, PlanSpec
from models.sql import Sql, as_datetime
from models.subscriptions import SubscriptionStateError, grant_period, mark_canceled, subscription_row
from models.tables import Subscription, SubscriptionStatus

STRIPE_INVOICE_SCOPE = "stripe-invoice"
"""Idempotency scope of the transactions written for processor invoices (key: the invoice id)."""


@dataclass(frozen=True, slots=True)
class BilledPeriod:
    """A processor invoice of one subscription period: what was (or was to be) paid, and for which period."""

    invoice: str
    """The processor's invoice id."""
    subscription: str
    """The processor subscription it bills."""
    first: bool
    """The first period (paid on the Checkout page), else a renewal or another invoice."""
    amount: int
    """Minor units: the amount paid once paid, else the amount due."""
    currency: str
    period_start: datetime
    period_end: datetime
    attempt: int
    """How many times the processor tried to collect it."""
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProcessorState:
    """What the processor says of a subscription now, in our terms."""

    reference: str
    """The processor subscription's id."""
    status: SubscriptionStatus | None
    """The status ours takes; None leaves it as it is (the processor's incomplete or paused)."""
    cancellation_reason: str
    """Why it ended, when ``status`` is CANCELED."""
    canceled_at: datetime | None
    cancel_at_period_end: bool
    current_period_start: datetime | None
    current_period_end: datetime | None
    plan_id: str | None
    """The plan billed from the next renewal on; None when the price billed is no plan's."""


async def _lock_subscription(sql: Sql, subscription_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Lock the subscription's account; returns the account and the subscription as they are under the lock."""
    account_id = (await Subscription.get(id=subscription_id)).account_id
    account = await ledger.lock_account(sql, account_id)
    return account, await subscription_row(sql, subscription_id)


async def _link(sql: Sql, sub: dict[str, Any], reference: str) -> None:
    if sub["external_reference"] is None:
        await sql.execute(
            "UPDATE subscriptions SET external_reference = $1 WHERE id = $2 AND external_reference IS NULL",
            reference,
            sub["id"],
        )


async def link(subscription_id: int, reference: str) -> None:
    """Remember the processor subscription that stands for ours (the first one named wins)."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        _, sub = await _lock_subscription(sql, subscription_id)
        await _link(sql, sub, reference)


async def record_invoice_paid(
    subscription_id: int, invoice: BilledPeriod, plan: PlanSpec | None, plans: PlanCatalog, now: datetime
) -> tuple[Event, ...]:
    """Grant and invoice the period a processor invoice paid for, once per invoice: the first period completes
    the PENDING transaction ``start`` wrote; a renewal writes its own (idempotency key: the invoice id). The plan
    is the one billed (``plan``, from the invoice's price): a plan change takes effect with this period."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        account, sub = await _lock_subscription(sql, subscription_id)
        await _link(sql, sub, invoice.subscription)
        if invoice.first:
            first = await sql.fetchrow(
                "SELECT id FROM transactions WHERE subscription_id = $1 ORDER BY id LIMIT 1", subscription_id
            )
            assert first is not None
            transaction_id = int(first["id"])
            if await payments.pending_row(sql, transaction_id) is None:
                return ()
            await sql.execute(
                "UPDATE transactions SET period_start = $1, period_end = $2, amount = $3, currency = $4 WHERE id = $5",
                invoice.period_start,
                invoice.period_end,
                invoice.amount,
                invoice.currency,
                transaction_id,
            )
        else:
            if plan is not None and plan.id != sub["plan_id"]:
                next_plan = None if sub["next_plan_id"] == plan.id else sub["next_plan_id"]
                await sql.execute(
                    "UPDATE subscriptions SET plan_id = $1, next_plan_id = $2 WHERE id = $3",
                    plan.id,
                    next_plan,
                    subscription_id,
                )
                sub = await subscription_row(sql, subscription_id)
            credits = plan.credits if plan is not None else 0
            rows = await sql.fetch(
                "INSERT INTO transactions (account_id, type, status, credits, amount, currency, gateway,"
                " subscription_id, period_start, period_end, idempotency_scope, idempotency_key, request_hash,"
                " created_at) VALUES ($1, 'SUBSCRIPTION', 'PENDING', $2, $3, $4, 'stripe', $5, $6, $7, $8, $9, '',"
                " $10) ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING RETURNING id",
                int(account["id"]),
                credits,
                invoice.amount,
                invoice.currency,
                subscription_id,
                invoice.period_start,
                invoice.period_end,
                STRIPE_INVOICE_SCOPE,
                invoice.invoice,
                now,
            )
            if not rows:  # this invoice was recorded before
                return ()
            transaction_id = int(rows[0]["id"])
        row = await payments.pending_row(sql, transaction_id)
        assert row is not None
        return await grant_period(sql, account, row, sub, plans, invoice.invoice, now)


async def record_invoice_failed(
    subscription_id: int, invoice: BilledPeriod, plan: PlanSpec | None, reason: str, now: datetime
) -> None:
    """Record a failed renewal payment once per invoice attempt (a FAILED transaction the customer sees) and
    make the subscription PAST_DUE until the processor's next attempt, unless the invoice was paid meanwhile."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        account, sub = await _lock_subscription(sql, subscription_id)
        await _link(sql, sub, invoice.subscription)
        rows = await sql.fetch(
            "INSERT INTO transactions (account_id, type, status, credits, amount, currency, gateway,"
            " subscription_id, period_start, period_end, failure_reason, idempotency_scope, idempotency_key,"
            " request_hash, created_at, completed_at) VALUES ($1, 'SUBSCRIPTION', 'FAILED', $2, $3, $4, 'stripe',"
            " $5, $6, $7, $8, $9, $10, '', $11, $11) ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING"
            " RETURNING id",
            int(account["id"]),
            plan.credits if plan is not None else 0,
            invoice.amount,
            invoice.currency,
            subscription_id,
            invoice.period_start,
            invoice.period_end,
            reason,
            STRIPE_INVOICE_SCOPE,
            f"{invoice.invoice}/attempt-{invoice.attempt}",
            now,
        )
        if not rows:  # this attempt was recorded before
            return
        await event_data.payment_settled(sql, account, int(rows[0]["id"]), now)
        if sub["status"] not in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):
            return
        paid = await sql.fetchrow(
            "SELECT id FROM transactions WHERE idempotency_scope = $1 AND idempotency_key = $2",
            STRIPE_INVOICE_SCOPE,
            invoice.invoice,
        )
        if paid is not None:  # a later attempt paid this invoice and was recorded first
            return
        await sql.execute(
            "UPDATE subscriptions SET status = 'PAST_DUE', failed_attempts = $1, next_attempt_at = $2,"
            " status_reason = $3 WHERE id = $4",
            max(invoice.attempt, int(sub["failed_attempts"])),
            invoice.next_attempt_at,
            f"The renewal payment failed: {reason}",
            subscription_id,
        )
        if sub["status"] != SubscriptionStatus.PAST_DUE:  # once per lapse, as models/subscriptions.py
            await event_data.subscription_event(
                sql, EventType.SUBSCRIPTION_PAST_DUE, account, subscription_id, now, int(rows[0]["id"])
            )


async def sync(subscription_id: int, hosted: ProcessorState, now: datetime) -> None:
    """Make ours agree with the processor subscription as it stands now (its status, cancel at period end, the
    current period, the plan billed from the next renewal). An INCOMPLETE subscription becomes ACTIVE only
    when its first invoice is recorded as paid; a CANCELED one stays canceled."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        account, sub = await _lock_subscription(sql, subscription_id)
        await _link(sql, sub, hosted.reference)
        target = hosted.status
        if sub["status"] == SubscriptionStatus.CANCELED or target is None:
            return
        if target == SubscriptionStatus.CANCELED:
            if sub["status"] == SubscriptionStatus.INCOMPLETE:
                await _fail_pending(sql, subscription_id, "The first payment was not completed", now)
            await mark_canceled(sql, subscription_id, hosted.cancellation_reason, hosted.canceled_at or now)
            return
        if sub["status"] == SubscriptionStatus.INCOMPLETE:
            return
        billed = hosted.plan_id
        next_plan = sub["next_plan_id"] if billed is None else None if billed == sub["plan_id"] else billed
        start, end = hosted.current_period_start, hosted.current_period_end
        known_end = as_datetime(sub["current_period_end"])
        if start is None or end is None or (known_end is not None and end < known_end):
            start, end = None, None
        await sql.execute(
            "UPDATE subscriptions SET status = $1, cancel_at_period_end = $2, next_plan_id = $3,"
            " current_period_start = COALESCE($4, current_period_start), current_period_end = COALESCE($5,"
            " current_period_end) WHERE id = $6",
            target.value,
            hosted.cancel_at_period_end,
            next_plan,
            start,
            end,
            subscription_id,
        )
        if target == SubscriptionStatus.PAST_DUE and sub["status"] != SubscriptionStatus.PAST_DUE:
            await event_data.subscription_event(sql, EventType.SUBSCRIPTION_PAST_DUE, account, subscription_id, now)
        if target == SubscriptionStatus.ACTIVE:  # paid again: nothing is past due any more
            await sql.execute(
                "UPDATE subscriptions SET failed_attempts = 0, next_attempt_at = NULL, status_reason = NULL"
                " WHERE id = $1",
                subscription_id,
            )


async def _fail_pending(sql: Sql, subscription_id: int, reason: str, now: datetime) -> None:
    """Fail the subscription's PENDING payments (under the account lock), each with its ``payment.failed``."""
    failed = await sql.fetch(
        "UPDATE transactions SET status = 'FAILED', failure_reason = $1, completed_at = $2"
        " WHERE subscription_id = $3 AND status = 'PENDING' RETURNING id, account_id",
        reason,
        now,
        subscription_id,
    )
    for row in sorted(failed, key=lambda r: int(r["id"])):
        account = await event_data.account_row(sql, int(row["account_id"]))
        await event_data.payment_settled(sql, account, int(row["id"]), now)


async def cancel_unpaid(subscription: Subscription, now: datetime) -> Subscription:
    """Cancel a hosted subscription whose checkout was never finished (the page is closed first): its first
    payment fails and nothing was granted."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        _, current = await _lock_subscription(sql, subscription.id)
        if current["status"] != SubscriptionStatus.INCOMPLETE:
            raise SubscriptionStateError("Only a subscription whose checkout is not finished can be dropped")
        await _fail_pending(sql, subscription.id, "Canceled before payment", now)
        await mark_canceled(sql, subscription.id, "Canceled by the customer", now)
    return await Subscription.get(id=subscription.id)
