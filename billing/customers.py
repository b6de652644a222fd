"""The processor customer that stands for an account, created once per gateway (recorded in
models/customers.py), and the link to its page in the processor's customer portal."""

from __future__ import annotations

from datetime import datetime

from billing.errors import PaymentUnavailableError
from creditline.services import Services
from gateway.base import Gateway, GatewayError, GatewayUnavailable, HostedGateway
from models import customers


async def customer_for(gateway: Gateway, account_id: int, now: datetime) -> str | None:
    """The account's customer at the processor, created on first need; None on gateways without customers.

    Created outside any database transaction with an idempotency key made from the account id, so two
    requests racing here get the same Stripe customer, and the insert keeps whichever row came first.
    """
    if not gateway.uses_customers:
        return None
    known = await customers.known_customer(account_id, gateway.name)
    if known is not None:
        return known.reference
    email, name = await customers.customer_name(account_id)
    reference = await gateway.create_customer(
        account_id=account_id, email=email, name=name, idempotency_key=f"creditline-customer-{account_id}"
    )
    return (await customers.record_customer(account_id, gateway.name, reference, now)).reference


async def portal_url(services: Services, gateway: HostedGateway, account_id: int, return_url: str) -> str:
    """A link to the processor's customer portal, where the account's cards are managed; the customer is
    sent back to ``return_url``. Raises ``PaymentUnavailableError`` when the processor cannot be reached."""
    try:
        customer = await customer_for(gateway, account_id, services.clock.now())
        assert customer is not None
        return await gateway.portal_url(customer=customer, return_url=return_url)
    except (GatewayError, GatewayUnavailable) as exc:
        raise PaymentUnavailableError(str(exc)) from exc
