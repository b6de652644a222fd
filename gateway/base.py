"""The interface every payment processor implements. Amounts are integer minor units of a currency.

Two kinds of gateway share it: card-on-file gateways (sandbox, legacy) save cards and charge them in-app;
hosted gateways (stripe) also implement ``HostedGateway``: the processor collects the card on its own
Checkout page and manages saved cards in its customer portal, and tells us the outcome by webhook.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Card:
    """A saved card as the gateway describes it: its reference, never its number."""

    reference: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True, slots=True)
class Charge:
    succeeded: bool
    reference: str | None
    failure_reason: str | None = None


class InvalidPaymentToken(Exception):
    """The token names no card this gateway knows."""


class GatewayUnavailable(Exception):
    """The gateway cannot take payments as configured (e.g. no secret key): refused before anything is written."""


class GatewayError(Exception):
    """The processor could not be reached or failed: the outcome is unknown, so a payment stays PENDING and is
    asked again later with the same idempotency key."""


class PaymentRefused(Exception):
    """The processor refused the request for good (e.g. an amount below its minimum): the payment fails."""


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """A webhook event whose signature and timestamp were verified."""

    id: str
    type: str
    created: datetime
    object: dict[str, Any]
    """The event's ``data.object`` (a Checkout Session, an invoice, ...)."""
    payload: str
    """The raw body, stored as received."""


class InvalidWebhook(Exception):
    """A webhook with a missing or wrong signature, a timestamp out of bounds, or a malformed body."""


class MalformedEvent(Exception):
    """A verified event that its handler cannot read: a field missing, or of another type than the processor's."""


class Gateway(Protocol):
    name: str
    card_on_file: bool
    """Cards are saved and charged in-app (sandbox, legacy); otherwise the processor hosts checkout."""
    uses_customers: bool
    """Cards and checkouts belong to a processor customer, created once per account (``customer_for``)."""
    idempotency_window: timedelta | None
    """How long the processor remembers an idempotency key (None: forever). A charge left PENDING longer is
    not sent again, since a second request could then charge twice."""

    def unavailable_reason(self) -> str | None:
        """Why this gateway cannot take payments now (no network call), or None when it can."""
        ...

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        """Create the processor customer of an account and return its reference."""
        ...

    async def save_card(self, token: str, *, customer: str | None = None) -> Card:
        """Describe the card a client-side token names. With ``customer`` the card is kept for later charges
        (attached to the customer); without it, it is good for one charge."""
        ...

    async def remove_card(self, reference: str) -> None:
        """Forget a saved card at the processor."""
        ...

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        card: str,
        idempotency_key: str,
        description: str,
        customer: str | None = None,
        off_session: bool = False,
    ) -> Charge:
        """Charge a card once per idempotency key: the same key returns the first answer. ``off_session`` when
        the card holder is not present (renewals, auto top-up). A decline is a failed ``Charge``; raises
        ``GatewayError`` when the outcome is unknown."""
        ...

    def verify_event(self, payload: bytes, signature: str | None, now: datetime) -> GatewayEvent:
        """Check a webhook's signature and timestamp (within the tolerance, past or future) and parse it."""
        ...

    async def refund(self, *, charge: str, amount: int, currency: str, idempotency_key: str) -> Charge:
        """Return ``amount`` of a charge (its gateway reference) to the card it came from. A refusal is a
        failed ``Charge``; raises ``GatewayError`` when the outcome is unknown."""
        ...

    async def close(self) -> None: ...


class CheckoutState(StrEnum):
    OPEN = "OPEN"
    """Not paid yet: the page may still be used."""
    PROCESSING = "PROCESSING"
    """Completed with a payment method that settles later (bank debits): wait for the async outcome."""
    PAID = "PAID"
    FAILED = "FAILED"
    """Completed, then the delayed payment failed."""
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    reference: str
    url: str


@dataclass(frozen=True, slots=True)
class CheckoutOutcome:
    reference: str
    state: CheckoutState
    subscription: str | None = None
    """The processor subscription a subscription-mode page created, once completed."""


@dataclass(frozen=True, slots=True)
class PaymentCheckout:
    """A one-time payment on the processor's Checkout page (a top-up), for transaction ``transaction_id``."""

    transaction_id: int
    customer: str
    amount: int
    currency: str
    description: str
    success_url: str
    cancel_url: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class SubscriptionCheckout:
    """A subscription on the processor's Checkout page: the first period of our subscription ``subscription_id``,
    paid by transaction ``transaction_id``, billed at the processor's ``price``."""

    subscription_id: int
    transaction_id: int
    customer: str
    price: str
    success_url: str
    cancel_url: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class HostedSubscription:
    """Where a processor subscription stands, as the processor says now."""

    reference: str
    ours: int | None
    """Our subscription id, from the metadata we gave it."""
    status: str
    """The processor's status (Stripe: active, trialing, past_due, canceled, unpaid, incomplete, ...)."""
    item: str | None
    """The subscription item that bills the plan (changed by a plan change)."""
    price: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    cancellation_reason: str | None
    """Why it ended (Stripe: cancellation_requested, payment_failed, payment_disputed)."""


@dataclass(frozen=True, slots=True)
class HostedInvoice:
    """A processor invoice of a subscription period: what was (or was to be) paid, and for which period."""

    reference: str
    subscription: str
    ours: int | None
    """Our subscription id, from the subscription metadata the invoice carries."""
    billing_reason: str
    """``subscription_create`` (the first period), ``subscription_cycle`` (a renewal), ..."""
    status: str
    amount: int
    """What the invoice charges (minor units): its amount paid once paid, else its amount due."""
    currency: str
    price: str | None
    period_start: datetime
    period_end: datetime
    attempt_count: int
    next_payment_attempt: datetime | None


@runtime_checkable
class HostedGateway(Gateway, Protocol):
    """A gateway whose processor hosts the card forms: Checkout pages and a customer portal."""

    async def create_payment_checkout(self, checkout: PaymentCheckout) -> CheckoutSession:
        """Open a Checkout page (the same idempotency key returns the same page). Raises ``PaymentRefused``
        or ``GatewayError``."""
        ...

    async def checkout_outcome(self, reference: str) -> CheckoutOutcome:
        """Ask the processor where a Checkout page stands (reconciling a missed webhook)."""
        ...

    async def portal_url(self, *, customer: str, return_url: str) -> str:
        """A short-lived link to the processor's customer portal, where the customer manages cards."""
        ...

    async def create_subscription_checkout(self, checkout: SubscriptionCheckout) -> CheckoutSession:
        """Open a subscription-mode Checkout page (the same idempotency key returns the same page). Raises
        ``PaymentRefused`` or ``GatewayError``."""
        ...

    async def expire_checkout(self, reference: str) -> None:
        """Close a Checkout page so that it can no longer be paid. Raises ``PaymentRefused`` when it cannot be
        closed (it was completed)."""
        ...

    async def subscription(self, reference: str) -> HostedSubscription:
        """Where a processor subscription stands now."""
        ...

    async def first_invoice(self, subscription: str) -> HostedInvoice | None:
        """The paid invoice of a processor subscription's first period, if it is paid."""
        ...

    async def update_subscription(
        self,
        reference: str,
        *,
        cancel_at_period_end: bool | None = None,
        item: str | None = None,
        price: str | None = None,
    ) -> HostedSubscription:
        """Set cancel at period end, or bill ``item`` at ``price`` from the next renewal on (no proration)."""
        ...

    async def cancel_subscription(self, reference: str) -> HostedSubscription:
        """End a processor subscription now."""
        ...
