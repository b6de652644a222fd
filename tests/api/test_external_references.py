"""Naming users, organizations and accounts by the platform's own ids (issue 11, point 1): every mutation, filter
and subscription that names one takes ``externalUserId`` / ``externalOrganizationId`` as the alternative to our
global ID, and ``accountId`` takes a User or Organization ID as well as a CreditAccount ID.

By another form of id, a mutation does exactly what it does by global ID: the same answers and the same rows in
every table (the whole flow is run once per form on a fresh database). Both forms or neither is a
``ValidationError``, an unknown id ``NotFound`` (an unknown externalId only for admins and the services that
reach everything: to anyone else it is refused as another tenant's existing one is, so that no token learns
which externalIds exist), and a refusal changes nothing. Access does not change: naming another tenant's user
or organization by its externalId is answered as naming it by its global ID would be.
The CSV exports are in test_usage_export.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from creditline.clock import Clock
from creditline.settings import Settings
from models import ledger, organizations
from models.credits import MICRO
from models.tables import (
    CreditAccount,
    CreditKind,
    CreditLot,
    LotSource,
    MemberRole,
    Membership,
    Organization,
    TokenKind,
    User,
)
from models.tokens import create_token
from tests.support.backends import Backend, reset
from tests.support.helpers import Api, gid
from tests.support.live import Live, connect, receive, serve
from tests.support.snapshots import Snapshot, snapshot

EXTERNAL = {"owner": "u-owner", "billing": "u-billing", "member": "u-member", "outsider": "u-outsider"}
NO_POOL = "This organization has no credit pool: enableCreditPool gives it one"
PAYING_NEEDS_ROLE = "Paying for this account needs its owner, or the BILLING or OWNER role in its organization"
ONE_ACCOUNT = "Give at most one of accountId, externalUserId, externalOrganizationId"
NOT_A_MEMBER = "That user is not a member of this organization"


@dataclass
class World:
    """Acme (externalId "acme", with a pool of 50 credits): an OWNER, a BILLING member and a MEMBER. Globex
    ("globex", no pool) belongs to the outsider. Every user has an externalId (``EXTERNAL``)."""

    ids: dict[str, int]
    tokens: dict[str, str]
    acme: int
    pool: int
    globex: int

    def user(self, who: str) -> str:
        return gid("User", self.ids[who])

    def account(self, who: str) -> str:
        return gid("CreditAccount", self.ids[f"{who}-account"])


async def build(api: Api) -> World:
    now = api.clock.now()
    ids: dict[str, int] = {}
    tokens: dict[str, str] = {}
    for who, external in EXTERNAL.items():
        ids[who], tokens[who] = await api.user(f"{who}@example.com", bonus=20 if who == "member" else 0)
        await User.filter(id=ids[who]).update(external_id=external)
        ids[f"{who}-account"] = (await CreditAccount.get(user_id=ids[who])).id
    acme = await organizations.create("Acme", ids["owner"], now)
    for who, role in (("billing", MemberRole.BILLING), ("member", MemberRole.MEMBER)):
        await Membership.create(organization_id=acme.id, user_id=ids[who], roles=role.value, created_at=now)
    pool = await organizations.enable_pool(acme.id, now)
    await ledger.grant(
        pool.id,
        credits=50 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=now,
    )
    globex = await organizations.create("Globex", ids["outsider"], now)
    await Organization.filter(id=acme.id).update(external_id="acme")
    await Organization.filter(id=globex.id).update(external_id="globex")
    tokens["service"] = await api.service()
    tokens["admin"] = await api.admin()
    return World(ids, tokens, acme.id, pool.id, globex.id)


# ---------------------------------------------------------------------------------------------- documents

TAIL = "... on ValidationError { field } ... on Error { message }"
TRANSACTION = "transaction { id status credits }"
SUBSCRIPTION = "... on SubscriptionSuccess { subscription { id status planId nextPlanId cancelAtPeriodEnd } }"
CARDS = "... on PaymentMethodsSuccess { paymentMethods { id brand isDefault } } ... on PaymentMethodInUse { message }"
MUTATIONS: dict[str, tuple[str, str]] = {
    # mutation: (input type, selection of its success)
    "topUp": ("TopUpInput", f"... on TopUpSuccess {{ {TRANSACTION} }}"),
    "addPaymentMethod": ("AddPaymentMethodInput", "... on AddPaymentMethodSuccess { paymentMethod { id isDefault } }"),
    "setDefaultPaymentMethod": ("PaymentMethodInput", CARDS),
    "removePaymentMethod": ("PaymentMethodInput", CARDS),
    "subscribe": (
        "SubscribeInput",
        f"... on SubscribeSuccess {{ subscription {{ id status planId }} {TRANSACTION} }}",
    ),
    "changePlan": ("ChangePlanInput", SUBSCRIPTION),
    "setSubscriptionPaymentMethod": ("SetSubscriptionPaymentMethodInput", SUBSCRIPTION),
    "cancelSubscription": ("CancelSubscriptionInput", SUBSCRIPTION),
    "resumeSubscription": ("ResumeSubscriptionInput", SUBSCRIPTION),
    "configureAutoTopUp": (
        "ConfigureAutoTopUpInput",
        "... on ConfigureAutoTopUpSuccess { autoTopUp { enabled status threshold amount monthlyCap } }",
    ),
    "createCustomerPortalSession": (
        "CreateCustomerPortalSessionInput",
        "... on CreateCustomerPortalSessionSuccess { url }",
    ),
    "grantCredits": ("GrantCreditsInput", "... on GrantCreditsSuccess { lot { id kind amount } balance { total } }"),
    "spendCredits": (
        "SpendCreditsInput",
        "... on SpendCreditsSuccess { usageEvent { id credits } balance { total held } }",
    ),
    "holdCredits": (
        "HoldCreditsInput",
        "... on HoldCreditsSuccess { hold { id amount status } balance { total held } }",
    ),
    "inviteMember": ("InviteMemberInput", "... on InviteMemberSuccess { invitation { id email roles status } }"),
    "setMemberRoles": ("SetMemberRolesInput", "... on SetMemberRolesSuccess { membership { userId email roles } }"),
    "setMemberBudget": ("SetMemberBudgetInput", "... on SetMemberBudgetSuccess { membership { email monthlyBudget } }"),
    "enableCreditPool": ("EnableCreditPoolInput", "... on EnableCreditPoolSuccess { creditPool { id } }"),
    "leaveOrganization": ("LeaveOrganizationInput", "... on LeaveOrganizationSuccess { organizationId }"),
    "removeMember": ("RemoveMemberInput", "... on RemoveMemberSuccess { organization { id name } }"),
}


def document(mutation: str) -> str:
    input_type, selection = MUTATIONS[mutation]
    return f"mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ __typename {selection} {TAIL} }} }}"


async def run(api: Api, token: str, mutation: str, input: dict[str, Any]) -> Any:
    return (await api.data(document(mutation), {"input": input}, token))[mutation]


# ------------------------------------------------------------------------ the same flow by every form of id


def names(w: World, form: str) -> dict[str, dict[str, Any]]:
    """How each input names Acme's member, Acme, Acme's pool and the member's own account, in ``form``."""
    by_global = {
        "member": {"userId": w.user("member")},
        "acme": {"organizationId": gid("Organization", w.acme)},
        "pool": {"accountId": gid("CreditAccount", w.pool)},
        "account": {"accountId": w.account("member")},
    }
    if form == "global":
        return by_global
    if form == "owner-ids":
        return {
            **by_global,
            "pool": {"accountId": gid("Organization", w.acme)},
            "account": {"accountId": w.user("member")},
        }
    assert form == "external"
    return {
        "member": {"externalUserId": "u-member"},
        "acme": {"externalOrganizationId": "acme"},
        "pool": {"externalOrganizationId": "acme"},
        "account": {"externalUserId": "u-member"},
    }


