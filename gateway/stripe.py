"""The ``stripe`` gateway: Stripe hosts the card forms (Checkout) and the saved cards (customer portal).

A top-up opens a Checkout Session in payment mode; the transaction stays PENDING until a signed webhook
(``checkout.session.completed`` and its async companions, gateway/webhooks.py) or the reconcile job says
how it ended. A subscription opens a session in subscription mode; Stripe Billing then renews it and its
invoice and subscription events move ours (gateway/stripe_subscriptions.py).

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


def _stamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int) and not isinstance(value, bool) else None


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
    """A Stripe Subscription object (from the API or an event) as a ``HostedSubscription``."""
    items = (obj.get("items") or {}).get("data") or [{}]
    item = items[0]
    details = obj.get("cancellation_details") or {}
    return HostedSubscription(
        reference=str(obj["id"]),
        ours=ours_in(obj.get("metadata")),
        status=str(obj.get("status", "")),
        item=_id(item.get("id")),
        price=_id(item.get("price")),
        current_period_start=_stamp(item.get("current_period_start")),
        current_period_end=_stamp(item.get("current_period_end")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        canceled_at=_stamp(obj.get("canceled_at")),
        cancellation_reason=details.get("reason") if isinstance(details.get("reason"), str) else None,
    )


def invoice_from(obj: dict[str, Any]) -> HostedInvoice | None:
    """A Stripe Invoice object as a ``HostedInvoice``; None when it does not bill a subscription."""
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") or {}
    subscription = _id(details.get("subscription"))
    lines = (obj.get("lines") or {}).get("data") or []
    # The line that bills the subscription item (not a one-off invoice item added to the same invoice).
    line = next(
        (li for li in lines if ((li.get("parent") or {}).get("type") == "subscription_item_details")),
        lines[0] if lines else None,
    )
    if subscription is None or line is None:
        return None
    period = line.get("period") or {}
    start, end = _stamp(period.get("start")), _stamp(period.get("end"))
    if start is None or end is None:
        return None
    status = str(obj.get("status", ""))
    return HostedInvoice(
        reference=str(obj["id"]),
        subscription=subscription,
        ours=ours_in(details.get("metadata")),
        billing_reason=str(obj.get("billing_reason") or ""),
        status=status,
        amount=int(obj.get("amount_paid" if status == "paid" else "amount_due") or 0),
        currency=str(obj.get("currency", "")).upper(),
        price=_id(((line.get("pricing") or {}).get("price_details") or {}).get("price")),
        period_start=start,
        period_end=end,
        attempt_count=int(obj.get("attempt_count") or 0),
        next_payment_attempt=_stamp(obj.get("next_payment_attempt")),
    )
