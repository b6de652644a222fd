"""Who may do what (docs/rules.md, Roles and Who may see what), as a table: query fields and mutations, run
as each kind of caller.

Acme has an OWNER, a BILLING member and a plain MEMBER, a shared credit pool (enabled by its owner with
``enableCreditPool``) and a monthly budget for the member. The outsider has no role in Acme but owns
another organization, Globex, whose data no request about Acme may ever show. Each cell of ``MATRIX`` is
what those rules say the caller gets:

- ``OK``: the data (checked exactly);
- ``NULL``: ``null``, as for something that does not exist (a ``node`` lookup, or a field under one);
- ``FORBIDDEN``: a top-level error with code ``FORBIDDEN`` (a query field; the guarded value is ``null``);
- ``DENIED``: the typed ``Forbidden`` result of a mutation, or of a field whose type is a result union;
- ``MISSING``: the typed ``NotFound`` result of a mutation (another tenant's object is as unknown as none);
- ``UNAUTH``: a top-level error with code ``UNAUTHENTICATED`` (no token).

Service tokens are in two tables: ``MATRIX`` has one with ``usage:write`` only; ``SCOPE_MATRIX`` has one
with ``balance:read`` only and one with ``billing:read`` only, for every operation (issue 9, point 9).

Nothing changes unless a mutation's cell is ``OK``, and a response that is not ``OK`` carries none of the
guarded amounts. Queries read one world built once per backend; each mutation runs against an organization
of its own (same people, same roles), so that the cells do not depend on one another. The app is on the sandbox
gateway; a cell about a Stripe Checkout page (``cancelCheckout``) runs on the stripe gateway, against the
Stripe stand-in.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import ANY

import httpx
import pytest

from billing import checkout
from billing.invoices import signed_link
from creditline.app import create_app
from creditline.clock import Clock
from creditline.gateways import gateway_for
from creditline.services import Services
from creditline.settings import Settings
from gateway.base import HostedGateway
from models import ledger, limits, organizations
from models.credits import MICRO
from models.limit_rules import LimitSpec
from models.money import invoice_number
from models.tables import (
    ApiToken,
    CreditAccount,
    CreditKind,
    Hold,
    Invitation,
    Invoice,
    LimitKind,
    LimitScope,
    LimitWindow,
    LotSource,
    MemberRole,
    Membership,
    Organization,
    PaymentMethod,
    PortalCode,
    SpendLimit,
    Subscription,
    SubscriptionStatus,
    Transaction,
    UsageEvent,
    User,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from models.tokens import digest
from tests.support.backends import T0, Backend, reset
from tests.support.helpers import Api, gid
from tests.support.stripe_standin import StripeStandIn, stripe_settings
from tests.support.webhooks import delivery as webhook_delivery
from tests.support.webhooks import endpoint as webhook_endpoint
from tests.support.webhooks import event as webhook_event

PRINCIPALS = ("owner", "billing", "member", "outsider", "service", "admin", "anonymous")
SCOPE_PRINCIPALS = ("balance-reader", "billing-reader")
READER_SCOPES = {"balance-reader": ("balance:read",), "billing-reader": ("billing:read",)}
EMAILS = {
    "owner": "owner@acme.example",
    "billing": "billing@acme.example",
    "member": "member@acme.example",
    "outsider": "outsider@example.com",
}
NEWCOMER = "newcomer@example.com"
NEWCOMER_EXTERNAL_ID = "cus_newcomer"
"""The platform's id for the newcomer (added by ``addMember``, looked up by ``user(externalId:)``)."""
PROSPECT = "prospect@nowhere.example"
"""Invited to Acme (and to each fresh organization) as BILLING; nobody has registered this email."""
SECOND_PROSPECT = "second@nowhere.example"

OK, NULL, FORBIDDEN, DENIED, MISSING, UNAUTH = "OK", "NULL", "FORBIDDEN", "DENIED", "MISSING", "UNAUTH"
OWN = "OWN"
"""The caller's own row is shown and every other member's is refused (FORBIDDEN on those paths only)."""

# Distinctive amounts (a "." never occurs in a global ID): a response that is not OK carries none of them.
MEMBER_LOT, MEMBER_LEFT, MEMBER_SPEND = "31.415", "29.915", "1.5"
MEMBER_TOTAL = "39.915"
"""The member's lot, less the spend, plus a 10-credit top-up."""
POOL_FUNDS, POOL_LEFT, POOL_SPEND = "12.5", "10.375", "2.125"
BUDGET = "7.25"
MEMBER_CAP, MEMBER_WEEKLY = "6.5", "3.75"
"""A daily limit on the member's own account; the member's weekly limit on Acme's pool."""
GLOBEX_FUNDS, GLOBEX_SPEND = "20", "4.75"
GUARDED = (
    MEMBER_LOT, MEMBER_LEFT, MEMBER_TOTAL, MEMBER_SPEND, POOL_FUNDS, POOL_LEFT, POOL_SPEND, BUDGET, GLOBEX_SPEND,
    MEMBER_CAP, MEMBER_WEEKLY,
)  # fmt: skip


def credits(text: str) -> int:
    whole, _, fraction = text.partition(".")
    return int(whole) * MICRO + int(fraction.ljust(6, "0"))


# ------------------------------------------------------------------------------------------------ world


@dataclass(frozen=True)
class Org:
    pk: int
    id: str
    name: str
    pool: str | None
    invitation: str
    """The PROSPECT's pending invitation."""
    outsider_invitation: str
    """The outsider's pending invitation (MEMBER)."""
    limit: str | None = None
    """A fresh pool's daily cap on agent matrix-bot (removeSpendLimit's cells)."""
    breaker: str | None = None
    """A fresh pool's tripped velocity limit on agent matrix-bot (resumeAgent's cells)."""


@dataclass
class World:
    tokens: dict[str, str | None]
    users: dict[str, int]
    acme: Org
    member_account: str
    member_lot: str
    member_usage: str
    member_user: str
    pool_usage: str
    member_billing: dict[str, str]
    """The member's own payment data: Transaction, Invoice (number, signedUrl), PaymentMethod, Subscription."""
    orgs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


async def build_world(api: Api) -> World:
    now = api.clock.now()
    users: dict[str, int] = {}
    tokens: dict[str, str | None] = {}
    for principal, email in EMAILS.items():
        users[principal], tokens[principal] = await api.user(email, bonus=0)
    newcomer, _ = await api.user(NEWCOMER, bonus=0)
    await User.filter(id=newcomer).update(external_id=NEWCOMER_EXTERNAL_ID)
    tokens["service"] = await api.service(scopes=("usage:write",))
    for reader, scopes in READER_SCOPES.items():
        tokens[reader] = await api.service(reader, scopes=scopes)
    tokens["admin"] = await api.admin()
    tokens["anonymous"] = None

    acme = await organizations.create("Acme", users["owner"], now)
    await _add_members(acme.id, users, now)
    enabled = await api.data(
        """mutation($org: ID!) { enableCreditPool(input: {organizationId: $org}) {
             __typename ... on EnableCreditPoolSuccess { creditPool { id } } } }""",
        {"org": gid("Organization", acme.id)},
        tokens["owner"],
    )
    pool_id = enabled["enableCreditPool"]["creditPool"]["id"]
    pool = await CreditAccount.get(organization_id=acme.id)
    await organizations.set_budget(acme.id, users["member"], credits(BUDGET), now)  # a budget limits the pool
    assert pool_id == gid("CreditAccount", pool.id)
    await _grant(pool.id, POOL_FUNDS, now)
    pool_usage = await _spend(users["member"], ("organization_id", acme.id), acme.id, POOL_SPEND, "web_search", now)

    member_account = await CreditAccount.get(user_id=users["member"])
    member_token = tokens["member"]
    assert member_token is not None
    member_billing = await _billing_data(api, member_token, member_account.id)
    member_lot = await _grant(member_account.id, MEMBER_LOT, now, CreditKind.FREE)
    member_usage = await _spend(users["member"], ("user_id", users["member"]), None, MEMBER_SPEND, "answer", now)

    globex = await organizations.create("Globex", users["outsider"], now)
    globex_pool = await organizations.enable_pool(globex.id, now)
    await _grant(globex_pool.id, GLOBEX_FUNDS, now)
    await _spend(users["outsider"], ("organization_id", globex.id), globex.id, GLOBEX_SPEND, "answer", now)
    invitation, outsider_invitation = await _invite(acme.id, users, now)
    await limits.set_limit(member_account.id, LimitSpec(LimitScope.ACCOUNT, credits(MEMBER_CAP), LimitWindow.DAY), now)
    await limits.set_limit(
        pool.id,
        LimitSpec(LimitScope.MEMBER, credits(MEMBER_WEEKLY), LimitWindow.WEEK, user_id=users["member"]),
        now,
    )
    return World(
        tokens=tokens,
        users=users,
        acme=Org(acme.id, gid("Organization", acme.id), "Acme", pool_id, invitation, outsider_invitation),
        member_account=gid("CreditAccount", member_account.id),
        member_lot=gid("CreditLot", member_lot),
        member_usage=gid("UsageEvent", member_usage),
        member_user=gid("User", users["member"]),
        pool_usage=gid("UsageEvent", pool_usage),
        member_billing=member_billing,
    )