FORMS = ("global", "owner-ids", "external")
CARD_1, CARD_2 = gid("PaymentMethod", 1), gid("PaymentMethod", 2)
FLOW: list[tuple[str, str, str | None, dict[str, Any], str]] = [
    # (token, mutation, named, the rest of the input, the answer's __typename)
    ("owner", "addPaymentMethod", "pool", {"token": "tok_visa"}, "AddPaymentMethodSuccess"),
    ("owner", "topUp", "pool", {"credits": "10", "paymentMethodId": CARD_1, "idempotencyKey": "t1"}, "TopUpSuccess"),
    ("owner", "addPaymentMethod", "pool", {"token": "tok_mastercard"}, "AddPaymentMethodSuccess"),
    ("owner", "setDefaultPaymentMethod", "pool", {"paymentMethodId": CARD_2}, "PaymentMethodsSuccess"),
    (
        "owner",
        "configureAutoTopUp",
        "pool",
        {"threshold": "1", "amount": "10", "monthlyCap": "100"},
        "ConfigureAutoTopUpSuccess",
    ),
    ("owner", "subscribe", "pool", {"planId": "starter-monthly", "idempotencyKey": "s1"}, "SubscribeSuccess"),
    ("owner", "changePlan", "pool", {"planId": "pro-monthly"}, "SubscriptionSuccess"),
    ("owner", "setSubscriptionPaymentMethod", "pool", {"paymentMethodId": CARD_1}, "SubscriptionSuccess"),
    ("owner", "cancelSubscription", "pool", {}, "SubscriptionSuccess"),
    ("owner", "resumeSubscription", "pool", {}, "SubscriptionSuccess"),
    ("owner", "removePaymentMethod", "pool", {"paymentMethodId": CARD_2}, "PaymentMethodInUse"),
    ("owner", "createCustomerPortalSession", "pool", {}, "PaymentUnavailable"),
    ("admin", "grantCredits", "pool", {"credits": "5", "kind": "FREE", "idempotencyKey": "g1"}, "GrantCreditsSuccess"),
    (
        "admin",
        "topUp",
        "account",
        {"credits": "10", "paymentToken": "tok_visa", "idempotencyKey": "t2"},
        "TopUpSuccess",
    ),
    (
        "admin",
        "grantCredits",
        "account",
        {"credits": "3", "kind": "PAID", "idempotencyKey": "g2"},
        "GrantCreditsSuccess",
    ),
    ("owner", "setMemberBudget", "acme+member", {"monthlyCredits": "9"}, "SetMemberBudgetSuccess"),
    (
        "service",
        "spendCredits",
        "acme+member",
        {"agentId": "a", "activity": "answer", "credits": "1.5", "idempotencyKey": "sp1"},
        "SpendCreditsSuccess",
    ),
    (
        "service",
        "holdCredits",
        "acme+member",
        {"agentId": "a", "activity": "answer", "credits": "2", "idempotencyKey": "h1"},
        "HoldCreditsSuccess",
    ),
    (
        "service",
        "spendCredits",
        "member",
        {"agentId": "a", "activity": "answer", "credits": "1", "idempotencyKey": "sp2"},
        "SpendCreditsSuccess",
    ),
    ("owner", "setMemberRoles", "acme+member", {"roles": ["MEMBER", "BILLING"]}, "SetMemberRolesSuccess"),
    (
        "owner",
        "inviteMember",
        "acme",
        {"email": "new@example.com", "roles": ["MEMBER"], "idempotencyKey": "i1"},
        "InviteMemberSuccess",
    ),
    ("owner", "enableCreditPool", "acme", {}, "EnableCreditPoolSuccess"),
    ("billing", "leaveOrganization", "acme", {}, "LeaveOrganizationSuccess"),
    ("owner", "removeMember", "acme+member", {}, "RemoveMemberSuccess"),
]
RANDOM_COLUMNS = {"api_tokens"}
"""Token secrets are random: the only table whose rows differ from one run to the next."""


