"""Who may do what (docs/rules.md, Who may see what), and the HTTP-level protections of /graphql, as a client
sees them."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from unittest.mock import ANY

import httpx
import pytest

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from models import ledger
from models.tables import ApiToken, Membership, Organization, TokenKind
from models.tokens import create_token, digest, revoke_token
from tests.support.helpers import Api, gid
from tests.support.mutation_documents import STATE, document


def alias_limit(found: int) -> dict[str, object]:
    return {"code": "TOO_MANY_ALIASES", "found": found, "limit": 15}


# ---------------------------------------------------------------------------------------------- documents


ME = "query Me { me { email credit { balance { total held available } } } }"
NODE_FIELDS = """
    __typename
    id
    ... on User { email }
    ... on CreditAccount { balance { total held } }
    ... on CreditLot { kind amount remaining }
    ... on LedgerEntry { type delta }
    ... on UsageEvent { credits agentId }
    ... on Hold { status amount }
    ... on Organization { name }
"""

# ------------------------------------------------------------------------------------------------- world

ADA = gid("User", 1)
BOB = gid("User", 2)
ADA_ACCOUNT = gid("CreditAccount", 1)
BOB_ACCOUNT = gid("CreditAccount", 2)
BOBS_ORG = gid("Organization", 1)
ADA_HOLD = gid("Hold", 2)

VALID: dict[str, dict[str, object]] = {
    "spendCredits": {"userId": ADA, "agentId": "agent-1", "activity": "answer", "credits": "1", "idempotencyKey": "k"},
    "grantCredits": {"accountId": ADA_ACCOUNT, "credits": "5", "kind": "FREE", "idempotencyKey": "k"},
    "holdCredits": {"userId": ADA, "agentId": "agent-1", "activity": "answer", "credits": "1", "idempotencyKey": "k"},
    "captureHold": {"holdId": ADA_HOLD, "idempotencyKey": "k"},
    "releaseHold": {"holdId": ADA_HOLD, "idempotencyKey": "k"},
    "extendHold": {"holdId": ADA_HOLD, "timeoutSeconds": 60, "idempotencyKey": "k"},
    "increaseHold": {"holdId": ADA_HOLD, "credits": "1", "idempotencyKey": "k"},
}
MUTATIONS = list(VALID)
USAGE_WRITE = "This needs a service token with the 'usage:write' scope, or an admin token"
ADMIN_ONLY = "This needs an admin token"
UNAUTHENTICATED = "Send a valid token as 'Authorization: Bearer <token>'"


@dataclass
class World:
    """Ada (User 1) and Bob (User 2), 10 free credits each at signup. Each spent 1 credit and holds 2 more;
    Bob belongs to Organization 1, Ada does not."""

    api: Api
    ada: str
    bob: str
    service: str
    admin: str

    async def post(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> Any:
        return await self.api.post(query, variables, token)

    async def run(self, mutation: str, token: str, input: dict[str, object] | None = None) -> Any:
        return await self.post(document(mutation), {"input": input or VALID[mutation]}, token)

    async def state(self) -> list[Any]:
        return [await self.api.data(STATE, token=token) for token in (self.ada, self.bob)]


@pytest.fixture
async def world(api: Api) -> World:
    ada_id, ada = await api.user("ada@example.com", bonus=10)
    bob_id, bob = await api.user("bob@example.com", bonus=10)
    assert (gid("User", ada_id), gid("User", bob_id)) == (ADA, BOB)
    org = await Organization.create(name="Bob's org", created_at=api.clock.now())
    await Membership.create(organization=org, user_id=bob_id, roles="OWNER", created_at=api.clock.now())
    assert gid("Organization", org.id) == BOBS_ORG
    w = World(api, ada, bob, await api.service(), await api.admin())
    for user, n in ((BOB, 1), (ADA, 2)):
        spend = {**VALID["spendCredits"], "userId": user, "idempotencyKey": f"setup-spend-{n}"}
        hold = {**VALID["holdCredits"], "userId": user, "credits": "2", "idempotencyKey": f"setup-hold-{n}"}
        assert (await w.run("spendCredits", w.service, spend))["data"]["spendCredits"]["usageEvent"]
        created = (await w.run("holdCredits", w.service, hold))["data"]["holdCredits"]
        assert created["hold"] == {"status": "ACTIVE", "amount": "2"}
    return w


@asynccontextmanager
async def other_app(settings: Settings, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a separate app built with ``settings``, on the test database."""
    app = create_app(settings, clock=clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


PRODUCTION = Settings(
    env="production",
    token_cache_seconds=0,
    database_url="unused",
    allow_sandbox_in_production=True,  # production refuses the sandbox gateway unless told
    secret_key="test-secret-key-0123456789abcdefghij",
)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------------ who is calling


async def revoked(api: Api, kind: TokenKind) -> str:
    user_id = 1 if kind is TokenKind.USER else None
    secret = await create_token(kind, name="revoked", user_id=user_id, now=api.clock.now())
    token = await ApiToken.get(token_hash=digest(secret))
    assert await revoke_token(token.id, api.clock.now())
    return secret


CREDENTIALS = ["missing", "garbage", "not-bearer", "revoked"]


async def authorization(world: World, credential: str, operation: str) -> dict[str, str]:
    """An Authorization header that authenticates no one; bar that, it would be allowed ``operation``."""
    kind = TokenKind.USER if operation == "me" else TokenKind.ADMIN
    if credential == "missing":
        return {}
    if credential == "garbage":
        return bearer("cla_not-a-token-anyone-was-given")
    if credential == "not-bearer":
        return {"authorization": f"Basic {world.ada if kind is TokenKind.USER else world.admin}"}
    return bearer(await revoked(world.api, kind))


@pytest.mark.parametrize("operation", ["me", *MUTATIONS])
@pytest.mark.parametrize("credential", CREDENTIALS)
async def test_a_caller_without_a_valid_token_is_unauthenticated(world: World, credential: str, operation: str) -> None:
    before = await world.state()
    headers = await authorization(world, credential, operation)
    if operation == "me":
        payload: dict[str, object] = {"query": ME}
    else:
        payload = {"query": document(operation), "variables": {"input": VALID[operation]}}

    response = await world.api.client.post("/graphql", json=payload, headers=headers)

    assert response.status_code == 200
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": UNAUTHENTICATED,
                "locations": ANY,
                "path": [operation],
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }
    assert await world.state() == before


