"""A platform goes from nothing to "its user's agent spends, the user sees their page" over HTTP alone
(issue 11, Done when): the only thing it starts with is an admin token (`creditline token create --admin`).

Create the user under the platform's own id -> mint a service token for the agent runtime -> spend by the
platform's id -> mint a portal link -> exchange its code -> the page's session reads the balance and the
spend, and can do nothing an agent does.
"""

from __future__ import annotations

from typing import Any

from models.tables import ApiToken, CreditAccount, PortalCode, TokenKind, UsageEvent, User
from tests.support.helpers import Api
from tests.support.snapshots import changed, snapshot

CREATE_USER = """
mutation($input: CreateUserInput!) {
  createUser(input: $input) {
    __typename
    ... on CreateUserSuccess { user { id email externalId metadata credit { balance { total free paid } } } }
    ... on Error { message }
  }
}
"""
CREATE_TOKEN = """
mutation($input: CreateApiTokenInput!) {
  createApiToken(input: $input) {
    __typename
    ... on CreateApiTokenSuccess { secret apiToken { name kind scopes prefix lastUsedAt revokedAt } }
    ... on Error { message }
  }
}
"""
SPEND = """
mutation($input: SpendCreditsInput!) {
  spendCredits(input: $input) {
    __typename
    ... on SpendCreditsSuccess { usageEvent { credits freeCredits paidCredits agentId } balance { total free paid } }
    ... on Error { message }
  }
}
"""
PORTAL_LINK = """
mutation($input: CreatePortalSessionInput!) {
  createPortalSession(input: $input) {
    __typename
    ... on CreatePortalSessionSuccess { url code accountId }
    ... on Error { message }
  }
}
"""
MY_PAGE = """
{ me { email externalId credit { id balance { total free paid held available }
       usage(first: 5) { edges { node { activity agentId credits } } } } } }
"""


async def _data(api: Api, query: str, variables: dict[str, Any], token: str) -> dict[str, Any]:
    data: dict[str, Any] = await api.data(query, variables, token)
    return data


async def test_from_nothing_to_an_agent_spending_and_its_user_seeing_the_page(api: Api) -> None:
    admin = await api.admin("platform")  # the one token made on the server's command line

    created = await _data(
        api,
        CREATE_USER,
        {"input": {"email": "ada@platform.example", "externalId": "plat-user-42", "metadata": {"tier": "pro"}}},
        admin,
    )
    user = created["createUser"]["user"]
    assert created["createUser"]["__typename"] == "CreateUserSuccess"
    assert user["email"] == "ada@platform.example"
    assert user["externalId"] == "plat-user-42"
    assert user["metadata"] == {"tier": "pro"}
    assert user["credit"]["balance"] == {"total": "100", "free": "100", "paid": "0"}  # the signup bonus

    minted = await _data(
        api,
        CREATE_TOKEN,
        {"input": {"kind": "SERVICE", "name": "agent-runtime", "scopes": ["usage:write"]}},
        admin,
    )
    service = minted["createApiToken"]["secret"]
    assert minted["createApiToken"]["apiToken"] == {
        "name": "agent-runtime",
        "kind": "SERVICE",
        "scopes": ["usage:write"],
        "prefix": service[:12],
        "lastUsedAt": None,
        "revokedAt": None,
    }

    spend = {
        "externalUserId": "plat-user-42",
        "agentId": "support-bot",
        "activity": "answer",
        "credits": "1.5",
        "idempotencyKey": "run-1-step-1",
    }
    spent = await _data(api, SPEND, {"input": spend}, service)
    assert spent["spendCredits"] == {
        "__typename": "SpendCreditsSuccess",
        "usageEvent": {"credits": "1.5", "freeCredits": "1.5", "paidCredits": "0", "agentId": "support-bot"},
        "balance": {"total": "98.5", "free": "98.5", "paid": "0"},
    }
    assert await _data(api, SPEND, {"input": spend}, service) == spent  # a replay moves nothing

    link = await _data(api, PORTAL_LINK, {"input": {"externalUserId": "plat-user-42"}}, admin)
    assert link["createPortalSession"]["__typename"] == "CreatePortalSessionSuccess"
    code = link["createPortalSession"]["code"]
    assert link["createPortalSession"]["url"].endswith(f"/my-credit/?code={code}")

    opened = await api.client.post("/portal/session", json={"code": code})
    assert opened.status_code == 200, opened.text
    session = opened.json()["token"]
    assert opened.json()["accountId"] == link["createPortalSession"]["accountId"]

    page = await _data(api, MY_PAGE, {}, session)
    account = await CreditAccount.get(user__external_id="plat-user-42")
    assert page == {
        "me": {
            "email": "ada@platform.example",
            "externalId": "plat-user-42",
            "credit": {
                "id": link["createPortalSession"]["accountId"],
                "balance": {"total": "98.5", "free": "98.5", "paid": "0", "held": "0", "available": "98.5"},
                "usage": {"edges": [{"node": {"activity": "answer", "agentId": "support-bot", "credits": "1.5"}}]},
            },
        }
    }
    assert account.balance == 98_500_000

    # The page's session is not an agent: it cannot spend, and a link's code opens one session only.
    before = await snapshot()
    refused = await _data(api, SPEND, {"input": {**spend, "idempotencyKey": "from-the-page"}}, session)
    assert refused["spendCredits"]["__typename"] == "Forbidden"
    again = await api.client.post("/portal/session", json={"code": code})
    assert again.status_code == 401
    assert changed(before, await snapshot()) == set()

    assert await User.filter(external_id="plat-user-42").count() == 1
    assert await UsageEvent.all().count() == 1
    assert await ApiToken.filter(kind=TokenKind.PORTAL).count() == 1
    assert await PortalCode.filter(used_at__not_isnull=True).count() == 1


