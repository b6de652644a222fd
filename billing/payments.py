"""Payments for credit on a card-on-file gateway: the price, saving cards, and a top-up's three steps.

A payment is written PENDING in its own database transaction (``models.payments.start_top_up``), charged
outside any transaction with the processor idempotency key ``creditline-transaction-<id>``, then completed
under the account's lock. Charging again (a resend, the reconcile job) sends the very same request, so
the processor answers it once and we never pay twice. Hosted checkout pages are in ``billing.checkout``.
"""

from __future__ import annotations

import logging

from billing.customers import customer_for
from billing.errors import InvalidPaymentTokenError, PaymentMethodNotFoundError, PaymentUnavailableError
from creditline.services import Services
from gateway.base import Gateway, GatewayError, GatewayUnavailable, InvalidPaymentToken
from models import money, payments, subscriptions
from models.credits import MICRO
from models.ledger import Event, IdempotencyKey
from models.tables import PaymentMethod as PaymentMethodRow
from models.tables import Transaction as TransactionRow
from models.tables import TransactionStatus, TransactionType

log = logging.getLogger("creditline.payments")

STILL_IN_FLIGHT = (
    "The first request with this idempotencyKey is still waiting for the payment's outcome:"
    " send the same request again to get its answer"
)
"""The answer to a resend whose first call is still waiting for the payment's outcome."""


def price(services: Services) -> money.Price:
    """What credit costs, from settings: the one place a price is made."""
    settings = services.settings
    return money.Price(settings.currency, settings.price_per_100_credits)


async def saved_card(account_id: int, method_id: int | None) -> PaymentMethodRow:
    """One of the account's saved cards (not removed); ``PaymentMethodNotFoundError`` otherwise, also when the
    id did not decode (``None``)."""
    method = (
        None
        if method_id is None
        else await PaymentMethodRow.filter(id=method_id, account_id=account_id, removed_at=None).first()
    )
    if method is None:
        raise PaymentMethodNotFoundError
    return method


async def default_card(account_id: int) -> PaymentMethodRow | None:
    """The account's default saved card, if it has one."""
    return await PaymentMethodRow.filter(account_id=account_id, removed_at=None, is_default=True).first()


def processor_key(transaction_id: int) -> str:
    """The idempotency key every request to the processor about one of our transactions carries: sent again
    (a replay, the reconcile job), it gets the first request's answer instead of a second payment."""
    return f"creditline-transaction-{transaction_id}"


def subscription_billing(services: Services) -> subscriptions.Billing:
    settings = services.settings
    return subscriptions.Billing(settings.currency, settings.subscription_retry_days)


async def record_answer(
    services: Services, txn: TransactionRow, *, succeeded: bool, reference: str | None, failure_reason: str | None
) -> tuple[TransactionRow, tuple[Event, ...]]:
    """Record a gateway's answer to a PENDING payment: a subscription period moves its subscription too.
    The caller publishes the returned changes (after commit, which has happened on return)."""
    if txn.subscription_id is not None:
        return await subscriptions.complete(
            txn.id,
            succeeded=succeeded,
            reference=reference,
            failure_reason=failure_reason,
            plans=services.plans,
            billing=subscription_billing(services),
            now=services.clock.now(),
        )
    return await payments.complete(
        txn.id, succeeded=succeeded, reference=reference, failure_reason=failure_reason, now=services.clock.now()
    )


async def charge_pending(services: Services, txn: TransactionRow) -> TransactionRow:
    """Charge a PENDING transaction and record the answer. Charged outside any database transaction, with
    an idempotency key made from our own id, so charging again (the reconcile job) never pays twice."""
    gateway = services.gateway
    try:
        # Every argument comes from the stored row: a retry must send the very same request.
        saved = txn.payment_method_id is not None
        charge = await gateway.charge(
            amount=txn.amount,
            currency=txn.currency,
            card=txn.card_reference or "",
            idempotency_key=processor_key(txn.id),
            description=f"{txn.credits // MICRO} credits",
            customer=await customer_for(gateway, txn.account_id, services.clock.now()) if saved else None,
            off_session=txn.type != TransactionType.TOP_UP,
        )
    except (GatewayError, GatewayUnavailable):
        return txn  # the outcome is unknown: it stays PENDING for the reconcile job
    completed, changes = await record_answer(
        services, txn, succeeded=charge.succeeded, reference=charge.reference, failure_reason=charge.failure_reason
    )
    services.bus.publish(changes)
    return completed