async def _billing_data(api: Api, token: str, account_id: int) -> dict[str, str]:
    """A saved card, a paid 10-credit top-up with its invoice, auto top-up and a subscription."""
    card = await api.data('mutation { addPaymentMethod(input: {token: "tok_visa"}) { __typename } }', token=token)
    paid = await api.data(
        'mutation { topUp(input: {credits: "10", paymentToken: "tok_visa", idempotencyKey: "member-top-up"})'
        " { __typename } }",
        token=token,
    )
    auto = await api.data(
        'mutation { configureAutoTopUp(input: {threshold: "1", amount: "10", monthlyCap: "100"}) { __typename } }',
        token=token,
    )
    assert (card, paid, auto) == (
        {"addPaymentMethod": {"__typename": "AddPaymentMethodSuccess"}},
        {"topUp": {"__typename": "TopUpSuccess"}},
        {"configureAutoTopUp": {"__typename": "ConfigureAutoTopUpSuccess"}},
    )
    now = api.clock.now()
    method = await PaymentMethod.get(account_id=account_id)
    subscription = await Subscription.create(
        account_id=account_id,
        plan_id="starter-monthly",
        status=SubscriptionStatus.ACTIVE,
        gateway="sandbox",
        payment_method_id=method.id,
        current_period_start=now,
        current_period_end=now + timedelta(days=31),
        idempotency_scope="user:member",
        idempotency_key="subscription",
        request_hash="-",
        created_at=now,
    )
    txn = await Transaction.get(account_id=account_id)
    invoice = await Invoice.get(account_id=account_id)
    services = api.app.state.services
    expires = int((now + timedelta(days=services.settings.invoice_link_days)).timestamp())
    return {
        "Transaction": gid("Transaction", txn.id),
        "Invoice": gid("Invoice", invoice.id),
        "invoice number": invoice_number(invoice.number),
        "signedUrl": signed_link(services.link_key, invoice.id, expires),
        "PaymentMethod": gid("PaymentMethod", method.id),
        "Subscription": gid("Subscription", subscription.id),
    }


async def _invite(organization_id: int, users: dict[str, int], now: datetime) -> tuple[str, str]:
    """The owner invites PROSPECT as BILLING, then the outsider as MEMBER."""
    made = []
    for email, role in ((PROSPECT, MemberRole.BILLING), (EMAILS["outsider"], MemberRole.MEMBER)):
        invitation = await organizations.invite(
            organization_id,
            email,
            [role],
            actor_id=users["owner"],
            scope="user:owner",
            key=None,
            request_hash="-",
            now=now,
            lifetime=timedelta(days=7),
        )
        made.append(gid("Invitation", invitation.id))
    return made[0], made[1]


async def fresh_org(api: Api, world: World, *, with_pool: bool) -> Org:
    """Another organization with Acme's people in Acme's roles (and, if asked, a pool of POOL_LEFT)."""
    now = api.clock.now()
    name = f"Acme {next(world.orgs)}"
    org = await organizations.create(name, world.users["owner"], now)
    await _add_members(org.id, world.users, now)
    pool = limit = breaker = None
    if with_pool:
        account = await organizations.enable_pool(org.id, now)
        await organizations.set_budget(org.id, world.users["member"], credits(BUDGET), now)
        await _grant(account.id, POOL_LEFT, now)
        pool = gid("CreditAccount", account.id)
        cap, _ = await limits.set_limit(
            account.id, LimitSpec(LimitScope.AGENT, 100 * MICRO, LimitWindow.DAY, agent_id="matrix-bot"), now
        )
        velocity = LimitSpec(
            LimitScope.AGENT, 5 * MICRO, LimitWindow.ROLLING_MINUTES, kind=LimitKind.VELOCITY, agent_id="matrix-bot"
        )
        tripped, _ = await limits.set_limit(account.id, velocity, now)
        await SpendLimit.filter(id=tripped.id).update(paused=True, tripped_at=now)
        limit, breaker = gid("SpendLimit", cap.id), gid("SpendLimit", tripped.id)
    invitation, outsider_invitation = await _invite(org.id, world.users, now)
    return Org(org.id, gid("Organization", org.id), name, pool, invitation, outsider_invitation, limit, breaker)


async def _add_members(organization_id: int, users: dict[str, int], now: datetime) -> None:
    await organizations.add_member(organization_id, users["billing"], [MemberRole.BILLING], now)
    await organizations.add_member(organization_id, users["member"], [MemberRole.MEMBER], now)


async def _grant(account_id: int, amount: str, now: datetime, kind: CreditKind = CreditKind.PAID) -> int:
    result = await ledger.grant(
        account_id,
        credits=credits(amount),
        kind=kind,
        source=LotSource.PROMOTION if kind is CreditKind.FREE else LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=now,
    )
    return result.lot_id


async def _spend(
    user_id: int,
    account: ledger.AccountSelector,
    organization_id: int | None,
    amount: str,
    activity: str,
    now: datetime,
) -> int:
    result = await ledger.spend(
        account,
        user_id=user_id,
        organization_id=organization_id,
        agent_id="agent-1",
        activity=activity,
        credits=credits(amount),
        quantity=None,
        idem=ledger.IdempotencyKey.for_request("service:setup", f"{user_id}-{activity}", "spendCredits", {}),
        now=now,
    )
    return result.usage_event_id


async def state(org: Org) -> tuple[Any, ...]:
    """What a request about ``org`` could change: its members, budgets, pool and usage, and every user's
    own account."""
    pool = await CreditAccount.filter(organization_id=org.pk).first()
    return (
        sorted((m.user_id, m.roles) for m in await Membership.filter(organization_id=org.pk)),
        sorted((await organizations.budgets([org.pk]))[org.pk].items()),
        None if pool is None else (pool.id, pool.balance, pool.version, pool.overdraft, pool.alert_levels),
        await UsageEvent.filter(organization_id=org.pk).count(),
        await PaymentMethod.filter(account__organization_id=org.pk).count(),
        sorted((t.id, t.status, t.failure_reason) for t in await Transaction.filter(account__organization_id=org.pk)),
        sorted((a.id, a.balance, a.version, a.overdraft) for a in await CreditAccount.filter(user_id__not_isnull=True)),
        sorted((i.id, i.email, i.roles, i.status) for i in await Invitation.filter(organization_id=org.pk)),
        await ApiToken.filter(name="matrix").count(),  # createApiToken's cells
        await PortalCode.filter(account__organization_id=org.pk).count(),
        sorted((h.id, h.amount, h.status, h.expires_at) for h in await Hold.filter(account__organization_id=org.pk)),
        sorted((u.id, u.email, u.external_id, repr(u.metadata)) for u in await User.all()),
        sorted((o.id, o.name, o.external_id, repr(o.metadata)) for o in await Organization.all()),
        sorted(
            (x.id, x.subject, x.kind, x.window, x.amount, x.paused, x.paused_until)
            for x in await SpendLimit.filter(account__organization_id=org.pk)
        ),
        sorted((e.id, e.url, e.description, e.status, e.secret) for e in await WebhookEndpoint.all()),
        sorted((d.id, d.status, d.next_attempt_at) for d in await WebhookDelivery.all()),
    )


