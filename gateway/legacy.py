"""The ``legacy`` gateway: cards on file through Stripe PaymentMethods and PaymentIntents.

The client turns card details into a PaymentMethod with Stripe.js and sends us its ``pm_...`` id; we attach
it to the account's Stripe customer, list and manage it in-app, and charge it directly with a confirmed
PaymentIntent (off-session for renewals and auto top-ups).
"""

from __future__ import annotations

from gateway.base import Card, Charge
from gateway.stripe_api import StripeApi, StripeBacked


class LegacyGateway(StripeBacked):
    name = "legacy"
    card_on_file = True

    def __init__(self, api: StripeApi) -> None:
        super().__init__(api)

    async def save_card(self, token: str, *, customer: str | None = None) -> Card:
        return await self.api.describe_card(token, customer=customer)

    async def remove_card(self, reference: str) -> None:
        await self.api.detach_card(reference)

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
        return await self.api.charge(
            amount=amount,
            currency=currency,
            card=card,
            idempotency_key=idempotency_key,
            description=description,
            customer=customer,
            off_session=off_session,
        )