async def test_a_token_stops_working_as_soon_as_it_is_revoked(world: World) -> None:
    secret = await create_token(TokenKind.USER, name="laptop", user_id=1, now=world.api.clock.now())
    assert await world.api.data(ME, token=secret) == {
        "me": {"email": "ada@example.com", "credit": {"balance": {"total": "9", "held": "2", "available": "7"}}}
    }
    token = await ApiToken.get(token_hash=digest(secret))

    assert await revoke_token(token.id, world.api.clock.now())

    assert await world.post(ME, token=secret) == {
        "data": None,
        "errors": [
            {
                "message": UNAUTHENTICATED,
                "locations": ANY,
                "path": ["me"],
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }
    # Other tokens of the same user are not affected.
    assert (await world.api.data(ME, token=world.ada))["me"]["email"] == "ada@example.com"


# ------------------------------------------------------------------------------------ what they may do


async def caller(world: World, who: str) -> str:
    if who == "user":
        return world.ada
    if who == "service-without-scopes":
        return await world.api.service("bare", scopes=())
    if who == "service-with-balance-read":
        return await world.api.service("reader", scopes=("balance:read",))
    assert who == "service"
    return world.service


FORBIDDEN_CASES = [
    *(pytest.param("user", m, ADMIN_ONLY if m == "grantCredits" else USAGE_WRITE, id=f"user-{m}") for m in MUTATIONS),
    *(
        pytest.param(who, m, USAGE_WRITE, id=f"{who}-{m}")
        for who in ("service-without-scopes", "service-with-balance-read")
        for m in ("spendCredits", "holdCredits", "captureHold", "releaseHold", "extendHold", "increaseHold")
    ),
    *(
        pytest.param(who, "grantCredits", ADMIN_ONLY, id=f"{who}-grantCredits")
        for who in ("service", "service-without-scopes")
    ),
]


@pytest.mark.parametrize(("who", "mutation", "message"), FORBIDDEN_CASES)
async def test_a_caller_without_the_right_gets_a_typed_forbidden_and_changes_nothing(
    world: World, who: str, mutation: str, message: str
) -> None:
    """Ada's own user token may not move her credit: only agent runtimes spend and only admins grant."""
    token = await caller(world, who)
    before = await world.state()

    body = await world.run(mutation, token)

    assert body == {"data": {mutation: {"__typename": "Forbidden", "message": message}}}
    assert await world.state() == before


async def test_an_admin_can_spend_for_a_user(world: World) -> None:
    body = await world.run("spendCredits", world.admin, {**VALID["spendCredits"], "credits": "2.5"})

    assert body == {
        "data": {
            "spendCredits": {
                "__typename": "SpendCreditsSuccess",
                "usageEvent": {"credits": "2.5", "activity": "answer", "agentId": "agent-1"},
                "balance": {"total": "6.5", "held": "2"},
            }
        }
    }
    assert (await world.api.data(ME, token=world.ada))["me"]["credit"]["balance"] == {
        "total": "6.5",
        "held": "2",
        "available": "4.5",
    }


async def test_an_admin_can_grant_credit(world: World) -> None:
    body = await world.run("grantCredits", world.admin, {**VALID["grantCredits"], "kind": "PAID"})

    assert body == {
        "data": {
            "grantCredits": {
                "__typename": "GrantCreditsSuccess",
                "lot": {"kind": "PAID", "amount": "5", "expiresAt": None},
                "balance": {"total": "14", "held": "2"},
            }
        }
    }
    assert (await world.api.data(ME, token=world.ada))["me"]["credit"]["balance"] == {
        "total": "14",
        "held": "2",
        "available": "12",
    }


@pytest.mark.parametrize("who", ["service", "admin"])
async def test_me_needs_a_user_token(world: World, who: str) -> None:
    token = world.service if who == "service" else world.admin

    body = await world.post(ME, token=token)

    assert body == {
        "data": None,
        "errors": [
            {
                "message": "`me` needs a user token; this token belongs to a service or an admin",
                "locations": ANY,
                "path": ["me"],
                "extensions": {"code": "FORBIDDEN"},
            }
        ],
    }


# ------------------------------------------------------------------------------------------ node lookups

ADA_NODES: dict[str, dict[str, Any]] = {
    "User": {"__typename": "User", "id": ADA, "email": "ada@example.com"},
    "CreditAccount": {"__typename": "CreditAccount", "id": ADA_ACCOUNT, "balance": {"total": "9", "held": "2"}},
    "CreditLot": {
        "__typename": "CreditLot",
        "id": gid("CreditLot", 1),
        "kind": "FREE",
        "amount": "10",
        "remaining": "9",
    },
    "LedgerEntry": {"__typename": "LedgerEntry", "id": gid("LedgerEntry", 5), "type": "SPEND", "delta": "-1"},
    "UsageEvent": {"__typename": "UsageEvent", "id": gid("UsageEvent", 2), "credits": "1", "agentId": "agent-1"},
    "Hold": {"__typename": "Hold", "id": gid("Hold", 2), "status": "ACTIVE", "amount": "2"},
}
BOB_NODES: dict[str, dict[str, Any]] = {
    "User": {"__typename": "User", "id": BOB, "email": "bob@example.com"},
    "CreditAccount": {"__typename": "CreditAccount", "id": BOB_ACCOUNT, "balance": {"total": "9", "held": "2"}},
    "CreditLot": {
        "__typename": "CreditLot",
        "id": gid("CreditLot", 2),
        "kind": "FREE",
        "amount": "10",
        "remaining": "9",
    },
    "LedgerEntry": {"__typename": "LedgerEntry", "id": gid("LedgerEntry", 3), "type": "SPEND", "delta": "-1"},
    "UsageEvent": {"__typename": "UsageEvent", "id": gid("UsageEvent", 1), "credits": "1", "agentId": "agent-1"},
    "Hold": {"__typename": "Hold", "id": gid("Hold", 1), "status": "ACTIVE", "amount": "2"},
    "Organization": {"__typename": "Organization", "id": BOBS_ORG, "name": "Bob's org"},
}


async def read_node(world: World, node_id: str, token: str) -> Any:
    """``node`` as a Relay client asks for it: the global ID as an ``ID!`` variable."""
    return await world.post(f"query Node($id: ID!) {{ node(id: $id) {{ {NODE_FIELDS} }} }}", {"id": node_id}, token)


@pytest.mark.parametrize("type_name", list(ADA_NODES))
async def test_a_user_reads_their_own_objects_through_node(world: World, type_name: str) -> None:
    node = ADA_NODES[type_name]

    assert await read_node(world, node["id"], world.ada) == {"data": {"node": node}}


async def test_a_member_reads_their_organization_through_node(world: World) -> None:
    node = BOB_NODES["Organization"]

    assert await read_node(world, node["id"], world.bob) == {"data": {"node": node}}


@pytest.mark.parametrize("type_name", list(BOB_NODES))
async def test_a_user_gets_null_for_another_users_objects(world: World, type_name: str) -> None:
    assert await read_node(world, BOB_NODES[type_name]["id"], world.ada) == {"data": {"node": None}}


@pytest.mark.parametrize("type_name", list(BOB_NODES))
async def test_an_admin_reads_any_node(world: World, type_name: str) -> None:
    node = BOB_NODES[type_name]

    assert await read_node(world, node["id"], world.admin) == {"data": {"node": node}}


@pytest.mark.parametrize("type_name", list(BOB_NODES))
async def test_a_service_without_balance_read_gets_null_for_any_node(world: World, type_name: str) -> None:
    assert await read_node(world, BOB_NODES[type_name]["id"], world.service) == {"data": {"node": None}}


@pytest.mark.parametrize(
    "node_id",
    [
        "not-an-id",
        gid("User", 999),
        gid("Hold", 999),
        gid("Nothing", 1),
        base64.b64encode(b"User").decode(),
        base64.b64encode("User:²".encode()).decode(),
        base64.b64encode("User:١".encode()).decode(),
    ],
    ids=["malformed", "unknown-user", "unknown-hold", "unknown-type", "no-number", "superscript-two", "arabic-one"],
)
async def test_a_node_that_does_not_exist_is_null(world: World, node_id: str) -> None:
    assert await read_node(world, node_id, world.admin) == {"data": {"node": None}}


# ---------------------------------------------------------------------------------------- HTTP transport


async def test_a_mutation_sent_over_get_is_refused(world: World) -> None:
    before = await world.state()

    response = await world.api.client.get(
        "/graphql",
        params={"query": document("spendCredits"), "variables": json.dumps({"input": VALID["spendCredits"]})},
        headers=bearer(world.admin),
    )

    assert (response.status_code, response.text) == (400, "mutations are not allowed when using GET")
    assert await world.state() == before


async def test_a_query_sent_over_get_is_answered(world: World) -> None:
    response = await world.api.client.get("/graphql", params={"query": ME}, headers=bearer(world.ada))

    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "me": {"email": "ada@example.com", "credit": {"balance": {"total": "9", "held": "2", "available": "7"}}}
        }
    }


