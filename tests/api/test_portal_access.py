"""What a portal session may do (docs/rules.md, Portal sessions), as a table over the whole schema: every root
query field, every field of CreditAccount and User, every mutation and every subscription has a decision for a
portal session of a user's own account and for one of an organization's pool. A field added to the schema
without a decision here fails ``test_every_field_of_the_schema_has_a_decision``.

A session reads its one account and pays for it (top-up and canceling its checkout, cards, subscription, auto
top-up, the Stripe customer portal); it never spends, holds, grants, refunds, creates sessions or organizations,
manages members or reads another account. Ada owns Acme, whose pool her own user token may read and pay for:
her portal session may not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from creditline.graphql import build_schema
from creditline.settings import Settings
from models import organizations, portal
from models.tables import ApiToken, CreditAccount, Invitation, MemberRole
from models.tokens import digest
from tests.support.backends import Backend
from tests.support.helpers import Api, gid
from tests.support.live import connect, receive, serve
from tests.support.snapshots import changed, snapshot

OK, FORBIDDEN = "OK", "FORBIDDEN"
SESSIONS = ("user", "pool")


@dataclass
class World:
    ids: dict[str, str]
    sessions: dict[str, str]
    tokens: dict[str, str]


async def _card(api: Api, admin: str, account: str) -> str:
    added = await api.data(
        """mutation($a: ID!) { addPaymentMethod(input: {accountId: $a, token: "tok_visa"}) {
             ... on AddPaymentMethodSuccess { paymentMethod { id } } } }""",
        {"a": account},
        admin,
    )
    card: str = added["addPaymentMethod"]["paymentMethod"]["id"]
    return card


async def _subscribe(api: Api, admin: str, account: str) -> None:
    done = await api.data(
        """mutation($a: ID!, $k: String!) { subscribe(input: {accountId: $a, planId: "starter-monthly",
             idempotencyKey: $k}) { __typename } }""",
        {"a": account, "k": account},
        admin,
    )
    assert done == {"subscribe": {"__typename": "SubscribeSuccess"}}


async def build_world(api: Api, *, subscribed: bool) -> World:
    """Ada (owner of Acme, with a pool) and Eve (owner of Globex, which invited Ada), each account with a
    saved card (and, if asked, a subscription); a portal session of Ada's account and one of Acme's pool."""
    now = api.clock.now()
    ada, ada_token = await api.user("ada@example.com", bonus=5)
    eve, _ = await api.user("eve@example.com", bonus=5)
    bob, _ = await api.user("bob@example.com", bonus=0)
    admin = await api.admin()
    acme = await organizations.create("Acme", ada, now)
    await organizations.add_member(acme.id, bob, [MemberRole.MEMBER], now)
    pool = await organizations.enable_pool(acme.id, now)
    globex = await organizations.create("Globex", eve, now)
    invitation = await Invitation.create(
        organization_id=globex.id,
        email="ada@example.com",
        roles="MEMBER",
        status="PENDING",
        invited_by_id=eve,
        idempotency_scope="user:eve",
        request_hash="-",
        created_at=now,
        expires_at=now + timedelta(days=7),
    )
    accounts = {
        "ada account": (await CreditAccount.get(user_id=ada)).id,
        "eve account": (await CreditAccount.get(user_id=eve)).id,
        "pool": pool.id,
    }
    ids = {name: gid("CreditAccount", pk) for name, pk in accounts.items()}
    ids |= {"ada": gid("User", ada), "bob": gid("User", bob), "acme": gid("Organization", acme.id)}
    ids |= {"globex": gid("Organization", globex.id), "invitation": gid("Invitation", invitation.id)}
    ada_token_row = await ApiToken.get(token_hash=digest(ada_token))
    ids["ada token"] = gid("ApiToken", ada_token_row.id)
    for name in ("ada account", "pool", "eve account"):
        ids[f"{name} card"] = await _card(api, admin, ids[name])
        if subscribed:
            await _subscribe(api, admin, ids[name])
    topped = await api.data(
        """mutation($a: ID!) { topUp(input: {accountId: $a, credits: "10", paymentToken: "tok_visa",
             idempotencyKey: "t0"}) { ... on TopUpSuccess { transaction { id } } } }""",
        {"a": ids["eve account"]},
        admin,
    )
    ids["eve transaction"] = topped["topUp"]["transaction"]["id"]
    for name in ("ada account", "pool"):
        made = await api.data(
            """mutation($a: ID!) { setSpendLimit(input: {accountId: $a, scope: AGENT, agentId: "bot", window: DAY,
                 amount: "2"}) { ... on SetSpendLimitSuccess { limit { id } } } }""",
            {"a": ids[name]},
            admin,
        )
        ids[f"{name} limit"] = made["setSpendLimit"]["limit"]["id"]
    sessions = {}
    for session, account in (("user", accounts["ada account"]), ("pool", accounts["pool"])):
        code, _ = await portal.mint_code(account, created_by="test", now=now, lifetime=timedelta(minutes=10))
        response = await api.client.post("/portal/session", json={"code": code})
        sessions[session] = response.json()["token"]
    return World(ids, sessions, {"ada": ada_token, "admin": admin})


def _own(session: str) -> str:
    return "ada account" if session == "user" else "pool"


# ------------------------------------------------------------------------------------------------ queries

ROOT_QUERIES: dict[str, tuple[str, tuple[str, str]]] = {
    "me": ("{ me { email } }", (OK, FORBIDDEN)),
    "node": ("query($own: ID!) { node(id: $own) { id } }", (OK, OK)),
    "billingConfig": ("{ billingConfig { gateway } }", (OK, OK)),
    "plans": ("{ plans { id } }", (OK, OK)),
    "rateCard": ("{ rateCard { activity } }", (OK, OK)),
    "apiTokens": ("{ apiTokens(first: 5) { edges { node { id } } } }", (FORBIDDEN, FORBIDDEN)),
    "user": ('{ user(externalId: "someone") { id } }', (FORBIDDEN, FORBIDDEN)),
    "organization": ('{ organization(externalId: "some-org") { id } }', (FORBIDDEN, FORBIDDEN)),
    "webhookEndpoints": ("{ webhookEndpoints(first: 5) { edges { node { id } } } }", (FORBIDDEN, FORBIDDEN)),
    "webhookEndpoint": ('{ webhookEndpoint(id: "V2ViaG9va0VuZHBvaW50OjE=") { url } }', (FORBIDDEN, FORBIDDEN)),
    "webhookEvents": ("{ webhookEvents(first: 5) { edges { node { id } } } }", (FORBIDDEN, FORBIDDEN)),
}
ACCOUNT_FIELDS: dict[str, str] = {
    "id": "id",
    "balance": "balance { total }",
    "lots": "lots(first: 5) { edges { node { id } } }",
    "ledger": "ledger(first: 5) { edges { node { id } } }",
    "usage": "usage(first: 5) { edges { node { id } } }",
    "holds": "holds(first: 5) { edges { node { id } } }",
    "transactions": "transactions(first: 5) { edges { node { id } } }",
    "invoices": "invoices(first: 5) { edges { node { id } } }",
    "subscription": "subscription { status }",
    "paymentMethods": "paymentMethods { last4 }",
    "autoTopUp": "autoTopUp { enabled }",
    "usageReport": 'usageReport(input: {from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z", granularity: DAY})'
    " { __typename }",
    "agentTokens": "agentTokens(first: 5) { edges { node { id } } }",
    "spendLimits": "spendLimits { id spent }",
    "limitTripped": "limitTripped { id }",
    "alerts": "alerts(first: 5) { edges { node { id } } }",
    "alertLevels": "alertLevels { levels isDefault }",
    "forecast": "forecast { burnPerDay }",
}
"""Every field of CreditAccount, read on the session's own account: all OK for both sessions (its spend limits
too: the page shows what caps the account, as the balance does; setting them is not the page's)."""
USER_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("id", OK),
    "email": ("email", OK),
    "externalId": ("externalId", OK),
    "metadata": ("metadata", OK),
    "credit": ("credit { id }", OK),
    "organizations": ("organizations { roles }", FORBIDDEN),
    "invitations": ("invitations(first: 5) { edges { node { id } } }", FORBIDDEN),
    "apiTokens": ("apiTokens(first: 5) { edges { node { id } } }", FORBIDDEN),
}
"""Every field of User under ``me``, for a session of Ada's own account."""
OTHERS = ("eve account", "ada", "acme", "invitation", "eve transaction")
"""What ``node`` shows a session of neither: another user's account and payment, Ada (but to her own account's
session, as ``me`` does), her organization and her invitation."""