@dataclass
class Shared:
    api: Api
    stripe: HostedGateway
    """The stripe gateway against the Stripe stand-in, for the cells of ``Operation.hosted``."""
    world: World | None = None


@pytest.fixture(scope="module")
async def shared(backend: Backend, stripe_standin: StripeStandIn) -> AsyncIterator[Shared]:
    """One app and one world per backend, for all the cells of this module."""
    clock = Clock()
    clock.freeze(T0)
    settings = Settings(database_url="unused", token_cache_seconds=0)
    app = create_app(settings, clock=clock, manage_database=False, run_jobs=False)
    stripe = gateway_for(stripe_settings(settings, stripe_standin, "stripe"))
    assert isinstance(stripe, HostedGateway)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield Shared(Api(client, app, clock, settings), stripe)
    finally:
        await stripe.close()


@pytest.fixture
async def world(shared: Shared, backend: Backend) -> AsyncIterator[World]:
    """The shared world, built again if another test emptied the database since; audited after each cell."""
    world = shared.world
    admin = world.tokens["admin"] if world else None
    if world is None or admin is None or not await ApiToken.exists(token_hash=digest(admin)):
        await reset(backend)
        world = shared.world = await build_world(shared.api)
    yield world
    assert await ledger.audit() == []


# ------------------------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    document: str
    variables: Callable[[World, Org], dict[str, Any]]
    path: tuple[str, ...]
    """Where the guarded value is in ``data``; a ``null`` on the way there is NULL."""
    ok: Callable[[World, Org, str], Any]
    """The value at ``path`` for a caller whose cell is OK."""
    mutation: bool = False
    with_pool: bool = True
    prepare: Callable[[World, Org], Awaitable[dict[str, Any]]] | None = None
    """Makes what the cell acts on (in the cell's own organization) and returns more variables."""
    hosted: Callable[[Services, HostedGateway, Org], Awaitable[dict[str, Any]]] | None = None
    """Runs the cell on the stripe gateway (against the stand-in), after this has opened there what the cell acts
    on (in the cell's own organization); returns more variables."""


def _node(selection: str) -> str:
    return f"query($id: ID!) {{ node(id: $id) {{ __typename {selection} }} }}"


def _org(selection: str) -> str:
    return f"query($org: ID!) {{ node(id: $org) {{ ... on Organization {{ {selection} }} }} }}"


def _mutation(name: str, arguments: str, selection: str, variables: str = "$org: ID!, $user: ID!") -> str:
    return (
        f"mutation({variables}) {{ {name}(input: {{{arguments}}}) {{ __typename"
        f" ... on {name[0].upper()}{name[1:]}Success {{ {selection} }} ... on Error {{ message }} }} }}"
    )


def _members(budgets: bool) -> list[dict[str, Any]]:
    members = [("owner", "OWNER"), ("billing", "BILLING"), ("member", "MEMBER")]
    if budgets:
        return [{"email": EMAILS[who], "monthlyBudget": BUDGET if who == "member" else None} for who, _ in members]
    return [{"email": EMAILS[who], "roles": [role]} for who, role in members]


DAY = {"from": T0.replace(hour=0).isoformat(), "to": (T0.replace(hour=0) + timedelta(days=1)).isoformat()}
MEMBER_IN_ORG = "organizationId: $org, userId: $user"


def _member_account(selection: str, path: str, ok: Callable[[World], Any], variables: str = "$id: ID!") -> Operation:
    """A field of the member's own account, read through ``node``."""
    return Operation(
        f"query({variables}) {{ node(id: $id) {{ ... on CreditAccount {{ {selection} }} }} }}",
        lambda w, o: {"id": w.member_account, **(DAY if "$from" in variables else {})},
        ("node", path),
        lambda w, o, who: ok(w),
    )


def _member_billing(type_name: str, selection: str, ok: Callable[[World], dict[str, Any]]) -> Operation:
    """One of the member's payment objects, read through ``node``."""
    return Operation(
        _node(f"... on {type_name} {{ id {selection} }}"),
        lambda w, o: {"id": w.member_billing[type_name]},
        ("node",),
        lambda w, o, who: {"__typename": type_name, "id": w.member_billing[type_name], **ok(w)},
    )


def _invitation_cell(mutation: str, selection: str, status: str, invitation: Callable[[Org], str]) -> Operation:
    name = f"{mutation[0].upper()}{mutation[1:]}"
    return Operation(
        f"mutation($id: ID!) {{ {mutation}(input: {{invitationId: $id}}) {{ __typename"
        f" ... on {name}Success {{ {selection} }} ... on Error {{ message }} }} }}",
        lambda w, o: {"id": invitation(o)},
        (mutation,),
        lambda w, o, who: {
            "__typename": f"{name}Success",
            **({"membership": {"roles": ["MEMBER"]}} if mutation == "acceptInvitation" else {}),
            "invitation": {"status": status},
        },
        mutation=True,
    )


INVITATION_NODE = "... on Invitation { id roles status organizationName }"
HOLD_AMOUNT = "1.125"


async def _member_hold(world: World, org: Org) -> dict[str, Any]:
    """The member's agent sets HOLD_AMOUNT of the cell's pool aside for an hour: the hold a cell adjusts."""
    placed = await ledger.hold(
        ("organization_id", org.pk),
        user_id=world.users["member"],
        organization_id=org.pk,
        agent_id="agent-1",
        activity="answer",
        credits=credits(HOLD_AMOUNT),
        expires_at=T0 + timedelta(hours=1),
        idem=ledger.IdempotencyKey.for_request("service:setup", f"hold-{org.pk}", "holdCredits", {}),
        now=T0,
    )
    return {"hold": gid("Hold", placed.hold_id)}


async def _pool_checkout(services: Services, gateway: HostedGateway, org: Org) -> dict[str, Any]:
    """A 50-credit top-up of the cell's pool, PENDING on its open Checkout page at the stand-in."""
    pool = await CreditAccount.get(organization_id=org.pk)
    idem = ledger.IdempotencyKey.for_request("service:setup", f"checkout-{org.pk}", "topUp", {})
    txn = await checkout.top_up(services, gateway, pool.id, credits=50 * MICRO, idem=idem)
    assert txn.checkout_url is not None, txn.failure_reason
    return {"txn": gid("Transaction", txn.id)}


