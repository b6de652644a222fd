"""Top-ups through a hosted Checkout page (the stripe gateway): PENDING until the webhook or reconcile says.

``open_checkout`` is run outside any database transaction, after the PENDING row is committed, with the
Stripe idempotency key ``creditline-transaction-<id>``: a replay of the mutation, or the reconcile job after
a crash, gets the same page back instead of a second one.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from urllib.parse import urlencode

from billing.customers import customer_for
from billing.errors import PaymentUnavailableError
from billing.payments import price, processor_key
from creditline.services import Services
from gateway.base import (
    CheckoutSession,
    CheckoutState,
    GatewayError,
    GatewayUnavailable,
    HostedGateway,
    PaymentCheckout,
    PaymentRefused,
)
from models import payments
from models.credits import format_credits
from models.ids import encode_id
from models.ledger import IdempotencyKey
from models.tables import Transaction as TransactionRow
from models.tables import TransactionStatus, TransactionType

CHECKOUT_LIFETIME = timedelta(hours=25)
"""Stripe keeps a Checkout page and an idempotency key 24 hours: after that an unopened page never will be."""


CHECKOUT_FAILURES = {
    CheckoutState.EXPIRED: "The checkout page expired before payment",
    CheckoutState.FAILED: "The payment failed after checkout",
}
"""The failure reason a transaction gets when its Checkout page ends unpaid."""


async def top_up(
    services: Services, gateway: HostedGateway, account_id: int, *, credits: int, idem: IdempotencyKey
) -> TransactionRow:
    """Buy ``credits`` of PAID credit on a Checkout page: the PENDING transaction, with the page's address
    (``checkout_url``) once the processor has opened it. A resend gets the same transaction and page.
    Raises ``PaymentUnavailableError`` when the page could not be opened (the transaction stays PENDING
    and a resend tries again) or ``models.ledger.IdempotencyConflictError``."""
    txn, _ = await payments.start_top_up(
        account_id,
        credits=credits,
        price=price(services),
        gateway=gateway.name,
        payment_method_id=None,
        card_reference=None,
        kind=TransactionType.TOP_UP,
        idem=idem,
        now=services.clock.now(),
    )
    if txn.status == TransactionStatus.PENDING and txn.checkout_url is None:
        txn = await opened(open_checkout(services, gateway, txn))
    return txn


async def opened(opening: Awaitable[TransactionRow]) -> TransactionRow:
    """The transaction once its page is open; a processor that cannot be reached is a refusal to resend."""
    try:
        return await opening
    except (GatewayError, GatewayUnavailable) as exc:
        raise PaymentUnavailableError(f"{exc} Send the same request again to get the checkout page.") from exc


def return_url(services: Services, **query: str) -> str:
    """The My Credit page's Billing tab, where Stripe sends the customer back to (it follows the payment from
    pending to done)."""
    return f"{services.settings.public_url}/my-credit/billing" + (f"?{urlencode(query)}" if query else "")


async def store_page(txn: TransactionRow, session: CheckoutSession) -> TransactionRow:
    """Store the address of the page the processor opened for ``txn`` (a top-up or a first period)."""
    return await payments.store_checkout_page(txn.id, url=session.url, reference=session.reference)


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
                idempotency_key=processor_key(txn.id),
            )
        )
    except PaymentRefused as exc:
        failed, changes = await payments.complete(
            txn.id, succeeded=False, reference=None, failure_reason=str(exc), now=services.clock.now()
        )
        services.bus.publish(changes)
        return failed
    return await store_page(txn, session)


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
