"""Subscriptions on a hosted gateway (stripe): paid on a subscription-mode Checkout page, billed and renewed by
the processor, whose events move ours (billing/subscription_events.py). Card-on-file subscriptions are in
``billing.subscriptions``, which calls down here on a hosted gateway.

The Checkout page is opened outside any database transaction, after the INCOMPLETE subscription and its
PENDING first payment are committed, with the idempotency key ``creditline-transaction-<id>``: a replay of
``subscribe``, or the reconcile job after a crash, gets the same page back. Cancel, resume and plan changes
are sent to the processor first; its answer is then recorded here so the customer sees it at once (the
webhook that follows agrees).
"""

from __future__ import annotations

from collections.abc import Awaitable

from billing.checkout import CHECKOUT_FAILURES, CHECKOUT_LIFETIME, return_url, store_page
from billing.customers import customer_for
from billing.errors import PaymentUnavailableError, SubscriptionNotChangeableError
from billing.payments import processor_key, subscription_billing
from billing.subscription_events import billed_period, plan_for_price, processor_state
from creditline.services import Services
from gateway.base import (
    CheckoutState,
    GatewayError,
    GatewayUnavailable,
    HostedGateway,
    HostedSubscription,
    PaymentRefused,
    SubscriptionCheckout,
)
from models import hosted_subscriptions, subscriptions
from models.ids import encode_id
from models.plans import PlanSpec
from models.tables import Subscription as SubscriptionRow
from models.tables import SubscriptionStatus, TransactionStatus
from models.tables import Transaction as TransactionRow


async def fail_first_payment(services: Services, txn: TransactionRow, reason: str) -> TransactionRow:
    """The first period was not paid: the transaction fails and the INCOMPLETE subscription is canceled."""
    failed, changes = await subscriptions.complete(
        txn.id,
        succeeded=False,
        reference=txn.gateway_reference,
        failure_reason=reason,
        plans=services.plans,
        billing=subscription_billing(services),
        now=services.clock.now(),
    )
    services.bus.publish(changes)
    return failed


async def open_subscription_checkout(services: Services, gateway: HostedGateway, txn: TransactionRow) -> TransactionRow:
    """Open (or find again) the Checkout page of a PENDING first period and store its address. A refusal from
    the processor fails it; a network failure raises ``GatewayError`` and leaves it PENDING."""
    assert txn.subscription_id is not None
    sub = await SubscriptionRow.get(id=txn.subscription_id)
    plan = services.plans.get(sub.plan_id)
    if plan is None or plan.stripe_price is None:
        return await fail_first_payment(services, txn, f"The plan {sub.plan_id} has no Stripe price")
    customer = await customer_for(gateway, txn.account_id, services.clock.now())
    assert customer is not None
    subscription = encode_id("Subscription", sub.id)
    try:
        session = await gateway.create_subscription_checkout(
            SubscriptionCheckout(
                subscription_id=sub.id,
                transaction_id=txn.id,
                customer=customer,
                price=plan.stripe_price,
                success_url=return_url(services, checkout="success", subscription=subscription),
                cancel_url=return_url(services, checkout="canceled", subscription=subscription),
                idempotency_key=processor_key(txn.id),
            )
        )
    except PaymentRefused as exc:
        return await fail_first_payment(services, txn, str(exc))
    return await store_page(txn, session)


async def settle_subscription_checkout(
    services: Services, gateway: HostedGateway, txn: TransactionRow
) -> TransactionRow:
    """Reconcile a PENDING first period with what the processor says (its webhooks may have been missed):
    a paid page completes it from the subscription's first invoice, an expired one fails it."""
    now = services.clock.now()
    if txn.gateway_reference is None:
        if now - txn.created_at > CHECKOUT_LIFETIME:
            return await fail_first_payment(services, txn, "The checkout page was never opened")
        txn = await open_subscription_checkout(services, gateway, txn)  # the same key finds the same page
        if txn.status != TransactionStatus.PENDING or txn.gateway_reference is None:
            return txn
    outcome = await gateway.checkout_outcome(txn.gateway_reference)
    if outcome.state in CHECKOUT_FAILURES:
        return await fail_first_payment(services, txn, CHECKOUT_FAILURES[outcome.state])
    if outcome.state is CheckoutState.PAID and outcome.subscription is not None:
        assert txn.subscription_id is not None
        invoice = await gateway.first_invoice(outcome.subscription)
        if invoice is None:
            await hosted_subscriptions.link(txn.subscription_id, outcome.subscription)
        else:
            plan = plan_for_price(services.plans, invoice.price)
            changes = await hosted_subscriptions.record_invoice_paid(
                txn.subscription_id, billed_period(invoice), plan, services.plans, now
            )
            services.bus.publish(changes)
    return await TransactionRow.get(id=txn.id)


