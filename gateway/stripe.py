"""The ``stripe`` gateway: Stripe hosts the card forms (Checkout) and the saved cards (customer portal).

A top-up opens a Checkout Session in payment mode; the transaction stays PENDING until a signed webhook
(``checkout.session.completed`` and its async companions, billing/checkout_events.py) or the reconcile job says
how it ended. A subscription opens a session in subscription mode; Stripe Billing then renews it and its
invoice and subscription events move ours (billing/subscription_events.py).

Stripe's shapes are those of the API version of the installed SDK (16.1): an invoice names its subscription
in ``parent.subscription_details``, its lines their price in ``pricing.price_details``, and a subscription's
current period lives on its items.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.base import (
    Card,
    Charge,
    CheckoutOutcome,
    CheckoutSession,
    CheckoutState,
    GatewayError,
    GatewayUnavailable,
    HostedInvoice,
    HostedSubscription,
    PaymentCheckout,
    SubscriptionCheckout,
)
from gateway.stripe_api import StripeApi, StripeBacked

PORTAL_ONLY = "Cards are managed in Stripe's customer portal"


class StripeGateway(StripeBacked):
    name = "stripe"
    card_on_file = False

    def __init__(self, api: StripeApi) -> None:
        super().__init__(api)

    async def save_card(self, token: str, *, customer: str | None = None) -> Card:
        raise GatewayUnavailable(PORTAL_ONLY)

    async def remove_card(self, reference: str) -> None:
        raise GatewayUnavailable(PORTAL_ONLY)

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
        """Charge a card without Checkout (e.g. auto top-up): ``card``, or else the default card the customer
        chose in the portal."""
        if not card:
            if customer is None:
                return Charge(False, None, "No card to charge")
            card = await self.api.default_card(customer) or ""
            if not card:
                return Charge(False, None, "No default card in Stripe's customer portal")
        return await self.api.charge(
            amount=amount,
            currency=currency,
            card=card,
            idempotency_key=idempotency_key,
            description=description,
            customer=customer,
            off_session=off_session,
        )

    async def create_payment_checkout(self, checkout: PaymentCheckout) -> CheckoutSession:
        metadata = {"creditline_transaction": str(checkout.transaction_id)}
        session = await self.api.call(
            lambda client: client.v1.checkout.sessions.create_async(
                {
                    "mode": "payment",
                    "customer": checkout.customer,
                    "client_reference_id": str(checkout.transaction_id),
                    "metadata": metadata,
                    "payment_intent_data": {"description": checkout.description, "metadata": metadata},
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": checkout.currency.lower(),
                                "unit_amount": checkout.amount,
                                "product_data": {"name": checkout.description},
                            },
                        }
                    ],
                    "success_url": checkout.success_url,
                    "cancel_url": checkout.cancel_url,
                },
                {"idempotency_key": checkout.idempotency_key},
            )
        )
        if not session.url:
            raise GatewayError(f"Stripe returned Checkout Session {session.id} without a page address")
        return CheckoutSession(reference=session.id, url=session.url)

    async def checkout_outcome(self, reference: str) -> CheckoutOutcome:
        session = await self.api.call(
            lambda client: client.v1.checkout.sessions.retrieve_async(reference, {"expand": ["payment_intent"]})
        )
        if session.status == "expired":
            return CheckoutOutcome(reference, CheckoutState.EXPIRED)
        if session.status != "complete":
            return CheckoutOutcome(reference, CheckoutState.OPEN)
        if session.mode == "subscription":
            made = session.subscription
            subscription = made if isinstance(made, str) or made is None else made.id
            paid = session.payment_status in ("paid", "no_payment_required")
            return CheckoutOutcome(reference, CheckoutState.PAID if paid else CheckoutState.PROCESSING, subscription)
        if session.payment_status in ("paid", "no_payment_required"):
            return CheckoutOutcome(reference, CheckoutState.PAID)
        # Completed but unpaid: a delayed payment method, settled or failed as its PaymentIntent says.
        intent = session.payment_intent
        status = None if intent is None or isinstance(intent, str) else intent.status
        if status == "succeeded":
            return CheckoutOutcome(reference, CheckoutState.PAID)
        if status in ("requires_payment_method", "canceled"):
            return CheckoutOutcome(reference, CheckoutState.FAILED)
        return CheckoutOutcome(reference, CheckoutState.PROCESSING)

    async def portal_url(self, *, customer: str, return_url: str) -> str:
        portal = await self.api.call(
            lambda client: client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}
            )
        )
        return portal.url

    async def create_subscription_checkout(self, checkout: SubscriptionCheckout) -> CheckoutSession:
        metadata = {
            "creditline_subscription": str(checkout.subscription_id),
            "creditline_transaction": str(checkout.transaction_id),
        }
        session = await self.api.call(
            lambda client: client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": checkout.customer,
                    "client_reference_id": str(checkout.transaction_id),
                    "metadata": metadata,
                    # Copied onto the subscription, and from it onto each of its invoices.
                    "subscription_data": {"metadata": {"creditline_subscription": str(checkout.subscription_id)}},
                    "line_items": [{"price": checkout.price, "quantity": 1}],
                    "success_url": checkout.success_url,
                    "cancel_url": checkout.cancel_url,
                },
                {"idempotency_key": checkout.idempotency_key},
            )
        )
        if not session.url:
            raise GatewayError(f"Stripe returned Checkout Session {session.id} without a page address")
        return CheckoutSession(reference=session.id, url=session.url)

    async def expire_checkout(self, reference: str) -> None:
        await self.api.call(lambda client: client.v1.checkout.sessions.expire_async(reference))

    async def subscription(self, reference: str) -> HostedSubscription:
        found = await self.api.call(lambda client: client.v1.subscriptions.retrieve_async(reference))
        return subscription_from(found.to_dict())

    async def first_invoice(self, subscription: str) -> HostedInvoice | None:
        found = await self.api.call(
            lambda client: client.v1.invoices.list_async({"subscription": subscription, "status": "paid", "limit": 100})
        )
        for invoice in found.data:
            parsed = invoice_from(invoice.to_dict())
            if parsed is not None and parsed.billing_reason == "subscription_create":
                return parsed
        return None

    async def update_subscription(
        self,
        reference: str,
        *,
        cancel_at_period_end: bool | None = None,
        item: str | None = None,
        price: str | None = None,
    ) -> HostedSubscription:
        # No idempotency key of ours: each update sets absolute values, so sending it again is harmless, and a
        # key from our ids would replay a stale answer when the same change is made again (cancel, resume,
        # cancel). The SDK's own retries carry a key it generates.
        params: dict[str, Any] = {}
        if cancel_at_period_end is not None:
            params["cancel_at_period_end"] = cancel_at_period_end
        if item is not None and price is not None:
            params["items"] = [{"id": item, "price": price}]
            params["proration_behavior"] = "none"  # the new price is billed from the next renewal on
        updated = await self.api.call(
            lambda client: client.v1.subscriptions.update_async(reference, params)  # type: ignore[arg-type]
        )
        return subscription_from(updated.to_dict())

    async def cancel_subscription(self, reference: str) -> HostedSubscription:
        canceled = await self.api.call(lambda client: client.v1.subscriptions.cancel_async(reference))
        return subscription_from(canceled.to_dict())


LATEST_STAMP = 253370764800
"""9999-01-01T00:00:00Z: a later unix time cannot be stored (nor converted to every time zone)."""
MAX_AMOUNT = 2**53
"""Minor units: the bound every webhook number already has (creditline/stripe_webhook_endpoint.py)."""
MAX_ATTEMPTS = 1000
"""Stripe retries a payment a handful of times; more is no attempt count (the column is 32 bits)."""


def _stamp(value: Any) -> datetime | None:
    """A unix time, None when absent; raises ``ValueError`` outside 1970 to 9999 (an event is then malformed)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not 0 <= value <= LATEST_STAMP:
        raise ValueError(f"unix time {value} out of range")
    return datetime.fromtimestamp(value, UTC)