def named(w: World, form: str, what: str | None) -> dict[str, Any]:
    table = names(w, form)
    merged: dict[str, Any] = {}
    for part in (what or "").split("+"):
        if part:
            merged.update(table[part])
    return merged


async def run_flow(api: Api, form: str) -> tuple[list[Any], Snapshot]:
    w = await build(api)
    answers = []
    for token, mutation, what, rest, _ in FLOW:
        answers.append(await run(api, w.tokens[token], mutation, {**named(w, form, what), **rest}))
    state = {table: rows for table, rows in (await snapshot()).items() if table not in RANDOM_COLUMNS}
    # An event's webhook-id is random too (the rest of the event is compared).
    state["events"] = [tuple(pair for pair in row if pair[0] != "public_id") for row in state["events"]]
    return answers, state


@pytest.mark.parametrize("form", ["owner-ids", "external"])
async def test_every_mutation_by_another_form_of_id_does_exactly_what_it_does_by_global_id(
    api: Api, db: Backend, form: str
) -> None:
    baseline, baseline_state = await run_flow(api, "global")
    assert [answer["__typename"] for answer in baseline] == [step[4] for step in FLOW], baseline
    await reset(db)

    answers, state = await run_flow(api, form)

    assert answers == baseline
    assert state == baseline_state


# --------------------------------------------------------------------------------- replays across the forms


@pytest.mark.parametrize("mutation", ["spendCredits", "holdCredits"])
async def test_a_replay_by_the_other_form_of_id_is_the_same_request(api: Api, mutation: str) -> None:
    w = await build(api)
    service = w.tokens["service"]
    rest = {"agentId": "a", "activity": "answer", "credits": "2", "idempotencyKey": "once"}
    first = await run(
        api, service, mutation, {**names(w, "external")["member"], **names(w, "external")["acme"], **rest}
    )
    assert first["__typename"] in {"SpendCreditsSuccess", "HoldCreditsSuccess"}, first
    after_first = await snapshot()

    replayed = await run(api, service, mutation, {**names(w, "global")["member"], **names(w, "global")["acme"], **rest})
    mixed = await run(api, service, mutation, {"userId": w.user("member"), "externalOrganizationId": "acme", **rest})
    other = await run(
        api, service, mutation, {**names(w, "external")["member"], **rest}
    )  # not in Acme: another request

    assert replayed == first
    assert mixed == first
    assert other == {
        "__typename": "IdempotencyConflict",
        "message": "This idempotencyKey was already used with a different request",
    }
    assert await snapshot() == after_first


