"""Stripe Billing's events for subscriptions on the ``stripe`` gateway (dispatched by billing/webhook_events.py).

Stripe renews the subscriptions it bills; these events move ours:
- ``checkout.session.completed`` (subscription mode) links ours to the Stripe subscription;
  ``checkout.session.expired`` fails the first payment and cancels the INCOMPLETE subscription;
- ``invoice.paid`` grants and invoices the period paid for, once per Stripe invoice;
- ``invoice.payment_failed`` records the failed attempt (once per attempt) and makes it PAST_DUE;
- ``customer.subscription.updated`` / ``deleted`` make ours agree with the subscription as Stripe has it
  now: it is retrieved, so the order in which these events arrive does not matter.

Ours is found by the id in the metadata we gave the Stripe subscription (copied onto its invoices), else by
the Stripe subscription id once linked. Events for Stripe subscriptions that are not ours are acknowledged
and ignored; an event that names ours before our rows are committed is kept and retried by the sweep.

The gateway's types are translated here into the primitives models/hosted_subscriptions.py records
(``billed_period``, ``processor_state``): what Stripe's statuses and cancellation reasons mean for ours is
decided here.
"""

from __future__ import annotations

import logging

from billing.checkout import CHECKOUT_FAILURES
from billing.webhook_handler import Changes, HandlerTable, WebhookContext, handles
from gateway.base import (
    CheckoutState,
    GatewayError,
    GatewayEvent,
    HostedGateway,
    HostedInvoice,
    HostedSubscription,
    PaymentRefused,
)
from gateway.stripe import ours_in
from gateway.stripe_events import event_invoice, event_subscription, text_field
from models import hosted_subscriptions, subscriptions
from models.hosted_subscriptions import BilledPeriod, ProcessorState
from models.plans import PlanCatalog, PlanSpec
from models.tables import Subscription, SubscriptionStatus, Transaction, TransactionStatus

log = logging.getLogger("creditline.webhooks")

HANDLERS: HandlerTable = {}

RETRY_LATER: Changes | None = None
"""A handler's answer when the event cannot be applied yet (our rows are not committed, Stripe was not reached):
it stays stored and unprocessed, and the sweep tries again."""


HOSTED_STATUS = {
    "active": SubscriptionStatus.ACTIVE,
    "trialing": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED,
    "unpaid": SubscriptionStatus.CANCELED,
    "incomplete_expired": SubscriptionStatus.CANCELED,
}
"""The processor's statuses that move ours (incomplete and paused leave it as it is)."""

CANCELLATION_REASONS = {
    "cancellation_requested": "Canceled by the customer",
    "payment_failed": "Canceled after failed payments",
    "payment_disputed": "Canceled after a disputed payment",
}


def plan_for_price(plans: PlanCatalog, price: str | None) -> PlanSpec | None:
    """The plan billed at a Stripe Price."""
    return next((plan for plan in plans.plans.values() if price and plan.stripe_price == price), None)


def billed_period(invoice: HostedInvoice) -> BilledPeriod:
    """A processor invoice as the period it bills (the first one, or a renewal)."""
    return BilledPeriod(
        invoice=invoice.reference,
        subscription=invoice.subscription,
        first=invoice.billing_reason == "subscription_create",
        amount=invoice.amount,
        currency=invoice.currency,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        attempt=invoice.attempt_count,
        next_attempt_at=invoice.next_payment_attempt,
    )


def processor_state(plans: PlanCatalog, hosted: HostedSubscription) -> ProcessorState:
    """A processor subscription as what ours should become."""
    billed = plan_for_price(plans, hosted.price)
    return ProcessorState(
        reference=hosted.reference,
        status=HOSTED_STATUS.get(hosted.status),
        cancellation_reason=CANCELLATION_REASONS.get(
            hosted.cancellation_reason or "", f"Canceled in Stripe ({hosted.status})"
        ),
        canceled_at=hosted.canceled_at,
        cancel_at_period_end=hosted.cancel_at_period_end,
        current_period_start=hosted.current_period_start,
        current_period_end=hosted.current_period_end,
        plan_id=None if billed is None else billed.id,
    )


async def find(reference: str, ours: int | None) -> Subscription | bool:
    """Our subscription behind a Stripe subscription: the row, False when it is not one of ours (or names one
    that is linked to another Stripe subscription), True when it names ours but the row is not there yet."""
    if ours is not None:
        sub = await Subscription.filter(id=ours).first()
        if sub is None:
            return True
        if sub.gateway != "stripe" or sub.external_reference not in (None, reference):
            log.warning("Stripe subscription %s names subscription %s, linked elsewhere: ignored", reference, ours)
            return False
        return sub
    linked = await Subscription.filter(external_reference=reference, gateway="stripe").first()
    return False if linked is None else linked


