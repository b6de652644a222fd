"""The ``stripe`` gateway: Stripe hosts the card forms (Checkout) and the saved cards (customer portal).

A top-up opens a Checkout Session in payment mode; the transaction stays PENDING until a signed webhook
(``checkout.session.completed`` and its async companions, gateway/webhooks.py) or the reconcile job says
how it ended. Subscriptions will open sessions in subscription mode the same way (``create_*_checkout``).
"""

from __future__ import annotations

from gateway.base import (
    Card,
    Charge,
    CheckoutOutcome,
    CheckoutSession,
    CheckoutState,
    GatewayError,
    GatewayUnavailable,
    PaymentCheckout,
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
