from __future__ import annotations

from strawberry.types import Info

from billing import customers
from billing.checkout import return_url
from billing.errors import PaymentUnavailableError
from gateway.base import HostedGateway
from models.tables import CreditAccount as CreditAccountRow
from resolvers.context import Context
from resolvers.mutations.payments import billing_account
from schema.mutations.customer_portal import (
    CreateCustomerPortalSessionInput,
    CreateCustomerPortalSessionResult,
    CreateCustomerPortalSessionSuccess,
)
from schema.payments import PaymentUnavailable


async def create_customer_portal_session(
    info: Info[Context, None], input: CreateCustomerPortalSessionInput
) -> CreateCustomerPortalSessionResult:
    """A link to the processor's customer portal, where the account's cards are managed (stripe gateway)."""
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    services = info.context.services
    gateway = services.gateway
    if not isinstance(gateway, HostedGateway):
        return PaymentUnavailable(message=f"On the {gateway.name} gateway cards are managed in-app")
    if reason := gateway.unavailable_reason():
        return PaymentUnavailable(message=reason)
    try:
        url = await customers.portal_url(services, gateway, account.id, return_url(services))
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    return CreateCustomerPortalSessionSuccess(url=url)
