"""Query resolvers: ``me`` and ``node``. A node the caller may not see is ``null``, like a missing one."""

from __future__ import annotations

import strawberry
from strawberry import relay
from strawberry.types import Info
from tortoise.models import Model

from models import tables
from models.credits import MICRO
from models.ids import decode_any
from models.tables import MemberRole
from models.tokens import BALANCE_READ, BILLING_READ, Principal
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.permissions import READ_SCOPES, may_read_account, portal_account, principal
from resolvers.references import organization_pk, user_pk
from schema import payments as payment_types
from schema import types
from schema.alerts import Alert, fill_event_ids
from schema.errors import NotFound, ValidationError
from schema.invitations import Invitation
from schema.payments import BillingConfig, DashboardTab, Money, Plan
from schema.scalars import Credits
from schema.webhooks import WebhookDelivery, WebhookEndpoint


async def me(info: Info[Context, None]) -> types.User:
    """The caller; for a portal session of a user's own account, that user (of an organization's pool: none,
    read the pool with ``node(id: accountId)``)."""
    who = principal(info)
    user_id = who.user_id
    if (bound := portal_account(who)) is not None:
        account = await info.context.loaders.account.load(bound)
        if account is None or account.user_id is None:
            raise ForbiddenError(
                "`me` is a user: this portal session is for an organization's credit pool; read it with"
                " node(id: accountId)"
            )
        user_id = account.user_id
    if user_id is None:
        raise ForbiddenError("`me` needs a user token; this token belongs to a service or an admin")
    user = await info.context.loaders.user.load(user_id)
    assert user is not None
    return types.User(id=user.id, email=user.email)


async def _is_portal_user(info: Info[Context, None], who: Principal, user_id: int) -> bool:
    """A portal session of this user's own account."""
    bound = portal_account(who)
    account = None if bound is None else await info.context.loaders.account.load(bound)
    return account is not None and account.user_id == user_id


LOOKUP_DENIED = "Looking up by id needs an admin token, or a service token with 'balance:read' or 'billing:read'"


def _may_look_up(who: Principal) -> None:
    if not (who.is_admin or any(who.has_scope(scope) for scope in READ_SCOPES)):
        raise ForbiddenError(LOOKUP_DENIED)


def _found(pk: int | NotFound | ValidationError) -> int | None:
    """The primary key, ``None`` for an unknown id; a malformed request is a top-level error."""
    if isinstance(pk, ValidationError):
        raise ClientError(pk.message, "BAD_USER_INPUT")
    return None if isinstance(pk, NotFound) else pk


async def user(
    info: Info[Context, None], external_id: str | None = None, id: strawberry.ID | None = None
) -> types.User | None:
    _may_look_up(principal(info))
    pk = _found(await user_pk(id, external_id, own_field="id", external_field="externalId"))
    if pk is None:
        return None
    row = await info.context.loaders.user.load(pk)
    return None if row is None else types.User(id=row.id, email=row.email)


async def organization(
    info: Info[Context, None], external_id: str | None = None, id: strawberry.ID | None = None
) -> types.Organization | None:
    _may_look_up(principal(info))
    pk = _found(await organization_pk(id, external_id, own_field="id", external_field="externalId"))
    if pk is None:
        return None
    row = await info.context.loaders.organization.load(pk)
    return None if row is None else types.Organization(id=row.id, name=row.name)


async def _readable_account(
    info: Info[Context, None], who: Principal, account_id: int, scopes: tuple[str, ...] = READ_SCOPES
) -> bool:
    account = await info.context.loaders.account.load(account_id)
    return account is not None and await may_read_account(info, account, scopes)


