"""Organizations, roles, the shared credit pool and per-member budgets (DESIGN 7)."""

from __future__ import annotations

import asyncio
from typing import Any

from models.credits import MICRO
from models.tables import CreditAccount, LedgerEntry
from tests.helpers import BALANCE, SPEND, Api, gid

CREATE = """mutation($name: String!) { createOrganization(input: {name: $name}) {
  __typename ... on CreateOrganizationSuccess { organization { id name myRoles } } ... on Error { message } } }"""
ADD = """mutation($org: ID!, $email: String!, $roles: [MemberRole!]!) {
  addMember(input: {organizationId: $org, email: $email, roles: $roles}) {
    __typename ... on AddMemberSuccess { membership { email roles } } ... on Error { message } } }"""
ROLES = """mutation($org: ID!, $user: ID!, $roles: [MemberRole!]!) {
  setMemberRoles(input: {organizationId: $org, userId: $user, roles: $roles}) {
    __typename ... on SetMemberRolesSuccess { membership { email roles } } ... on Error { message } } }"""
REMOVE = """mutation($org: ID!, $user: ID!) { removeMember(input: {organizationId: $org, userId: $user}) {
  __typename ... on Error { message } } }"""
LEAVE = """mutation($org: ID!) { leaveOrganization(input: {organizationId: $org}) {
  __typename ... on LeaveOrganizationSuccess { organizationId } ... on Error { message } } }"""
POOL = """mutation($org: ID!) { enableCreditPool(input: {organizationId: $org}) {
  __typename ... on EnableCreditPoolSuccess { creditPool { id balance { total } } } ... on Error { message } } }"""
BUDGET = """mutation($org: ID!, $user: ID!, $credits: Credits) {
  setMemberBudget(input: {organizationId: $org, userId: $user, monthlyCredits: $credits}) {
    __typename ... on SetMemberBudgetSuccess { membership { email monthlyBudget spentThisMonth } }
    ... on Error { message } } }"""
MEMBERS = """query($org: ID!) { node(id: $org) { ... on Organization { name myRoles members { email roles } } } }"""
GRANT = """mutation($account: ID!, $key: String!) { grantCredits(input: {accountId: $account, credits: "10",
  kind: PAID, idempotencyKey: $key}) { __typename } }"""


async def setup_org(api: Api) -> dict[str, Any]:
    """Acme with an owner, a billing member and a plain member; returns ids and tokens."""
    owner_id, owner = await api.user("owner@example.com", bonus=0)
    billing_id, billing = await api.user("billing@example.com", bonus=0)
    member_id, member = await api.user("member@example.com", bonus=5)
    outsider_id, outsider = await api.user("outsider@example.com", bonus=0)
    created = await api.data(CREATE, {"name": "Acme"}, owner)
    org = created["createOrganization"]["organization"]
    assert created["createOrganization"] == {
        "__typename": "CreateOrganizationSuccess",
        "organization": {"id": org["id"], "name": "Acme", "myRoles": ["OWNER"]},
    }
    for email, roles in (("billing@example.com", ["BILLING"]), ("member@example.com", ["MEMBER"])):
        added = await api.data(ADD, {"org": org["id"], "email": email, "roles": roles}, owner)
        assert added["addMember"] == {
            "__typename": "AddMemberSuccess",
            "membership": {"email": email, "roles": roles},
        }
    return {
        "org": org["id"],
        "owner": owner,
        "owner_id": owner_id,
        "billing": billing,
        "billing_id": billing_id,
        "member": member,
        "member_id": member_id,
        "outsider": outsider,
        "outsider_id": outsider_id,
    }


def spend_input(s: dict[str, Any], credits: str, key: str, org: bool = True) -> dict[str, Any]:
    return {
        "input": {
            "userId": gid("User", s["member_id"]),
            "organizationId": s["org"] if org else None,
            "agentId": "a",
            "activity": "answer",
            "credits": credits,
            "idempotencyKey": key,
        }
    }