OPERATIONS: dict[str, Operation] = {
    "me": Operation(
        "{ me { email } }",
        lambda w, o: {},
        ("me",),
        lambda w, o, who: {"email": EMAILS[who]},
    ),
    "node(Organization)": Operation(
        _node("... on Organization { id name }"),
        lambda w, o: {"id": o.id},
        ("node",),
        lambda w, o, who: {"__typename": "Organization", "id": o.id, "name": "Acme"},
    ),
    "node(pool CreditAccount)": Operation(
        _node("... on CreditAccount { id balance { total } }"),
        lambda w, o: {"id": o.pool},
        ("node",),
        lambda w, o, who: {"__typename": "CreditAccount", "id": o.pool, "balance": {"total": POOL_LEFT}},
    ),
    "node(pool UsageEvent)": Operation(
        _node("... on UsageEvent { id credits activity }"),
        lambda w, o: {"id": w.pool_usage},
        ("node",),
        lambda w, o, who: {
            "__typename": "UsageEvent",
            "id": w.pool_usage,
            "credits": POOL_SPEND,
            "activity": "web_search",
        },
    ),
    "node(member's User)": Operation(
        _node("... on User { id email }"),
        lambda w, o: {"id": w.member_user},
        ("node",),
        lambda w, o, who: {"__typename": "User", "id": w.member_user, "email": EMAILS["member"]},
    ),
    "node(member's CreditAccount)": Operation(
        _node("... on CreditAccount { id balance { total } }"),
        lambda w, o: {"id": w.member_account},
        ("node",),
        lambda w, o, who: {"__typename": "CreditAccount", "id": w.member_account, "balance": {"total": MEMBER_TOTAL}},
    ),
    "node(member's CreditLot)": Operation(
        _node("... on CreditLot { id amount remaining }"),
        lambda w, o: {"id": w.member_lot},
        ("node",),
        lambda w, o, who: {
            "__typename": "CreditLot",
            "id": w.member_lot,
            "amount": MEMBER_LOT,
            "remaining": MEMBER_LEFT,
        },
    ),
    "node(member's UsageEvent)": Operation(
        _node("... on UsageEvent { id credits activity }"),
        lambda w, o: {"id": w.member_usage},
        ("node",),
        lambda w, o, who: {
            "__typename": "UsageEvent",
            "id": w.member_usage,
            "credits": MEMBER_SPEND,
            "activity": "answer",
        },
    ),
    "Organization.members": Operation(
        _org("members { email roles }"),
        lambda w, o: {"org": o.id},
        ("node", "members"),
        lambda w, o, who: _members(budgets=False),
    ),
    "Organization.creditPool": Operation(
        _org("creditPool { id balance { total } }"),
        lambda w, o: {"org": o.id},
        ("node", "creditPool"),
        lambda w, o, who: {"id": o.pool, "balance": {"total": POOL_LEFT}},
    ),
    "Organization.usageReport": Operation(
        """query($org: ID!, $from: DateTime!, $to: DateTime!) { node(id: $org) { ... on Organization {
             usageReport(input: {from: $from, to: $to, granularity: DAY}) { __typename
               ... on UsageReport { totals { events credits } rows { key totals { credits } } }
               ... on Error { message } } } } }""",
        lambda w, o: {"org": o.id, **DAY},
        ("node", "usageReport"),
        lambda w, o, who: {
            "__typename": "UsageReport",
            "totals": {"events": 1, "credits": POOL_SPEND},
            "rows": [{"key": None, "totals": {"credits": POOL_SPEND}}],
        },
    ),
    "Membership.monthlyBudget": Operation(
        _org("members { email monthlyBudget }"),
        lambda w, o: {"org": o.id},
        ("node", "members"),
        lambda w, o, who: _members(budgets=True),
    ),
    "Membership.spendLimits": Operation(
        _org("members { email spendLimits { scope window amount } }"),
        lambda w, o: {"org": o.id},
        ("node", "members"),
        lambda w, o, who: [
            {
                "email": EMAILS[member],
                # The member's monthly budget is their MONTH limit on the pool, listed with the others.
                "spendLimits": [
                    {"scope": "MEMBER", "window": "MONTH", "amount": BUDGET},
                    {"scope": "MEMBER", "window": "WEEK", "amount": MEMBER_WEEKLY},
                ]
                if member == "member"
                else [],
            }
            for member in ("owner", "billing", "member")
        ],
    ),
    "me.invitations": Operation(
        "{ me { invitations(first: 10) { edges { node { organizationName roles status } } } } }",
        lambda w, o: {},
        ("me", "invitations"),
        lambda w, o, who: {
            "edges": [{"node": {"organizationName": "Acme", "roles": ["MEMBER"], "status": "PENDING"}}]
            if who == "outsider"
            else []
        },
    ),
    "me.apiTokens": Operation(
        "{ me { apiTokens(first: 1) { edges { node { kind } } } } }",
        lambda w, o: {},
        ("me", "apiTokens"),
        lambda w, o, who: {"edges": [{"node": {"kind": "USER"}}]},
    ),
    "apiTokens": Operation(
        "{ apiTokens(first: 1, filter: {kind: SERVICE}) { edges { node { kind } } } }",
        lambda w, o: {},
        ("apiTokens",),
        lambda w, o, who: {"edges": [{"node": {"kind": "SERVICE"}}]},
    ),
    "Organization.invitations": Operation(
        _org("invitations(first: 10) { edges { node { roles status } } }"),
        lambda w, o: {"org": o.id},
        ("node", "invitations"),
        lambda w, o, who: {
            "edges": [{"node": {"roles": roles, "status": "PENDING"}} for roles in (["MEMBER"], ["BILLING"])]
        },
    ),
    "node(prospect's Invitation)": Operation(
        _node(INVITATION_NODE),
        lambda w, o: {"id": o.invitation},
        ("node",),
        lambda w, o, who: {
            "__typename": "Invitation",
            "id": o.invitation,
            "roles": ["BILLING"],
            "status": "PENDING",
            "organizationName": "Acme",
        },
    ),
    "node(outsider's Invitation)": Operation(
        _node(INVITATION_NODE),
        lambda w, o: {"id": o.outsider_invitation},
        ("node",),
        lambda w, o, who: {
            "__typename": "Invitation",
            "id": o.outsider_invitation,
            "roles": ["MEMBER"],
            "status": "PENDING",
            "organizationName": "Acme",
        },
    ),
    # Balance and usage of the member's own account (balance:read for a service).
    "CreditAccount.ledger": _member_account(
        "ledger(first: 1) { edges { node { type delta } } }",
        "ledger",
        lambda w: {"edges": [{"node": {"type": "SPEND", "delta": f"-{MEMBER_SPEND}"}}]},
    ),
    "CreditAccount.usage": _member_account(
        "usage(first: 5) { edges { node { credits activity } } }",
        "usage",
        lambda w: {"edges": [{"node": {"credits": MEMBER_SPEND, "activity": "answer"}}]},
    ),
    "CreditAccount.holds": _member_account(
        "holds(first: 5) { edges { node { status } } }", "holds", lambda w: {"edges": []}
    ),
    "CreditAccount.spendLimits": _member_account(
        "spendLimits { scope window amount spent }",
        "spendLimits",
        lambda w: [{"scope": "ACCOUNT", "window": "DAY", "amount": MEMBER_CAP, "spent": "0"}],
    ),
    "CreditAccount.limitTripped": _member_account("limitTripped { id }", "limitTripped", lambda w: []),
    "CreditAccount.forecast": _member_account(
        "forecast { basis { spent } }", "forecast", lambda w: {"basis": {"spent": MEMBER_SPEND}}
    ),
    "CreditAccount.usageReport": _member_account(
        "usageReport(input: {from: $from, to: $to, granularity: DAY}) { __typename"
        " ... on UsageReport { totals { events credits } } ... on Error { message } }",
        "usageReport",
        lambda w: {"__typename": "UsageReport", "totals": {"events": 1, "credits": MEMBER_SPEND}},
        "$id: ID!, $from: DateTime!, $to: DateTime!",
    ),
    # Billing data of the member's own account (billing:read for a service).
    "CreditAccount.transactions": _member_account(
        "transactions(first: 5) { edges { node { type status credits amount { amount currency } } } }",
        "transactions",
        lambda w: {
            "edges": [
                {
                    "node": {
                        "type": "TOP_UP",
                        "status": "SUCCEEDED",
                        "credits": "10",
                        "amount": {"amount": 10, "currency": "USD"},
                    }
                }
            ]
        },
    ),
    "CreditAccount.invoices": _member_account(
        "invoices(first: 5) { edges { node { number signedUrl } } }",
        "invoices",
        lambda w: {
            "edges": [
                {"node": {"number": w.member_billing["invoice number"], "signedUrl": w.member_billing["signedUrl"]}}
            ]
        },
    ),
    "CreditAccount.paymentMethods": _member_account(
        "paymentMethods { brand last4 }", "paymentMethods", lambda w: [{"brand": "visa", "last4": "4242"}]
    ),
    "CreditAccount.subscription": _member_account(
        "subscription { status planId }", "subscription", lambda w: {"status": "ACTIVE", "planId": "starter-monthly"}
    ),
    "CreditAccount.autoTopUp": _member_account(
        "autoTopUp { status threshold }", "autoTopUp", lambda w: {"status": "ACTIVE", "threshold": "1"}
    ),
    "node(member's Transaction)": _member_billing(
        "Transaction", "status credits", lambda w: {"status": "SUCCEEDED", "credits": "10"}
    ),
    "node(member's Invoice)": _member_billing(
        "Invoice",
        "number signedUrl",
        lambda w: {"number": w.member_billing["invoice number"], "signedUrl": w.member_billing["signedUrl"]},
    ),
    "node(member's PaymentMethod)": _member_billing("PaymentMethod", "last4", lambda w: {"last4": "4242"}),
    "node(member's Subscription)": _member_billing("Subscription", "status", lambda w: {"status": "ACTIVE"}),
    "inviteMember": Operation(
        _mutation(
            "inviteMember",
            f'organizationId: $org, email: "{SECOND_PROSPECT}", roles: [MEMBER]',
            "invitation { email roles status }",
            variables="$org: ID!",
        ),
        lambda w, o: {"org": o.id},
        ("inviteMember",),
        lambda w, o, who: {
            "__typename": "InviteMemberSuccess",
            "invitation": {"email": SECOND_PROSPECT, "roles": ["MEMBER"], "status": "PENDING"},
        },
        mutation=True,
    ),
    "revokeInvitation": _invitation_cell(
        "revokeInvitation", "invitation { status }", "REVOKED", lambda o: o.invitation
    ),
    "acceptInvitation": _invitation_cell(
        "acceptInvitation", "membership { roles } invitation { status }", "ACCEPTED", lambda o: o.outsider_invitation
    ),
    "declineInvitation": _invitation_cell(
        "declineInvitation", "invitation { status }", "DECLINED", lambda o: o.outsider_invitation
    ),
    "addMember": Operation(
        _mutation(
            "addMember",
            f'organizationId: $org, email: "{NEWCOMER}", roles: [MEMBER]',
            "membership { email roles }",
            variables="$org: ID!",
        ),
        lambda w, o: {"org": o.id},
        ("addMember",),
        lambda w, o, who: {"__typename": "AddMemberSuccess", "membership": {"email": NEWCOMER, "roles": ["MEMBER"]}},
        mutation=True,
    ),
    "setMemberRoles": Operation(
        _mutation("setMemberRoles", f"{MEMBER_IN_ORG}, roles: [BILLING]", "membership { email roles }"),
        lambda w, o: {"org": o.id, "user": w.member_user},
        ("setMemberRoles",),
        lambda w, o, who: {
            "__typename": "SetMemberRolesSuccess",
            "membership": {"email": EMAILS["member"], "roles": ["BILLING"]},
        },
        mutation=True,
    ),
    "removeMember": Operation(
        _mutation("removeMember", MEMBER_IN_ORG, "organization { name }"),
        lambda w, o: {"org": o.id, "user": w.member_user},
        ("removeMember",),
        lambda w, o, who: {"__typename": "RemoveMemberSuccess", "organization": {"name": o.name}},
        mutation=True,
    ),
    "enableCreditPool": Operation(
        _mutation("enableCreditPool", "organizationId: $org", "creditPool { balance { total } }", "$org: ID!"),
        lambda w, o: {"org": o.id},
        ("enableCreditPool",),
        lambda w, o, who: {"__typename": "EnableCreditPoolSuccess", "creditPool": {"balance": {"total": "0"}}},
        mutation=True,
        with_pool=False,
    ),
    "setMemberBudget": Operation(
        _mutation("setMemberBudget", f'{MEMBER_IN_ORG}, monthlyCredits: "3"', "membership { email monthlyBudget }"),
        lambda w, o: {"org": o.id, "user": w.member_user},
        ("setMemberBudget",),
        lambda w, o, who: {
            "__typename": "SetMemberBudgetSuccess",
            "membership": {"email": EMAILS["member"], "monthlyBudget": "3"},
        },
        mutation=True,
    ),
    "setSpendLimit(pool)": Operation(
        _mutation(
            "setSpendLimit",
            'accountId: $account, scope: ACCOUNT, window: DAY, amount: "3"',
            "created limit { scope amount }",
            "$account: ID!",
        ),
        lambda w, o: {"account": o.pool},
        ("setSpendLimit",),
        lambda w, o, who: {
            "__typename": "SetSpendLimitSuccess",
            "created": True,
            "limit": {"scope": "ACCOUNT", "amount": "3"},
        },
        mutation=True,
    ),
    "removeSpendLimit(pool)": Operation(
        _mutation("removeSpendLimit", "limitId: $limit", "limit { agentId amount }", "$limit: ID!"),
        lambda w, o: {"limit": o.limit},
        ("removeSpendLimit",),
        lambda w, o, who: {
            "__typename": "RemoveSpendLimitSuccess",
            "limit": {"agentId": "matrix-bot", "amount": "100"},
        },
        mutation=True,
    ),
    "resumeAgent(pool)": Operation(
        _mutation(
            "resumeAgent", 'accountId: $account, agentId: "matrix-bot"', "limits { kind paused }", "$account: ID!"
        ),
        lambda w, o: {"account": o.pool},
        ("resumeAgent",),
        lambda w, o, who: {"__typename": "ResumeAgentSuccess", "limits": [{"kind": "VELOCITY", "paused": False}]},
        mutation=True,
    ),
    "user(id)": Operation(
        "query($id: ID!) { user(id: $id) { email externalId } }",
        lambda w, o: {"id": w.member_user},
        ("user",),
        lambda w, o, who: {"email": EMAILS["member"], "externalId": None},
    ),
    "user(externalId)": Operation(
        "query($ext: String!) { user(externalId: $ext) { email externalId } }",
        lambda w, o: {"ext": NEWCOMER_EXTERNAL_ID},
        ("user",),
        lambda w, o, who: {"email": NEWCOMER, "externalId": NEWCOMER_EXTERNAL_ID},
    ),
    "organization(id)": Operation(
        "query($org: ID!) { organization(id: $org) { name externalId } }",
        lambda w, o: {"org": o.id},
        ("organization",),
        lambda w, o, who: {"name": "Acme", "externalId": None},
    ),
    "createUser": Operation(
        _mutation(
            "createUser",
            "email: $email, externalId: $ext",
            "user { email externalId }",
            "$email: String!, $ext: String!",
        ),
        lambda w, o: {"email": f"provisioned-{o.pk}@example.com", "ext": f"cus_{o.pk}"},
        ("createUser",),
        lambda w, o, who: {
            "__typename": "CreateUserSuccess",
            "user": {"email": f"provisioned-{o.pk}@example.com", "externalId": f"cus_{o.pk}"},
        },
        mutation=True,
        with_pool=False,
    ),
    "createApiToken(member)": Operation(
        _mutation(
            "createApiToken", 'kind: USER, name: "matrix", userId: $user', "apiToken { kind name }", "$user: ID!"
        ),
        lambda w, o: {"user": w.member_user},
        ("createApiToken",),
        lambda w, o, who: {"__typename": "CreateApiTokenSuccess", "apiToken": {"kind": "USER", "name": "matrix"}},
        mutation=True,
        with_pool=False,
    ),
    "updateUser": Operation(
        _mutation("updateUser", "userId: $user, metadata: $meta", "user { metadata }", "$user: ID!, $meta: Metadata"),
        lambda w, o: {"user": w.member_user, "meta": {"cell": o.pk}},
        ("updateUser",),
        lambda w, o, who: {"__typename": "UpdateUserSuccess", "user": {"metadata": {"cell": o.pk}}},
        mutation=True,
        with_pool=False,
    ),
    "createOrganization(ownerId)": Operation(
        _mutation(
            "createOrganization", "name: $name, ownerId: $user", "organization { name }", "$name: String!, $user: ID!"
        ),
        lambda w, o: {"name": f"Initech {o.pk}", "user": w.member_user},
        ("createOrganization",),
        lambda w, o, who: {"__typename": "CreateOrganizationSuccess", "organization": {"name": f"Initech {o.pk}"}},
        mutation=True,
        with_pool=False,
    ),
    "updateOrganization": Operation(
        _mutation(
            "updateOrganization",
            "organizationId: $org, externalId: $ext",
            "organization { name externalId }",
            "$org: ID!, $ext: String!",
        ),
        lambda w, o: {"org": o.id, "ext": f"org_{o.pk}"},
        ("updateOrganization",),
        lambda w, o, who: {
            "__typename": "UpdateOrganizationSuccess",
            "organization": {"name": o.name, "externalId": f"org_{o.pk}"},
        },
        mutation=True,
        with_pool=False,
    ),
    "addMember(externalUserId)": Operation(
        _mutation(
            "addMember",
            f'organizationId: $org, externalUserId: "{NEWCOMER_EXTERNAL_ID}", roles: [MEMBER]',
            "membership { email roles }",
            variables="$org: ID!",
        ),
        lambda w, o: {"org": o.id},
        ("addMember",),
        lambda w, o, who: {"__typename": "AddMemberSuccess", "membership": {"email": NEWCOMER, "roles": ["MEMBER"]}},
        mutation=True,
        with_pool=False,
    ),
    "grantCredits(pool)": Operation(
        _mutation(
            "grantCredits",
            'accountId: $account, credits: "5", kind: PAID, idempotencyKey: $key',
            "balance { total }",
            "$account: ID!, $key: String!",
        ),
        lambda w, o: {"account": o.pool, "key": f"grant-{o.pk}"},
        ("grantCredits",),
        lambda w, o, who: {"__typename": "GrantCreditsSuccess", "balance": {"total": "15.375"}},
        mutation=True,
    ),
    "setOverdraft(pool)": Operation(
        _mutation(
            "setOverdraft", 'accountId: $account, overdraft: "3"', "balance { overdraft available }", "$account: ID!"
        ),
        lambda w, o: {"account": o.pool},
        ("setOverdraft",),
        lambda w, o, who: {"__typename": "SetOverdraftSuccess", "balance": {"overdraft": "3", "available": POOL_LEFT}},
        mutation=True,
    ),
    "topUp(pool)": Operation(
        _mutation(
            "topUp",
            'accountId: $account, credits: "10", paymentToken: "tok_visa", idempotencyKey: $key',
            "transaction { status credits }",
            "$account: ID!, $key: String!",
        ),
        lambda w, o: {"account": o.pool, "key": f"top-up-{o.pk}"},
        ("topUp",),
        lambda w, o, who: {"__typename": "TopUpSuccess", "transaction": {"status": "SUCCEEDED", "credits": "10"}},
        mutation=True,
    ),
    "cancelCheckout(pool)": Operation(
        _mutation("cancelCheckout", "transactionId: $txn", "transaction { status failureReason }", "$txn: ID!"),
        lambda w, o: {},
        ("cancelCheckout",),
        lambda w, o, who: {
            "__typename": "CancelCheckoutSuccess",
            "transaction": {"status": "FAILED", "failureReason": "The checkout was canceled"},
        },
        mutation=True,
        hosted=_pool_checkout,
    ),
    "addPaymentMethod(pool)": Operation(
        _mutation(
            "addPaymentMethod", 'accountId: $account, token: "tok_visa"', "paymentMethod { last4 }", "$account: ID!"
        ),
        lambda w, o: {"account": o.pool},
        ("addPaymentMethod",),
        lambda w, o, who: {"__typename": "AddPaymentMethodSuccess", "paymentMethod": {"last4": "4242"}},
        mutation=True,
    ),
    "createAgentToken(pool)": Operation(
        _mutation(
            "createAgentToken",
            'name: "matrix", accountId: $org, agentId: "bot"',
            "apiToken { kind name agentId scopes accountId }",
            "$org: ID!",
        ),
        lambda w, o: {"org": o.id},
        ("createAgentToken",),
        lambda w, o, who: {
            "__typename": "CreateAgentTokenSuccess",
            "apiToken": {
                "kind": "SERVICE",
                "name": "matrix",
                "agentId": "bot",
                # The token reads the pool's balance only if its minter may: not a MEMBER, not this service.
                "scopes": ["usage:write"] if who in ("member", "service") else ["balance:read", "usage:write"],
                "accountId": o.pool,
            },
        },
        mutation=True,
    ),
    "CreditAccount.agentTokens(pool)": Operation(
        _node("... on CreditAccount { agentTokens(first: 5) { edges { node { id } } } }"),
        lambda w, o: {"id": o.pool},
        ("node", "agentTokens"),
        lambda w, o, who: {"edges": []},
    ),
    "createPortalSession(pool)": Operation(
        _mutation("createPortalSession", "organizationId: $org", "accountId", "$org: ID!"),
        lambda w, o: {"org": o.id},
        ("createPortalSession",),
        lambda w, o, who: {"__typename": "CreatePortalSessionSuccess", "accountId": o.pool},
        mutation=True,
    ),
    "spendCredits(organizationId)": Operation(
        _mutation(
            "spendCredits",
            f'{MEMBER_IN_ORG}, agentId: "agent-1", activity: "answer", credits: "1", idempotencyKey: $key',
            "usageEvent { credits activity } balance { total }",
            "$org: ID!, $user: ID!, $key: String!",
        ),
        lambda w, o: {"org": o.id, "user": w.member_user, "key": f"spend-{o.pk}"},
        ("spendCredits",),
        lambda w, o, who: {
            "__typename": "SpendCreditsSuccess",
            "usageEvent": {"credits": "1", "activity": "answer"},
            "balance": {"total": "9.375"},
        },
        mutation=True,
    ),
    "spendCreditsBatch(organizationId)": Operation(
        _mutation(
            "spendCreditsBatch",
            f'events: [{{{MEMBER_IN_ORG}, agentId: "agent-1", activity: "answer", credits: "1",'
            " idempotencyKey: $key}]",
            "results { __typename ... on SpendCreditsSuccess { usageEvent { credits activity } balance { total } } }",
            "$org: ID!, $user: ID!, $key: String!",
        ),
        lambda w, o: {"org": o.id, "user": w.member_user, "key": f"batch-{o.pk}"},
        ("spendCreditsBatch",),
        lambda w, o, who: {
            "__typename": "SpendCreditsBatchSuccess",
            "results": [
                {
                    "__typename": "SpendCreditsSuccess",
                    "usageEvent": {"credits": "1", "activity": "answer"},
                    "balance": {"total": "9.375"},
                }
            ],
        },
        mutation=True,
    ),
    "extendHold": Operation(
        _mutation(
            "extendHold",
            "holdId: $hold, timeoutSeconds: 7200, idempotencyKey: $key",
            "hold { status amount expiresAt } balance { total held }",
            "$hold: ID!, $key: String!",
        ),
        lambda w, o: {"key": f"extend-{o.pk}"},
        ("extendHold",),
        lambda w, o, who: {
            "__typename": "ExtendHoldSuccess",
            "hold": {"status": "ACTIVE", "amount": HOLD_AMOUNT, "expiresAt": (T0 + timedelta(hours=2)).isoformat()},
            "balance": {"total": POOL_LEFT, "held": HOLD_AMOUNT},
        },
        mutation=True,
        prepare=_member_hold,
    ),
    "increaseHold": Operation(
        _mutation(
            "increaseHold",
            'holdId: $hold, credits: "2", idempotencyKey: $key',
            "hold { status amount } balance { total held }",
            "$hold: ID!, $key: String!",
        ),
        lambda w, o: {"key": f"increase-{o.pk}"},
        ("increaseHold",),
        lambda w, o, who: {
            "__typename": "IncreaseHoldSuccess",
            "hold": {"status": "ACTIVE", "amount": "3.125"},
            "balance": {"total": POOL_LEFT, "held": "3.125"},
        },
        mutation=True,
        prepare=_member_hold,
    ),
    "CreditAccount.alerts": _member_account("alerts { edges { node { kind } } }", "alerts", lambda w: {"edges": []}),
    "CreditAccount.alertLevels": _member_account(
        "alertLevels { levels isDefault }", "alertLevels", lambda w: {"levels": [], "isDefault": True}
    ),
    "setBalanceAlerts(pool)": Operation(
        _mutation(
            "setBalanceAlerts",
            'accountId: $account, levels: ["3"]',
            "alertLevels { levels isDefault }",
            "$account: ID!",
        ),
        lambda w, o: {"account": o.pool},
        ("setBalanceAlerts",),
        lambda w, o, who: {
            "__typename": "SetBalanceAlertsSuccess",
            "alertLevels": {"levels": ["3"], "isDefault": False},
        },
        mutation=True,
    ),
}


