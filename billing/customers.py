"""The processor customer that stands for an account, created once per gateway (table gateway_customers)."""

from __future__ import annotations

from datetime import datetime

from tortoise import connections

from gateway.base import Gateway
from models.sql import Sql
from models.tables import CreditAccount, GatewayCustomer, Organization, User


async def customer_for(gateway: Gateway, account_id: int, now: datetime) -> str | None:
    """The account's customer at the processor, created on first need; None on gateways without customers.

    Created outside any database transaction with an idempotency key made from the account id, so two
    requests racing here get the same Stripe customer, and the insert keeps whichever row came first.
    """
    if not gateway.uses_customers:
        return None
    known = await GatewayCustomer.filter(account_id=account_id, gateway=gateway.name).first()
    if known is not None:
        return known.reference
    account = await CreditAccount.get(id=account_id)
    email: str | None = None
    if account.user_id is not None:
        email = (await User.get(id=account.user_id)).email
        name = email
    else:
        name = (await Organization.get(id=account.organization_id)).name
    reference = await gateway.create_customer(
        account_id=account_id, email=email, name=name, idempotency_key=f"creditline-customer-{account_id}"
    )
    await Sql(connections.get("default")).execute(
        "INSERT INTO gateway_customers (account_id, gateway, reference, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (account_id, gateway) DO NOTHING",
        account_id,
        gateway.name,
        reference,
        now,
    )
    return (await GatewayCustomer.get(account_id=account_id, gateway=gateway.name)).reference
