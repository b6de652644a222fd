"""Top-ups through a hosted Checkout page (the stripe gateway): PENDING until the webhook or reconcile says.

``open_checkout`` is run outside any database transaction, after the PENDING row is committed, with the
Stripe idempotency key ``creditline-transaction-<id>``: a replay of the mutation, or the reconcile job after
a crash, gets the same page back instead of a second one.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from strawberry.types import Info
from tortoise import connections

from gateway.base import (
    CHECKOUT_FAILURES,
    CheckoutState,
    GatewayError,
    GatewayUnavailable,
    HostedGateway,
    PaymentCheckout,
    PaymentRefused,
)
from gateway.customers import customer_for
from models import payments
from models.credits import format_credits
from models.ledger import IdempotencyConflictError, IdempotencyKey
from models.sql import Sql
from models.tables import CreditAccount as CreditAccountRow
from models.tables import Transaction as TransactionRow
from models.tables import TransactionStatus, TransactionType
from resolvers.context import Context, Services
from resolvers.ids import encode_id
from resolvers.mutations._common import conflict
from resolvers.permissions import principal
from schema.payments import PaymentDeclined, PaymentUnavailable, TopUpResult, TopUpSuccess, Transaction

CHECKOUT_LIFETIME = timedelta(hours=25)
"""Stripe keeps a Checkout page and an idempotency key 24 hours: after that an unopened page never will be."""


async def top_up_by_checkout(
    info: Info[Context, None], gateway: HostedGateway, account: CreditAccountRow, credits: int, key: str
) -> TopUpResult:
    ctx = info.context
    idem = IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        key,
        "topUp",
        {"account": account.id, "credits": credits, "method": None, "token": None},
    )
    settings = ctx.services.settings
    try:
        txn, _ = await payments.start_top_up(
            account.id,
            credits=credits,
            price=payments.Price(settings.currency, settings.price_per_100_credits),
            gateway=gateway.name,
            payment_method_id=None,
            card_reference=None,
            kind=TransactionType.TOP_UP,
            idem=idem,
            now=ctx.now(),
        )
    except IdempotencyConflictError:
        return conflict(key)
    if txn.status == TransactionStatus.PENDING and txn.checkout_url is None:
        try:
            txn = await open_checkout(ctx.services, gateway, txn)
        except (GatewayError, GatewayUnavailable) as exc:
            return PaymentUnavailable(message=f"{exc} Send the same request again to get the checkout page.")
    if txn.status == TransactionStatus.FAILED:
        reason = txn.failure_reason or "Payment failed"
        return PaymentDeclined(message=f"The payment failed: {reason}", reason=reason, transaction=Transaction.of(txn))
    pending = txn.status == TransactionStatus.PENDING
    return TopUpSuccess(transaction=Transaction.of(txn), checkout_url=txn.checkout_url if pending else None)


def return_url(services: Services, **query: str) -> str:
    """A page of the web app that Stripe sends the customer back to."""
    return f"{services.settings.public_url}/billing" + (f"?{urlencode(query)}" if query else "")


async def open_checkout(services: Services, gateway: HostedGateway, txn: TransactionRow) -> TransactionRow:
    """Open (or find again) the Checkout page of a PENDING top-up and store its address. A refusal from the
    processor fails the transaction; a network failure raises ``GatewayError`` and leaves it PENDING."""
    customer = await customer_for(gateway, txn.account_id, services.clock.now())
    assert customer is not None
    transaction = encode_id("Transaction", txn.id)
    try:
        session = await gateway.create_payment_checkout(
            PaymentCheckout(
                transaction_id=txn.id,
                customer=customer,
                amount=txn.amount,
                currency=txn.currency,
                description=f"{format_credits(txn.credits)} credits",
                success_url=return_url(services, checkout="success", transaction=transaction),
                cancel_url=return_url(services, checkout="canceled", transaction=transaction),
                idempotency_key=f"creditline-transaction-{txn.id}",
            )
        )
    except PaymentRefused as exc:
        failed, changes = await payments.complete(
            txn.id, succeeded=False, reference=None, failure_reason=str(exc), now=services.clock.now()
        )
        services.bus.publish(changes)
        return failed
    # A webhook may have completed the transaction meanwhile: keep its status, and its reference if set.
    await Sql(connections.get("default")).execute(
        "UPDATE transactions SET checkout_url = $1, gateway_reference = COALESCE(gateway_reference, $2) WHERE id = $3",
        session.url,
        session.reference,
        txn.id,
    )
    return await TransactionRow.get(id=txn.id)


async def settle_checkout(services: Services, gateway: HostedGateway, txn: TransactionRow) -> TransactionRow:
    """Reconcile a PENDING hosted top-up with what the processor says (a webhook may have been missed)."""
    now = services.clock.now()
    if txn.gateway_reference is None:
        if now - txn.created_at > CHECKOUT_LIFETIME:
            reason = "The checkout page was never opened"
            failed, _ = await payments.complete(txn.id, succeeded=False, reference=None, failure_reason=reason, now=now)
            return failed
        # The request died between writing the row and storing the page: the same key finds the page.
        txn = await open_checkout(services, gateway, txn)
        if txn.status != TransactionStatus.PENDING or txn.gateway_reference is None:
            return txn
    outcome = await gateway.checkout_outcome(txn.gateway_reference)
    if outcome.state is CheckoutState.PAID or outcome.state in CHECKOUT_FAILURES:
        txn, changes = await payments.complete(
            txn.id,
            succeeded=outcome.state is CheckoutState.PAID,
            reference=outcome.reference,
            failure_reason=CHECKOUT_FAILURES.get(outcome.state),
            now=now,
        )
        services.bus.publish(changes)
    return txn
