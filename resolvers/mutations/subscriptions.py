"""Subscriptions: subscribe, cancel (at period end or now), resume and change plan. Who may, and which input
is valid, is decided here; what happens is billing's (``billing.subscriptions``)."""

from __future__ import annotations

from strawberry.types import Info

from billing import payments as billing_payments
from billing import subscriptions as billing_subscriptions
from billing.errors import PaymentMethodNotFoundError, PaymentUnavailableError, SubscriptionNotChangeableError
from gateway.base import HostedGateway
from models import subscriptions
from models.ids import decode_id
from models.ledger import IdempotencyConflictError, IdempotencyKey
from models.tables import CreditAccount as CreditAccountRow
from models.tables import PaymentMethod as PaymentMethodRow
from models.tables import Subscription as SubscriptionRow
from models.tables import TransactionStatus
from resolvers.context import Context
from resolvers.mutations._common import conflict
from resolvers.mutations.payments import NamesAccount, billing_account
from resolvers.permissions import principal
from resolvers.validation import check_identifier, check_key, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.subscriptions import (
    AlreadySubscribed,
    CancelSubscriptionInput,
    ChangePlanInput,
    ResumeSubscriptionInput,
    SetSubscriptionPaymentMethodInput,
    SubscribeInput,
    SubscribeResult,
    SubscribeSuccess,
    SubscriptionChangeResult,
    SubscriptionNotChangeable,
    SubscriptionSuccess,
)
from schema.payments import PaymentDeclined, PaymentUnavailable, Subscription, Transaction


def _unknown_plan(info: Info[Context, None], plan_id: str) -> ValidationError | None:
    plans = info.context.services.plans.plans
    if plan_id in plans:
        return None
    return ValidationError(message=f"Unknown plan {plan_id!r}: choose one of {', '.join(plans)}", field="planId")


async def _card(
    account: CreditAccountRow, payment_method_id: str | None
) -> PaymentMethodRow | NotFound | ValidationError:
    """The saved card a card-on-file subscription is charged to: the one given, else the account's default."""
    if payment_method_id is not None:
        try:
            return await billing_payments.saved_card(account.id, decode_id(payment_method_id, "PaymentMethod"))
        except PaymentMethodNotFoundError as exc:
            return NotFound(message=exc.message)
    method = await billing_payments.default_card(account.id)
    if method is None:
        return ValidationError(
            message="The account has no saved card: add one or give paymentMethodId", field="paymentMethodId"
        )
    return method


async def subscribe(info: Info[Context, None], input: SubscribeInput) -> SubscribeResult:
    """Subscribe the account to a plan: the first period is charged now and its credit granted when paid."""
    ctx = info.context
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    if invalid := first_error(
        check_key(input.idempotency_key),
        check_identifier(input.plan_id, "planId", 64),
        _unknown_plan(info, input.plan_id),
    ):
        return invalid
    gateway = ctx.services.gateway
    plan = ctx.services.plans.get(input.plan_id)
    assert plan is not None
    hosted = isinstance(gateway, HostedGateway)
    if invalid := first_error(
        ValidationError(
            message=f"The plan {plan.id} has no Stripe price: it cannot be subscribed to on the stripe gateway",
            field="planId",
        )
        if hosted and plan.stripe_price is None
        else None,
        ValidationError(message="Give no paymentMethodId: the card is entered at checkout", field="paymentMethodId")
        if hosted and input.payment_method_id is not None
        else None,
    ):
        return invalid
    if reason := gateway.unavailable_reason():
        return PaymentUnavailable(message=reason)
    method: PaymentMethodRow | None = None
    if not hosted:
        card = await _card(account, input.payment_method_id)
        if not isinstance(card, PaymentMethodRow):
            return card
        method = card
    idem = IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "subscribe",
        {"account": account.id, "plan": plan.id, "method": None if method is None else method.id},
    )
    try:
        sub, txn = await billing_subscriptions.subscribe(ctx.services, account.id, plan=plan, method=method, idem=idem)
    except IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except subscriptions.AlreadySubscribedError as exc:
        return AlreadySubscribed(
            message="The account already has a subscription: change its plan instead",
            subscription=Subscription.of(await SubscriptionRow.get(id=exc.subscription_id)),
        )
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    if txn.status == TransactionStatus.FAILED:
        reason = txn.failure_reason or "Payment failed"
        return PaymentDeclined(message=f"The payment failed: {reason}", reason=reason, transaction=Transaction.of(txn))
    shown = Transaction.of(txn)
    return SubscribeSuccess(subscription=Subscription.of(sub), transaction=shown, checkout_url=shown.checkout_url)