# ------------------------------------------------------------------------------------- refusals of the forms


async def unchanged(api: Api, token: str, mutation: str, input: dict[str, Any]) -> Any:
    """The answer to a refused mutation, once it is known that it changed nothing."""
    before = await snapshot()
    answer = await run(api, token, mutation, input)
    assert await snapshot() == before, answer
    return answer


def refusal(typename: str, message: str, field: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"__typename": typename, "message": message}
    if typename == "ValidationError":
        answer["field"] = field
    return answer


ACCOUNT_MUTATIONS: list[tuple[str, dict[str, Any]]] = [
    # A mutation naming an account, with the rest of a valid input (the account has no cards or subscription:
    # what is refused below is refused before either matters).
    ("topUp", {"credits": "10", "paymentToken": "tok_visa", "idempotencyKey": "k"}),
    ("addPaymentMethod", {"token": "tok_visa"}),
    ("setDefaultPaymentMethod", {"paymentMethodId": CARD_1}),
    ("removePaymentMethod", {"paymentMethodId": CARD_1}),
    ("subscribe", {"planId": "starter-monthly", "idempotencyKey": "k"}),
    ("changePlan", {"planId": "pro-monthly"}),
    ("setSubscriptionPaymentMethod", {"paymentMethodId": CARD_1}),
    ("cancelSubscription", {}),
    ("resumeSubscription", {}),
    ("configureAutoTopUp", {"threshold": "1", "amount": "10", "monthlyCap": "100"}),
    ("createCustomerPortalSession", {}),
]
ACCOUNT_IDS = [pytest.param(mutation, rest, id=mutation) for mutation, rest in ACCOUNT_MUTATIONS]


@pytest.mark.parametrize(("mutation", "rest"), ACCOUNT_IDS)
async def test_an_account_named_twice_unknown_or_poolless_is_refused_and_changes_nothing(
    api: Api, mutation: str, rest: dict[str, Any]
) -> None:
    w = await build(api)
    owner, outsider = w.tokens["owner"], w.tokens["outsider"]
    twice = refusal("ValidationError", ONE_ACCOUNT, "accountId")

    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (owner, {"accountId": gid("CreditAccount", w.pool), "externalOrganizationId": "acme"}, twice),
        (owner, {"externalUserId": "u-owner", "externalOrganizationId": "acme"}, twice),
        (owner, {"accountId": w.user("owner"), "externalUserId": "u-owner"}, twice),
        # Unknown externalIds are refused as another tenant's are (whether they exist is for admins to know).
        (owner, {"externalUserId": "nobody"}, refusal("Forbidden", PAYING_NEEDS_ROLE)),
        (owner, {"externalOrganizationId": "nowhere"}, refusal("Forbidden", PAYING_NEEDS_ROLE)),
        (w.tokens["admin"], {"externalUserId": "nobody"}, refusal("NotFound", "No user has externalId 'nobody'")),
        (
            w.tokens["admin"],
            {"externalOrganizationId": "nowhere"},
            refusal("NotFound", "No organization has externalId 'nowhere'"),
        ),
        # An unknown global ID is still NotFound (our ids are sequential, not secrets).
        (owner, {"accountId": gid("User", 999)}, refusal("NotFound", "User not found")),
        (owner, {"accountId": gid("Organization", 999)}, refusal("NotFound", "Organization not found")),
        (owner, {"accountId": gid("Hold", 1)}, refusal("NotFound", "Credit account not found")),
        (
            owner,
            {"externalUserId": ""},
            refusal("ValidationError", "externalUserId must be 1 to 255 characters", "externalUserId"),
        ),
        # Globex has no pool: its owner is told so, by either form; anyone else learns nothing about it.
        (outsider, {"externalOrganizationId": "globex"}, refusal("NotFound", NO_POOL)),
        (outsider, {"accountId": gid("Organization", w.globex)}, refusal("NotFound", NO_POOL)),
        (owner, {"externalOrganizationId": "globex"}, refusal("Forbidden", PAYING_NEEDS_ROLE)),
        (owner, {"accountId": gid("Organization", w.globex)}, refusal("Forbidden", PAYING_NEEDS_ROLE)),
    ]
    for token, naming, expected in cases:
        assert await unchanged(api, token, mutation, {**naming, **rest}) == expected, naming


