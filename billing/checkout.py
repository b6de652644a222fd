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
from billing.errors import CheckoutCompletedError, CheckoutNotCancelableError, PaymentUnavailableError
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

CHECKOUT_CANCELED = "The checkout was canceled"
"""The failure reason of a top-up whose page was closed by ``cancel``."""


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
            failed, changes = await payments.complete(
                txn.id, succeeded=False, reference=None, failure_reason=reason, now=now
            )
            services.bus.publish(changes)  # its payment.failed wakes the delivery workers
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


def _not_cancelable(gateway: HostedGateway, txn: TransactionRow) -> str | None:
    """Why ``txn`` has no Checkout page to cancel, if it has none."""
    if txn.type != TransactionType.TOP_UP:
        kind = TransactionType(txn.type).value
        also = ": cancel the subscription with cancelSubscription" if txn.type == TransactionType.SUBSCRIPTION else ""
        return f"Only a top-up's checkout can be canceled; this is a {kind} payment{also}"
    if txn.gateway != gateway.name:
        return f"The top-up was paid on the {txn.gateway} gateway, without a Checkout page to cancel"
    if txn.status != TransactionStatus.PENDING:
        return f"The top-up is {TransactionStatus(txn.status).value}: only a PENDING one can be canceled"
    if txn.gateway_reference is None:
        return "The top-up's checkout page is not open yet: send the same topUp again to get it"
    return None


async def cancel(services: Services, gateway: HostedGateway, txn: TransactionRow) -> TransactionRow:
    """Cancel the unfinished Checkout page of a PENDING top-up: the processor closes the page (so that it can no
    longer be paid), then the transaction is FAILED with ``CHECKOUT_CANCELED`` and its ``payment.failed``, no
    credit. Returns the transaction as it is now: FAILED, or as a webhook settled it meanwhile (a paid page
    SUCCEEDED). Canceling a canceled top-up returns it unchanged. Raises ``CheckoutNotCancelableError`` (nothing
    to cancel), ``CheckoutCompletedError`` (the customer paid: it is being confirmed) or
    ``PaymentUnavailableError`` (the processor did not answer); none of them changes anything."""
    if txn.status == TransactionStatus.FAILED and txn.failure_reason == CHECKOUT_CANCELED:
        return txn
    if (refusal := _not_cancelable(gateway, txn)) is not None:
        raise CheckoutNotCancelableError(refusal)
    reference = txn.gateway_reference
    assert reference is not None
    try:
        closed = await _close_page(gateway, txn.id, reference)
    except (GatewayError, GatewayUnavailable) as exc:
        raise PaymentUnavailableError(f"Nothing was canceled ({exc}): try again") from exc
    if not closed:
        current = await TransactionRow.get(id=txn.id)
        if current.status != TransactionStatus.PENDING:
            return current  # settled by its webhook while the page was being closed
        raise CheckoutCompletedError("The checkout was completed: the payment is being confirmed")
    failed, changes = await payments.complete(
        txn.id, succeeded=False, reference=reference, failure_reason=CHECKOUT_CANCELED, now=services.clock.now()
    )
    services.bus.publish(changes)
    return failed


async def _close_page(gateway: HostedGateway, transaction_id: int, reference: str) -> bool:
    """Close the page at the processor: whether it is closed now. The processor closes only an open page; one it
    refuses is either completed (paid, or a delayed payment under way) or closed already (by a cancel that did
    not get to record it, or by its expiry), which the processor is then asked."""
    try:
        await gateway.expire_checkout(reference)
    except PaymentRefused:
        if (await TransactionRow.get(id=transaction_id)).status != TransactionStatus.PENDING:
            return False
        return (await gateway.checkout_outcome(reference)).state is CheckoutState.EXPIRED
    return True