async def _live(
    info: Info[Context, None], input: NamesAccount, plan_id: str | None = None
) -> SubscriptionRow | SubscriptionChangeResult:
    """The account's live subscription, once the caller may manage the account and the plan (if any) exists."""
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    if plan_id is not None and (
        invalid := first_error(check_identifier(plan_id, "planId", 64), _unknown_plan(info, plan_id))
    ):
        return invalid
    live = await subscriptions.live_subscription(account.id)
    if live is None:
        return NotFound(message="The account has no active subscription")
    gateway = info.context.services.gateway
    if live.gateway != gateway.name:
        return PaymentUnavailable(
            message=f"This subscription is billed on the {live.gateway} gateway, which is not active"
        )
    return live


def _changed(live: SubscriptionRow, error: Exception) -> SubscriptionChangeResult:
    """The GraphQL answer to a refused change of ``live`` (as it was before)."""
    if isinstance(error, SubscriptionNotChangeableError):
        return SubscriptionNotChangeable(message=error.message, subscription=Subscription.of(live))
    if isinstance(error, PaymentMethodNotFoundError):
        return NotFound(message=error.message)
    assert isinstance(error, PaymentUnavailableError)
    return PaymentUnavailable(message=error.message)


REFUSALS = (SubscriptionNotChangeableError, PaymentMethodNotFoundError, PaymentUnavailableError)


async def cancel_subscription(info: Info[Context, None], input: CancelSubscriptionInput) -> SubscriptionChangeResult:
    """Cancel at the end of the paid period (the credit granted for it stays), or now."""
    live = await _live(info, input)
    if not isinstance(live, SubscriptionRow):
        return live
    try:
        changed = await billing_subscriptions.cancel(info.context.services, live, at_period_end=input.at_period_end)
    except REFUSALS as exc:
        return _changed(live, exc)
    return SubscriptionSuccess(subscription=Subscription.of(changed))


async def resume_subscription(info: Info[Context, None], input: ResumeSubscriptionInput) -> SubscriptionChangeResult:
    """Keep a subscription that was set to cancel at period end."""
    live = await _live(info, input)
    if not isinstance(live, SubscriptionRow):
        return live
    try:
        changed = await billing_subscriptions.resume(info.context.services, live)
    except REFUSALS as exc:
        return _changed(live, exc)
    return SubscriptionSuccess(subscription=Subscription.of(changed))


async def change_plan(info: Info[Context, None], input: ChangePlanInput) -> SubscriptionChangeResult:
    """Switch plans from the next renewal on: the period paid for keeps its plan and credit."""
    live = await _live(info, input, input.plan_id)
    if not isinstance(live, SubscriptionRow):
        return live
    services = info.context.services
    plan = services.plans.get(input.plan_id)
    assert plan is not None
    if isinstance(services.gateway, HostedGateway) and plan.stripe_price is None:
        return ValidationError(
            message=f"The plan {plan.id} has no Stripe price: it cannot be billed on the stripe gateway",
            field="planId",
        )
    try:
        changed = await billing_subscriptions.change_plan(services, live, plan)
    except REFUSALS as exc:
        return _changed(live, exc)
    return SubscriptionSuccess(subscription=Subscription.of(changed))


async def set_subscription_payment_method(
    info: Info[Context, None], input: SetSubscriptionPaymentMethodInput
) -> SubscriptionChangeResult:
    """Charge renewals to another saved card (so the old one can be removed)."""
    live = await _live(info, input)
    if not isinstance(live, SubscriptionRow):
        return live
    if not info.context.services.gateway.card_on_file:
        return PaymentUnavailable(message="Cards are managed in the payment processor's customer portal")
    method_id = decode_id(input.payment_method_id, "PaymentMethod")
    if method_id is None:
        return NotFound(message="Payment method not found on this account")
    try:
        changed = await billing_subscriptions.set_payment_method(live, method_id)
    except REFUSALS as exc:
        return _changed(live, exc)
    return SubscriptionSuccess(subscription=Subscription.of(changed))