async def test_an_organization_of_the_platform_shares_one_pool_spent_and_seen_by_its_ids(api: Api) -> None:
    admin = await api.admin("platform")
    for email, external in (("owner@acme.example", "plat-owner"), ("dev@acme.example", "plat-dev")):
        made = await _data(api, CREATE_USER, {"input": {"email": email, "externalId": external}}, admin)
        assert made["createUser"]["__typename"] == "CreateUserSuccess"
    org = await _data(
        api,
        """mutation { createOrganization(input: {name: "Acme", externalOwnerId: "plat-owner", externalId: "plat-org-7"})
             { __typename ... on CreateOrganizationSuccess { organization { name externalId } } } }""",
        {},
        admin,
    )
    assert org["createOrganization"] == {
        "__typename": "CreateOrganizationSuccess",
        "organization": {"name": "Acme", "externalId": "plat-org-7"},
    }
    steps = {
        "addMember": 'externalOrganizationId: "plat-org-7", externalUserId: "plat-dev", roles: [MEMBER]',
        "enableCreditPool": 'externalOrganizationId: "plat-org-7"',
        "grantCredits": 'externalOrganizationId: "plat-org-7", credits: "20", kind: PAID, idempotencyKey: "seed"',
    }
    for name, arguments in steps.items():
        done = await _data(api, f"mutation {{ {name}(input: {{{arguments}}}) {{ __typename }} }}", {}, admin)
        assert done[name]["__typename"].endswith("Success"), done
    service = (
        await _data(
            api, CREATE_TOKEN, {"input": {"kind": "SERVICE", "name": "runtime", "scopes": ["usage:write"]}}, admin
        )
    )["createApiToken"]["secret"]

    spend = {
        "externalUserId": "plat-dev",
        "externalOrganizationId": "plat-org-7",
        "agentId": "coder",
        "activity": "answer",
        "credits": "2",
        "idempotencyKey": "org-run-1",
    }
    spent = await _data(api, SPEND, {"input": spend}, service)
    assert spent["spendCredits"]["balance"] == {"total": "18", "free": "0", "paid": "18"}  # from the pool

    link = await _data(api, PORTAL_LINK, {"input": {"externalOrganizationId": "plat-org-7"}}, admin)
    code = link["createPortalSession"]["code"]
    session = (await api.client.post("/portal/session", json={"code": code})).json()["token"]
    pool = await _data(
        api,
        """query($id: ID!) { node(id: $id) { ... on CreditAccount { balance { total paid }
             usage(first: 5) { edges { node { agentId credits } } } } } }""",
        {"id": link["createPortalSession"]["accountId"]},
        session,
    )
    assert pool == {
        "node": {
            "balance": {"total": "18", "paid": "18"},
            "usage": {"edges": [{"node": {"agentId": "coder", "credits": "2"}}]},
        }
    }
    owner_account = await CreditAccount.get(user__external_id="plat-owner")
    dev_account = await CreditAccount.get(user__external_id="plat-dev")
    assert (owner_account.balance, dev_account.balance) == (100_000_000, 100_000_000)  # only the pool paid