@pytest.mark.parametrize("content_type", ["form", "text", "multipart"])
async def test_a_post_that_is_not_json_is_refused(world: World, content_type: str) -> None:
    """Browsers send these cross-site without a preflight: none of them may run a mutation."""
    before = await world.state()
    operation = {"query": document("spendCredits"), "variables": json.dumps({"input": VALID["spendCredits"]})}
    client = world.api.client
    headers = bearer(world.admin)

    if content_type == "form":
        response = await client.post("/graphql", data=operation, headers=headers)
        assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    elif content_type == "text":
        content = json.dumps({"query": operation["query"], "variables": {"input": VALID["spendCredits"]}})
        response = await client.post("/graphql", content=content, headers={**headers, "content-type": "text/plain"})
    else:
        files = {"operations": (None, json.dumps(operation)), "map": (None, "{}")}
        response = await client.post("/graphql", files=files, headers=headers)
        assert response.request.headers["content-type"].startswith("multipart/form-data")

    assert (response.status_code, response.text) == (400, "Unsupported content type")
    assert await world.state() == before


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "without-token"])
async def test_a_subscription_sent_over_http_is_refused_clearly(world: World, method: str, authenticated: bool) -> None:
    """GraphQL subscriptions are served over websockets only; over HTTP the client must be told so."""
    query = "subscription Watch { balanceChanged { version reason } }"
    headers = bearer(world.ada) if authenticated else {}

    if method == "POST":
        response = await world.api.client.post("/graphql", json={"query": query}, headers=headers)
    else:
        response = await world.api.client.get("/graphql", params={"query": query}, headers=headers)

    assert (response.status_code, response.text) == (
        400,
        "Subscriptions need a websocket: connect with the graphql-transport-ws protocol",
    )