@pytest.mark.parametrize(("mutation", "rest"), ACCOUNT_IDS)
async def test_another_tenants_account_by_external_id_is_refused_as_by_global_id(
    api: Api, mutation: str, rest: dict[str, Any]
) -> None:
    w = await build(api)
    outsider = w.tokens["outsider"]
    forms = {
        "pool": [names(w, form)["pool"] for form in FORMS],
        "account": [names(w, form)["account"] for form in FORMS],
    }
    for account, namings in forms.items():
        answers = [await unchanged(api, outsider, mutation, {**naming, **rest}) for naming in namings]
        assert answers == [refusal("Forbidden", PAYING_NEEDS_ROLE)] * 3, account


async def test_grant_credits_takes_exactly_one_form_of_account(api: Api) -> None:
    w = await build(api)
    admin = w.tokens["admin"]
    rest = {"credits": "1", "kind": "FREE", "idempotencyKey": "k"}
    exactly = "Give exactly one of accountId, externalUserId, externalOrganizationId"
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, refusal("ValidationError", exactly, "accountId")),
        (
            {"accountId": w.account("member"), "externalUserId": "u-member"},
            refusal("ValidationError", exactly, "accountId"),
        ),
        ({"externalUserId": "nobody"}, refusal("NotFound", "No user has externalId 'nobody'")),
        ({"externalOrganizationId": "globex"}, refusal("NotFound", NO_POOL)),
    ]
    for naming, expected in cases:
        assert await unchanged(api, admin, "grantCredits", {**naming, **rest}) == expected, naming

    lots = await CreditLot.filter(account_id=w.pool).count()
    # One request by three forms: granted once.
    granted = [await run(api, admin, "grantCredits", {**names(w, form)["pool"], **rest}) for form in FORMS]
    assert granted[0]["balance"] == {"total": "51"}
    assert granted == [granted[0]] * 3
    assert await CreditLot.filter(account_id=w.pool).count() == lots + 1


ORG_MUTATIONS: list[tuple[str, str, dict[str, Any]]] = [
    # (mutation, who may run it, the rest of a valid input but the member)
    ("inviteMember", "owner", {"email": "new@example.com", "roles": ["MEMBER"]}),
    ("setMemberRoles", "owner", {"roles": ["BILLING"]}),
    ("setMemberBudget", "owner", {"monthlyCredits": "5"}),
    ("removeMember", "owner", {}),
    ("enableCreditPool", "owner", {}),
    ("leaveOrganization", "billing", {}),
]
NAMES_MEMBER = {"setMemberRoles", "setMemberBudget", "removeMember"}
ORG_IDS = [pytest.param(mutation, who, rest, id=mutation) for mutation, who, rest in ORG_MUTATIONS]


@pytest.mark.parametrize(("mutation", "who", "rest"), ORG_IDS)
async def test_an_organization_or_member_named_twice_or_unknown_is_refused_and_changes_nothing(
    api: Api, mutation: str, who: str, rest: dict[str, Any]
) -> None:
    w = await build(api)
    token = w.tokens[who]
    member = {"userId": w.user("member")} if mutation in NAMES_MEMBER else {}
    acme = {"organizationId": gid("Organization", w.acme)}
    one_org = refusal(
        "ValidationError", "Give exactly one of organizationId or externalOrganizationId", "organizationId"
    )
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({**acme, "externalOrganizationId": "acme", **member}, one_org),
        (member, one_org),
        (
            {"externalOrganizationId": "acme\x00", **member},
            refusal(
                "ValidationError",
                "externalOrganizationId must not contain control characters",
                "externalOrganizationId",
            ),
        ),
    ]
    if mutation in NAMES_MEMBER:
        one_user = refusal("ValidationError", "Give exactly one of userId or externalUserId", "userId")
        not_member = refusal("NotFound", NOT_A_MEMBER)
        cases += [
            ({**acme, "userId": w.user("member"), "externalUserId": "u-member"}, one_user),
            (acme, one_user),
            # Not a member, by either form, is one answer whether or not such a user exists.
            ({**acme, "externalUserId": "u-outsider"}, not_member),
            ({**acme, "userId": w.user("outsider")}, not_member),
            ({**acme, "externalUserId": "nobody"}, not_member),
            ({**acme, "userId": gid("User", 999)}, not_member),
        ]
    for naming, expected in cases:
        assert await unchanged(api, token, mutation, {**naming, **rest}) == expected, naming
    # An unknown externalId is refused as Globex (not theirs) is; an admin is told it is unknown.
    nowhere = await unchanged(api, token, mutation, {"externalOrganizationId": "nowhere", **member, **rest})
    assert nowhere == await unchanged(api, token, mutation, {"externalOrganizationId": "globex", **member, **rest})
    assert nowhere["__typename"] in {"Forbidden", "NotFound"}, nowhere
    if mutation != "leaveOrganization":
        told = await unchanged(
            api, w.tokens["admin"], mutation, {"externalOrganizationId": "nowhere", **member, **rest}
        )
        assert told == refusal("NotFound", "No organization has externalId 'nowhere'")