# ------------------------------------------------------------------------------------------------ mutations

_PAYING = "__typename ... on Error { message }"


def document(name: str, arguments: str, variables: Iterable[str]) -> str:
    """The mutation ``name`` with these input arguments; every variable is an ``ID!``."""
    declared = ", ".join(f"${variable}: ID!" for variable in variables)
    head = f"mutation({declared})" if declared else "mutation"
    return f"{head} {{ {name}(input: {{{arguments}}}) {{ {_PAYING} }} }}"


MUTATIONS: dict[str, tuple[str, dict[str, str], tuple[str, str]]] = {
    # name: (input arguments, variables -> world ids, (typename for the user session, for the pool session))
    "topUp": (
        ('credits: "10", paymentToken: "tok_visa", idempotencyKey: "k"'),
        {},
        ("TopUpSuccess", "TopUpSuccess"),
    ),
    "addPaymentMethod": (
        ('token: "tok_mastercard"'),
        {},
        ("AddPaymentMethodSuccess", "AddPaymentMethodSuccess"),
    ),
    "setDefaultPaymentMethod": (
        ("paymentMethodId: $card"),
        {"card": "own card"},
        ("PaymentMethodsSuccess", "PaymentMethodsSuccess"),
    ),
    "removePaymentMethod": (
        ("paymentMethodId: $card"),
        {"card": "own card"},
        ("PaymentMethodsSuccess", "PaymentMethodsSuccess"),
    ),
    "subscribe": (
        ('planId: "starter-monthly", idempotencyKey: "k"'),
        {},
        ("SubscribeSuccess", "SubscribeSuccess"),
    ),
    "cancelSubscription": (
        ("atPeriodEnd: true"),
        {},
        ("SubscriptionSuccess", "SubscriptionSuccess"),
    ),
    "resumeSubscription": ((""), {}, ("SubscriptionNotChangeable",) * 2),
    "changePlan": (('planId: "pro-monthly"'), {}, ("SubscriptionSuccess", "SubscriptionSuccess")),
    "setSubscriptionPaymentMethod": (
        ("paymentMethodId: $card"),
        {"card": "own card"},
        ("SubscriptionSuccess", "SubscriptionSuccess"),
    ),
    "configureAutoTopUp": (
        ('threshold: "1", amount: "10", monthlyCap: "100"'),
        {},
        ("ConfigureAutoTopUpSuccess", "ConfigureAutoTopUpSuccess"),
    ),
    "createCustomerPortalSession": ((""), {}, ("PaymentUnavailable",) * 2),
    # Another account's top-up (a session cancels its own account's Checkout page: on the stripe gateway only,
    # tests/gateway/test_stripe_cancel_checkout.py).
    "cancelCheckout": (("transactionId: $t"), {"t": "eve transaction"}, ("Forbidden",) * 2),
    "revokePortalSession": ((""), {}, ("RevokePortalSessionSuccess",) * 2),
    # Never, for either session:
    "spendCredits": (
        ('userId: $u, agentId: "a", activity: "answer", credits: "1", idempotencyKey: "k"'),
        {"u": "ada"},
        ("Forbidden",) * 2,
    ),
    "spendCreditsBatch": (
        ('events: [{userId: $u, agentId: "a", activity: "answer", credits: "1", idempotencyKey: "k"}]'),
        {"u": "ada"},
        ("Forbidden",) * 2,
    ),
    "grantCredits": (
        ('accountId: $a, credits: "5", kind: PAID, idempotencyKey: "k"'),
        {"a": "own"},
        ("Forbidden",) * 2,
    ),
    "setOverdraft": (('accountId: $a, overdraft: "5"'), {"a": "own"}, ("Forbidden",) * 2),
    "holdCredits": (
        ('userId: $u, agentId: "a", activity: "answer", credits: "1", idempotencyKey: "k"'),
        {"u": "ada"},
        ("Forbidden",) * 2,
    ),
    "captureHold": (
        ('holdId: $h, idempotencyKey: "k"'),
        {"h": "own"},
        ("Forbidden",) * 2,
    ),
    "releaseHold": (
        ('holdId: $h, idempotencyKey: "k"'),
        {"h": "own"},
        ("Forbidden",) * 2,
    ),
    "extendHold": (
        ('holdId: $h, timeoutSeconds: 60, idempotencyKey: "k"'),
        {"h": "own"},
        ("Forbidden",) * 2,
    ),
    "increaseHold": (
        ('holdId: $h, credits: "1", idempotencyKey: "k"'),
        {"h": "own"},
        ("Forbidden",) * 2,
    ),
    "refundPayment": (
        ('transactionId: $t, idempotencyKey: "k"'),
        {"t": "eve transaction"},
        ("Forbidden",) * 2,
    ),
    "createPortalSession": (("accountId: $a"), {"a": "own"}, ("Forbidden",) * 2),
    "createApiToken": (('kind: USER, name: "mine"'), {}, ("Forbidden",) * 2),
    "createAgentToken": (('name: "bot", agentId: "bot"'), {}, ("Forbidden",) * 2),
    "createUser": (('email: "new@example.com", externalId: "new-1"'), {}, ("Forbidden",) * 2),
    "updateUser": (("userId: $u, metadata: {}"), {"u": "ada"}, ("Forbidden",) * 2),
    "updateOrganization": (('organizationId: $o, name: "Renamed"'), {"o": "acme"}, ("Forbidden",) * 2),
    "revokeApiToken": (("tokenId: $t"), {"t": "ada token"}, ("Forbidden",) * 2),
    "createOrganization": (('name: "Mine"'), {}, ("Forbidden",) * 2),
    "addMember": (
        ('organizationId: $o, email: "eve@example.com", roles: [MEMBER]'),
        {"o": "acme"},
        ("Forbidden",) * 2,
    ),
    "inviteMember": (
        ('organizationId: $o, email: "x@example.com", roles: [MEMBER]'),
        {"o": "acme"},
        ("Forbidden",) * 2,
    ),
    "acceptInvitation": (
        ("invitationId: $i"),
        {"i": "invitation"},
        ("Forbidden",) * 2,
    ),
    "declineInvitation": (
        ("invitationId: $i"),
        {"i": "invitation"},
        ("Forbidden",) * 2,
    ),
    "revokeInvitation": (
        ("invitationId: $i"),
        {"i": "invitation"},
        ("Forbidden",) * 2,
    ),
    "setMemberRoles": (
        ("organizationId: $o, userId: $u, roles: [BILLING]"),
        {"o": "acme", "u": "bob"},
        ("Forbidden",) * 2,
    ),
    "removeMember": (
        ("organizationId: $o, userId: $u"),
        {"o": "acme", "u": "bob"},
        ("Forbidden",) * 2,
    ),
    "leaveOrganization": (("organizationId: $o"), {"o": "acme"}, ("Forbidden",) * 2),
    "enableCreditPool": (
        ("organizationId: $o"),
        {"o": "globex"},
        ("Forbidden",) * 2,
    ),
    "setMemberBudget": (
        ('organizationId: $o, userId: $u, monthlyCredits: "3"'),
        {"o": "acme", "u": "bob"},
        ("Forbidden",) * 2,
    ),
    # Spend limits are the account holder's or the platform's decision, not the page's.
    "setSpendLimit": (('accountId: $a, scope: ACCOUNT, window: DAY, amount: "1"'), {"a": "own"}, ("Forbidden",) * 2),
    "removeSpendLimit": (("limitId: $l"), {"l": "own limit"}, ("Forbidden",) * 2),
    "resumeAgent": (('accountId: $a, agentId: "bot"'), {"a": "own"}, ("Forbidden",) * 2),
    # Alert levels are managed as spend limits are (they decide what the platform is told).
    "setBalanceAlerts": (('accountId: $a, levels: ["5"]'), {"a": "own"}, ("Forbidden",) * 2),
    "createWebhookEndpoint": (('url: "https://hooks.example.com/in"'), {}, ("Forbidden",) * 2),
    "updateWebhookEndpoint": (('endpointId: "V2ViaG9va0VuZHBvaW50OjE=", enabled: true'), {}, ("Forbidden",) * 2),
    "rotateWebhookSecret": (('endpointId: "V2ViaG9va0VuZHBvaW50OjE="'), {}, ("Forbidden",) * 2),
    "disableWebhookEndpoint": (('endpointId: "V2ViaG9va0VuZHBvaW50OjE="'), {}, ("Forbidden",) * 2),
    "deleteWebhookEndpoint": (('endpointId: "V2ViaG9va0VuZHBvaW50OjE="'), {}, ("Forbidden",) * 2),
    "redeliverWebhookEvent": (('endpointId: "V2ViaG9va0VuZHBvaW50OjE=", eventId: "evt_1"'), {}, ("Forbidden",) * 2),
}
PAYING = [name for name, (_, _, outcome) in MUTATIONS.items() if outcome[0] != "Forbidden"]
"""The mutations a session may run on its own account; all but revokePortalSession take an accountId."""
SUBSCRIPTIONS: dict[str, tuple[str, dict[str, str], str]] = {
    # name: (document, variables -> world ids, outcome for both sessions)
    "balanceChanged": ("subscription { balanceChanged { reason account { id } } }", {}, OK),
    "usageRecorded": (
        "subscription($o: ID!) { usageRecorded(organizationId: $o) { credits } }",
        {"o": "acme"},
        FORBIDDEN,
    ),
}
WATCHED_ELSEWHERE = {"alertRaised"}
"""Sends nothing until an alert is raised, so it cannot answer beside the others here: its access (its own
account, never another's) is tests/api/test_balance_alerts.py's."""
NEEDS_SUBSCRIPTION = {"cancelSubscription", "resumeSubscription", "changePlan", "setSubscriptionPaymentMethod"}