# Webhook endpoints (issue 13): admins only. Each cell starts from one endpoint of its own (the deployment's
# others deleted, so that the cells never reach the limit of 20) and one event it has delivered.
async def _only_endpoint(world: World, org: Org) -> dict[str, Any]:
    await WebhookEndpoint.all().delete()
    hook = await webhook_endpoint(T0, url=f"https://hooks.example.com/matrix-{org.pk}")
    sent = await webhook_event(T0)
    await webhook_delivery(hook, sent, T0, WebhookDeliveryStatus.SUCCEEDED, answers=(200,))
    return {"endpoint": gid("WebhookEndpoint", hook.id), "event": sent.public_id}


def _hook_ok(name: str, org: Org) -> dict[str, Any]:
    if name == "redeliverWebhookEvent":
        return {"delivery": {"status": "PENDING"}}
    status = "DISABLED" if name == "disableWebhookEndpoint" else "ENABLED"
    return {"endpoint": {"url": f"https://hooks.example.com/matrix-{org.pk}", "status": status}}


async def _no_endpoint(world: World, org: Org) -> dict[str, Any]:
    await WebhookEndpoint.all().delete()
    return {}


def _hook_mutation(name: str, arguments: str, selection: str) -> Operation:
    variables = "$endpoint: ID!, $event: String!" if "$event" in arguments else "$endpoint: ID!"
    return Operation(
        _mutation(name, arguments, selection, variables),
        lambda w, o: {},
        (name,),
        lambda w, o, who: {"__typename": f"{name[0].upper()}{name[1:]}Success", **_hook_ok(name, o)},
        mutation=True,
        with_pool=False,
        prepare=_only_endpoint,
    )