@pytest.mark.parametrize(("mutation", "who", "rest"), ORG_IDS)
async def test_another_tenants_organization_by_external_id_is_refused_as_by_global_id(
    api: Api, mutation: str, who: str, rest: dict[str, Any]
) -> None:
    w = await build(api)
    outsider = w.tokens["outsider"]
    by_global = {"organizationId": gid("Organization", w.acme)}
    by_external = {"externalOrganizationId": "acme"}
    member_forms = [{"userId": w.user("member")}, {"externalUserId": "u-member"}] if mutation in NAMES_MEMBER else [{}]
    answers = [
        await unchanged(api, outsider, mutation, {**org, **member, **rest})
        for org in (by_global, by_external)
        for member in member_forms
    ]
    assert answers[0]["__typename"] in {"Forbidden", "NotFound"}, answers
    assert answers == [answers[0]] * len(answers)


# ------------------------------------------------------------------------------------------------ no oracle

# Every mutation that takes externalUserId / externalOrganizationId (or externalOwnerId), with the rest of a
# valid input: (mutation, its input type, the rest, which external fields it takes).
UNKNOWN = {"externalUserId": "nobody", "externalOrganizationId": "nowhere", "externalOwnerId": "nobody"}
FOREIGN = {"externalUserId": "u-owner", "externalOrganizationId": "acme", "externalOwnerId": "u-owner"}
NOT_FOUND = {
    "externalUserId": "No user has externalId 'nobody'",
    "externalOwnerId": "No user has externalId 'nobody'",
    "externalOrganizationId": "No organization has externalId 'nowhere'",
}
BOTH = ("externalUserId", "externalOrganizationId")
SPEND_REST = {"agentId": "a", "activity": "answer", "credits": "1", "idempotencyKey": "k"}
NAMING: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    *[(mutation, MUTATIONS[mutation][0], rest, BOTH) for mutation, rest in ACCOUNT_MUTATIONS],
    ("grantCredits", "GrantCreditsInput", {"credits": "1", "kind": "FREE", "idempotencyKey": "k"}, BOTH),
    ("spendCredits", "SpendCreditsInput", SPEND_REST, ("externalUserId",)),
    ("holdCredits", "HoldCreditsInput", SPEND_REST, ("externalUserId",)),
    *[
        (mutation, MUTATIONS[mutation][0], rest, ("externalOrganizationId",))
        for mutation, _, rest in ORG_MUTATIONS
        if mutation not in NAMES_MEMBER
    ],
    *[
        (mutation, MUTATIONS[mutation][0], {**rest, "externalUserId": "u-member"}, ("externalOrganizationId",))
        for mutation, _, rest in ORG_MUTATIONS
        if mutation in NAMES_MEMBER
    ],
    ("addMember", "AddMemberInput", {"email": "member@example.com", "roles": ["MEMBER"]}, ("externalOrganizationId",)),
    ("addMember", "AddMemberInput", {"organizationId": "", "roles": ["MEMBER"]}, ("externalUserId",)),
    ("createPortalSession", "CreatePortalSessionInput", {}, BOTH),
    ("createApiToken", "CreateApiTokenInput", {"kind": "USER", "name": "t"}, ("externalUserId",)),
    ("createOrganization", "CreateOrganizationInput", {"name": "New"}, ("externalOwnerId",)),
    ("updateUser", "UpdateUserInput", {"metadata": {"a": 1}}, ("externalUserId",)),
    ("updateOrganization", "UpdateOrganizationInput", {"metadata": {"a": 1}}, ("externalOrganizationId",)),
]
NAMING_IDS = [
    pytest.param(mutation, input_type, rest, field, id=f"{mutation}-{field}")
    for mutation, input_type, rest, fields in NAMING
    for field in fields
]


async def answer(api: Api, token: str, mutation: str, input_type: str, input: dict[str, Any]) -> Any:
    """The answer, once it is known that it changed nothing."""
    query = f"mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ __typename {TAIL} }} }}"
    before = await snapshot()
    body = await api.post(query, {"input": input}, token)
    assert await snapshot() == before, body
    return body


def completed(w: World, rest: dict[str, Any]) -> dict[str, Any]:
    """addMember by a user's externalId names Acme by global ID (the placeholder "")."""
    if rest.get("organizationId") == "":
        return {**rest, "organizationId": gid("Organization", w.acme)}
    return rest