async def test_a_batch_of_operations_is_refused(world: World) -> None:
    """Batching would let a client run many mutations in one request, past the alias limit."""
    before = await world.state()
    batch = [
        {
            "query": document("spendCredits"),
            "variables": {"input": {**VALID["spendCredits"], "idempotencyKey": f"b{n}"}},
        }
        for n in range(3)
    ]

    response = await world.api.client.post("/graphql", json=batch, headers=bearer(world.admin))

    assert (response.status_code, response.text) == (400, "Batching is not enabled")
    assert await world.state() == before


INTROSPECTION = "query Introspect { __schema { queryType { name } } }"


async def test_introspection_works_in_development(api: Api) -> None:
    assert await api.post(INTROSPECTION) == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_introspection_is_refused_in_production(world: World) -> None:
    async with other_app(PRODUCTION, world.api.clock) as client:
        refused = (await client.post("/graphql", json={"query": INTROSPECTION})).json()
        # The production app does answer ordinary queries.
        answered = (await client.post("/graphql", json={"query": ME}, headers=bearer(world.ada))).json()

    disabled = "GraphQL introspection has been disabled, but the requested query contained the field"
    assert refused == {
        "data": None,
        "errors": [
            {"message": f"{disabled} '__schema'.", "locations": ANY},
            {"message": f"{disabled} 'queryType'.", "locations": ANY},
        ],
    }
    assert answered == {
        "data": {
            "me": {"email": "ada@example.com", "credit": {"balance": {"total": "9", "held": "2", "available": "7"}}}
        }
    }