def _missing_or_not_ours(found: bool) -> Changes | None:
    return RETRY_LATER if found else ()


def _billed_plan(ctx: WebhookContext, invoice: HostedInvoice) -> PlanSpec | None:
    plan = plan_for_price(ctx.plans, invoice.price)
    if plan is None:
        log.error("invoice %s bills price %s, which no plan has", invoice.reference, invoice.price)
    return plan


@handles(HANDLERS, "checkout.session.completed", mode="subscription")
async def _checkout_completed(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    session = event.object
    text_field(session, "id")
    made = session.get("subscription")
    reference = made.get("id") if isinstance(made, dict) else made
    if not isinstance(reference, str):
        return ()
    sub = await find(reference, ours_in(session.get("metadata")))
    if not isinstance(sub, Subscription):
        return _missing_or_not_ours(sub)
    await hosted_subscriptions.link(sub.id, reference)
    return ()


@handles(HANDLERS, "checkout.session.expired", mode="subscription")
async def _checkout_expired(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    session = event.object
    text_field(session, "id")
    ours = ours_in(session.get("metadata"))
    sub = None if ours is None else await Subscription.filter(id=ours, gateway="stripe").first()
    if sub is None:
        return () if ours is None else RETRY_LATER
    first = await Transaction.filter(subscription_id=sub.id).order_by("id").first()
    if first is None or first.status != TransactionStatus.PENDING or first.gateway_reference != session.get("id"):
        return ()  # paid, failed already, or not the page we opened
    _, changes = await subscriptions.complete(
        first.id,
        succeeded=False,
        reference=first.gateway_reference,
        failure_reason=CHECKOUT_FAILURES[CheckoutState.EXPIRED],
        plans=ctx.plans,
        billing=ctx.billing,
        now=ctx.now,
    )
    return changes


@handles(HANDLERS, "invoice.paid")
async def _invoice_paid(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    invoice = event_invoice(event)
    if invoice is None:
        return ()  # not a subscription's invoice
    sub = await find(invoice.subscription, invoice.ours)
    if not isinstance(sub, Subscription):
        return _missing_or_not_ours(sub)
    if invoice.billing_reason not in ("subscription_create", "subscription_cycle"):
        log.info("invoice %s (%s) grants nothing", invoice.reference, invoice.billing_reason)
        return ()
    plan = _billed_plan(ctx, invoice)
    if plan is None and invoice.billing_reason == "subscription_cycle":
        return RETRY_LATER  # kept unprocessed: configure the plan and the sweep grants the period
    return await hosted_subscriptions.record_invoice_paid(sub.id, billed_period(invoice), plan, ctx.plans, ctx.now)


@handles(HANDLERS, "invoice.payment_failed")
async def _invoice_failed(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    invoice = event_invoice(event)
    if invoice is None:
        return ()
    sub = await find(invoice.subscription, invoice.ours)
    if not isinstance(sub, Subscription):
        return _missing_or_not_ours(sub)
    if invoice.billing_reason == "subscription_create":
        return ()  # Checkout collects the first payment: its page stays open, or expires
    retry = invoice.next_payment_attempt
    reason = f"Stripe could not collect the payment (attempt {invoice.attempt_count})" + (
        f", next attempt {retry:%Y-%m-%d %H:%M} UTC" if retry is not None else ", no further attempt scheduled"
    )
    await hosted_subscriptions.record_invoice_failed(
        sub.id, billed_period(invoice), _billed_plan(ctx, invoice), reason, ctx.now
    )
    return ()


@handles(HANDLERS, "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
async def _subscription_changed(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    told = event_subscription(event)
    sub = await find(told.reference, told.ours)
    if not isinstance(sub, Subscription):
        return _missing_or_not_ours(sub)
    gateway = ctx.gateway
    if not isinstance(gateway, HostedGateway):
        return ()
    try:
        current = await gateway.subscription(told.reference)  # as it stands now, whatever the event's age
    except PaymentRefused as exc:
        log.warning("Stripe does not know subscription %s: %s", told.reference, exc)
        return ()
    except GatewayError as exc:
        log.warning("Stripe subscription %s not retrieved, retried later: %s", told.reference, exc)
        return RETRY_LATER
    await hosted_subscriptions.sync(sub.id, processor_state(ctx.plans, current), ctx.now)
    return ()