def _fields(type_name: str) -> set[str]:
    graphql_type = build_schema(Settings())._schema.get_type(type_name)
    return set(graphql_type.fields)  # type: ignore[union-attr]


def test_every_field_of_the_schema_has_a_decision() -> None:
    assert _fields("Query") == set(ROOT_QUERIES)
    assert _fields("CreditAccount") == set(ACCOUNT_FIELDS)
    assert _fields("User") == set(USER_FIELDS)
    assert _fields("Mutation") == set(MUTATIONS)
    assert _fields("RootSubscription") == set(SUBSCRIPTIONS) | WATCHED_ELSEWHERE


def _variables(world: World, session: str, wanted: dict[str, str]) -> dict[str, str]:
    own = _own(session)
    names = {"own": own, "own card": f"{own} card", "own limit": f"{own} limit"}
    return {variable: world.ids[names.get(name, name)] for variable, name in wanted.items()}


def _outcome(body: dict[str, Any]) -> str:
    codes = [error["extensions"]["code"] for error in body.get("errors", [])]
    if codes:
        assert codes == ["FORBIDDEN"], body
        return FORBIDDEN
    return OK


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("field", sorted(ROOT_QUERIES))
async def test_root_query(api: Api, field: str, session: str) -> None:
    world = await build_world(api, subscribed=False)
    document, expected = ROOT_QUERIES[field]
    variables = {"own": world.ids[_own(session)]} if "$own" in document else {}

    body = await api.post(document, variables, world.sessions[session])

    assert _outcome(body) == expected[SESSIONS.index(session)], body
    if field == "me" and session == "user":
        assert body["data"] == {"me": {"email": "ada@example.com"}}
    if field == "node":
        assert body["data"] == {"node": {"id": world.ids[_own(session)]}}