async def charged(services: Services, txn: TransactionRow, *, new: bool) -> TransactionRow:
    """The outcome of a payment a request wrote (``new``) or found again by its idempotency key: a new one
    is charged now; a resend waits briefly for its first call's answer. Raises ``PaymentUnavailableError``
    while that first call is still charging it."""
    if new:
        return await charge_pending(services, txn)
    if txn.status == TransactionStatus.PENDING:
        wait = services.settings.replay_wait_seconds
        txn, in_flight = await payments.settled(txn, wait_seconds=wait, now=services.clock.now())
        if in_flight:
            raise PaymentUnavailableError(STILL_IN_FLIGHT)
    return txn


async def _card_reference(gateway: Gateway, method: PaymentMethodRow | None, payment_token: str | None) -> str:
    if method is not None:
        return method.reference
    assert payment_token is not None
    try:
        return (await gateway.save_card(payment_token)).reference
    except InvalidPaymentToken as exc:
        raise InvalidPaymentTokenError(str(exc)) from exc
    except (GatewayError, GatewayUnavailable) as exc:
        raise PaymentUnavailableError(str(exc)) from exc


async def top_up(
    services: Services,
    account_id: int,
    *,
    credits: int,
    method: PaymentMethodRow | None,
    payment_token: str | None,
    idem: IdempotencyKey,
) -> TransactionRow:
    """Buy ``credits`` of PAID credit once, with a saved card or a one-off token (exactly one is given).
    Returns the transaction: SUCCEEDED, FAILED (declined; ``failure_reason`` says why), or PENDING when the
    processor's answer is unknown (the reconcile job finishes it). A refusal raises ``InvalidPaymentTokenError``,
    ``PaymentUnavailableError`` or ``models.ledger.IdempotencyConflictError`` and writes nothing."""
    gateway = services.gateway
    card = await _card_reference(gateway, method, payment_token)
    txn, new = await payments.start_top_up(
        account_id,
        credits=credits,
        price=price(services),
        gateway=gateway.name,
        payment_method_id=None if method is None else method.id,
        card_reference=card,
        kind=TransactionType.TOP_UP,
        idem=idem,
        now=services.clock.now(),
    )
    return await charged(services, txn, new=new)


async def save_card(services: Services, account_id: int, token: str) -> PaymentMethodRow:
    """Save a card on a card-on-file gateway (at the processor, then here); the account's first card becomes
    its default. Raises ``InvalidPaymentTokenError`` or ``PaymentUnavailableError``, saving nothing."""
    gateway = services.gateway
    try:
        customer = await customer_for(gateway, account_id, services.clock.now())
        card = await gateway.save_card(token, customer=customer)
    except InvalidPaymentToken as exc:
        raise InvalidPaymentTokenError(str(exc)) from exc
    except (GatewayError, GatewayUnavailable) as exc:
        raise PaymentUnavailableError(str(exc)) from exc
    details = payments.CardDetails(card.reference, card.brand, card.last4, card.exp_month, card.exp_year)
    return await payments.save_card(account_id, gateway=gateway.name, card=details, now=services.clock.now())


async def remove_card(services: Services, account_id: int, method_id: int) -> PaymentMethodRow | None:
    """Remove a saved card here (``None`` if the account has no such card), then at the processor once that
    has committed. Raises ``models.payments.PaymentMethodInUseError`` while something still charges it."""
    removed = await payments.remove_card(account_id, method_id, services.clock.now())
    if removed is not None:
        try:
            await services.gateway.remove_card(removed.reference)
        except (GatewayError, GatewayUnavailable) as exc:
            log.warning("payment method %s removed here but not at the processor: %s", removed.id, exc)
    return removed
