"""Organizations, roles, invitations, the shared credit pool and per-member budgets (docs/rules.md, Roles,
Shared pool and Budgets)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from creditline.settings import Settings
from models import organizations
from models.credits import MICRO
from models.ids import decode_id
from models.tables import CreditAccount, Invitation, LedgerEntry, LimitAction, MemberRole, Membership, SpendLimit
from tests.support.backends import T0
from tests.support.helpers import BALANCE, SPEND, Api, gid
from tests.support.organizations import (
    ACCEPT,
    ANSWER_REFUSALS,
    BUDGET,
    GRANT,
    POOL,
    invite,
    setup_org,
    spend_input,
)
from tests.support.snapshots import changed, snapshot

ADD = """mutation($org: ID!, $email: String!, $roles: [MemberRole!]!) {
  addMember(input: {organizationId: $org, email: $email, roles: $roles}) {
    __typename ... on AddMemberSuccess { membership { email roles } } ... on Error { message } } }"""
DECLINE = f"""mutation($id: ID!) {{ declineInvitation(input: {{invitationId: $id}}) {{ __typename
  ... on DeclineInvitationSuccess {{ invitation {{ status closedAt }} }} {ANSWER_REFUSALS} }} }}"""
REVOKE = f"""mutation($id: ID!) {{ revokeInvitation(input: {{invitationId: $id}}) {{ __typename
  ... on RevokeInvitationSuccess {{ invitation {{ status closedAt }} }} {ANSWER_REFUSALS} }} }}"""
MY_INVITATIONS = "{ me { invitations(first: 10) { edges { node { id organizationName roles status expiresAt } } } } }"
ORG_INVITATIONS = """query($org: ID!) { node(id: $org) { ... on Organization {
  invitations(first: 10) { edges { node { email roles status } } } } } }"""
ROLES = """mutation($org: ID!, $user: ID!, $roles: [MemberRole!]!) {
  setMemberRoles(input: {organizationId: $org, userId: $user, roles: $roles}) {
    __typename ... on SetMemberRolesSuccess { membership { email roles } } ... on Error { message } } }"""
REMOVE = """mutation($org: ID!, $user: ID!) { removeMember(input: {organizationId: $org, userId: $user}) {
  __typename ... on Error { message } } }"""
LEAVE = """mutation($org: ID!) { leaveOrganization(input: {organizationId: $org}) {
  __typename ... on LeaveOrganizationSuccess { organizationId } ... on Error { message } } }"""
MEMBERS = """query($org: ID!) { node(id: $org) { ... on Organization { name myRoles members { email roles } } } }"""


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
    denied = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["billing"])
    assert denied == {"__typename": "Forbidden", "message": "This needs the OWNER role in the organization"}
    assert await Invitation.all().count() == 2  # billing's and member's, both accepted

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


SET_LIMIT = """mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { __typename
  ... on SetSpendLimitSuccess { created limit { amount action } } } }"""
BUDGETS = """query($org: ID!) { node(id: $org) { ... on Organization { members { email monthlyBudget } } } }"""


async def test_a_notify_limit_on_a_member_is_no_budget_and_leaves_the_budget_capping(api: Api) -> None:
    s = await setup_org(api)
    service = await api.service()
    pool_id = (await api.data(POOL, {"org": s["org"]}, s["owner"]))["enableCreditPool"]["creditPool"]["id"]
    await api.data(GRANT, {"account": pool_id, "key": "fund"}, await api.admin())
    member_gid = gid("User", s["member_id"])
    member = {"accountId": pool_id, "scope": "MEMBER", "memberId": member_gid, "window": "MONTH"}
    warn = {"input": {**member, "amount": "0.5", "action": "NOTIFY"}}
    # A heads-up set before the budget is no budget; the budget set after it does not replace it.
    assert (await api.data(SET_LIMIT, warn, s["owner"]))["setSpendLimit"] == {
        "__typename": "SetSpendLimitSuccess", "created": True, "limit": {"amount": "0.5", "action": "NOTIFY"}
    }  # fmt: skip
    budgets = {m["email"]: m["monthlyBudget"] for m in (await api.data(BUDGETS, {"org": s["org"]}, s["owner"]))[
        "node"]["members"]}  # fmt: skip
    assert budgets["member@example.com"] is None
    budget = await api.data(BUDGET, {"org": s["org"], "user": member_gid, "credits": "1"}, s["billing"])
    assert budget["setMemberBudget"]["membership"]["monthlyBudget"] == "1"
    # The heads-up set again after the budget replaces the heads-up only.
    again = await api.data(SET_LIMIT, {"input": {**warn["input"], "amount": "0.8"}}, s["owner"])
    assert again["setSpendLimit"]["created"] is False
    budgets = {m["email"]: m["monthlyBudget"] for m in (await api.data(BUDGETS, {"org": s["org"]}, s["owner"]))[
        "node"]["members"]}  # fmt: skip
    assert budgets["member@example.com"] == "1"

    before = await snapshot()
    refused = await api.data(SPEND, spend_input(s, "5", "big"), service)
    assert refused["spendCredits"]["__typename"] == "BudgetExceeded"
    # The refusal, stored under its key, and the budget's first refusal this month: its budget.reached.
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "events",
        "spend_limits",
    }  # reached_period: told once
    assert (await api.data(SPEND, spend_input(s, "0.9", "fits"), service))["spendCredits"]["__typename"] == (
        "SpendCreditsSuccess"
    )

    # Lifting the budget keeps the heads-up.
    lifted = await api.data(BUDGET, {"org": s["org"], "user": member_gid, "credits": None}, s["billing"])
    assert lifted["setMemberBudget"]["membership"]["monthlyBudget"] is None
    pool = await CreditAccount.get(organization_id__not_isnull=True)
    kept = await SpendLimit.filter(account_id=pool.id).values_list("action", "amount")
    assert kept == [(LimitAction.NOTIFY, 800_000)]
    assert pool.spend_limits == 1


# ------------------------------------------------------------------------------------------ invitations

ADMINS_ONLY = {
    "__typename": "Forbidden",
    "message": "Adding a member directly needs an admin token: owners invite with inviteMember",
}
WEEK = timedelta(days=7)


async def membership_state() -> tuple[Any, ...]:
    """Every membership and invitation, as stored."""
    return (
        sorted((m.organization_id, m.user_id, m.roles) for m in await Membership.all()),
        sorted(
            (i.id, i.organization_id, i.email, i.roles, i.status, i.expires_at, i.closed_at, i.closed_by_id)
            for i in await Invitation.all()
        ),
    )


@pytest.mark.parametrize("who", ["owner", "billing", "member", "outsider"])
async def test_only_an_admin_adds_a_member_directly(api: Api, who: str) -> None:
    s = await setup_org(api)
    before = await membership_state()

    refused = await api.data(ADD, {"org": s["org"], "email": "outsider@example.com", "roles": ["OWNER"]}, s[who])

    assert refused["addMember"] == ADMINS_ONLY
    assert await membership_state() == before


async def test_an_admin_adds_a_member_directly(api: Api) -> None:
    s = await setup_org(api)
    admin = await api.admin()
    variables = {"org": s["org"], "email": "outsider@example.com", "roles": ["MEMBER"]}

    added = await api.data(ADD, variables, admin)

    assert added["addMember"] == {
        "__typename": "AddMemberSuccess",
        "membership": {"email": "outsider@example.com", "roles": ["MEMBER"]},
    }
    before = await membership_state()
    again = await api.data(ADD, variables, admin)
    assert again["addMember"] == {"__typename": "AlreadyMember", "message": "That user is a member already"}
    nobody = await api.data(ADD, {**variables, "email": "nobody@example.com"}, admin)
    assert nobody["addMember"] == {"__typename": "NotFound", "message": "No user with that email"}
    no_roles = await api.data(ADD, {**variables, "email": "member@example.com", "roles": []}, admin)
    assert no_roles["addMember"] == {"__typename": "ValidationError", "message": "Give at least one role"}
    assert await membership_state() == before


def expected_invitation(invitation: dict[str, Any], org: str, email: str, roles: list[str]) -> dict[str, Any]:
    return {
        "id": invitation["id"],
        "email": email,
        "roles": roles,
        "status": "PENDING",
        "organizationId": org,
        "organizationName": "Acme",
        "createdAt": T0.isoformat(),
        "expiresAt": (T0 + WEEK).isoformat(),
        "closedAt": None,
    }


async def test_an_invitee_sees_an_invitation_and_accepting_it_makes_them_a_member_with_its_roles(api: Api) -> None:
    s = await setup_org(api)

    sent = await invite(api, s["org"], "Outsider@Example.com ", ["BILLING", "MEMBER"], s["owner"])

    invitation = sent["invitation"]
    assert sent == {
        "__typename": "InviteMemberSuccess",
        "invitation": expected_invitation(invitation, s["org"], "outsider@example.com", ["BILLING", "MEMBER"]),
    }
    mine = {"id": invitation["id"], "organizationName": "Acme", "roles": ["BILLING", "MEMBER"], "status": "PENDING"}
    seen = await api.data(MY_INVITATIONS, token=s["outsider"])
    assert seen == {"me": {"invitations": {"edges": [{"node": {**mine, "expiresAt": (T0 + WEEK).isoformat()}}]}}}
    listed = {"email": "outsider@example.com", "roles": ["BILLING", "MEMBER"], "status": "PENDING"}
    pending = {"node": {"invitations": {"edges": [{"node": listed}]}}}
    assert await api.data(ORG_INVITATIONS, {"org": s["org"]}, s["owner"]) == pending
    node = "query($id: ID!) { node(id: $id) { ... on Invitation { email status } } }"
    for token in (s["outsider"], s["owner"]):
        looked_up = await api.data(node, {"id": invitation["id"]}, token)
        assert looked_up == {"node": {"email": "outsider@example.com", "status": "PENDING"}}
    for token in (s["billing"], s["member"]):
        assert await api.data(node, {"id": invitation["id"]}, token) == {"node": None}
    # Not a member yet: inviting grants nothing.
    assert await api.data(MEMBERS, {"org": s["org"]}, s["outsider"]) == {"node": None}

    api.clock.advance(WEEK - timedelta(seconds=1))
    accepted = await api.data(ACCEPT, {"id": invitation["id"]}, s["outsider"])

    assert accepted["acceptInvitation"] == {
        "__typename": "AcceptInvitationSuccess",
        "membership": {
            "email": "outsider@example.com",
            "roles": ["BILLING", "MEMBER"],
            "organization": {"name": "Acme"},
        },
        "invitation": {"status": "ACCEPTED", "closedAt": api.clock.now().isoformat()},
    }
    members = await api.data(MEMBERS, {"org": s["org"]}, s["outsider"])
    assert members["node"]["myRoles"] == ["BILLING", "MEMBER"]
    assert members["node"]["members"][-1] == {"email": "outsider@example.com", "roles": ["BILLING", "MEMBER"]}
    assert await api.data(MY_INVITATIONS, token=s["outsider"]) == {"me": {"invitations": {"edges": []}}}
    assert await api.data(ORG_INVITATIONS, {"org": s["org"]}, s["owner"]) == {"node": {"invitations": {"edges": []}}}

    before = await membership_state()
    again = await api.data(ACCEPT, {"id": invitation["id"]}, s["outsider"])
    assert again["acceptInvitation"] == {
        "__typename": "InvitationNotPending",
        "message": "This invitation was accepted already",
        "status": "ACCEPTED",
    }
    assert await membership_state() == before


async def test_a_declined_invitation_grants_nothing(api: Api) -> None:
    s = await setup_org(api)
    invitation = (await invite(api, s["org"], "outsider@example.com", ["OWNER"], s["owner"]))["invitation"]

    declined = await api.data(DECLINE, {"id": invitation["id"]}, s["outsider"])

    assert declined["declineInvitation"] == {
        "__typename": "DeclineInvitationSuccess",
        "invitation": {"status": "DECLINED", "closedAt": T0.isoformat()},
    }
    assert await api.data(MEMBERS, {"org": s["org"]}, s["outsider"]) == {"node": None}
    assert await api.data(MY_INVITATIONS, token=s["outsider"]) == {"me": {"invitations": {"edges": []}}}
    before = await membership_state()
    accepted = await api.data(ACCEPT, {"id": invitation["id"]}, s["outsider"])
    assert accepted["acceptInvitation"] == {
        "__typename": "InvitationNotPending",
        "message": "This invitation was declined already",
        "status": "DECLINED",
    }
    assert await membership_state() == before
    # Declined, it no longer stands in the way of a new invitation.
    assert (await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"]))["__typename"] == (
        "InviteMemberSuccess"
    )


async def test_an_owner_revokes_an_invitation_and_it_can_no_longer_be_accepted(api: Api) -> None:
    s = await setup_org(api)
    invitation = (await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"]))["invitation"]
    before = await membership_state()
    for who, refusal in (
        ("billing", {"__typename": "Forbidden", "message": "This needs the OWNER role in the organization"}),
        ("outsider", {"__typename": "NotFound", "message": "Invitation not found"}),
    ):
        refused = await api.data(REVOKE, {"id": invitation["id"]}, s[who])
        assert refused["revokeInvitation"] == refusal, who
    not_theirs = await api.data(ACCEPT, {"id": invitation["id"]}, s["member"])
    assert not_theirs["acceptInvitation"] == {"__typename": "NotFound", "message": "Invitation not found"}
    assert await membership_state() == before

    revoked = await api.data(REVOKE, {"id": invitation["id"]}, s["owner"])

    assert revoked["revokeInvitation"] == {
        "__typename": "RevokeInvitationSuccess",
        "invitation": {"status": "REVOKED", "closedAt": T0.isoformat()},
    }
    assert await api.data(MY_INVITATIONS, token=s["outsider"]) == {"me": {"invitations": {"edges": []}}}
    assert await api.data(ORG_INVITATIONS, {"org": s["org"]}, s["owner"]) == {"node": {"invitations": {"edges": []}}}
    after = await membership_state()
    not_pending = {
        "__typename": "InvitationNotPending",
        "message": "This invitation was revoked already",
        "status": "REVOKED",
    }
    assert (await api.data(ACCEPT, {"id": invitation["id"]}, s["outsider"]))["acceptInvitation"] == not_pending
    assert (await api.data(DECLINE, {"id": invitation["id"]}, s["outsider"]))["declineInvitation"] == not_pending
    assert (await api.data(REVOKE, {"id": invitation["id"]}, s["owner"]))["revokeInvitation"] == not_pending
    assert await membership_state() == after


async def test_an_expired_invitation_cannot_be_answered_or_revoked(api: Api) -> None:
    s = await setup_org(api)
    invitation = (await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"]))["invitation"]
    node = "query($id: ID!) { node(id: $id) { ... on Invitation { status expiresAt } } }"

    api.clock.advance(WEEK)

    assert await api.data(node, {"id": invitation["id"]}, s["outsider"]) == {
        "node": {"status": "EXPIRED", "expiresAt": (T0 + WEEK).isoformat()}
    }
    assert await api.data(MY_INVITATIONS, token=s["outsider"]) == {"me": {"invitations": {"edges": []}}}
    assert await api.data(ORG_INVITATIONS, {"org": s["org"]}, s["owner"]) == {"node": {"invitations": {"edges": []}}}
    before = await membership_state()
    expired = {
        "__typename": "InvitationExpired",
        "message": "This invitation has expired: ask for a new one",
        "expiresAt": (T0 + WEEK).isoformat(),
    }
    assert (await api.data(ACCEPT, {"id": invitation["id"]}, s["outsider"]))["acceptInvitation"] == expired
    assert (await api.data(DECLINE, {"id": invitation["id"]}, s["outsider"]))["declineInvitation"] == expired
    assert (await api.data(REVOKE, {"id": invitation["id"]}, s["owner"]))["revokeInvitation"] == expired
    assert await membership_state() == before
    assert await api.data(MEMBERS, {"org": s["org"]}, s["outsider"]) == {"node": None}
    # An expired invitation does not stand in the way of a new one.
    renewed = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"])
    assert renewed["invitation"]["expiresAt"] == (T0 + 2 * WEEK).isoformat()


def test_the_invitation_lifetime_is_a_setting() -> None:
    assert Settings.from_env({}).invitation_days == 7
    assert Settings.from_env({"CREDITLINE_INVITATION_DAYS": "2"}).invitation_days == 2
    with pytest.raises(SystemExit, match="CREDITLINE_INVITATION_DAYS must be a positive whole number, got 0"):
        Settings.from_env({"CREDITLINE_INVITATION_DAYS": "0"})


def statements(records: list[logging.LogRecord]) -> list[str]:
    """The SQL the database was sent, without the values bound to it."""
    return [str(record.args[0]) for record in records if isinstance(record.args, tuple) and record.args]


async def test_an_invitation_says_nothing_about_whether_the_email_is_registered(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """The same answer, and the same statements to the database, for a registered and an unknown email: neither
    the response nor its timing tells the owner who has an account."""
    s = await setup_org(api)
    answers: dict[str, Any] = {}
    sent: dict[str, list[str]] = {}
    for email in ("outsider@example.com", "nobody@example.com"):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="tortoise.db_client"):
            answers[email] = await invite(api, s["org"], email, ["OWNER"], s["owner"])
        sent[email] = statements([r for r in caplog.records if r.name == "tortoise.db_client"])

    registered, unknown = answers["outsider@example.com"], answers["nobody@example.com"]
    assert registered == {
        "__typename": "InviteMemberSuccess",
        "invitation": expected_invitation(registered["invitation"], s["org"], "outsider@example.com", ["OWNER"]),
    }
    assert unknown == {
        "__typename": "InviteMemberSuccess",
        "invitation": expected_invitation(unknown["invitation"], s["org"], "nobody@example.com", ["OWNER"]),
    }
    assert sent["outsider@example.com"] == sent["nobody@example.com"]
    writes = [
        sql for sql in sent["nobody@example.com"] if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert len(writes) == 1, writes
    assert "invitations" in writes[0], writes
    # Nobody was added anywhere: the registered invitee too must still say yes.
    assert await api.data(MEMBERS, {"org": s["org"]}, s["outsider"]) == {"node": None}


async def test_an_invitation_to_an_unregistered_email_waits_for_the_user_who_registers_it(api: Api) -> None:
    s = await setup_org(api)
    invitation = (await invite(api, s["org"], "later@example.com", ["MEMBER"], s["owner"]))["invitation"]
    api.clock.advance(timedelta(days=1))

    _, later = await api.user("later@example.com", bonus=0)

    seen = await api.data(MY_INVITATIONS, token=later)
    assert [edge["node"]["id"] for edge in seen["me"]["invitations"]["edges"]] == [invitation["id"]]
    accepted = await api.data(ACCEPT, {"id": invitation["id"]}, later)
    assert accepted["acceptInvitation"]["membership"] == {
        "email": "later@example.com",
        "roles": ["MEMBER"],
        "organization": {"name": "Acme"},
    }


async def test_invitation_refusals_change_nothing(api: Api) -> None:
    s = await setup_org(api)
    first = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"], key="invite-outsider")
    before = await membership_state()

    replay = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"], key="invite-outsider")
    assert replay == first
    cases = [
        (("member@example.com", ["OWNER"], None), {
            "__typename": "AlreadyMember", "message": "That user is a member already",
        }),
        (("OUTSIDER@example.com", ["OWNER"], None), {
            "__typename": "AlreadyInvited",
            "message": "That email has a pending invitation to this organization: revoke it to invite again",
        }),
        (("nobody@example.com", ["MEMBER"], "invite-outsider"), {
            "__typename": "IdempotencyConflict",
            "message": "This idempotencyKey was already used with a different request",
            "idempotencyKey": "invite-outsider",
        }),
        (("nobody@example.com", [], None), {"__typename": "ValidationError", "message": "Give at least one role"}),
        (("not-an-email", ["MEMBER"], None), {
            "__typename": "ValidationError", "message": "email must be an email address such as ada@example.com",
        }),
    ]  # fmt: skip
    for (email, roles, key), expected in cases:
        assert await invite(api, s["org"], email, roles, s["owner"], key) == expected, email
    service = await api.service()
    for token in (service, s["member"]):
        refused = await invite(api, s["org"], "nobody@example.com", ["MEMBER"], token)
        assert refused == {"__typename": "Forbidden", "message": "This needs the OWNER role in the organization"}
    as_service = await api.data(ACCEPT, {"id": first["invitation"]["id"]}, service)
    assert as_service["acceptInvitation"] == {
        "__typename": "Forbidden",
        "message": "Accepting an invitation needs the invitee's user token",
    }
    assert await membership_state() == before


async def test_an_accept_and_a_revoke_at_once_leave_one_answer(api: Api) -> None:
    s = await setup_org(api)
    invitation = (await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"]))["invitation"]

    accepted, revoked = await asyncio.gather(
        api.data(ACCEPT, {"id": invitation["id"]}, s["outsider"]),
        api.data(REVOKE, {"id": invitation["id"]}, s["owner"]),
    )

    outcomes = (accepted["acceptInvitation"]["__typename"], revoked["revokeInvitation"]["__typename"])
    assert outcomes in (
        ("AcceptInvitationSuccess", "InvitationNotPending"),
        ("InvitationNotPending", "RevokeInvitationSuccess"),
    )
    row = await Invitation.get(email="outsider@example.com")
    member = await Membership.exists(user_id=s["outsider_id"])
    assert (row.status, member) == (
        ("ACCEPTED", True) if outcomes[0] == "AcceptInvitationSuccess" else ("REVOKED", False)
    )


ALREADY_MEMBER = {"__typename": "AlreadyMember", "message": "That user is a member already"}
ALREADY_INVITED = {
    "__typename": "AlreadyInvited",
    "message": "That email has a pending invitation to this organization: revoke it to invite again",
}
NOT_OWNER = {"__typename": "Forbidden", "message": "This needs the OWNER role in the organization"}


async def _refused_then_possible(api: Api, s: dict[str, Any], case: str) -> tuple[str, str, Any]:
    """Make an invitation with key "k" refused, then change the state so that it would succeed; returns
    (email, the inviter's token, the refusal)."""
    if case == "already-member":
        refused = await invite(api, s["org"], "member@example.com", ["MEMBER"], s["owner"], key="k")
        removed = await api.data(REMOVE, {"org": s["org"], "user": gid("User", s["member_id"])}, s["owner"])
        assert removed["removeMember"]["__typename"] == "RemoveMemberSuccess"
        return "member@example.com", s["owner"], refused
    if case == "already-invited":
        pending = (await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"]))["invitation"]
        refused = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"], key="k")
        revoked = await api.data(REVOKE, {"id": pending["id"]}, s["owner"])
        assert revoked["revokeInvitation"]["__typename"] == "RevokeInvitationSuccess"
        return "outsider@example.com", s["owner"], refused
    assert case == "forbidden-after-demotion"
    billing = gid("User", s["billing_id"])
    promoted = await api.data(ROLES, {"org": s["org"], "user": billing, "roles": ["OWNER"]}, s["owner"])
    assert promoted["setMemberRoles"]["__typename"] == "SetMemberRolesSuccess"
    demoted = await api.data(ROLES, {"org": s["org"], "user": billing, "roles": ["BILLING"]}, s["owner"])
    assert demoted["setMemberRoles"]["__typename"] == "SetMemberRolesSuccess"
    refused = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["billing"], key="k")
    promoted = await api.data(ROLES, {"org": s["org"], "user": billing, "roles": ["OWNER"]}, s["owner"])
    assert promoted["setMemberRoles"]["__typename"] == "SetMemberRolesSuccess"
    return "outsider@example.com", s["billing"], refused


@pytest.mark.parametrize(
    ("case", "refusal"),
    [("already-member", ALREADY_MEMBER), ("already-invited", ALREADY_INVITED), ("forbidden-after-demotion", NOT_OWNER)],
)
async def test_a_refused_invitation_is_replayed_as_refused_after_the_state_changes(
    api: Api, case: str, refusal: dict[str, str]
) -> None:
    """Point 12: a key is never re-evaluated against newer state, refusals included."""
    s = await setup_org(api)
    email, inviter, refused = await _refused_then_possible(api, s, case)
    assert refused == refusal
    before = await membership_state()

    replay = await invite(api, s["org"], email, ["MEMBER"], inviter, key="k")

    assert replay == refusal
    assert await membership_state() == before
    # Without the key the same call is evaluated now, and succeeds: the replay alone was held to its answer.
    fresh = await invite(api, s["org"], email, ["MEMBER"], inviter, key="k2")
    assert fresh["__typename"] == "InviteMemberSuccess"


async def test_a_refused_invitation_key_reused_for_another_request_is_a_conflict(api: Api) -> None:
    s = await setup_org(api)
    assert await invite(api, s["org"], "member@example.com", ["MEMBER"], s["owner"], key="k") == ALREADY_MEMBER
    before = await membership_state()

    other = await invite(api, s["org"], "outsider@example.com", ["MEMBER"], s["owner"], key="k")

    assert other == {
        "__typename": "IdempotencyConflict",
        "message": "This idempotencyKey was already used with a different request",
        "idempotencyKey": "k",
    }
    assert await membership_state() == before


async def test_a_refusal_decided_under_the_lock_is_stored_too(api: Api) -> None:
    """The owner check inside ``invite`` (a demotion racing the resolver's check) stores its refusal."""
    s = await setup_org(api)
    now = api.clock.now()
    org_id = decode_id(s["org"], "Organization")
    assert org_id is not None
    args: dict[str, Any] = {"actor_id": s["billing_id"], "scope": "user:x", "key": "k", "request_hash": "h",
                            "now": now, "lifetime": timedelta(days=7)}  # fmt: skip
    with pytest.raises(organizations.NotOwnerError):
        await organizations.invite(org_id, "outsider@example.com", [MemberRole.MEMBER], **args)
    await Membership.filter(organization_id=org_id, user_id=s["billing_id"]).update(roles="OWNER")
    before = await membership_state()

    with pytest.raises(organizations.NotOwnerError):
        await organizations.invite(org_id, "outsider@example.com", [MemberRole.MEMBER], **args)

    assert await membership_state() == before


# ------------------------------------------------------------------ what a plain member reads of their own

MINE = """query($org: ID!, $from: DateTime!, $to: DateTime!, $group: ReportGroupBy!) { node(id: $org) {
  ... on Organization {
    myMembership { email roles monthlyBudget spentThisMonth }
    myUsageReport(input: {from: $from, to: $to, granularity: HOUR, groupBy: $group}) { __typename
      ... on UsageReport { groupBy totals { events credits } rows { key totals { events credits } } }
      ... on Error { message } ... on ValidationError { field } } } } }"""


async def _pool_with_two_spenders(api: Api) -> tuple[dict[str, Any], dict[str, str]]:
    """Acme's pool, the plain member's budget of 5, and usage in it by the member (2.5) and by billing (1.25)."""
    s = await setup_org(api)
    service, admin = await api.service(), await api.admin()
    pool_id = (await api.data(POOL, {"org": s["org"]}, s["owner"]))["enableCreditPool"]["creditPool"]["id"]
    assert (await api.data(GRANT, {"account": pool_id, "key": "fund"}, admin))["grantCredits"] == {
        "__typename": "GrantCreditsSuccess"
    }
    await api.data(BUDGET, {"org": s["org"], "user": gid("User", s["member_id"]), "credits": "5"}, s["billing"])
    mine = await api.data(SPEND, spend_input(s, "2.5", "member-spend"), service)
    assert mine["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    theirs = spend_input(s, "1.25", "billing-spend")
    theirs["input"]["userId"] = gid("User", s["billing_id"])
    assert (await api.data(SPEND, theirs, service))["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    hour = api.clock.now().replace(minute=0, second=0, microsecond=0)
    window = {"from": (hour - timedelta(hours=2)).isoformat(), "to": (hour + timedelta(hours=1)).isoformat()}
    return s, window


async def test_a_plain_member_reads_their_own_budget_spending_and_usage_in_the_organization(api: Api) -> None:
    s, window = await _pool_with_two_spenders(api)

    seen = await api.data(MINE, {"org": s["org"], **window, "group": "NONE"}, s["member"])

    report = seen["node"]["myUsageReport"]
    assert seen["node"]["myMembership"] == {
        "email": "member@example.com",
        "roles": ["MEMBER"],
        "monthlyBudget": "5",
        "spentThisMonth": "2.5",
    }
    assert report == {  # the member's 2.5 only, not billing's 1.25
        "__typename": "UsageReport",
        "groupBy": "NONE",
        "totals": {"events": 1, "credits": "2.5"},
        "rows": [{"key": None, "totals": {"events": 1, "credits": "2.5"}}],
    }
    by_member = await api.data(MINE, {"org": s["org"], **window, "group": "MEMBER"}, s["member"])
    assert by_member["node"]["myUsageReport"]["rows"] == [
        {"key": gid("User", s["member_id"]), "totals": {"events": 1, "credits": "2.5"}}
    ]


async def test_each_member_reads_only_their_own_membership_and_usage(api: Api) -> None:
    s, window = await _pool_with_two_spenders(api)
    expected = {
        "owner": ({"email": "owner@example.com", "monthlyBudget": None, "spentThisMonth": "0"}, "0"),
        "billing": ({"email": "billing@example.com", "monthlyBudget": None, "spentThisMonth": "1.25"}, "1.25"),
        "member": ({"email": "member@example.com", "monthlyBudget": "5", "spentThisMonth": "2.5"}, "2.5"),
    }
    for who, (membership, used) in expected.items():
        node = (await api.data(MINE, {"org": s["org"], **window, "group": "NONE"}, s[who]))["node"]
        assert {k: v for k, v in node["myMembership"].items() if k != "roles"} == membership, who
        assert node["myUsageReport"]["totals"]["credits"] == used, who


async def test_a_plain_member_reads_no_other_members_budget_or_spending(api: Api) -> None:
    s, _ = await _pool_with_two_spenders(api)
    members = "query($org: ID!) {{ node(id: $org) {{ ... on Organization {{ members {{ email {} }} }} }} }}"
    refusal = "This needs the BILLING or OWNER role (a member sees only their own)"

    spent = await api.post(members.format("spentThisMonth"), {"org": s["org"]}, s["member"])
    budgets = await api.post(members.format("monthlyBudget"), {"org": s["org"]}, s["member"])

    # spentThisMonth is non-null: the others' refusal takes the whole list away, the member's own row with it.
    assert spent["data"] == {"node": None}
    assert [(e["message"], e["path"]) for e in spent["errors"]] == [(refusal, ["node", "members", 0, "spentThisMonth"])]
    # monthlyBudget may be null: the owner's and billing's are refused, the member's own is shown.
    assert budgets["data"]["node"]["members"] == [
        {"email": "owner@example.com", "monthlyBudget": None},
        {"email": "billing@example.com", "monthlyBudget": None},
        {"email": "member@example.com", "monthlyBudget": "5"},
    ]
    assert sorted((e["message"], e["path"][2]) for e in budgets["errors"]) == [(refusal, 0), (refusal, 1)]
    shown = await api.data(members.format("spentThisMonth"), {"org": s["org"]}, s["billing"])
    assert [m["spentThisMonth"] for m in shown["node"]["members"]] == ["0", "1.25", "2.5"]


async def test_someone_outside_the_organization_has_no_membership_or_usage_of_their_own_in_it(api: Api) -> None:
    s, window = await _pool_with_two_spenders(api)
    variables = {"org": s["org"], **window, "group": "NONE"}

    outsider = await api.data(MINE, variables, s["outsider"])
    admin = await api.data(MINE, variables, await api.admin())

    assert outsider == {"node": None}  # the organization itself is hidden from non-members
    assert admin == {  # an admin reads everything of it, but has no membership or usage of their own there
        "node": {
            "myMembership": None,
            "myUsageReport": {
                "__typename": "Forbidden",
                "message": "Only a member of the organization has usage of their own in it",
            },
        }
    }


@pytest.mark.parametrize("group", ["ACTIVITY", "AGENT", "RUN"])
async def test_ones_own_usage_report_groups_by_none_or_member_only(api: Api, group: str) -> None:
    s, window = await _pool_with_two_spenders(api)

    seen = await api.data(MINE, {"org": s["org"], **window, "group": group}, s["member"])

    assert seen["node"]["myUsageReport"] == {
        "__typename": "ValidationError",
        "message": "A report of your own usage groups by NONE or MEMBER",
        "field": "groupBy",
    }