async def test_field_suggestions_are_given_in_development_only(world: World) -> None:
    typo = {"query": "query Typo { mee { email } }"}
    development = (await world.api.client.post("/graphql", json=typo, headers=bearer(world.ada))).json()
    async with other_app(PRODUCTION, world.api.clock) as client:
        production = (await client.post("/graphql", json=typo, headers=bearer(world.ada))).json()

    assert development == {
        "data": None,
        "errors": [{"message": "Cannot query field 'mee' on type 'Query'. Did you mean 'me'?", "locations": ANY}],
    }
    assert production == {
        "data": None,
        "errors": [{"message": "Cannot query field 'mee' on type 'Query'.", "locations": ANY}],
    }


async def test_graphiql_is_served_in_development(api: Api) -> None:
    response = await api.client.get("/graphql", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Strawberry GraphiQL</title>" in response.text


async def test_graphiql_is_not_served_in_production(api: Api) -> None:
    async with other_app(PRODUCTION, api.clock) as client:
        response = await client.get("/graphql", headers={"accept": "text/html"})

    assert (response.status_code, response.text) == (404, "Not Found")


async def test_a_query_deeper_than_the_limit_is_refused(world: World) -> None:
    settings = Settings(database_url="unused", token_cache_seconds=0, max_query_depth=4)
    deep = "query Deep { me { credit { ledger(first: 1) { edges { node { type } } } } } }"
    at_limit = "query AtLimit { me { credit { ledger(first: 1) { edges { cursor } } } } }"
    async with other_app(settings, world.api.clock) as client:
        refused = (await client.post("/graphql", json={"query": deep}, headers=bearer(world.ada))).json()
        answered = (await client.post("/graphql", json={"query": at_limit}, headers=bearer(world.ada))).json()

    assert refused == {
        "data": None,
        "errors": [{"message": "'Deep' exceeds maximum operation depth of 4", "locations": ANY}],
    }
    assert answered == {"data": {"me": {"credit": {"ledger": {"edges": [{"cursor": ANY}]}}}}}


def aliased_spends(count: int) -> str:
    spends = (
        f'  s{n}: spendCredits(input: {{userId: "{ADA}", agentId: "agent-1", activity: "answer", credits: "0.1",'
        f' idempotencyKey: "alias-{n}"}}) {{ __typename }}'
        for n in range(count)
    )
    return "mutation Many {\n" + "\n".join(spends) + "\n}"


async def test_more_aliases_than_the_limit_are_refused_before_anything_runs(world: World) -> None:
    before = await world.state()

    body = await world.post(aliased_spends(16), token=world.admin)

    assert body == {
        "data": None,
        "errors": [{"message": "16 aliases found. Allowed: 15", "extensions": alias_limit(16)}],
    }
    assert await world.state() == before


async def test_as_many_aliases_as_the_limit_are_answered(world: World) -> None:
    body = await world.post(aliased_spends(15), token=world.admin)

    assert body == {"data": {f"s{n}": {"__typename": "SpendCreditsSuccess"} for n in range(15)}}
    assert (await world.api.data(ME, token=world.ada))["me"]["credit"]["balance"]["total"] == "7.5"


# ------------------------------------------------------------------------------------------------ errors


async def test_an_unexpected_failure_in_a_mutation_is_masked(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object, **kwargs: object) -> ledger.SpendResult:
        raise RuntimeError("connection to db-primary.internal:5432 lost, password=hunter2")

    monkeypatch.setattr(ledger, "spend", broken)
    before = await world.state()

    response = await world.api.client.post(
        "/graphql",
        json={"query": document("spendCredits"), "variables": {"input": VALID["spendCredits"]}},
        headers=bearer(world.service),
    )

    assert response.status_code == 200
    assert response.json() == {
        "data": None,
        "errors": [{"message": "Unexpected error.", "locations": ANY, "path": ["spendCredits"]}],
    }
    assert "hunter2" not in response.text
    assert "db-primary" not in response.text
    assert await world.state() == before


async def test_an_unexpected_failure_in_a_query_is_masked(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object, **kwargs: object) -> dict[int, object]:
        raise RuntimeError("relation credit_lots is corrupt")

    monkeypatch.setattr("resolvers.loaders.read_balances", broken)

    body = await world.post(ME, token=world.ada)

    assert body == {
        "data": None,
        "errors": [{"message": "Unexpected error.", "locations": ANY, "path": ["me", "credit", "balance"]}],
    }


async def test_a_client_error_in_a_query_is_shown_as_is(world: World) -> None:
    body = await world.post("query Page { me { credit { ledger(first: 101) { edges { cursor } } } } }", token=world.ada)

    assert body == {
        "data": None,
        "errors": [
            {
                "message": "first must be between 1 and 100, got 101",
                "locations": ANY,
                "path": ["me", "credit", "ledger"],
                "extensions": {"code": "BAD_PAGINATION"},
            }
        ],
    }


async def test_a_token_with_an_unknown_scope_is_not_made(api: Api) -> None:
    """Issue 9, point 9: a scope that grants nothing is a typo the operator must hear about."""
    with pytest.raises(ValueError, match="unknown scope 'balance:write': the valid scopes are"):
        await create_token(TokenKind.SERVICE, name="typo", scopes=("balance:write",), now=api.clock.now())

    assert await ApiToken.all().count() == 0
