"""Subscriptions: subscribe, cancel (at period end or now), resume, change plan and the card renewals are
charged to. On a card-on-file gateway we bill them (renewals: ``billing.reconcile.renew_subscriptions``);
on a hosted gateway the processor does, and each change goes through it (``billing.hosted_subscriptions``).
"""

from __future__ import annotations

from billing import hosted_subscriptions
from billing.checkout import opened
from billing.errors import PaymentMethodNotFoundError, SubscriptionNotChangeableError
from billing.payments import charged, subscription_billing
from creditline.services import Services
from gateway.base import HostedGateway
from models import subscriptions
from models.ledger import IdempotencyKey
from models.plans import PlanSpec
from models.tables import PaymentMethod as PaymentMethodRow
from models.tables import Subscription as SubscriptionRow
from models.tables import Transaction as TransactionRow
from models.tables import TransactionStatus


async def subscribe(
    services: Services, account_id: int, *, plan: PlanSpec, method: PaymentMethodRow | None, idem: IdempotencyKey
) -> tuple[SubscriptionRow, TransactionRow]:
    """Subscribe the account to ``plan``: an INCOMPLETE subscription and its first period's PENDING payment,
    charged now to ``method`` (card on file) or paid on a Checkout page (hosted: the transaction carries its
    ``checkout_url``). The first period's credit is granted when it is paid. Returns both as they are now.
    Raises ``models.subscriptions.AlreadySubscribedError``, ``models.ledger.IdempotencyConflictError`` or
    ``PaymentUnavailableError`` (a page that could not be opened, or a resend whose first call is still
    charging)."""
    gateway = services.gateway
    sub, txn, new = await subscriptions.start(
        account_id,
        plan=plan,
        billing=subscription_billing(services),
        gateway=gateway.name,
        payment_method_id=None if method is None else method.id,
        card_reference=None if method is None else method.reference,
        idem=idem,
        now=services.clock.now(),
    )
    if isinstance(gateway, HostedGateway):
        if txn.status == TransactionStatus.PENDING and txn.checkout_url is None:
            txn = await opened(hosted_subscriptions.open_subscription_checkout(services, gateway, txn))
    else:
        txn = await charged(services, txn, new=new)
    return await SubscriptionRow.get(id=sub.id), txn


async def cancel(services: Services, live: SubscriptionRow, *, at_period_end: bool) -> SubscriptionRow:
    """Cancel at the end of the paid period (the credit granted for it stays), or now. Raises
    ``SubscriptionNotChangeableError`` (or, hosted, ``PaymentUnavailableError``)."""
    gateway = services.gateway
    if isinstance(gateway, HostedGateway):
        return await hosted_subscriptions.cancel(services, gateway, live, at_period_end=at_period_end)
    try:
        return await subscriptions.cancel(live, at_period_end=at_period_end, now=services.clock.now())
    except subscriptions.SubscriptionStateError as exc:
        raise SubscriptionNotChangeableError(str(exc)) from exc


async def resume(services: Services, live: SubscriptionRow) -> SubscriptionRow:
    """Keep a subscription that was set to cancel at period end."""
    gateway = services.gateway
    if isinstance(gateway, HostedGateway):
        return await hosted_subscriptions.resume(services, gateway, live)
    try:
        return await subscriptions.resume(live)
    except subscriptions.SubscriptionStateError as exc:
        raise SubscriptionNotChangeableError(str(exc)) from exc


async def change_plan(services: Services, live: SubscriptionRow, plan: PlanSpec) -> SubscriptionRow:
    """Switch plans from the next renewal on: the period paid for keeps its plan and credit. On a hosted
    gateway ``plan`` must have a Stripe price."""
    gateway = services.gateway
    if isinstance(gateway, HostedGateway):
        return await hosted_subscriptions.change_plan(services, gateway, live, plan)
    try:
        return await subscriptions.change_plan(live, plan)
    except subscriptions.SubscriptionStateError as exc:
        raise SubscriptionNotChangeableError(str(exc)) from exc


async def set_payment_method(live: SubscriptionRow, payment_method_id: int) -> SubscriptionRow:
    """Charge renewals to another of the account's saved cards (so the old one can be removed). Raises
    ``PaymentMethodNotFoundError`` or ``SubscriptionNotChangeableError``."""
    try:
        changed = await subscriptions.set_payment_method(live, payment_method_id)
    except subscriptions.SubscriptionStateError as exc:
        raise SubscriptionNotChangeableError(str(exc)) from exc
    if changed is None:
        raise PaymentMethodNotFoundError()
    return changed