@pytest.mark.parametrize("session", SESSIONS)
async def test_every_account_field_of_its_own_account(api: Api, session: str) -> None:
    world = await build_world(api, subscribed=True)
    selection = " ".join(ACCOUNT_FIELDS.values())

    body = await api.post(
        f"query($own: ID!) {{ node(id: $own) {{ ... on CreditAccount {{ {selection} }} }} }}",
        {"own": world.ids[_own(session)]},
        world.sessions[session],
    )

    assert "errors" not in body, body
    node = body["data"]["node"]
    assert set(node) == set(ACCOUNT_FIELDS)
    assert node["id"] == world.ids[_own(session)]
    assert node["balance"] == {"total": "1105" if session == "user" else "1100"}  # the bonus and the plan's credit
    assert node["paymentMethods"] == [{"last4": "4242"}]
    assert node["subscription"] == {"status": "ACTIVE"}
    assert node["usageReport"] == {"__typename": "UsageReport"}
    assert len(node["transactions"]["edges"]) == 1  # the subscription's first period
    assert node["spendLimits"] == [{"id": world.ids[f"{_own(session)} limit"], "spent": "0"}]
    assert node["limitTripped"] == []


async def test_the_fields_of_me_for_a_user_account_session(api: Api) -> None:
    world = await build_world(api, subscribed=False)
    for field, (selection, expected) in USER_FIELDS.items():
        body = await api.post(f"{{ me {{ {selection} }} }}", token=world.sessions["user"])
        assert _outcome(body) == expected, (field, body)
        if expected == FORBIDDEN and field == "apiTokens":
            assert body["errors"][0]["message"] == "Only the user themselves and admins see a user's tokens"
        elif expected == FORBIDDEN:
            assert body["errors"][0]["message"] == "A portal session reads and pays for its own account only"