async def portal_session(api: Api, w: World) -> str:
    """A portal session of the outsider's own account."""
    return await create_token(
        TokenKind.PORTAL, name="portal", now=api.clock.now(), account_id=w.ids["outsider-account"]
    )


@pytest.mark.parametrize(("mutation", "input_type", "rest", "field"), NAMING_IDS)
async def test_an_unknown_external_id_is_answered_as_another_tenants_existing_one(
    api: Api, mutation: str, input_type: str, rest: dict[str, Any], field: str
) -> None:
    """Whether a platform's externalId exists (often an email or a username) is told only to those who may act
    on any user or organization: an outsider's user token and a portal session get, for an unknown one, exactly
    the answer they get for another tenant's. Admins are told it is unknown."""
    w = await build(api)
    rest = completed(w, rest)
    for who, token in (("outsider", w.tokens["outsider"]), ("portal", await portal_session(api, w))):
        foreign = await answer(api, token, mutation, input_type, {**rest, field: FOREIGN[field]})
        unknown = await answer(api, token, mutation, input_type, {**rest, field: UNKNOWN[field]})
        assert unknown == foreign, (who, unknown, foreign)
        assert "has externalId" not in json.dumps(unknown), (who, unknown)
    told = await answer(api, w.tokens["admin"], mutation, input_type, {**rest, field: UNKNOWN[field]})
    if mutation == "leaveOrganization":  # an admin leaves nothing: refused before any organization is looked up
        assert told == {"data": {mutation: refusal("Forbidden", "Leaving an organization needs a user token")}}
    else:
        assert told == {"data": {mutation: refusal("NotFound", NOT_FOUND[field])}}


# ------------------------------------------------------------------------------------------- usage filters

USAGE = """query($filter: UsageFilter) { me { credit { usage(first: 50, filter: $filter) {
  edges { node { credits } } } } } }"""
ORG_USAGE = """query($id: ID!, $filter: UsageFilter) { node(id: $id) { ... on Organization {
  usage(first: 50, filter: $filter) { edges { node { credits } } } } } }"""


async def test_usage_filters_by_external_id_match_the_filters_by_global_id(api: Api) -> None:
    w = await build(api)
    service, member = w.tokens["service"], w.tokens["member"]
    spends = [({"externalOrganizationId": "acme"}, "1"), ({}, "2"), ({"externalOrganizationId": "acme"}, "3")]
    for n, (org, credits) in enumerate(spends):
        spent = await run(
            api,
            service,
            "spendCredits",
            {
                "externalUserId": "u-member",
                **org,
                "agentId": "a",
                "activity": "answer",
                "credits": credits,
                "idempotencyKey": f"k{n}",
            },
        )
        assert spent["__typename"] == "SpendCreditsSuccess", spent

    async def mine(filter: dict[str, Any]) -> list[str]:
        data = await api.data(USAGE, {"filter": filter}, member)
        return [edge["node"]["credits"] for edge in data["me"]["credit"]["usage"]["edges"]]

    async def acme(filter: dict[str, Any]) -> list[str]:
        data = await api.data(ORG_USAGE, {"id": gid("Organization", w.acme), "filter": filter}, w.tokens["owner"])
        return [edge["node"]["credits"] for edge in data["node"]["usage"]["edges"]]

    # Spends in Acme drew on its pool; the member's own account has only the one outside it.
    assert await mine({}) == ["2"]
    assert await acme({}) == ["3", "1"]
    assert await acme({"externalMemberId": "u-member"}) == await acme({"memberId": w.user("member")}) == ["3", "1"]
    assert await acme({"externalMemberId": "u-owner"}) == await acme({"memberId": w.user("owner")}) == []
    assert await mine({"externalOrganizationId": "acme"}) == await mine({"organizationId": gid("Organization", w.acme)})
    assert await acme({"externalOrganizationId": "acme"}) == ["3", "1"]
    # Unknown matches nothing, as an unknown global ID does.
    assert await acme({"externalMemberId": "nobody"}) == await acme({"memberId": gid("User", 999)}) == []
    assert await acme({"externalOrganizationId": "nowhere"}) == []

    refusals = [
        (
            {"memberId": w.user("member"), "externalMemberId": "u-member"},
            "Give at most one of memberId or externalMemberId",
        ),
        (
            {"organizationId": gid("Organization", w.acme), "externalOrganizationId": "acme"},
            "Give at most one of organizationId or externalOrganizationId",
        ),
        ({"externalMemberId": ""}, "externalMemberId must be 1 to 255 characters"),
        ({"externalOrganizationId": "a\nb"}, "externalOrganizationId must not contain control characters"),
    ]
    for filter, message in refusals:
        body = await api.post(ORG_USAGE, {"id": gid("Organization", w.acme), "filter": filter}, w.tokens["owner"])
        assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [(message, "BAD_FILTER")], filter


