"""The processor customers that stand for accounts (table gateway_customers): one per account and gateway,
whichever insert came first."""

from __future__ import annotations

from datetime import datetime

from tortoise import connections

from models.sql import Sql
from models.tables import CreditAccount, GatewayCustomer, Organization, User


async def known_customer(account_id: int, gateway: str) -> GatewayCustomer | None:
    """The account's customer on ``gateway``, if one was recorded."""
    return await GatewayCustomer.filter(account_id=account_id, gateway=gateway).first()


async def customer_name(account_id: int) -> tuple[str | None, str]:
    """The email (None for an organization's account) and the name the processor shows for the account:
    its user's email, or its organization's name."""
    account = await CreditAccount.get(id=account_id)
    email: str | None = None
    if account.user_id is not None:
        email = (await User.get(id=account.user_id)).email
        name = email
    else:
        name = (await Organization.get(id=account.organization_id)).name
    return email, name


async def record_customer(account_id: int, gateway: str, reference: str, now: datetime) -> GatewayCustomer:
    """Record the account's customer on ``gateway`` unless one is recorded already, and return the one that
    stays: two requests racing to create it keep the first row. They carry the same reference (the processor
    answers one idempotency key with one customer), so the conflict has no target: on PostgreSQL the second
    insert then waits for the first on either unique key (account and gateway; gateway and reference) and does
    nothing, where naming one key let the other raise."""
    await Sql(connections.get("default")).execute(
        "INSERT INTO gateway_customers (account_id, gateway, reference, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING",
        account_id,
        gateway,
        reference,
        now,
    )
    return await GatewayCustomer.get(account_id=account_id, gateway=gateway)