def _count(value: Any, limit: int) -> int:
    """A non-negative integer field, 0 when absent; anything else raises ``ValueError``."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise ValueError(f"{value!r} is not a count from 0 to {limit}")
    return value


def _word(value: Any) -> str:
    """A text field, "" when absent; anything else raises ``ValueError``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{type(value).__name__} where text was expected")
    return value


def _object(value: Any) -> dict[str, Any]:
    """A nested object, {} when absent; anything else raises ``ValueError``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{type(value).__name__} where an object was expected")
    return value


def _objects(value: Any) -> list[dict[str, Any]]:
    """A list of objects, [] when absent; anything else raises ``ValueError``."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("no list of objects where one was expected")
    return value


def _reference(obj: dict[str, Any]) -> str:
    """The object's own id: a non-empty string (``KeyError``/``ValueError`` otherwise)."""
    value = obj["id"]
    if not isinstance(value, str) or not value:
        raise ValueError("the id is not a non-empty string")
    return value


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the object it names."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def ours_in(metadata: Any) -> int | None:
    named = metadata.get("creditline_subscription") if isinstance(metadata, dict) else None
    if isinstance(named, str) and named.isascii() and named.isdigit() and len(named) <= 18:
        return int(named)
    return None


def subscription_from(obj: dict[str, Any]) -> HostedSubscription:
    """A Stripe Subscription object (from the API or an event) as a ``HostedSubscription``. A field of another
    shape than Stripe's raises ``ValueError`` (or ``KeyError`` for a missing id)."""
    items = _objects(_object(obj.get("items")).get("data")) or [{}]
    item = items[0]
    details = _object(obj.get("cancellation_details"))
    return HostedSubscription(
        reference=_reference(obj),
        ours=ours_in(obj.get("metadata")),
        status=_word(obj.get("status")),
        item=_id(item.get("id")),
        price=_id(item.get("price")),
        current_period_start=_stamp(item.get("current_period_start")),
        current_period_end=_stamp(item.get("current_period_end")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        canceled_at=_stamp(obj.get("canceled_at")),
        cancellation_reason=details.get("reason") if isinstance(details.get("reason"), str) else None,
    )


def invoice_from(obj: dict[str, Any]) -> HostedInvoice | None:
    """A Stripe Invoice object as a ``HostedInvoice``; None when it does not bill a subscription. A field of
    another shape than Stripe's raises ``ValueError`` (or ``KeyError`` for a missing id)."""
    parent = _object(obj.get("parent"))
    details = _object(parent.get("subscription_details"))
    subscription = _id(details.get("subscription"))
    lines = _objects(_object(obj.get("lines")).get("data"))
    # The line that bills the subscription item (not a one-off invoice item added to the same invoice).
    line = next(
        (li for li in lines if _object(li.get("parent")).get("type") == "subscription_item_details"),
        lines[0] if lines else None,
    )
    if subscription is None or line is None:
        return None
    period = _object(line.get("period"))
    start, end = _stamp(period.get("start")), _stamp(period.get("end"))
    if start is None or end is None:
        return None
    status = _word(obj.get("status"))
    return HostedInvoice(
        reference=_reference(obj),
        subscription=subscription,
        ours=ours_in(details.get("metadata")),
        billing_reason=_word(obj.get("billing_reason")),
        status=status,
        amount=_count(obj.get("amount_paid" if status == "paid" else "amount_due"), MAX_AMOUNT),
        currency=_word(obj.get("currency")).upper(),
        price=_id(_object(_object(line.get("pricing")).get("price_details")).get("price")),
        period_start=start,
        period_end=end,
        attempt_count=_count(obj.get("attempt_count"), MAX_ATTEMPTS),
        next_payment_attempt=_stamp(obj.get("next_payment_attempt")),
    )