async def test_members_see_the_organization_outsiders_do_not(api: Api) -> None:
    s = await setup_org(api)
    expected = [
        {"email": "owner@example.com", "roles": ["OWNER"]},
        {"email": "billing@example.com", "roles": ["BILLING"]},
        {"email": "member@example.com", "roles": ["MEMBER"]},
    ]
    for token, roles in ((s["owner"], ["OWNER"]), (s["member"], ["MEMBER"])):
        data = await api.data(MEMBERS, {"org": s["org"]}, token)
        assert data == {"node": {"name": "Acme", "myRoles": roles, "members": expected}}
    assert await api.data(MEMBERS, {"org": s["org"]}, s["outsider"]) == {"node": None}
    mine = await api.data("{ me { organizations { roles organization { name } } } }", token=s["billing"])
    assert mine == {"me": {"organizations": [{"roles": ["BILLING"], "organization": {"name": "Acme"}}]}}


async def test_only_owners_manage_members_and_the_last_owner_stays(api: Api) -> None:
    s = await setup_org(api)
    denied = await api.data(ADD, {"org": s["org"], "email": "outsider@example.com", "roles": ["MEMBER"]}, s["billing"])
    assert denied["addMember"] == {
        "__typename": "Forbidden",
        "message": "This needs the OWNER role in the organization",
    }
    again = await api.data(ADD, {"org": s["org"], "email": "member@example.com", "roles": ["MEMBER"]}, s["owner"])
    assert again["addMember"] == {"__typename": "AlreadyMember", "message": "That user is a member already"}
    nobody = await api.data(ADD, {"org": s["org"], "email": "nobody@example.com", "roles": ["MEMBER"]}, s["owner"])
    assert nobody["addMember"] == {"__typename": "NotFound", "message": "No user with that email"}
    no_roles = await api.data(ADD, {"org": s["org"], "email": "outsider@example.com", "roles": []}, s["owner"])
    assert no_roles["addMember"] == {"__typename": "ValidationError", "message": "Give at least one role"}

    owner_gid = gid("User", s["owner_id"])
    last = {"__typename": "LastOwner", "message": "An organization must keep at least one owner"}
    demote = await api.data(ROLES, {"org": s["org"], "user": owner_gid, "roles": ["MEMBER"]}, s["owner"])
    assert demote["setMemberRoles"] == last
    assert (await api.data(REMOVE, {"org": s["org"], "user": owner_gid}, s["owner"]))["removeMember"] == last
    assert (await api.data(LEAVE, {"org": s["org"]}, s["owner"]))["leaveOrganization"] == last

    promote = await api.data(
        ROLES, {"org": s["org"], "user": gid("User", s["billing_id"]), "roles": ["OWNER", "BILLING"]}, s["owner"]
    )
    assert promote["setMemberRoles"] == {
        "__typename": "SetMemberRolesSuccess",
        "membership": {"email": "billing@example.com", "roles": ["BILLING", "OWNER"]},
    }
    left = await api.data(LEAVE, {"org": s["org"]}, s["owner"])
    assert left["leaveOrganization"] == {"__typename": "LeaveOrganizationSuccess", "organizationId": s["org"]}
    members = await api.data(MEMBERS, {"org": s["org"]}, s["billing"])
    assert [m["email"] for m in members["node"]["members"]] == ["billing@example.com", "member@example.com"]


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(api: Api) -> None:
    s = await setup_org(api)
    await api.data(ROLES, {"org": s["org"], "user": gid("User", s["billing_id"]), "roles": ["OWNER"]}, s["owner"])

    results = await asyncio.gather(
        api.data(ROLES, {"org": s["org"], "user": gid("User", s["billing_id"]), "roles": ["MEMBER"]}, s["owner"]),
        api.data(ROLES, {"org": s["org"], "user": gid("User", s["owner_id"]), "roles": ["MEMBER"]}, s["billing"]),
    )

    # Whichever runs second is refused: as the last owner's demotion, or because its caller is no longer
    # an owner (roles are re-checked under the organization's lock).
    outcomes = sorted(r["setMemberRoles"]["__typename"] for r in results)
    assert outcomes in (["LastOwner", "SetMemberRolesSuccess"], ["Forbidden", "SetMemberRolesSuccess"])
    members = (await api.data(MEMBERS, {"org": s["org"]}, s["member"]))["node"]["members"]
    assert [m["roles"] for m in members].count(["OWNER"]) == 1