def _linked(live: SubscriptionRow) -> str:
    """The processor's reference for ``live``; until its first webhook links it there is none to change."""
    if live.external_reference is None:
        raise PaymentUnavailableError("Stripe has not confirmed the subscription yet: try again in a moment")
    return live.external_reference


async def _recorded(
    services: Services, live: SubscriptionRow, change: Awaitable[HostedSubscription]
) -> SubscriptionRow:
    """Send a change to the processor, then record its answer so the customer sees it at once."""
    try:
        answer = await change
    except PaymentRefused as exc:
        raise SubscriptionNotChangeableError(f"Stripe refused the change: {exc}") from exc
    except (GatewayError, GatewayUnavailable) as exc:
        raise PaymentUnavailableError(str(exc)) from exc
    await hosted_subscriptions.sync(live.id, processor_state(services.plans, answer), services.clock.now())
    return await SubscriptionRow.get(id=live.id)


async def cancel(
    services: Services, gateway: HostedGateway, live: SubscriptionRow, *, at_period_end: bool
) -> SubscriptionRow:
    """Cancel at period end (Stripe keeps billing until then) or now. A subscription whose checkout is not
    finished is dropped here once its page is closed, so that it can no longer be paid. Returns the
    subscription as changed; raises ``SubscriptionNotChangeableError`` or ``PaymentUnavailableError``."""
    if live.status == SubscriptionStatus.INCOMPLETE:
        first = await TransactionRow.filter(subscription_id=live.id).order_by("id").first()
        try:
            if first is not None and first.gateway_reference is not None:
                await gateway.expire_checkout(first.gateway_reference)
        except PaymentRefused as exc:
            raise SubscriptionNotChangeableError("The checkout was completed: the payment is being confirmed") from exc
        except (GatewayError, GatewayUnavailable) as exc:
            raise PaymentUnavailableError(str(exc)) from exc
        try:
            return await hosted_subscriptions.cancel_unpaid(live, services.clock.now())
        except subscriptions.SubscriptionStateError as exc:  # paid meanwhile
            raise SubscriptionNotChangeableError(str(exc)) from exc
    reference = _linked(live)
    if at_period_end and live.status == SubscriptionStatus.ACTIVE:
        return await _recorded(services, live, gateway.update_subscription(reference, cancel_at_period_end=True))
    # A PAST_DUE subscription has no paid period left to wait for.
    return await _recorded(services, live, gateway.cancel_subscription(reference))


async def resume(services: Services, gateway: HostedGateway, live: SubscriptionRow) -> SubscriptionRow:
    if live.status != SubscriptionStatus.ACTIVE or not live.cancel_at_period_end:
        raise SubscriptionNotChangeableError("Only a subscription set to cancel at period end can be resumed")
    reference = _linked(live)
    return await _recorded(services, live, gateway.update_subscription(reference, cancel_at_period_end=False))


async def change_plan(
    services: Services, gateway: HostedGateway, live: SubscriptionRow, plan: PlanSpec
) -> SubscriptionRow:
    """Bill the new plan's price from the next renewal on (no proration): until then it shows as nextPlan."""
    if live.status not in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):
        raise SubscriptionNotChangeableError("Only an active subscription can change plans")
    reference = _linked(live)
    assert plan.stripe_price is not None
    price = plan.stripe_price

    async def new_price() -> HostedSubscription:
        current = await gateway.subscription(reference)
        if current.item is None:
            raise PaymentRefused("the subscription bills no price")
        return await gateway.update_subscription(reference, item=current.item, price=price)

    return await _recorded(services, live, new_price())