# ------------------------------------------------------------------------------------------- subscriptions

BALANCE_WATCH = """subscription($id: ID, $user: String, $org: String) {
  balanceChanged(accountId: $id, externalUserId: $user, externalOrganizationId: $org) {
    reason account { id } balance { total } } }"""
USAGE_WATCH = """subscription($id: ID, $org: String) {
  usageRecorded(organizationId: $id, externalOrganizationId: $org) { credits agentId } }"""


@pytest.fixture
async def live(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    async with serve(settings, clock) as server:
        yield server


async def first_message(live: Live, token: str, query: str, variables: dict[str, Any]) -> Any:
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}))
        message = await receive(ws)
        return message["payload"] if message["type"] == "next" else message
    finally:
        await ws.close()


def top_level(message: str, code: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}


async def test_balance_changed_by_every_form_of_id_watches_the_same_account(live: Live) -> None:
    w = await build(live.api)
    owner, outsider = w.tokens["owner"], w.tokens["outsider"]
    pool_forms = [
        {"id": gid("CreditAccount", w.pool)},
        {"id": gid("Organization", w.acme)},
        {"org": "acme"},
    ]
    pool = {
        "balanceChanged": {
            "reason": "SNAPSHOT",
            "account": {"id": gid("CreditAccount", w.pool)},
            "balance": {"total": "50"},
        }
    }
    for variables in pool_forms:
        assert await first_message(live, owner, BALANCE_WATCH, variables) == {"data": pool}, variables
    own = {"balanceChanged": {"reason": "SNAPSHOT", "account": {"id": w.account("owner")}, "balance": {"total": "0"}}}
    for variables in ({"id": w.account("owner")}, {"id": w.user("owner")}, {"user": "u-owner"}, {}):
        assert await first_message(live, owner, BALANCE_WATCH, variables) == {"data": own}, variables

    refused = top_level("You may not watch this account", "FORBIDDEN")
    for variables in [*pool_forms, {"user": "u-owner"}, {"user": "nobody"}, {"org": "nowhere"}, {"org": "globex"}]:
        # Another tenant's account, an unknown one and a pool that does not exist: one answer.
        assert await first_message(live, outsider, BALANCE_WATCH, variables) == refused, variables
    session = await portal_session(live.api, w)
    for variables in ({"user": "u-owner"}, {"user": "nobody"}, {"org": "acme"}, {"org": "nowhere"}):
        assert await first_message(live, session, BALANCE_WATCH, variables) == refused, variables
    assert await first_message(live, owner, BALANCE_WATCH, {"org": "globex"}) == refused
    twice = top_level(ONE_ACCOUNT, "BAD_REQUEST")
    assert await first_message(live, owner, BALANCE_WATCH, {"id": w.user("owner"), "user": "u-owner"}) == twice


async def test_usage_recorded_by_external_id_streams_the_organizations_usage(live: Live) -> None:
    w = await build(live.api)
    owner, outsider = w.tokens["owner"], w.tokens["outsider"]
    ws = await connect(live, owner)
    try:
        payload = {"query": USAGE_WATCH, "variables": {"org": "acme"}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        spent = await run(
            live.api,
            w.tokens["service"],
            "spendCredits",
            {
                "externalUserId": "u-member",
                "organizationId": gid("Organization", w.acme),
                "agentId": "bot",
                "activity": "answer",
                "credits": "1",
                "idempotencyKey": "k",
            },
        )
        assert spent["__typename"] == "SpendCreditsSuccess", spent
        message = await receive(ws)
        assert message["payload"] == {"data": {"usageRecorded": {"credits": "1", "agentId": "bot"}}}
    finally:
        await ws.close()

    refused = top_level("Watching usage needs the BILLING or OWNER role in that organization", "FORBIDDEN")
    for variables in (
        {"id": gid("Organization", w.acme)},
        {"org": "acme"},
        {"org": "nowhere"},
        {"id": gid("Organization", 999)},
    ):
        assert await first_message(live, outsider, USAGE_WATCH, variables) == refused, variables
    session = await portal_session(live.api, w)
    for variables in ({"org": "acme"}, {"org": "nowhere"}):
        assert await first_message(live, session, USAGE_WATCH, variables) == refused, variables
    one = top_level("Give exactly one of organizationId or externalOrganizationId", "BAD_REQUEST")
    assert await first_message(live, owner, USAGE_WATCH, {}) == one
    assert await first_message(live, owner, USAGE_WATCH, {"id": gid("Organization", w.acme), "org": "acme"}) == one
