"""Provisioning by API (issue 11, points 1 and 2; README, Provisioning): createUser, updateUser,
createOrganization for a given owner, updateOrganization, addMember by either id, the lookups
``user(externalId:)`` / ``organization(externalId:)``, and the fields externalId and metadata."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from models import organizations, provisioning
from models.ids import decode_id
from models.tables import CreditLot, LotSource, MemberRole, Membership, Organization, TokenKind, User
from models.tokens import create_token
from tests.support.helpers import Api, gid
from tests.support.snapshots import changed, snapshot

REFUSAL = "... on Error { message } ... on ValidationError { field } ... on AlreadyExists { field existingId }"
USER_FIELDS = "id email externalId metadata credit { balance { total free } }"
ORG_FIELDS = "id name externalId metadata members { email roles }"

CREATE_USER = f"""mutation($input: CreateUserInput!) {{ createUser(input: $input) {{ __typename
  ... on CreateUserSuccess {{ user {{ {USER_FIELDS} }} }} {REFUSAL} }} }}"""
UPDATE_USER = f"""mutation($input: UpdateUserInput!) {{ updateUser(input: $input) {{ __typename
  ... on UpdateUserSuccess {{ user {{ id email externalId metadata }} }} {REFUSAL} }} }}"""
CREATE_ORG = f"""mutation($input: CreateOrganizationInput!) {{ createOrganization(input: $input) {{ __typename
  ... on CreateOrganizationSuccess {{ organization {{ {ORG_FIELDS} }} }} {REFUSAL} }} }}"""
UPDATE_ORG = f"""mutation($input: UpdateOrganizationInput!) {{ updateOrganization(input: $input) {{ __typename
  ... on UpdateOrganizationSuccess {{ organization {{ id name externalId metadata }} }} {REFUSAL} }} }}"""
ADD_MEMBER = """mutation($input: AddMemberInput!) { addMember(input: $input) { __typename
  ... on AddMemberSuccess { membership { userId email roles organization { name } } }
  ... on Error { message } ... on ValidationError { field } } }"""
USER_LOOKUP = "query($ext: String, $id: ID) { user(externalId: $ext, id: $id) { id email externalId metadata } }"
ORG_LOOKUP = "query($ext: String, $id: ID) { organization(externalId: $ext, id: $id) { id name externalId metadata } }"

ADA = {"email": "ada@example.com", "externalId": "cus_ada", "metadata": {"plan": "pro", "seats": 3, "beta": True}}


def user_answer(pk: int, email: str, external_id: str | None, metadata: Any, total: str = "100") -> dict[str, Any]:
    return {
        "__typename": "CreateUserSuccess",
        "user": {
            "id": gid("User", pk),
            "email": email,
            "externalId": external_id,
            "metadata": metadata,
            "credit": {"balance": {"total": total, "free": total}},
        },
    }


async def run(api: Api, document: str, variables: dict[str, Any], token: str | None) -> Any:
    data = await api.data(document, variables, token)
    return next(iter(data.values()))


async def bonuses() -> int:
    return await CreditLot.filter(source=LotSource.SIGNUP_BONUS).count()


# ------------------------------------------------------------------------------------------------ createUser


async def test_create_user_gives_the_bonus_and_keeps_the_platform_ids(api: Api) -> None:
    admin = await api.admin()
    created = await run(api, CREATE_USER, {"input": ADA}, admin)
    user = await User.get(email="ada@example.com")
    assert created == user_answer(user.id, "ada@example.com", "cus_ada", ADA["metadata"])
    assert (user.external_id, user.metadata) == ("cus_ada", ADA["metadata"])
    assert await bonuses() == 1


async def test_create_user_with_the_same_external_id_and_input_is_the_same_user(api: Api) -> None:
    admin = await api.admin()
    first = await run(api, CREATE_USER, {"input": ADA}, admin)
    before = await snapshot()
    again = await run(api, CREATE_USER, {"input": {**ADA, "email": " Ada@Example.com "}}, admin)
    assert again == first
    assert changed(before, await snapshot()) == set()
    assert await bonuses() == 1


@pytest.mark.parametrize(
    "other",
    [{"email": "ada2@example.com"}, {"metadata": {"plan": "free"}}, {"metadata": None}],
    ids=["email", "metadata", "no metadata"],
)
async def test_create_user_with_the_same_external_id_and_other_input_already_exists(
    api: Api, other: dict[str, Any]
) -> None:
    admin = await api.admin()
    first = await run(api, CREATE_USER, {"input": ADA}, admin)
    before = await snapshot()
    refused = await run(api, CREATE_USER, {"input": {**ADA, **other}}, admin)
    assert refused == {
        "__typename": "AlreadyExists",
        "message": "A user with externalId 'cus_ada' exists already with another email or metadata",
        "field": "externalId",
        "existingId": first["user"]["id"],
    }
    assert changed(before, await snapshot()) == set()


async def test_create_user_with_a_taken_email_already_exists(api: Api) -> None:
    admin = await api.admin()
    taken, _ = await api.user("ada@example.com")
    before = await snapshot()
    for given in (ADA, {"email": "ADA@example.com"}):
        refused = await run(api, CREATE_USER, {"input": given}, admin)
        assert refused == {
            "__typename": "AlreadyExists",
            "message": "Another user has the email ada@example.com already",
            "field": "email",
            "existingId": gid("User", taken),
        }
    assert changed(before, await snapshot()) == set()


async def test_create_user_without_external_id_is_a_plain_create(api: Api) -> None:
    admin = await api.admin()
    created = await run(api, CREATE_USER, {"input": {"email": "bob@example.com"}}, admin)
    user = await User.get(email="bob@example.com")
    assert created == user_answer(user.id, "bob@example.com", None, None)
    again = await run(api, CREATE_USER, {"input": {"email": "bob@example.com"}}, admin)
    assert again["__typename"] == "AlreadyExists"
    assert await bonuses() == 1


async def test_concurrent_identical_creates_make_one_user_and_one_bonus(api: Api) -> None:
    admin = await api.admin()
    answers = await asyncio.gather(*(run(api, CREATE_USER, {"input": ADA}, admin) for _ in range(4)))
    user = await User.get(external_id="cus_ada")
    assert answers == [user_answer(user.id, "ada@example.com", "cus_ada", ADA["metadata"])] * 4
    assert await User.all().count() == 1
    assert await bonuses() == 1


async def test_concurrent_creates_of_one_external_id_with_other_input_make_one_user(api: Api) -> None:
    admin = await api.admin()
    inputs = [ADA, {**ADA, "email": "other@example.com"}]
    answers = await asyncio.gather(*(run(api, CREATE_USER, {"input": given}, admin) for given in inputs))
    assert sorted(answer["__typename"] for answer in answers) == ["AlreadyExists", "CreateUserSuccess"]
    assert await User.all().count() == 1
    assert await bonuses() == 1


LONG = "x" * 256
BAD_CREATE_USER = [
    ({"email": "ada"}, "email", "email must be an email address such as ada@example.com"),
    ({**ADA, "externalId": ""}, "externalId", "externalId must be 1 to 255 characters"),
    ({**ADA, "externalId": "   "}, "externalId", "externalId must be 1 to 255 characters"),
    ({**ADA, "externalId": LONG}, "externalId", "externalId must be 1 to 255 characters"),
    (
        {**ADA, "externalId": "cus\u200bada"},
        "externalId",
        "externalId must contain only printable characters: U+200B is an invisible or bidirectional formatting"
        " character",
    ),
    ({**ADA, "externalId": "cus\x00"}, "externalId", "externalId must not contain control characters"),
    ({**ADA, "metadata": ["a"]}, "metadata", "metadata must be a JSON object of keys to values"),
    ({**ADA, "metadata": "plan"}, "metadata", "metadata must be a JSON object of keys to values"),
    ({**ADA, "metadata": 3}, "metadata", "metadata must be a JSON object of keys to values"),
    ({**ADA, "metadata": {f"k{n}": n for n in range(51)}}, "metadata", "metadata must have at most 50 keys, got 51"),
    ({**ADA, "metadata": {"": 1}}, "metadata", "metadata key '': must be 1 to 40 characters"),
    ({**ADA, "metadata": {"k" * 41: 1}}, "metadata", f"metadata key '{'k' * 40}...': must be 1 to 40 characters"),
    (
        {**ADA, "metadata": {"a\u200eb": 1}},
        "metadata",
        "metadata key 'a\\u200eb': must contain only printable characters: U+200E is an invisible or"
        " bidirectional formatting character",
    ),
    (
        {**ADA, "metadata": {"nested": {"a": 1}}},
        "metadata",
        "metadata value of 'nested' must be a string, a number, a boolean or null (no objects or lists)",
    ),
    (
        {**ADA, "metadata": {"list": [1]}},
        "metadata",
        "metadata value of 'list' must be a string, a number, a boolean or null (no objects or lists)",
    ),
    ({**ADA, "metadata": {"s": "x" * 501}}, "metadata", "metadata value of 's' must be at most 500 characters"),
    ({**ADA, "metadata": {"s": "a\x00b"}}, "metadata", "metadata value of 's': must not contain NUL characters"),
    (
        {**ADA, "metadata": {"n": 2**53}},
        "metadata",
        "metadata value of 'n' must be an integer within +-9007199254740991",
    ),
    (
        {**ADA, "metadata": {f"k{n:02}": "x" * 200 for n in range(45)}},
        "metadata",
        "metadata must be at most 8192 bytes as JSON, got 9406",
    ),
]


@pytest.mark.parametrize(("given", "field", "message"), BAD_CREATE_USER)
async def test_create_user_refuses_bad_input_and_changes_nothing(
    api: Api, given: dict[str, Any], field: str, message: str
) -> None:
    admin = await api.admin()
    before = await snapshot()
    refused = await run(api, CREATE_USER, {"input": given}, admin)
    assert refused == {"__typename": "ValidationError", "message": message, "field": field}
    assert changed(before, await snapshot()) == set()


async def test_metadata_at_its_limits_is_kept_exactly(api: Api) -> None:
    admin = await api.admin()
    metadata: dict[str, Any] = {f"k{n:02}": "é" * 80 for n in range(47)}
    metadata.update({"k" * 40: 2**53 - 1, "neg": -1.5, "nil": None})
    assert len(metadata) == 50
    created = await run(api, CREATE_USER, {"input": {**ADA, "metadata": metadata}}, admin)
    assert created["user"]["metadata"] == metadata
    assert (await User.get(external_id="cus_ada")).metadata == metadata


async def test_metadata_written_in_the_query_itself(api: Api) -> None:
    document = CREATE_USER.replace("$input: CreateUserInput!", "").replace(
        "input: $input", 'input: {email: "ada@example.com", metadata: {plan: "pro", seats: 3, beta: true, x: null}}'
    )
    created = (await api.data(document.replace("mutation()", "mutation"), token=await api.admin()))["createUser"]
    assert created["user"]["metadata"] == {"plan": "pro", "seats": 3, "beta": True, "x": None}


# ------------------------------------------------------------------------------------------------ updateUser


async def _ada(api: Api, **given: Any) -> tuple[str, str]:
    admin = await api.admin()
    created = await run(api, CREATE_USER, {"input": {**ADA, **given}}, admin)
    return admin, created["user"]["id"]


async def test_update_user_changes_email_and_replaces_metadata(api: Api) -> None:
    admin, ada = await _ada(api)
    updated = await run(
        api,
        UPDATE_USER,
        {"input": {"externalUserId": "cus_ada", "email": "Ada@New.example", "metadata": {"plan": "team"}}},
        admin,
    )
    assert updated == {
        "__typename": "UpdateUserSuccess",
        "user": {"id": ada, "email": "ada@new.example", "externalId": "cus_ada", "metadata": {"plan": "team"}},
    }
    kept = await run(api, UPDATE_USER, {"input": {"userId": ada}}, admin)
    assert kept == updated
    cleared = await run(api, UPDATE_USER, {"input": {"userId": ada, "metadata": None}}, admin)
    assert cleared["user"]["metadata"] is None
    assert (await User.get(external_id="cus_ada")).metadata is None


async def test_update_user_sets_the_external_id_once(api: Api) -> None:
    admin, bob = await _ada(api, email="bob@example.com", externalId=None)
    assert (await run(api, UPDATE_USER, {"input": {"userId": bob, "externalId": "cus_bob"}}, admin))["user"] == {
        "id": bob,
        "email": "bob@example.com",
        "externalId": "cus_bob",
        "metadata": ADA["metadata"],
    }
    same = await run(api, UPDATE_USER, {"input": {"externalUserId": "cus_bob", "externalId": "cus_bob"}}, admin)
    assert same["__typename"] == "UpdateUserSuccess"
    before = await snapshot()
    refused = await run(api, UPDATE_USER, {"input": {"userId": bob, "externalId": "cus_robert"}}, admin)
    assert refused == {
        "__typename": "ValidationError",
        "message": "externalId is set already ('cus_bob') and cannot change",
        "field": "externalId",
    }
    assert changed(before, await snapshot()) == set()


async def test_update_user_refuses_what_another_user_has(api: Api) -> None:
    admin, ada = await _ada(api)
    bob = await run(api, CREATE_USER, {"input": {"email": "bob@example.com"}}, admin)
    before = await snapshot()
    email = await run(api, UPDATE_USER, {"input": {"userId": bob["user"]["id"], "email": "ada@example.com"}}, admin)
    assert email == {
        "__typename": "AlreadyExists",
        "message": "Another user has the email ada@example.com already",
        "field": "email",
        "existingId": ada,
    }
    external = await run(api, UPDATE_USER, {"input": {"userId": bob["user"]["id"], "externalId": "cus_ada"}}, admin)
    assert external == {
        "__typename": "AlreadyExists",
        "message": "A user with externalId 'cus_ada' exists already with another user",
        "field": "externalId",
        "existingId": ada,
    }
    assert changed(before, await snapshot()) == set()


def invalid(field: str, message: str) -> dict[str, Any]:
    return {"__typename": "ValidationError", "message": message, "field": field}


def missing(message: str) -> dict[str, Any]:
    return {"__typename": "NotFound", "message": message}


NOT_ONE_USER = invalid("userId", "Give exactly one of userId or externalUserId")
FLAT = "must be a string, a number, a boolean or null (no objects or lists)"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, NOT_ONE_USER),
        ({"userId": "ADA", "externalUserId": "cus_ada"}, NOT_ONE_USER),
        ({"externalUserId": "cus_nobody"}, missing("No user has externalId 'cus_nobody'")),
        ({"userId": gid("Organization", 1)}, missing("User not found")),
        ({"externalUserId": ""}, invalid("externalUserId", "externalUserId must be 1 to 255 characters")),
        (
            {"externalUserId": "cus_ada", "email": "nope"},
            invalid("email", "email must be an email address such as ada@example.com"),
        ),
        (
            {"externalUserId": "cus_ada", "externalId": LONG},
            invalid("externalId", "externalId must be 1 to 255 characters"),
        ),
        (
            {"externalUserId": "cus_ada", "metadata": [1]},
            invalid("metadata", "metadata must be a JSON object of keys to values"),
        ),
        (
            {"externalUserId": "cus_ada", "metadata": {"a": {"b": 1}}},
            invalid("metadata", f"metadata value of 'a' {FLAT}"),
        ),
    ],
)
async def test_update_user_refuses_bad_input_and_changes_nothing(
    api: Api, given: dict[str, Any], expected: dict[str, Any]
) -> None:
    admin, _ = await _ada(api)
    before = await snapshot()
    assert await run(api, UPDATE_USER, {"input": given}, admin) == expected
    assert changed(before, await snapshot()) == set()


# ----------------------------------------------------------------------------------------- organizations


async def test_admin_creates_an_organization_for_an_owner_idempotently(api: Api) -> None:
    admin, ada = await _ada(api)
    given = {"name": "Acme", "externalOwnerId": "cus_ada", "externalId": "org_acme", "metadata": {"tier": 2}}
    created = await run(api, CREATE_ORG, {"input": given}, admin)
    org = await Organization.get(external_id="org_acme")
    assert created == {
        "__typename": "CreateOrganizationSuccess",
        "organization": {
            "id": gid("Organization", org.id),
            "name": "Acme",
            "externalId": "org_acme",
            "metadata": {"tier": 2},
            "members": [{"email": "ada@example.com", "roles": ["OWNER"]}],
        },
    }
    before = await snapshot()
    by_own_id = {**given, "externalOwnerId": None, "ownerId": ada}
    assert await run(api, CREATE_ORG, {"input": by_own_id}, admin) == created
    assert changed(before, await snapshot()) == set()
    for other in ({"name": "Acme Inc"}, {"metadata": None}):
        refused = await run(api, CREATE_ORG, {"input": {**given, **other}}, admin)
        assert refused == {
            "__typename": "AlreadyExists",
            "message": "An organization with externalId 'org_acme' exists already with another name, owner or metadata",
            "field": "externalId",
            "existingId": gid("Organization", org.id),
        }
    bob = await run(api, CREATE_USER, {"input": {"email": "bob@example.com"}}, admin)
    before = await snapshot()
    other_owner = await run(api, CREATE_ORG, {"input": {**by_own_id, "ownerId": bob["user"]["id"]}}, admin)
    assert other_owner["__typename"] == "AlreadyExists"
    assert changed(before, await snapshot()) == set()


async def test_concurrent_identical_organization_creates_make_one(api: Api) -> None:
    admin, _ = await _ada(api)
    given = {"name": "Acme", "externalOwnerId": "cus_ada", "externalId": "org_acme"}
    answers = await asyncio.gather(*(run(api, CREATE_ORG, {"input": given}, admin) for _ in range(3)))
    assert answers[0]["__typename"] == "CreateOrganizationSuccess"
    assert answers == [answers[0]] * 3
    assert await Organization.all().count() == 1
    assert await Membership.all().count() == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"name": "Acme"}, invalid("ownerId", "Give exactly one of ownerId or externalOwnerId")),
        ({"name": "Acme", "externalOwnerId": "cus_nobody"}, missing("No user has externalId 'cus_nobody'")),
        ({"name": " ", "externalOwnerId": "cus_ada"}, invalid("name", "name must be 1 to 200 characters")),
        (
            {"name": "Acme", "externalOwnerId": "cus_ada", "externalId": ""},
            invalid("externalId", "externalId must be 1 to 255 characters"),
        ),
        (
            {"name": "Acme", "externalOwnerId": "cus_ada", "metadata": {"a": []}},
            invalid(
                "metadata", "metadata value of 'a' must be a string, a number, a boolean or null (no objects or lists)"
            ),
        ),
    ],
)
async def test_create_organization_refuses_bad_input_and_changes_nothing(
    api: Api, given: dict[str, Any], expected: dict[str, Any]
) -> None:
    admin, _ = await _ada(api)
    before = await snapshot()
    assert await run(api, CREATE_ORG, {"input": given}, admin) == expected
    assert changed(before, await snapshot()) == set()


async def test_a_user_token_still_creates_its_own_organization_without_platform_fields(api: Api) -> None:
    _, token = await api.user("owner@example.com")
    created = await run(api, CREATE_ORG, {"input": {"name": "Mine"}}, token)
    org = await Organization.get(name="Mine")
    assert created == {
        "__typename": "CreateOrganizationSuccess",
        "organization": {
            "id": gid("Organization", org.id),
            "name": "Mine",
            "externalId": None,
            "metadata": None,
            "members": [{"email": "owner@example.com", "roles": ["OWNER"]}],
        },
    }
    before = await snapshot()
    extras: list[dict[str, Any]] = [
        {"externalId": "org_x"},
        {"metadata": {}},
        {"ownerId": gid("User", 1)},
        {"externalOwnerId": "x"},
    ]
    for extra in extras:
        refused = await run(api, CREATE_ORG, {"input": {"name": "Mine too", **extra}}, token)
        assert refused == {
            "__typename": "Forbidden",
            "message": "ownerId, externalOwnerId, externalId and metadata need an admin token",
        }
    assert changed(before, await snapshot()) == set()


async def test_update_organization(api: Api) -> None:
    admin, _ = await _ada(api)
    created = await run(api, CREATE_ORG, {"input": {"name": "Acme", "externalOwnerId": "cus_ada"}}, admin)
    org = created["organization"]["id"]
    updated = await run(
        api, UPDATE_ORG, {"input": {"organizationId": org, "name": "Acme Inc", "externalId": "org_acme"}}, admin
    )
    assert updated == {
        "__typename": "UpdateOrganizationSuccess",
        "organization": {"id": org, "name": "Acme Inc", "externalId": "org_acme", "metadata": None},
    }
    replaced = await run(
        api, UPDATE_ORG, {"input": {"externalOrganizationId": "org_acme", "metadata": {"tier": "gold"}}}, admin
    )
    assert replaced["organization"] == {
        "id": org,
        "name": "Acme Inc",
        "externalId": "org_acme",
        "metadata": {"tier": "gold"},
    }
    other = await run(api, CREATE_ORG, {"input": {"name": "Globex", "externalOwnerId": "cus_ada"}}, admin)
    before = await snapshot()
    refusals = [
        (
            {"organizationId": org, "externalId": "org_other"},
            invalid("externalId", "externalId is set already ('org_acme') and cannot change"),
        ),
        (
            {"organizationId": other["organization"]["id"], "externalId": "org_acme"},
            {
                "__typename": "AlreadyExists",
                "message": "An organization with externalId 'org_acme' exists already with another organization",
                "field": "externalId",
                "existingId": org,
            },
        ),
        ({"organizationId": org, "name": ""}, invalid("name", "name must be 1 to 200 characters")),
        (
            {"organizationId": org, "metadata": "x"},
            invalid("metadata", "metadata must be a JSON object of keys to values"),
        ),
        ({"externalOrganizationId": "org_nobody"}, missing("No organization has externalId 'org_nobody'")),
        ({}, invalid("organizationId", "Give exactly one of organizationId or externalOrganizationId")),
    ]
    for given, expected in refusals:
        assert await run(api, UPDATE_ORG, {"input": given}, admin) == expected
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------------ addMember


async def test_add_member_by_either_id_of_user_and_organization(api: Api) -> None:
    admin, ada = await _ada(api)
    await run(api, CREATE_ORG, {"input": {"name": "Acme", "ownerId": ada, "externalId": "org_acme"}}, admin)
    people = {}
    for name in ("bob", "cy", "dee"):
        made = await run(
            api, CREATE_USER, {"input": {"email": f"{name}@example.com", "externalId": f"cus_{name}"}}, admin
        )
        people[name] = made["user"]["id"]
    org = gid("Organization", (await Organization.get(external_id="org_acme")).id)
    ways = [
        ("bob", {"externalOrganizationId": "org_acme", "externalUserId": "cus_bob"}),
        ("cy", {"organizationId": org, "userId": people["cy"]}),
        ("dee", {"externalOrganizationId": "org_acme", "email": "DEE@example.com"}),
    ]
    for name, given in ways:
        added = await run(api, ADD_MEMBER, {"input": {**given, "roles": ["MEMBER"]}}, admin)
        assert added == {
            "__typename": "AddMemberSuccess",
            "membership": {
                "userId": people[name],
                "email": f"{name}@example.com",
                "roles": ["MEMBER"],
                "organization": {"name": "Acme"},
            },
        }
    before = await snapshot()
    one_of = {
        "__typename": "ValidationError",
        "message": "Give exactly one of email, userId or externalUserId",
        "field": "email",
    }
    refusals = [
        ({"externalOrganizationId": "org_acme"}, one_of),
        ({"externalOrganizationId": "org_acme", "email": "bob@example.com", "userId": people["bob"]}, one_of),
        ({"externalOrganizationId": "org_acme", "externalUserId": "cus_bob", "userId": people["bob"]}, one_of),
        (
            {"externalOrganizationId": "org_acme", "externalUserId": "cus_nobody"},
            missing("No user has externalId 'cus_nobody'"),
        ),
        (
            {"externalOrganizationId": "org_acme", "externalUserId": "\x01"},
            invalid("externalUserId", "externalUserId must not contain control characters"),
        ),
        (
            {"externalOrganizationId": "org_nobody", "externalUserId": "cus_bob"},
            missing("No organization has externalId 'org_nobody'"),
        ),
        (
            {"organizationId": org, "externalOrganizationId": "org_acme", "externalUserId": "cus_bob"},
            invalid("organizationId", "Give exactly one of organizationId or externalOrganizationId"),
        ),
        (
            {"userId": people["bob"]},
            invalid("organizationId", "Give exactly one of organizationId or externalOrganizationId"),
        ),
        (
            {"externalOrganizationId": "org_acme", "externalUserId": "cus_bob"},
            {"__typename": "AlreadyMember", "message": "That user is a member already"},
        ),
    ]
    for given, expected in refusals:
        assert await run(api, ADD_MEMBER, {"input": {**given, "roles": ["MEMBER"]}}, admin) == expected, given
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------------ lookups


async def test_lookups_by_external_id_or_id(api: Api) -> None:
    admin, ada = await _ada(api)
    created = await run(api, CREATE_ORG, {"input": {"name": "Acme", "ownerId": ada, "externalId": "org_acme"}}, admin)
    org = created["organization"]["id"]
    user = {"id": ada, "email": "ada@example.com", "externalId": "cus_ada", "metadata": ADA["metadata"]}
    organization = {"id": org, "name": "Acme", "externalId": "org_acme", "metadata": None}
    reader = await api.service("reader", scopes=("balance:read",))
    for token in (admin, reader):
        assert await api.data(USER_LOOKUP, {"ext": "cus_ada"}, token) == {"user": user}
        assert await api.data(USER_LOOKUP, {"id": ada}, token) == {"user": user}
        assert await api.data(USER_LOOKUP, {"ext": "cus_nobody"}, token) == {"user": None}
        assert await api.data(USER_LOOKUP, {"id": org}, token) == {"user": None}
        assert await api.data(ORG_LOOKUP, {"ext": "org_acme"}, token) == {"organization": organization}
        assert await api.data(ORG_LOOKUP, {"id": org}, token) == {"organization": organization}
        assert await api.data(ORG_LOOKUP, {"ext": "org_nobody"}, token) == {"organization": None}
    for document, variables, message in (
        (USER_LOOKUP, {}, "Give exactly one of id or externalId"),
        (USER_LOOKUP, {"ext": "cus_ada", "id": ada}, "Give exactly one of id or externalId"),
        (USER_LOOKUP, {"ext": ""}, "externalId must be 1 to 255 characters"),
        (ORG_LOOKUP, {}, "Give exactly one of id or externalId"),
        (ORG_LOOKUP, {"ext": "x" * 256}, "externalId must be 1 to 255 characters"),
    ):
        body = await api.post(document, variables, admin)
        assert body["data"] == {document.split("{")[1].split("(")[0].strip(): None}
        assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [(message, "BAD_USER_INPUT")]


async def test_users_and_members_see_their_own_platform_fields(api: Api) -> None:
    admin, ada = await _ada(api)
    given = {"name": "Acme", "ownerId": ada, "externalId": "org_acme", "metadata": {"a": 1}}
    org = (await run(api, CREATE_ORG, {"input": given}, admin))["organization"]["id"]
    token = await create_token(TokenKind.USER, name="ada", user_id=decode_id(ada, "User"), now=api.clock.now())
    mine = await api.data(
        "query($org: ID!) { me { externalId metadata }"
        " node(id: $org) { ... on Organization { externalId metadata } } }",
        {"org": org},
        token,
    )
    assert mine == {
        "me": {"externalId": "cus_ada", "metadata": ADA["metadata"]},
        "node": {"externalId": "org_acme", "metadata": {"a": 1}},
    }


# ---------------------------------------------------------------------------------------------- who may


PRINCIPALS = (
    *("owner", "billing", "member", "outsider"),
    *("service", "balance-reader", "billing-reader", "admin", "anonymous"),
)
OK, DENIED, FORBIDDEN, NULL, UNAUTH = "OK", "DENIED", "FORBIDDEN", "NULL", "UNAUTH"


async def access_world(api: Api) -> dict[str, str | None]:
    """Acme (org_acme) with an owner, a BILLING and a MEMBER member (cus_member); an outsider (cus_outsider);
    services with usage:write, balance:read and billing:read; an admin. Returns a token per principal."""
    now = api.clock.now()
    tokens: dict[str, str | None] = {}
    ids: dict[str, int] = {}
    for who in ("owner", "billing", "member", "outsider"):
        ids[who], tokens[who] = await api.user(f"{who}@example.com", bonus=0)
        await User.filter(id=ids[who]).update(external_id=f"cus_{who}")
    org = await provisioning.create_organization("Acme", ids["owner"], "org_acme", {"tier": 1}, now)
    await organizations.add_member(org.id, ids["billing"], [MemberRole.BILLING], now)
    await organizations.add_member(org.id, ids["member"], [MemberRole.MEMBER], now)
    tokens["service"] = await api.service(scopes=("usage:write",))
    tokens["balance-reader"] = await api.service("balance-reader", scopes=("balance:read",))
    tokens["billing-reader"] = await api.service("billing-reader", scopes=("billing:read",))
    tokens["admin"] = await api.admin()
    tokens["anonymous"] = None
    return tokens


ACCESS: dict[str, tuple[str, dict[str, Any], Any]] = {
    "createUser": (
        CREATE_USER,
        {"input": {"email": "new@example.com", "externalId": "cus_new"}},
        {"__typename": "CreateUserSuccess", "email": "new@example.com"},
    ),
    "updateUser": (
        UPDATE_USER,
        {"input": {"externalUserId": "cus_member", "metadata": {"x": 1}}},
        {"__typename": "UpdateUserSuccess", "email": "member@example.com"},
    ),
    "createOrganization(owner)": (
        CREATE_ORG,
        {"input": {"name": "Initech", "externalOwnerId": "cus_member", "externalId": "org_new"}},
        {"__typename": "CreateOrganizationSuccess", "name": "Initech"},
    ),
    "updateOrganization": (
        UPDATE_ORG,
        {"input": {"externalOrganizationId": "org_acme", "name": "Acme 2"}},
        {"__typename": "UpdateOrganizationSuccess", "name": "Acme 2"},
    ),
    "addMember(externalUserId)": (
        ADD_MEMBER,
        {"input": {"externalOrganizationId": "org_acme", "externalUserId": "cus_outsider", "roles": ["MEMBER"]}},
        {"__typename": "AddMemberSuccess", "email": "outsider@example.com"},
    ),
    "user(externalId)": (USER_LOOKUP, {"ext": "cus_member"}, {"email": "member@example.com"}),
    "organization(externalId)": (ORG_LOOKUP, {"ext": "org_acme"}, {"name": "Acme", "metadata": {"tier": 1}}),
    "Organization.externalId": (
        "query($ext: ID!) { node(id: $ext) { ... on Organization { externalId metadata } } }",
        {},
        {"externalId": "org_acme", "metadata": {"tier": 1}},
    ),
    "me.externalId": ("{ me { externalId } }", {}, None),
}
# DENIED: the typed Forbidden; FORBIDDEN / UNAUTH: a top-level error with code FORBIDDEN / UNAUTHENTICATED;
# NULL: null, as for what does not exist. Columns in the order of PRINCIPALS.
D, F, U = DENIED, FORBIDDEN, UNAUTH
#                              owner billing member outsider service bal-read bill-read admin anonymous
MATRIX: dict[str, tuple[str, ...]] = {
    "createUser":                (D,   D,    D,     D,      D,     D,     D,      OK,   U),
    "updateUser":                (D,   D,    D,     D,      D,     D,     D,      OK,   U),
    "createOrganization(owner)": (D,   D,    D,     D,      D,     D,     D,      OK,   U),
    "updateOrganization":        (D,   D,    D,     D,      D,     D,     D,      OK,   U),
    "addMember(externalUserId)": (D,   D,    D,     D,      D,     D,     D,      OK,   U),
    "user(externalId)":          (F,   F,    F,     F,      F,     OK,    OK,     OK,   U),
    "organization(externalId)":  (F,   F,    F,     F,      F,     OK,    OK,     OK,   U),
    "Organization.externalId":   (OK,  OK,   OK,    NULL,   NULL,  NULL,  NULL,   OK,   U),
    "me.externalId":             (OK,  OK,   OK,    OK,     F,     F,     F,      F,    U),
}  # fmt: skip


def _flat(value: Any) -> dict[str, Any]:
    """The answer's scalars by name, at any depth (what the ``ACCESS`` expectations name)."""
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict):
                found.update(_flat(item))
            found.setdefault(key, item)
    return found