async def node(info: Info[Context, None], id: strawberry.ID) -> relay.Node | None:
    decoded = decode_any(id)
    if decoded is None:
        return None
    type_name, pk = decoded
    who = principal(info)
    loaders = info.context.loaders
    if type_name == "User":
        user = await loaders.user.load(pk)
        if user is None or not (who.is_admin or who.user_id == pk or await _is_portal_user(info, who, pk)):
            return None
        return types.User(id=user.id, email=user.email)
    if type_name == "CreditAccount":
        return types.CreditAccount(id=pk) if await _readable_account(info, who, pk) else None
    if type_name == "Organization":
        org = await loaders.organization.load(pk)
        if org is None:
            return None
        if not who.is_admin and not any(m.organization_id == pk for m in await _memberships(info, who)):
            return None
        return types.Organization(id=org.id, name=org.name)
    if type_name == "ApiToken":
        token = await tables.ApiToken.filter(id=pk).first()
        if token is None or not (who.is_admin or (token.user_id is not None and token.user_id == who.user_id)):
            return None
        return types.ApiToken.of(token, info.context.now())
    if type_name == "Invitation":
        invitation = await tables.Invitation.filter(id=pk).first()
        if invitation is None or not await _may_see_invitation(info, who, invitation):
            return None
        return Invitation.of(invitation, info.context.now())
    # The scope a service needs for each kind of object: balance and usage, or billing data.
    owned: dict[str, tuple[type[Model], object, str]] = {
        "CreditLot": (tables.CreditLot, types.CreditLot.of, BALANCE_READ),
        "LedgerEntry": (tables.LedgerEntry, types.LedgerEntry.of, BALANCE_READ),
        "UsageEvent": (tables.UsageEvent, types.UsageEvent.of, BALANCE_READ),
        "Hold": (tables.Hold, types.Hold.of, BALANCE_READ),
        "Transaction": (tables.Transaction, payment_types.Transaction.of, BILLING_READ),
        "Invoice": (tables.Invoice, payment_types.Invoice.of, BILLING_READ),
        "PaymentMethod": (tables.PaymentMethod, payment_types.PaymentMethod.of, BILLING_READ),
        "Subscription": (tables.Subscription, payment_types.Subscription.of, BILLING_READ),
    }
    if type_name == "Alert":  # as CreditAccount.alerts: whoever may read the account's balance
        alert = await tables.Alert.filter(id=pk).first()
        if alert is None or not await _readable_account(info, who, alert.account_id, (BALANCE_READ,)):
            return None
        node = Alert.of(alert)
        await fill_event_ids([node])
        return node
    if type_name in ("WebhookEndpoint", "WebhookDelivery"):  # as webhookEndpoints and their deliveries: admins
        if not who.is_admin:
            return None
        if type_name == "WebhookEndpoint":
            hook = await tables.WebhookEndpoint.filter(id=pk).first()
            return None if hook is None else WebhookEndpoint.of(hook, info.context.now())
        sent = await tables.WebhookDelivery.filter(id=pk).first()
        return None if sent is None else WebhookDelivery.of(sent)
    if type_name == "Refund":
        refund = await tables.Refund.filter(id=pk).first()
        if refund is None or not await _readable_account(info, who, refund.account_id, (BILLING_READ,)):
            return None
        txn = await tables.Transaction.get(id=refund.transaction_id)
        return payment_types.Refund.of(refund, txn.currency)
    if type_name not in owned:
        return None
    model, make, scope = owned[type_name]
    row = await model.filter(id=pk).first()
    if row is None or not await _readable_account(info, who, row.account_id, (scope,)):  # type: ignore[attr-defined]
        return None
    result: relay.Node = make(row)  # type: ignore[operator]
    return result


async def _may_see_invitation(info: Info[Context, None], who: Principal, invitation: tables.Invitation) -> bool:
    """Admins, the organization's owners, and the user the invitation is addressed to."""
    if who.is_admin:
        return True
    if who.user_id is None:
        return False
    user = await info.context.loaders.user.load(who.user_id)
    if user is not None and user.email.lower() == invitation.email:
        return True
    return any(
        m.organization_id == invitation.organization_id and MemberRole.OWNER in m.role_set
        for m in await _memberships(info, who)
    )


async def _memberships(info: Info[Context, None], who: Principal) -> list[tables.Membership]:
    if who.user_id is None:
        return []
    return await info.context.loaders.memberships_of_user.load(who.user_id)


def billing_config(info: Info[Context, None]) -> BillingConfig:
    settings = info.context.services.settings
    gateway = info.context.services.gateway
    tabs = [DashboardTab.OVERVIEW, DashboardTab.TRANSACTION, DashboardTab.BILLING]
    if gateway.card_on_file:
        tabs.append(DashboardTab.PAYMENT_METHOD)
    return BillingConfig(
        gateway=gateway.name,
        legacy_gateway=gateway.card_on_file,
        dashboard_tabs=tabs,
        credit_price=Money(amount=settings.price_per_100_credits, currency=settings.currency),
        top_up_min=Credits(settings.top_up_min_credits * MICRO),
        top_up_max=Credits(settings.top_up_max_credits * MICRO),
        stripe_publishable_key=(settings.stripe_publishable_key or None) if gateway.name == "legacy" else None,
    )


def plans(info: Info[Context, None]) -> list[Plan]:
    services = info.context.services
    hosted = not services.gateway.card_on_file
    return [Plan.of(spec, services.settings.currency, hosted=hosted) for spec in services.plans.plans.values()]


def rate_card(info: Info[Context, None]) -> list[types.Rate]:
    rates = info.context.services.rate_card.rates.values()
    return [
        types.Rate(activity=r.activity, unit=r.unit, price=Credits(r.price))
        for r in sorted(rates, key=lambda r: r.activity)
    ]
