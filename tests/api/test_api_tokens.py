"""Token management by API (README, Tokens): createApiToken, apiTokens, User.apiTokens, node(ApiToken),
revokeApiToken; expiry and idle timeouts as a client sees them; and who may do what, as a table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import ANY

import pytest

from creditline.settings import Settings
from models import organizations
from models.tables import ApiToken, CreditAccount, MemberRole, TokenKind, User
from models.tokens import create_token, digest
from tests.support.helpers import Api, gid
from tests.support.snapshots import changed, snapshot

CREATE = """
mutation Create($input: CreateApiTokenInput!) {
  createApiToken(input: $input) {
    __typename
    ... on CreateApiTokenSuccess { secret apiToken { ...Token } }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
fragment Token on ApiToken {
  id name kind scopes prefix createdAt lastUsedAt expiresAt idleTimeoutSeconds revokedAt status user { email }
}
"""
REVOKE = """
mutation Revoke($id: ID!) {
  revokeApiToken(input: {tokenId: $id}) {
    __typename
    ... on RevokeApiTokenSuccess { apiToken { id name status revokedAt } }
    ... on Error { message }
  }
}
"""
LIST = """
query List($first: Int, $after: String, $filter: ApiTokenFilter) {
  apiTokens(first: $first, after: $after, filter: $filter) {
    edges { node { id name kind status } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
MINE = "{ me { apiTokens { edges { node { name kind status } } } } }"
ME = "{ me { email } }"
UNAUTHENTICATED = {
    "message": "Send a valid token as 'Authorization: Bearer <token>'",
    "locations": ANY,
    "path": ["me"],
    "extensions": {"code": "UNAUTHENTICATED"},
}
OWN_ONLY = "Other tokens need an admin token: a user token makes only USER tokens, without scopes, for its own user"
MANAGERS_ONLY = "Managing tokens needs an admin token, or a user token for its own tokens"
VALID_SCOPES = "balance:read, billing:read, limits:write, portal:write, usage:write"
CREATED = "2026-01-15T12:00:00+00:00"


@dataclass
class World:
    api: Api
    ada_id: int
    ada: str
    bob_id: int
    bob: str
    service: str
    admin: str

    async def create(self, token: str | None, **input: Any) -> Any:
        body = await self.api.post(CREATE, {"input": {"name": "laptop", "kind": "USER", **input}}, token)
        assert "errors" not in body, body
        return body["data"]["createApiToken"]

    async def revoke(self, token: str | None, token_id: str) -> Any:
        return (await self.api.data(REVOKE, {"id": token_id}, token))["revokeApiToken"]


@pytest.fixture
async def world(api: Api) -> World:
    ada_id, ada = await api.user("ada@example.com")
    bob_id, bob = await api.user("bob@example.com")
    await User.filter(id=ada_id).update(external_id="platform-ada")
    return World(api, ada_id, ada, bob_id, bob, await api.service(), await api.admin())


def token_id(secret: str) -> Any:
    return ApiToken.get(token_hash=digest(secret))


async def tokens() -> list[tuple[Any, ...]]:
    return [(t.id, t.kind, t.name, t.user_id, t.scopes, t.revoked_at) for t in await ApiToken.all().order_by("id")]


# ---------------------------------------------------------------------------------------------- create


async def test_an_admin_creates_each_kind_and_the_secret_is_shown_once_and_works(world: World) -> None:
    ada = gid("User", world.ada_id)
    expires = "2026-02-15T12:00:00+00:00"
    cases: list[tuple[dict[str, Any], str, list[str] | None]] = [
        ({"kind": "USER", "userId": ada, "expiresAt": expires}, "clu_", []),
        ({"kind": "USER", "externalUserId": "platform-ada", "idleTimeoutSeconds": 3600}, "clu_", []),
        ({"kind": "SERVICE", "scopes": ["usage:write", "balance:read", "usage:write"]}, "cls_", None),
        ({"kind": "ADMIN"}, "cla_", []),
    ]
    for n, (input, prefix, scopes) in enumerate(cases):
        made = await world.create(world.admin, **{**input, "name": f"token {n}"})
        secret = made["secret"]
        row = await token_id(secret)
        assert (secret[:4], len(secret)) == (prefix, 47)
        assert made == {
            "__typename": "CreateApiTokenSuccess",
            "secret": secret,
            "apiToken": {
                "id": gid("ApiToken", row.id),
                "name": f"token {n}",
                "kind": input["kind"],
                "scopes": ["balance:read", "usage:write"] if scopes is None else scopes,
                "prefix": secret[:12],
                "createdAt": CREATED,
                "lastUsedAt": None,
                "expiresAt": input.get("expiresAt"),
                "idleTimeoutSeconds": input.get("idleTimeoutSeconds"),
                "revokedAt": None,
                "status": "ACTIVE",
                "user": {"email": "ada@example.com"} if input["kind"] == "USER" else None,
            },
        }
        assert row.token_hash == digest(secret)
        assert secret not in str(await ApiToken.all().values())
        if input["kind"] == "USER":
            assert (row.user_id, await world.api.data(ME, token=secret)) == (
                world.ada_id,
                {"me": {"email": "ada@example.com"}},
            )


async def test_a_new_token_authenticates_as_its_kind(world: World) -> None:
    user = (await world.create(world.ada))["secret"]
    admin = (await world.create(world.admin, kind="ADMIN", name="ops 2"))["secret"]
    assert await world.api.data(ME, token=user) == {"me": {"email": "ada@example.com"}}
    listed = await world.api.data(LIST, {"first": 1}, admin)
    assert listed["apiTokens"]["edges"] == [
        {
            "node": {
                "id": gid("ApiToken", (await token_id(admin)).id),
                "name": "ops 2",
                "kind": "ADMIN",
                "status": "ACTIVE",
            }
        }
    ]


async def test_a_user_creates_tokens_for_themselves_by_default_by_id_or_by_external_id(world: World) -> None:
    for n, who in enumerate(({}, {"userId": gid("User", world.ada_id)}, {"externalUserId": "platform-ada"})):
        made = await world.create(world.ada, name=f"laptop {n}", **who)
        assert made["__typename"] == "CreateApiTokenSuccess", made
        assert made["apiToken"]["user"] == {"email": "ada@example.com"}
        assert await world.api.data(ME, token=made["secret"]) == {"me": {"email": "ada@example.com"}}
    assert await world.api.data(MINE, token=world.ada) == {
        "me": {
            "apiTokens": {
                "edges": [
                    {"node": {"name": name, "kind": "USER", "status": "ACTIVE"}}
                    for name in ("laptop 2", "laptop 1", "laptop 0", "ada@example.com")
                ]
            }
        }
    }


@pytest.mark.parametrize(
    "input",
    [
        {"userId": "bob"},  # another user: Bob's id
        {"userId": "nobody"},  # a user that does not exist: the same answer, no oracle
        {"externalUserId": "platform-bob"},
        {"externalUserId": "platform-nobody"},
        {"kind": "SERVICE", "scopes": ["usage:write"]},
        {"kind": "ADMIN"},
        {"kind": "PORTAL"},
        {"scopes": ["balance:read"]},
    ],
)
async def test_a_user_asking_for_anything_but_their_own_user_token_is_forbidden(
    world: World, input: dict[str, Any]
) -> None:
    await User.filter(id=world.bob_id).update(external_id="platform-bob")
    ids = {"bob": gid("User", world.bob_id), "nobody": gid("User", 999)}
    if "userId" in input:
        input = {"userId": ids[input["userId"]]}
    before = await snapshot()
    assert await world.create(world.ada, **input) == {"__typename": "Forbidden", "message": OWN_ONLY}
    assert changed(before, await snapshot()) == set()


@pytest.mark.parametrize("kind", ["SERVICE", "PORTAL"])
async def test_service_and_portal_tokens_cannot_create_or_revoke_tokens(world: World, kind: str) -> None:
    account = (await CreditAccount.get(user_id=world.ada_id)).id
    caller = (
        world.service
        if kind == "SERVICE"
        else await create_token(TokenKind.PORTAL, name="portal", account_id=account, now=world.api.clock.now())
    )
    target = gid("ApiToken", (await token_id(world.ada)).id)
    before = await snapshot()
    assert await world.create(caller) == {"__typename": "Forbidden", "message": MANAGERS_ONLY}
    assert await world.create(caller, kind="SERVICE", scopes=["usage:write"]) == {
        "__typename": "Forbidden",
        "message": MANAGERS_ONLY,
    }
    assert await world.revoke(caller, target) == {"__typename": "Forbidden", "message": MANAGERS_ONLY}
    assert changed(before, await snapshot()) == set()


BAD_INPUTS = [
    ({"kind": "PORTAL"}, "kind", "Portal sessions are opened with createPortalSession"),
    ({"name": ""}, "name", "name must be 1 to 200 characters"),
    ({"name": "   "}, "name", "name must be 1 to 200 characters"),
    ({"name": "x" * 201}, "name", "name must be 1 to 200 characters"),
    ({"name": "bad\u0000name"}, "name", "name must not contain control characters"),
    *[
        (
            {"name": f"laptop{char}pot", "userId": "ada"},
            "name",
            f"name must contain only printable characters: U+{ord(char):04X} is an invisible or bidirectional"
            " formatting character",
        )
        for char in "\u202e\u202a\u2066\u2069\u200b\u200d\u200f\ufeff"
    ],
    (
        {"kind": "SERVICE", "scopes": ["usage:wirte"]},
        "scopes",
        f"unknown scope 'usage:wirte': the valid scopes are {VALID_SCOPES}",
    ),
    (
        {"kind": "SERVICE", "scopes": ["usage:write", "billing", "admin"]},
        "scopes",
        f"unknown scope 'admin', 'billing': the valid scopes are {VALID_SCOPES}",
    ),
    ({"kind": "SERVICE", "scopes": ["x" * 10_000]}, "scopes", f"scopes are at most a few of: {VALID_SCOPES}"),
    ({"kind": "SERVICE"}, "scopes", f"A SERVICE token needs at least one scope: {VALID_SCOPES}"),
    ({"kind": "ADMIN", "scopes": ["usage:write"]}, "scopes", "ADMIN tokens take no scopes: only SERVICE tokens do"),
    ({"scopes": ["usage:write"], "userId": "ada"}, "scopes", "USER tokens take no scopes: only SERVICE tokens do"),
    ({"expiresAt": CREATED, "userId": "ada"}, "expiresAt", "expiresAt must be in the future"),
    ({"expiresAt": "2025-01-01T00:00:00Z", "userId": "ada"}, "expiresAt", "expiresAt must be in the future"),
    (
        {"idleTimeoutSeconds": 59, "userId": "ada"},
        "idleTimeoutSeconds",
        "idleTimeoutSeconds must be between 60 and 31622400",
    ),
    (
        {"idleTimeoutSeconds": 31622401, "userId": "ada"},
        "idleTimeoutSeconds",
        "idleTimeoutSeconds must be between 60 and 31622400",
    ),
    ({"kind": "ADMIN", "userId": "ada"}, "userId", "Only USER tokens belong to a user"),
    (
        {"kind": "SERVICE", "scopes": ["usage:write"], "externalUserId": "platform-ada"},
        "userId",
        "Only USER tokens belong to a user",
    ),
    ({}, "userId", "A USER token needs userId or externalUserId"),
    (
        {"userId": "ada", "externalUserId": "platform-ada"},
        "userId",
        "Give exactly one of userId or externalUserId",
    ),
    ({"externalUserId": ""}, "externalUserId", "externalUserId must be 1 to 255 characters"),
]


@pytest.mark.parametrize(("input", "field", "message"), BAD_INPUTS)
async def test_every_bad_input_is_a_typed_validation_error_and_changes_nothing(
    world: World, input: dict[str, Any], field: str, message: str
) -> None:
    if input.get("userId") == "ada":
        input = {**input, "userId": gid("User", world.ada_id)}
    before = await snapshot()
    assert await world.create(world.admin, **input) == {
        "__typename": "ValidationError",
        "message": message,
        "field": field,
    }
    assert changed(before, await snapshot()) == set()


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"userId": gid("User", 999)}, "User not found"),
        ({"userId": "not-an-id"}, "User not found"),
        ({"userId": gid("Organization", 1)}, "User not found"),
        ({"externalUserId": "platform-nobody"}, "No user has externalId 'platform-nobody'"),
    ],
)
async def test_an_unknown_user_is_not_found_and_changes_nothing(
    world: World, input: dict[str, Any], message: str
) -> None:
    before = await snapshot()
    assert await world.create(world.admin, **input) == {"__typename": "NotFound", "message": message}
    assert changed(before, await snapshot()) == set()


async def test_a_user_token_with_both_forms_or_a_bad_external_id_is_a_validation_error(world: World) -> None:
    before = await snapshot()
    both = await world.create(world.ada, userId=gid("User", world.ada_id), externalUserId="platform-ada")
    assert both == {
        "__typename": "ValidationError",
        "message": "Give exactly one of userId or externalUserId",
        "field": "userId",
    }
    assert await world.create(world.ada, externalUserId="a\u0000b") == {
        "__typename": "ValidationError",
        "message": "externalUserId must not contain control characters",
        "field": "externalUserId",
    }
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------------ list


async def test_admins_page_through_every_token_with_filters_and_no_secret_is_ever_shown(world: World) -> None:
    bob_laptop = (await world.create(world.admin, userId=gid("User", world.bob_id), name="bob laptop"))["secret"]
    await world.revoke(world.admin, gid("ApiToken", (await token_id(bob_laptop)).id))
    rows = await ApiToken.all().order_by("-id")
    names = [(t.name, str(t.kind)) for t in rows]
    assert names == [
        ("bob laptop", "USER"),
        ("ops", "ADMIN"),
        ("agent-runtime", "SERVICE"),
        ("bob@example.com", "USER"),
        ("ada@example.com", "USER"),
    ]
    seen: list[str] = []
    after = None
    while True:
        body = await world.api.post(LIST, {"first": 2, "after": after}, world.admin)
        page = body["data"]["apiTokens"]
        seen += [edge["node"]["name"] for edge in page["edges"]]
        for secret in (world.ada, world.bob, world.service, world.admin, bob_laptop):
            assert secret[:20] not in str(body)
            assert digest(secret) not in str(body)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [name for name, _ in names]

    async def names_for(filter: dict[str, Any]) -> list[tuple[str, str]]:
        edges = (await world.api.data(LIST, {"filter": filter}, world.admin))["apiTokens"]["edges"]
        return [(edge["node"]["name"], edge["node"]["status"]) for edge in edges]

    assert await names_for({"kind": "USER"}) == [
        ("bob laptop", "REVOKED"),
        ("bob@example.com", "ACTIVE"),
        ("ada@example.com", "ACTIVE"),
    ]
    assert await names_for({"userId": gid("User", world.bob_id)}) == [
        ("bob laptop", "REVOKED"),
        ("bob@example.com", "ACTIVE"),
    ]
    assert await names_for({"userId": gid("User", world.bob_id), "revoked": False}) == [("bob@example.com", "ACTIVE")]
    assert await names_for({"revoked": True}) == [("bob laptop", "REVOKED")]
    assert await names_for({"kind": "PORTAL"}) == []
    bad = await world.api.post(LIST, {"filter": {"userId": "nope"}}, world.admin)
    assert (bad["data"], bad["errors"][0]["message"], bad["errors"][0]["extensions"]) == (
        None,
        "userId is not a user ID",
        {"code": "BAD_FILTER"},
    )


async def test_the_api_token_type_has_no_field_for_a_secret(world: World) -> None:
    fields = await world.api.data('{ __type(name: "ApiToken") { fields { name } } }', token=world.admin)
    assert sorted(field["name"] for field in fields["__type"]["fields"]) == [
        "accountId",
        "activities",
        "agentId",
        "createdAt",
        "expiresAt",
        "id",
        "idleTimeoutSeconds",
        "kind",
        "lastUsedAt",
        "name",
        "prefix",
        "revokedAt",
        "scopes",
        "spendLimits",
        "status",
        "user",
    ]


async def test_a_user_lists_only_their_own_tokens_and_may_filter_revoked_ones(world: World) -> None:
    old = (await world.create(world.ada, name="old laptop"))["secret"]
    await world.revoke(world.ada, gid("ApiToken", (await token_id(old)).id))
    query = "query($r: Boolean) { me { apiTokens(revoked: $r) { edges { node { name status } } } } }"
    assert (await world.api.data(query, {"r": True}, world.ada))["me"]["apiTokens"]["edges"] == [
        {"node": {"name": "old laptop", "status": "REVOKED"}}
    ]
    assert (await world.api.data(query, {"r": False}, world.ada))["me"]["apiTokens"]["edges"] == [
        {"node": {"name": "ada@example.com", "status": "ACTIVE"}}
    ]
    assert (await world.api.data(query, {}, world.bob))["me"]["apiTokens"]["edges"] == [
        {"node": {"name": "bob@example.com", "status": "ACTIVE"}}
    ]


# ---------------------------------------------------------------------------------------------- revoke


async def test_revoking_the_token_you_use_works_and_the_next_request_is_unauthenticated(world: World) -> None:
    row = await token_id(world.ada)
    world.api.clock.advance(timedelta(minutes=5))
    assert await world.revoke(world.ada, gid("ApiToken", row.id)) == {
        "__typename": "RevokeApiTokenSuccess",
        "apiToken": {
            "id": gid("ApiToken", row.id),
            "name": "ada@example.com",
            "status": "REVOKED",
            "revokedAt": "2026-01-15T12:05:00+00:00",
        },
    }
    assert await world.api.post(ME, token=world.ada) == {"data": None, "errors": [UNAUTHENTICATED]}
    assert await world.api.data(ME, token=world.bob) == {"me": {"email": "bob@example.com"}}


async def test_a_revoked_token_stops_everywhere_within_the_cache_window(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = [1000.0]
    monkeypatch.setattr("resolvers.auth.time", SimpleNamespace(monotonic=lambda: seconds[0]))
    world.api.app.state.auth.cache_seconds = 5
    assert await world.api.data(ME, token=world.ada) == {"me": {"email": "ada@example.com"}}  # now cached
    assert (await world.revoke(world.admin, gid("ApiToken", (await token_id(world.ada)).id)))["apiToken"][
        "status"
    ] == "REVOKED"
    seconds[0] += 4.9
    assert await world.api.data(ME, token=world.ada) == {"me": {"email": "ada@example.com"}}
    seconds[0] += 0.1
    assert await world.api.post(ME, token=world.ada) == {"data": None, "errors": [UNAUTHENTICATED]}


async def test_revoking_twice_succeeds_and_keeps_the_first_revocation(world: World) -> None:
    laptop = (await world.create(world.ada))["secret"]
    target = gid("ApiToken", (await token_id(laptop)).id)
    first = await world.revoke(world.ada, target)
    world.api.clock.advance(timedelta(hours=1))
    before = await snapshot()
    assert await world.revoke(world.ada, target) == first
    assert await world.revoke(world.admin, target) == first
    assert first["apiToken"]["revokedAt"] == CREATED
    assert changed(before, await snapshot()) == set()


async def test_an_admin_revokes_any_token_and_a_user_only_their_own(world: World) -> None:
    bobs = gid("ApiToken", (await token_id(world.bob)).id)
    before = await snapshot()
    for target in (bobs, gid("ApiToken", 999), "garbage", gid("User", world.bob_id)):
        assert await world.revoke(world.ada, target) == {"__typename": "NotFound", "message": "Token not found"}
    # The service's and the admin's tokens are no user's: a user cannot revoke them either.
    for secret in (world.service, world.admin):
        target = gid("ApiToken", (await token_id(secret)).id)
        assert await world.revoke(world.ada, target) == {"__typename": "NotFound", "message": "Token not found"}
    assert changed(before, await snapshot()) == set()
    assert (await world.revoke(world.admin, bobs))["apiToken"]["status"] == "REVOKED"
    assert await world.api.post(ME, token=world.bob) == {"data": None, "errors": [UNAUTHENTICATED]}


async def test_node_shows_a_token_to_its_user_and_admins_only(world: World) -> None:
    target = gid("ApiToken", (await token_id(world.ada)).id)
    query = "query($id: ID!) { node(id: $id) { __typename ... on ApiToken { name user { email } } } }"
    shown = {"node": {"__typename": "ApiToken", "name": "ada@example.com", "user": {"email": "ada@example.com"}}}
    assert await world.api.data(query, {"id": target}, world.ada) == shown
    assert await world.api.data(query, {"id": target}, world.admin) == shown
    for caller in (world.bob, world.service):
        assert await world.api.data(query, {"id": target}, caller) == {"node": None}


# ---------------------------------------------------------------------------------------------- expiry


async def test_a_token_past_its_expiry_is_unauthenticated_even_from_the_cache(world: World, settings: Settings) -> None:
    made = await world.create(world.admin, userId=gid("User", world.ada_id), expiresAt="2026-01-15T13:00:00Z")
    secret = made["secret"]
    auth = world.api.app.state.auth
    auth.cache_seconds = 3600  # the lookup below is cached for the rest of the test
    assert await world.api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    world.api.clock.advance(timedelta(minutes=59, seconds=59))
    assert await world.api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    principal = await auth.authenticate(f"Bearer {secret}")
    assert principal is not None
    assert principal.expires_at is not None
    assert principal.expires_at.isoformat() == "2026-01-15T13:00:00+00:00"
    world.api.clock.advance(timedelta(seconds=1))
    assert await world.api.post(ME, token=secret) == {"data": None, "errors": [UNAUTHENTICATED]}
    listed = await world.api.data(LIST, {"filter": {"userId": gid("User", world.ada_id)}}, world.admin)
    assert listed["apiTokens"]["edges"][0]["node"]["status"] == "EXPIRED"


async def test_an_idle_timeout_slides_with_each_use_and_ends_an_idle_token(world: World) -> None:
    made = await world.create(world.admin, userId=gid("User", world.ada_id), idleTimeoutSeconds=600)
    secret = made["secret"]
    auth = world.api.app.state.auth
    clock = world.api.clock
    for _ in range(3):  # used every 9 minutes: 27 minutes in all, more than its 10-minute idle timeout
        clock.advance(timedelta(minutes=9))
        assert await world.api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    principal = await auth.authenticate(f"Bearer {secret}")
    assert principal is not None
    assert principal.expires_at == clock.now() + timedelta(minutes=10)
    clock.advance(timedelta(minutes=10))
    assert await world.api.post(ME, token=secret) == {"data": None, "errors": [UNAUTHENTICATED]}


async def test_an_idle_timeout_counts_from_creation_and_the_fixed_expiry_bounds_it(world: World) -> None:
    never_used = (await world.create(world.admin, userId=gid("User", world.ada_id), idleTimeoutSeconds=600))["secret"]
    bounded = (
        await world.create(
            world.admin,
            userId=gid("User", world.ada_id),
            name="bounded",
            idleTimeoutSeconds=3600,
            expiresAt="2026-01-15T12:30:00Z",
        )
    )["secret"]
    auth = world.api.app.state.auth
    principal = await auth.authenticate(f"Bearer {bounded}")
    assert principal is not None
    assert principal.expires_at is not None
    assert principal.expires_at.isoformat() == "2026-01-15T12:30:00+00:00"
    world.api.clock.advance(timedelta(minutes=10))
    assert await world.api.post(ME, token=never_used) == {"data": None, "errors": [UNAUTHENTICATED]}
    world.api.clock.advance(timedelta(minutes=20))
    assert await world.api.post(ME, token=bounded) == {"data": None, "errors": [UNAUTHENTICATED]}


async def test_a_token_made_by_an_expiring_user_token_expires_with_it_at_the_latest(world: World) -> None:
    caller = (await world.create(world.admin, userId=gid("User", world.ada_id), expiresAt="2026-01-15T13:00:00Z"))[
        "secret"
    ]
    before = await snapshot()
    assert await world.create(caller, name="later", expiresAt="2026-01-15T13:00:01Z") == {
        "__typename": "ValidationError",
        "message": "A token cannot outlive the token that makes it: expiresAt must be at or before"
        " 2026-01-15T13:00:00Z",
        "field": "expiresAt",
    }
    assert changed(before, await snapshot()) == set()
    unbounded = await world.create(caller, name="no expiry given")
    sooner = await world.create(caller, name="sooner", expiresAt="2026-01-15T12:30:00Z")
    same = await world.create(caller, name="same", expiresAt="2026-01-15T13:00:00Z")
    made = [unbounded, sooner, same]
    assert [(m["apiToken"]["name"], m["apiToken"]["expiresAt"]) for m in made] == [
        ("no expiry given", "2026-01-15T13:00:00+00:00"),
        ("sooner", "2026-01-15T12:30:00+00:00"),
        ("same", "2026-01-15T13:00:00+00:00"),
    ]
    world.api.clock.advance(timedelta(hours=1))
    for m in made:
        assert await world.api.post(ME, token=m["secret"]) == {"data": None, "errors": [UNAUTHENTICATED]}


async def test_an_idle_timeout_user_token_makes_tokens_bounded_by_its_current_expiry(world: World) -> None:
    caller = (await world.create(world.admin, userId=gid("User", world.ada_id), idleTimeoutSeconds=600))["secret"]
    made = await world.create(caller, name="child")
    assert made["apiToken"]["expiresAt"] == "2026-01-15T12:10:00+00:00"


async def test_an_admin_and_a_user_token_without_expiry_make_tokens_without_expiry(world: World) -> None:
    for caller in (world.admin, world.ada):
        made = await world.create(caller, userId=gid("User", world.ada_id), name="forever")
        assert made["apiToken"]["expiresAt"] is None
    admin_expiring = (await world.create(world.admin, kind="ADMIN", name="brief", expiresAt="2026-01-15T13:00:00Z"))[
        "secret"
    ]
    made = await world.create(admin_expiring, userId=gid("User", world.ada_id), name="beyond")
    assert made["apiToken"]["expiresAt"] is None


# ------------------------------------------------------------------------------------------ who may

PRINCIPALS = ("owner", "billing", "member", "outsider", "service", "balance-reader", "admin", "anonymous")
OK, NULL, FORBIDDEN, DENIED, MISSING, UNAUTH = "OK", "NULL", "FORBIDDEN", "DENIED", "MISSING", "UNAUTH"


@dataclass
class Cast:
    """Acme's OWNER, BILLING and MEMBER, an outsider, two services, an admin; the member has a spare token."""

    api: Api
    tokens: dict[str, str | None]
    member: int
    spare: str


async def cast(api: Api) -> Cast:
    tokens: dict[str, str | None] = {}
    users: dict[str, int] = {}
    for who in ("owner", "billing", "member", "outsider"):
        users[who], tokens[who] = await api.user(f"{who}@example.com", bonus=0)
    acme = await organizations.create("Acme", users["owner"], api.clock.now())
    await organizations.add_member(acme.id, users["billing"], [MemberRole.BILLING], api.clock.now())
    await organizations.add_member(acme.id, users["member"], [MemberRole.MEMBER], api.clock.now())
    tokens["service"] = await api.service()
    tokens["balance-reader"] = await api.service("reader", scopes=("balance:read",))
    tokens["admin"] = await api.admin()
    tokens["anonymous"] = None
    spare = await create_token(TokenKind.USER, name="spare", user_id=users["member"], now=api.clock.now())
    return Cast(api, tokens, users["member"], gid("ApiToken", (await token_id(spare)).id))


OPERATIONS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "createApiToken(member's USER)": (
        CREATE,
        lambda c: {"input": {"kind": "USER", "name": "new", "userId": gid("User", c.member)}},
        ("createApiToken",),
    ),
    "createApiToken(SERVICE)": (
        CREATE,
        lambda c: {"input": {"kind": "SERVICE", "name": "new", "scopes": ["balance:read"]}},
        ("createApiToken",),
    ),
    "apiTokens": (LIST, lambda c: {}, ("apiTokens",)),
    "User.apiTokens(member's)": (
        "query($id: ID!) { node(id: $id) { ... on User { apiTokens { edges { node { name } } } } } }",
        lambda c: {"id": gid("User", c.member)},
        ("node", "apiTokens"),
    ),
    "node(member's ApiToken)": (
        "query($id: ID!) { node(id: $id) { ... on ApiToken { name } } }",
        lambda c: {"id": c.spare},
        ("node",),
    ),
    "revokeApiToken(member's)": (REVOKE, lambda c: {"id": c.spare}, ("revokeApiToken",)),
}
MUTATIONS = {"createApiToken(member's USER)", "createApiToken(SERVICE)", "revokeApiToken(member's)"}

#                                     owner    billing  member   outsider service  reader   admin  anonymous
MATRIX: dict[str, tuple[str, ...]] = {
    "createApiToken(member's USER)": (DENIED,  DENIED,  OK,      DENIED,  DENIED,  DENIED,  OK,    UNAUTH),
    "createApiToken(SERVICE)":       (DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  OK,    UNAUTH),
    "apiTokens":                     (FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, OK, UNAUTH),
    "User.apiTokens(member's)":      (NULL,    NULL,    OK,      NULL,    NULL,    NULL,    OK,    UNAUTH),
    "node(member's ApiToken)":       (NULL,    NULL,    OK,      NULL,    NULL,    NULL,    OK,    UNAUTH),
    "revokeApiToken(member's)":      (MISSING, MISSING, OK,      MISSING, DENIED,  DENIED,  OK,    UNAUTH),
}  # fmt: skip


def outcome(body: dict[str, Any], path: tuple[str, ...]) -> str:
    codes = {error["extensions"]["code"] for error in body.get("errors", [])}
    if codes:
        assert len(codes) == 1, body
        return {"UNAUTHENTICATED": UNAUTH, "FORBIDDEN": FORBIDDEN}[codes.pop()]
    value: Any = body["data"]
    for step in path:
        if value is None:
            return NULL
        value = value[step]
    if value is None:
        return NULL
    typename = value.get("__typename") if isinstance(value, dict) else None
    return {"Forbidden": DENIED, "NotFound": MISSING}.get(typename or "", OK)


@pytest.mark.parametrize(
    ("operation", "principal", "expected"),
    [(operation, who, cell) for operation, row in MATRIX.items() for who, cell in zip(PRINCIPALS, row, strict=True)],
)
async def test_who_may_manage_tokens(api: Api, operation: str, principal: str, expected: str) -> None:
    c = await cast(api)
    document, variables, path = OPERATIONS[operation]
    before = await tokens()
    body = await api.post(document, variables(c), c.tokens[principal])
    assert outcome(body, path) == expected, body
    assert (await tokens() != before) == (operation in MUTATIONS and expected == OK)
    if expected == OK and operation == "User.apiTokens(member's)":
        assert body["data"]["node"]["apiTokens"]["edges"] == [
            {"node": {"name": "spare"}},
            {"node": {"name": "member@example.com"}},
        ]
    if expected == OK and operation == "apiTokens":
        assert len(body["data"]["apiTokens"]["edges"]) == 8