_HOOK = "endpoint { url status }"
OPERATIONS |= {
    "webhookEndpoints": Operation(
        "{ webhookEndpoints(first: 1) { pageInfo { hasPreviousPage } } }",
        lambda w, o: {},
        ("webhookEndpoints",),
        lambda w, o, who: {"pageInfo": {"hasPreviousPage": False}},
    ),
    "webhookEndpoint(id)": Operation(
        "query($endpoint: ID!) { webhookEndpoint(id: $endpoint) { url"
        " deliveries(first: 1) { edges { node { status event { id } } } } } }",
        lambda w, o: {},
        ("webhookEndpoint",),
        lambda w, o, who: {
            "url": f"https://hooks.example.com/matrix-{o.pk}",
            "deliveries": {"edges": [{"node": {"status": "SUCCEEDED", "event": {"id": ANY}}}]},
        },
        prepare=_only_endpoint,
    ),
    "webhookEvents": Operation(
        "{ webhookEvents(first: 1) { pageInfo { hasPreviousPage } } }",
        lambda w, o: {},
        ("webhookEvents",),
        lambda w, o, who: {"pageInfo": {"hasPreviousPage": False}},
    ),
    "createWebhookEndpoint": Operation(
        _mutation("createWebhookEndpoint", "url: $url", "endpoint { url status } secret", "$url: String!"),
        lambda w, o: {"url": f"https://hooks.example.com/matrix-{o.pk}"},
        ("createWebhookEndpoint",),
        lambda w, o, who: {
            "__typename": "CreateWebhookEndpointSuccess",
            "endpoint": {"url": f"https://hooks.example.com/matrix-{o.pk}", "status": "ENABLED"},
            "secret": ANY,
        },
        mutation=True,
        with_pool=False,
        prepare=_no_endpoint,
    ),
    "updateWebhookEndpoint": _hook_mutation("updateWebhookEndpoint", 'endpointId: $endpoint, description: "m"', _HOOK),
    "rotateWebhookSecret": _hook_mutation("rotateWebhookSecret", "endpointId: $endpoint", _HOOK),
    "disableWebhookEndpoint": _hook_mutation("disableWebhookEndpoint", "endpointId: $endpoint", _HOOK),
    "deleteWebhookEndpoint": _hook_mutation("deleteWebhookEndpoint", "endpointId: $endpoint", _HOOK),
    "redeliverWebhookEvent": _hook_mutation(
        "redeliverWebhookEvent", "endpointId: $endpoint, eventId: $event", "delivery { status }"
    ),
}