async def test_the_pool_pays_for_members_work_inside_the_organization(api: Api) -> None:
    s = await setup_org(api)
    service = await api.service()
    admin = await api.admin()
    # Without a pool, organization work spends the member's own credit and is attributed to the organization.
    own = await api.data(SPEND, spend_input(s, "1", "no-pool"), service)
    assert own["spendCredits"]["balance"]["total"] == "4"

    denied = await api.data(POOL, {"org": s["org"]}, s["member"])
    assert denied["enableCreditPool"] == {
        "__typename": "Forbidden",
        "message": "This needs the BILLING or OWNER role in the organization",
    }
    enabled = await api.data(POOL, {"org": s["org"]}, s["billing"])
    pool_id = enabled["enableCreditPool"]["creditPool"]["id"]
    assert enabled["enableCreditPool"] == {
        "__typename": "EnableCreditPoolSuccess",
        "creditPool": {"id": pool_id, "balance": {"total": "0"}},
    }
    assert (await api.data(GRANT, {"account": pool_id, "key": "fund"}, admin))["grantCredits"] == {
        "__typename": "GrantCreditsSuccess"
    }

    pooled = await api.data(SPEND, spend_input(s, "2.5", "pool"), service)
    assert pooled["spendCredits"]["balance"] == {
        "total": "7.5",
        "free": "0",
        "paid": "7.5",
        "held": "0",
        "available": "7.5",
    }
    personal = await api.data(SPEND, spend_input(s, "1", "personal", org=False), service)
    assert personal["spendCredits"]["balance"]["total"] == "3"
    mine = await api.data(BALANCE, token=s["member"])
    assert mine["me"]["credit"]["balance"]["total"] == "3"
    pool_view = "query($org: ID!) { node(id: $org) { ... on Organization { creditPool { balance { total } } } } }"
    assert await api.data(pool_view, {"org": s["org"]}, s["owner"]) == {
        "node": {"creditPool": {"balance": {"total": "7.5"}}}
    }
    plain = await api.post(pool_view, {"org": s["org"]}, s["member"])
    assert [e["message"] for e in plain["errors"]] == ["The credit pool needs the BILLING or OWNER role"]


async def test_member_budget_caps_pool_spending_under_concurrency(api: Api) -> None:
    s = await setup_org(api)
    service = await api.service()
    admin = await api.admin()
    pool_id = (await api.data(POOL, {"org": s["org"]}, s["owner"]))["enableCreditPool"]["creditPool"]["id"]
    await api.data(GRANT, {"account": pool_id, "key": "fund"}, admin)
    member_gid = gid("User", s["member_id"])
    budget = await api.data(BUDGET, {"org": s["org"], "user": member_gid, "credits": "1"}, s["billing"])
    assert budget["setMemberBudget"] == {
        "__typename": "SetMemberBudgetSuccess",
        "membership": {"email": "member@example.com", "monthlyBudget": "1", "spentThisMonth": "0"},
    }

    outcomes = await asyncio.gather(*(api.data(SPEND, spend_input(s, "0.15", f"b{n}"), service) for n in range(12)))

    kinds = sorted(o["spendCredits"]["__typename"] for o in outcomes)
    assert kinds == ["BudgetExceeded"] * 6 + ["SpendCreditsSuccess"] * 6
    refused = next(o["spendCredits"] for o in outcomes if o["spendCredits"]["__typename"] == "BudgetExceeded")
    assert refused == {
        "__typename": "BudgetExceeded",
        "message": "This spend would exceed the member's monthly budget in this organization",
    }
    members = await api.data(
        "query($org: ID!) { node(id: $org) { ... on Organization {"
        " members { email monthlyBudget spentThisMonth } } } }",
        {"org": s["org"]},
        s["owner"],
    )
    assert members["node"]["members"][2] == {
        "email": "member@example.com",
        "monthlyBudget": "1",
        "spentThisMonth": "0.9",
    }
    pool = await CreditAccount.get(organization_id__not_isnull=True)
    assert pool.balance == 10 * MICRO - 900_000
    assert await LedgerEntry.filter(account_id=pool.id, entry_type="SPEND").count() == 6

    lifted = await api.data(BUDGET, {"org": s["org"], "user": member_gid, "credits": None}, s["billing"])
    assert lifted["setMemberBudget"]["membership"]["monthlyBudget"] is None
    after = await api.data(SPEND, spend_input(s, "0.5", "after-lift"), service)
    assert after["spendCredits"]["__typename"] == "SpendCreditsSuccess"