@pytest.mark.parametrize(
    ("operation", "principal", "expected"),
    [
        pytest.param(operation, principal, cell, id=f"{operation}-{principal}")
        for operation, row in MATRIX.items()
        for principal, cell in zip(PRINCIPALS, row, strict=True)
    ],
)
async def test_who_may_provision_and_look_up(api: Api, operation: str, principal: str, expected: str) -> None:
    assert set(MATRIX) == set(ACCESS)
    tokens = await access_world(api)
    document, variables, ok = ACCESS[operation]
    if operation == "Organization.externalId":
        variables = {"ext": gid("Organization", (await Organization.get(external_id="org_acme")).id)}
    if operation == "me.externalId":
        ok = {"externalId": f"cus_{principal}"}
    before = await snapshot()
    body = await api.post(document, variables, tokens[principal])
    errors = [error["extensions"]["code"] for error in body.get("errors", [])]
    answer = next(iter((body.get("data") or {None: None}).values()))
    if expected == OK:
        assert errors == []
        flat = _flat(answer)
        assert {key: flat.get(key) for key in ok} == ok
        return
    if expected == DENIED:
        assert errors == []
        assert answer["__typename"] == "Forbidden"
    elif expected == NULL:
        assert (errors, answer) == ([], None)
    else:
        assert errors == [{"FORBIDDEN": "FORBIDDEN", "UNAUTH": "UNAUTHENTICATED"}[expected]]
        assert answer is None
    assert changed(before, await snapshot()) == set()