@pytest.mark.parametrize("session", SESSIONS)
async def test_a_portal_session_has_no_membership_or_usage_of_its_own_in_an_organization(
    api: Api, session: str
) -> None:
    # Organization.myMembership and myUsageReport answer for the member who asks: a portal session is an
    # account's, no member's, and reaches no organization (its pool's included) to ask them of.
    world = await build_world(api, subscribed=False)
    document = """query($org: ID!) { node(id: $org) { ... on Organization { myMembership { spentThisMonth }
      myUsageReport(input: {from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z", granularity: DAY})
      { __typename } } } }"""

    body = await api.post(document, {"org": world.ids["acme"]}, world.sessions[session])

    assert body == {"data": {"node": None}}


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("other", [*OTHERS, "the other session's account"])
async def test_node_shows_nothing_but_its_own_account(api: Api, session: str, other: str) -> None:
    world = await build_world(api, subscribed=False)
    name = ("pool" if session == "user" else "ada account") if other.startswith("the other") else other

    body = await api.post("query($id: ID!) { node(id: $id) { id } }", {"id": world.ids[name]}, world.sessions[session])

    if (session, other) == ("user", "ada"):
        assert body == {"data": {"node": {"id": world.ids["ada"]}}}
    else:
        assert body == {"data": {"node": None}}


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
async def test_mutation(api: Api, mutation: str, session: str) -> None:
    world = await build_world(api, subscribed=mutation in NEEDS_SUBSCRIPTION or mutation == "subscribe")
    arguments, wanted, outcome = MUTATIONS[mutation]
    expected = outcome[SESSIONS.index(session)]
    if mutation == "subscribe":
        expected = "AlreadySubscribed"
    before = await snapshot()

    body = await api.data(
        document(mutation, arguments, wanted), _variables(world, session, wanted), world.sessions[session]
    )

    answer = body[mutation]
    assert answer["__typename"] == expected, answer
    if expected == "Forbidden":
        assert " need" in answer["message"], answer
        assert changed(before, await snapshot()) == set()