# What the rules say each caller gets (columns in the order of PRINCIPALS).
#                                    owner     billing    member     outsider service    admin      anonymous
MATRIX: dict[str, tuple[str, ...]] = {
    "me":                           (OK,       OK,        OK,        OK,      FORBIDDEN, FORBIDDEN, UNAUTH),
    "node(Organization)":           (OK,       OK,        OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(pool CreditAccount)":     (OK,       OK,        NULL,      NULL,    NULL,      OK,        UNAUTH),
    "node(pool UsageEvent)":        (OK,       OK,        NULL,      NULL,    NULL,      OK,        UNAUTH),
    "node(member's User)":          (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's CreditAccount)": (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's CreditLot)":     (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's UsageEvent)":    (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "Organization.members":         (OK,       OK,        OK,        NULL,    NULL,      OK,        UNAUTH),
    "Organization.creditPool":      (OK,       OK,        FORBIDDEN, NULL,    NULL,      OK,        UNAUTH),
    "Organization.usageReport":     (OK,       OK,        DENIED,    NULL,    NULL,      OK,        UNAUTH),
    "Membership.monthlyBudget":     (OK,       OK,        OWN,       NULL,    NULL,      OK,        UNAUTH),
    "me.invitations":               (OK,       OK,        OK,        OK,      FORBIDDEN, FORBIDDEN, UNAUTH),
    "Organization.invitations":     (OK,       FORBIDDEN, FORBIDDEN, NULL,    NULL,      OK,        UNAUTH),
    "node(prospect's Invitation)":  (OK,       NULL,      NULL,      NULL,    NULL,      OK,        UNAUTH),
    "node(outsider's Invitation)":  (OK,       NULL,      NULL,      OK,      NULL,      OK,        UNAUTH),
    "CreditAccount.ledger":         (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.usage":          (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.holds":          (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.usageReport":    (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.spendLimits":    (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.limitTripped":   (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.forecast":       (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "Membership.spendLimits":       (OK,       OK,        FORBIDDEN, NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.transactions":   (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.invoices":       (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.paymentMethods": (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.subscription":   (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.autoTopUp":      (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's Transaction)":   (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's Invoice)":       (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's PaymentMethod)": (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "node(member's Subscription)":  (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "inviteMember":                 (OK,       DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "revokeInvitation":             (OK,       DENIED,    DENIED,    MISSING, DENIED,    OK,        UNAUTH),
    "acceptInvitation":             (MISSING,  MISSING,   MISSING,   OK,      DENIED,    DENIED,    UNAUTH),
    "declineInvitation":            (MISSING,  MISSING,   MISSING,   OK,      DENIED,    DENIED,    UNAUTH),
    "addMember":                    (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "setMemberRoles":               (OK,       DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "removeMember":                 (OK,       DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "enableCreditPool":             (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "setMemberBudget":              (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "grantCredits(pool)":           (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "setOverdraft(pool)":           (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "setBalanceAlerts(pool)":       (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "CreditAccount.alerts":         (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "CreditAccount.alertLevels":    (NULL,     NULL,      OK,        NULL,    NULL,      OK,        UNAUTH),
    "spendCredits(organizationId)": (DENIED,   DENIED,    DENIED,    DENIED,  OK,        OK,        UNAUTH),
    "spendCreditsBatch(organizationId)": (DENIED, DENIED,  DENIED,    DENIED,  OK,        OK,        UNAUTH),
    "topUp(pool)":                  (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "cancelCheckout(pool)":         (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "addPaymentMethod(pool)":       (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "createPortalSession(pool)":    (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "createAgentToken(pool)":       (OK,       OK,        OK,        DENIED,  OK,        OK,        UNAUTH),
    "CreditAccount.agentTokens(pool)": (OK,    OK,        NULL,      NULL,    NULL,      OK,        UNAUTH),
    "user(id)":                     (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "user(externalId)":             (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "organization(id)":             (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "createUser":                   (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "updateUser":                   (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "me.apiTokens":                 (OK,       OK,        OK,        OK,      FORBIDDEN, FORBIDDEN, UNAUTH),
    "apiTokens":                    (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "createApiToken(member)":       (DENIED,   DENIED,    OK,        DENIED,  DENIED,    OK,        UNAUTH),
    "createOrganization(ownerId)":  (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "updateOrganization":           (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "addMember(externalUserId)":    (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "extendHold":                   (DENIED,   DENIED,    DENIED,    DENIED,  OK,        OK,        UNAUTH),
    "increaseHold":                 (DENIED,   DENIED,    DENIED,    DENIED,  OK,        OK,        UNAUTH),
    "setSpendLimit(pool)":          (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "removeSpendLimit(pool)":       (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "resumeAgent(pool)":            (OK,       OK,        DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "webhookEndpoints":             (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "webhookEndpoint(id)":          (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "webhookEvents":                (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK,     UNAUTH),
    "createWebhookEndpoint":        (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "updateWebhookEndpoint":        (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "rotateWebhookSecret":          (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "disableWebhookEndpoint":       (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "deleteWebhookEndpoint":        (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
    "redeliverWebhookEvent":        (DENIED,   DENIED,    DENIED,    DENIED,  DENIED,    OK,        UNAUTH),
}  # fmt: skip

# What a service token with only ``balance:read`` or only ``billing:read`` gets (issue 9, point 9): balance and
# usage with the first, payments, invoices, cards and subscriptions with the second; neither writes anything.
_BALANCE, _BILLING = (OK, FORBIDDEN), (FORBIDDEN, OK)
_NEITHER, _NO_TOKEN_FOR_ME = (NULL, NULL), (FORBIDDEN, FORBIDDEN)
SCOPE_MATRIX: dict[str, tuple[str, ...]] = {
    "me": _NO_TOKEN_FOR_ME,
    "me.invitations": _NO_TOKEN_FOR_ME,
    "me.apiTokens": _NO_TOKEN_FOR_ME,
    "apiTokens": (FORBIDDEN, FORBIDDEN),
    "node(pool CreditAccount)": _BALANCE,
    "node(member's CreditAccount)": _BALANCE,
    "node(pool UsageEvent)": (OK, NULL),
    "node(member's CreditLot)": (OK, NULL),
    "node(member's UsageEvent)": (OK, NULL),
    "CreditAccount.ledger": _BALANCE,
    "CreditAccount.usage": _BALANCE,
    "CreditAccount.holds": _BALANCE,
    "CreditAccount.usageReport": (OK, DENIED),
    "CreditAccount.spendLimits": _BALANCE,
    "CreditAccount.limitTripped": _BALANCE,
    "CreditAccount.forecast": _BALANCE,
    "CreditAccount.alerts": _BALANCE,
    "CreditAccount.alertLevels": _BALANCE,
    "CreditAccount.transactions": _BILLING,
    "CreditAccount.invoices": _BILLING,
    "CreditAccount.paymentMethods": _BILLING,
    "CreditAccount.subscription": _BILLING,
    "CreditAccount.autoTopUp": _BILLING,
    "node(member's Transaction)": (NULL, OK),
    "node(member's Invoice)": (NULL, OK),
    "node(member's PaymentMethod)": (NULL, OK),
    "node(member's Subscription)": (NULL, OK),
    "user(id)": (OK, OK),
    "user(externalId)": (OK, OK),
    "organization(id)": (OK, OK),
    "CreditAccount.agentTokens(pool)": (FORBIDDEN, FORBIDDEN),  # listing agent tokens needs usage:write
    **dict.fromkeys(("webhookEndpoints", "webhookEndpoint(id)", "webhookEvents"), (FORBIDDEN, FORBIDDEN)),
    **{
        operation: _NEITHER
        for operation in OPERATIONS
        if operation.startswith(("node(Organization)", "node(member's User)", "Organization.", "Membership."))
        or operation.endswith("Invitation)")
    },
    **{operation: (DENIED, DENIED) for operation, op in OPERATIONS.items() if op.mutation},
}

# Cells where the code disagrees with the tables above (each fails, and must, until it is fixed).
BUGS: dict[tuple[str, str], str] = {}


def cells(mutations: bool) -> list[Any]:
    assert set(MATRIX) == set(OPERATIONS) == set(SCOPE_MATRIX)
    assert all(len(row) == len(PRINCIPALS) for row in MATRIX.values())
    assert all(len(row) == len(SCOPE_PRINCIPALS) for row in SCOPE_MATRIX.values())
    table = {operation: (*MATRIX[operation], *SCOPE_MATRIX[operation]) for operation in OPERATIONS}
    return [
        pytest.param(
            operation,
            principal,
            expected,
            id=f"{operation}-{principal}",
            marks=[pytest.mark.xfail(strict=True, reason=BUGS[operation, principal])]
            if (operation, principal) in BUGS
            else [],
        )
        for operation, row in table.items()
        if OPERATIONS[operation].mutation == mutations
        for principal, expected in zip(PRINCIPALS + SCOPE_PRINCIPALS, row, strict=True)
    ]


# ----------------------------------------------------------------------------------------------- tests


def outcome(body: dict[str, Any], path: tuple[str, ...]) -> tuple[str, Any]:
    """What the caller got, and the value at ``path``."""
    codes = {error.get("extensions", {}).get("code") for error in body.get("errors", [])}
    value: Any = body.get("data")
    for step in path:
        if value is None:
            break
        value = value[step]
    if codes == {"UNAUTHENTICATED"}:
        return UNAUTH, value
    if codes == {"FORBIDDEN"}:
        return FORBIDDEN, value
    assert not codes, body
    if value is None:
        return NULL, value
    if isinstance(value, dict) and value.get("__typename") == "Forbidden":
        return DENIED, value
    if isinstance(value, dict) and value.get("__typename") == "NotFound":
        return MISSING, value
    return OK, value


async def run_cell(
    api: Api, world: World, org: Org, operation: str, principal: str, expected: str, more: dict[str, Any] | None = None
) -> None:
    op = OPERATIONS[operation]
    token = world.tokens[principal]
    variables = {**op.variables(world, org), **(await op.prepare(world, org) if op.prepare else {}), **(more or {})}
    before = await state(org)

    response = await api.client.post(
        "/graphql",
        json={"query": op.document, "variables": variables},
        headers={"authorization": f"Bearer {token}"} if token else {},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    got, value = outcome(body, op.path)
    assert "globex" not in response.text.lower(), body
    assert GLOBEX_SPEND not in response.text, body
    if (operation, principal) != ("me", "outsider"):
        assert EMAILS["outsider"] not in response.text, body
    if got in (NULL, DENIED, MISSING, UNAUTH):
        assert "@" not in response.text, body
    if got == FORBIDDEN and value is not None and any(member.get("monthlyBudget") for member in value):
        # A budget beside FORBIDDEN may only be the caller's own, with every other member's refused.
        own = [i for i, member in enumerate(value) if member["email"] == EMAILS[principal]]
        assert sorted(e["path"][2] for e in body["errors"]) == [i for i in range(len(value)) if i not in own], body
        assert value == [
            {**m, "monthlyBudget": m["monthlyBudget"] if i in own else None} for i, m in enumerate(_members(True))
        ], body
        got = OWN
    if got == OK:
        assert value == op.ok(world, org, principal), body
    else:
        shown = {BUDGET} if got == OWN else set()
        assert [amount for amount in GUARDED if amount in response.text and amount not in shown] == [], body
    if got == FORBIDDEN:
        assert value is None or all(member.get("monthlyBudget") is None for member in value), body
    if got == DENIED:
        assert " need" in value["message"], body
    changed = await state(org) != before
    assert (got, changed) == (expected, op.mutation and expected == OK), body


@pytest.mark.parametrize(("operation", "principal", "expected"), cells(mutations=False))
async def test_query(shared: Shared, world: World, operation: str, principal: str, expected: str) -> None:
    await run_cell(shared.api, world, world.acme, operation, principal, expected)


@pytest.mark.parametrize(("operation", "principal", "expected"), cells(mutations=True))
async def test_mutation(shared: Shared, world: World, operation: str, principal: str, expected: str) -> None:
    op = OPERATIONS[operation]
    org = await fresh_org(shared.api, world, with_pool=op.with_pool)
    services: Services = shared.api.app.state.services
    sandbox = services.gateway
    try:
        more = {}
        if op.hosted is not None:
            services.gateway = shared.stripe
            more = await op.hosted(services, shared.stripe, org)
        await run_cell(shared.api, world, org, operation, principal, expected, more)
    finally:
        services.gateway = sandbox
        # The outsider's invitations to fresh organizations would show in the world's `me.invitations`.
        await Invitation.filter(organization_id=org.pk).delete()
