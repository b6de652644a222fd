"""An organization with an owner, a billing member and a plain member, each invited and each accepted; the
documents that make it, enable its pool, set budgets and grant credit; a spend's input on its pool."""

from __future__ import annotations

from typing import Any

from tests.support.helpers import Api, gid

CREATE = """mutation($name: String!) { createOrganization(input: {name: $name}) {
  __typename ... on CreateOrganizationSuccess { organization { id name myRoles } } ... on Error { message } } }"""

INVITATION_FIELDS = "id email roles status organizationId organizationName createdAt expiresAt closedAt"

INVITE = f"""mutation($org: ID!, $email: String!, $roles: [MemberRole!]!, $key: String) {{
  inviteMember(input: {{organizationId: $org, email: $email, roles: $roles, idempotencyKey: $key}}) {{
    __typename ... on InviteMemberSuccess {{ invitation {{ {INVITATION_FIELDS} }} }}
    ... on IdempotencyConflict {{ idempotencyKey }} ... on Error {{ message }} }} }}"""

ANSWER_REFUSALS = (
    "... on InvitationExpired { expiresAt } ... on InvitationNotPending { status } ... on Error { message }"
)

ACCEPT = f"""mutation($id: ID!) {{ acceptInvitation(input: {{invitationId: $id}}) {{ __typename
  ... on AcceptInvitationSuccess {{
    membership {{ email roles organization {{ name }} }} invitation {{ status closedAt }} }}
  {ANSWER_REFUSALS} }} }}"""

POOL = """mutation($org: ID!) { enableCreditPool(input: {organizationId: $org}) {
  __typename ... on EnableCreditPoolSuccess { creditPool { id balance { total } } } ... on Error { message } } }"""

BUDGET = """mutation($org: ID!, $user: ID!, $credits: Credits) {
  setMemberBudget(input: {organizationId: $org, userId: $user, monthlyCredits: $credits}) {
    __typename ... on SetMemberBudgetSuccess { membership { email monthlyBudget spentThisMonth } }
    ... on Error { message } } }"""

GRANT = """mutation($account: ID!, $key: String!) { grantCredits(input: {accountId: $account, credits: "10",
  kind: PAID, idempotencyKey: $key}) { __typename } }"""


async def invite(api: Api, org: str, email: str, roles: list[str], token: str, key: str | None = None) -> Any:
    return (await api.data(INVITE, {"org": org, "email": email, "roles": roles, "key": key}, token))["inviteMember"]


async def join(api: Api, org: str, email: str, roles: list[str], owner: str, invitee: str) -> None:
    """``email`` joins ``org`` the only way a user can: the owner invites, the invitee accepts."""
    invitation = (await invite(api, org, email, roles, owner))["invitation"]
    accepted = (await api.data(ACCEPT, {"id": invitation["id"]}, invitee))["acceptInvitation"]
    assert accepted == {
        "__typename": "AcceptInvitationSuccess",
        "membership": {"email": email, "roles": roles, "organization": {"name": "Acme"}},
        "invitation": {"status": "ACCEPTED", "closedAt": api.clock.now().isoformat()},
    }


async def setup_org(api: Api) -> dict[str, Any]:
    """Acme with an owner, a billing member and a plain member (each invited, each accepted); returns ids and
    tokens."""
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
    await join(api, org["id"], "billing@example.com", ["BILLING"], owner, billing)
    await join(api, org["id"], "member@example.com", ["MEMBER"], owner, member)
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