@pytest.mark.parametrize("session", SESSIONS)
async def test_subscribe_with_a_saved_card_succeeds(api: Api, session: str) -> None:
    world = await build_world(api, subscribed=False)
    arguments, wanted, outcome = MUTATIONS["subscribe"]

    body = await api.data(
        document("subscribe", arguments, wanted), _variables(world, session, wanted), world.sessions[session]
    )

    assert body["subscribe"]["__typename"] == outcome[SESSIONS.index(session)] == "SubscribeSuccess"


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("mutation", sorted(set(PAYING) - {"revokePortalSession"}))
async def test_paying_for_another_account_is_forbidden(api: Api, mutation: str, session: str) -> None:
    world = await build_world(api, subscribed=mutation in NEEDS_SUBSCRIPTION)
    arguments, wanted, _ = MUTATIONS[mutation]
    # The same mutation, naming an account that is not the session's: Ada's pool or Ada's own account.
    other = "pool" if session == "user" else "ada account"
    variables = {**_variables(world, session, wanted), "other": world.ids[other]}
    if "card" in wanted:
        variables["card"] = world.ids[f"{other} card"]
    naming = document(mutation, ", ".join(["accountId: $other", *([arguments] if arguments else [])]), variables)
    before = await snapshot()

    body = await api.data(naming, variables, world.sessions[session])

    assert body[mutation] == {
        "__typename": "Forbidden",
        "message": "A portal session reads and pays for its own account only: paying for another account needs"
        " its own session",
    }
    assert changed(before, await snapshot()) == set()
    # Ada's own token may: she owns the pool.
    mine = await api.data(naming, variables, world.tokens["ada"])
    assert mine[mutation]["__typename"] != "Forbidden"


@pytest.mark.parametrize("session", SESSIONS)
async def test_balance_changed_watches_its_own_account_and_usage_recorded_is_forbidden(
    db: Backend, api: Api, session: str
) -> None:
    world = await build_world(api, subscribed=False)
    answers: dict[str, dict[str, Any]] = {}
    async with serve(api.settings, api.clock) as live:
        ws = await connect(live, world.sessions[session])
        try:
            for name, (query, wanted, _) in SUBSCRIPTIONS.items():
                variables = _variables(world, session, wanted)
                payload = {"query": query, "variables": variables}
                await ws.send(json.dumps({"id": name, "type": "subscribe", "payload": payload}))
                answers[name] = await receive(ws)
        finally:
            await ws.close()
    for name, (_, _, outcome) in SUBSCRIPTIONS.items():
        answer = answers[name]
        assert (answer["id"], answer["type"]) == (name, "next"), answer
        if outcome == FORBIDDEN:
            assert [e["extensions"]["code"] for e in answer["payload"]["errors"]] == ["FORBIDDEN"], answer
        else:
            assert answer["payload"] == {
                "data": {"balanceChanged": {"reason": "SNAPSHOT", "account": {"id": world.ids[_own(session)]}}}
            }
