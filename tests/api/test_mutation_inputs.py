"""Bad input to every ledger mutation, as a client sends it: each is refused with a typed error (or, when a
value does not even parse, a top-level GraphQL error that names the problem), and nothing changes.

The invitation mutations (issue 9, point 8) and the spend-limit mutations (issue 12) have theirs at the end of
this file. The other mutations have theirs
beside their flows: organizations (test_organizations), payments and cards
(test_payments, test_gateway_*), subscriptions (test_subscriptions), auto top-up (test_auto_top_up),
refunds (test_refunds), overdraft (test_overdraft). The webhook endpoint mutations (issue 13) have theirs at
the very end."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest

from creditline.jobs import sweep_once
from models import organizations
from models.outbox import EventType
from models.tables import (
    Invitation,
    InvitationStatus,
    Membership,
    Organization,
    User,
    WebhookEndpoint,
    WebhookEndpointStatus,
)
from models.tables import SpendLimit as SpendLimitRow
from models.webhooks import new_secret
from tests.support.helpers import Api, gid
from tests.support.mutation_documents import REFUSAL, SELECTIONS, STATE, batch_document, document
from tests.support.snapshots import changed, snapshot
from tests.support.webhooks import event as webhook_event

# ---------------------------------------------------------------------------------------------- documents


class Raw(str):
    """GraphQL source text written into a literal as is: enum values and number literals."""

    __slots__ = ()


def literal(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(value)


def inline_document(mutation: str, input: dict[str, object]) -> str:
    """The mutation with its input written into the document as a literal."""
    return (
        f"mutation {{\n  {mutation}(input: {literal(input)}) {{ __typename {SELECTIONS[mutation]} ...Refusal }}\n}}\n"
        + REFUSAL
    )


# ------------------------------------------------------------------------------------------------- world

USER = gid("User", 1)
OTHER_USER = gid("User", 2)
ACCOUNT = gid("CreditAccount", 1)
OTHER_ORG = gid("Organization", 1)
ACTIVE_HOLD = gid("Hold", 1)
RELEASED_HOLD = gid("Hold", 2)
CAPTURED_HOLD = gid("Hold", 3)
MISSING_USER = gid("User", 999)
MISSING_ACCOUNT = gid("CreditAccount", 999)
MISSING_HOLD = gid("Hold", 999)
MISSING_ORG = gid("Organization", 999)


def unicode_digit_id(type_name: str, digit: str) -> str:
    """Base64 of e.g. ``User:²``: a malformed global ID whose "number" is a non-ASCII digit."""
    return base64.b64encode(f"{type_name}:{digit}".encode()).decode()


UNICODE_DIGITS = {"superscript-two": "²", "arabic-indic-one": "١"}


@dataclass
class World:
    """Ada (User 1) has 8 credits, 3 of them held by Hold 1; Hold 2 was released and Hold 3 captured.
    Bob (User 2) belongs to Organization 1, Ada does not. Ada's externalId is "ada", Organization 1's "bobs"."""

    api: Api
    ada: str
    bob: str
    service: str
    admin: str

    def token_for(self, mutation: str) -> str:
        """A token that may run ``mutation``, so that only the input can be at fault."""
        return self.admin if mutation == "grantCredits" else self.service

    async def run(self, mutation: str, input: dict[str, object]) -> Any:
        body = await self.api.post(document(mutation), {"input": input}, self.token_for(mutation))
        assert "errors" not in body, body
        return body["data"][mutation]

    async def state(self) -> list[Any]:
        """What Ada and Bob can see of their credit: balance, ledger, lots, holds, usage."""
        return [await self.api.data(STATE, token=token) for token in (self.ada, self.bob)]


@pytest.fixture
async def world(api: Api) -> World:
    ada_id, ada = await api.user("ada@example.com", bonus=10)
    bob_id, bob = await api.user("bob@example.com", bonus=10)
    assert (gid("User", ada_id), gid("User", bob_id)) == (USER, OTHER_USER)
    org = await Organization.create(name="Bob's org", created_at=api.clock.now())
    await Membership.create(organization=org, user_id=bob_id, roles="OWNER", created_at=api.clock.now())
    assert gid("Organization", org.id) == OTHER_ORG
    await User.filter(id=ada_id).update(external_id="ada")
    await Organization.filter(id=org.id).update(external_id="bobs")
    w = World(api, ada, bob, await api.service(), await api.admin())

    def hold_input(credits: str, key: str) -> dict[str, object]:
        return {"userId": USER, "agentId": "agent-1", "activity": "answer", "credits": credits, "idempotencyKey": key}

    assert (await w.run("holdCredits", hold_input("3", "setup-1")))["__typename"] == "HoldCreditsSuccess"
    assert (await w.run("holdCredits", hold_input("1", "setup-2")))["__typename"] == "HoldCreditsSuccess"
    released = await w.run("releaseHold", {"holdId": RELEASED_HOLD, "idempotencyKey": "setup-3"})
    assert released["hold"] == {"status": "RELEASED"}
    assert (await w.run("holdCredits", hold_input("2", "setup-4")))["__typename"] == "HoldCreditsSuccess"
    captured = await w.run("captureHold", {"holdId": CAPTURED_HOLD, "idempotencyKey": "setup-5"})
    assert captured["hold"] == {"status": "CAPTURED", "captured": "2"}
    ada_state = (await w.state())[0]
    assert ada_state["me"]["credit"]["balance"] == {
        "total": "8",
        "free": "8",
        "paid": "0",
        "held": "3",
        "available": "5",
    }
    return w


DROP = object()
"""In ``changes``: leave this field out of the input."""

VALID: dict[str, dict[str, object]] = {
    "spendCredits": {
        "userId": USER,
        "agentId": "agent-1",
        "activity": "answer",
        "credits": "1",
        "idempotencyKey": "key-1",
    },
    "grantCredits": {"accountId": ACCOUNT, "credits": "5", "kind": Raw("FREE"), "idempotencyKey": "key-1"},
    "holdCredits": {
        "userId": USER,
        "agentId": "agent-1",
        "activity": "answer",
        "credits": "1",
        "idempotencyKey": "key-1",
    },
    "captureHold": {"holdId": ACTIVE_HOLD, "credits": "1", "idempotencyKey": "key-1"},
    "releaseHold": {"holdId": ACTIVE_HOLD, "idempotencyKey": "key-1"},
    "extendHold": {"holdId": ACTIVE_HOLD, "timeoutSeconds": 600, "idempotencyKey": "key-1"},
    "increaseHold": {"holdId": ACTIVE_HOLD, "credits": "1", "idempotencyKey": "key-1"},
}


def input_for(mutation: str, changes: dict[str, object]) -> dict[str, object]:
    merged = {**VALID[mutation], **changes}
    return {key: value for key, value in merged.items() if value is not DROP}


# ------------------------------------------------------------------------------------------ valid inputs

VALID_RESULTS = {
    "spendCredits": {
        "__typename": "SpendCreditsSuccess",
        "usageEvent": {"credits": "1", "activity": "answer", "agentId": "agent-1"},
        "balance": {"total": "7", "held": "3"},
    },
    "grantCredits": {
        "__typename": "GrantCreditsSuccess",
        "lot": {"kind": "FREE", "amount": "5", "expiresAt": None},
        "balance": {"total": "13", "held": "3"},
    },
    "holdCredits": {
        "__typename": "HoldCreditsSuccess",
        "hold": {"status": "ACTIVE", "amount": "1"},
        "balance": {"total": "8", "held": "4"},
    },
    "captureHold": {
        "__typename": "CaptureHoldSuccess",
        "hold": {"status": "CAPTURED", "captured": "1"},
        "balance": {"total": "7", "held": "0"},
    },
    "releaseHold": {
        "__typename": "ReleaseHoldSuccess",
        "hold": {"status": "RELEASED"},
        "balance": {"total": "8", "held": "0"},
    },
    "extendHold": {
        "__typename": "ExtendHoldSuccess",
        "hold": {"status": "ACTIVE", "amount": "3", "expiresAt": "2026-01-15T12:10:00+00:00"},
        "balance": {"total": "8", "held": "3"},
    },
    "increaseHold": {
        "__typename": "IncreaseHoldSuccess",
        "hold": {"status": "ACTIVE", "amount": "4", "quantity": None},
        "balance": {"total": "8", "held": "4"},
    },
}


@pytest.mark.parametrize("mutation", list(VALID))
async def test_the_valid_input_that_the_refusals_start_from_succeeds(world: World, mutation: str) -> None:
    """Each refusal below changes one field of this input, so the changed field is what is at fault."""
    assert await world.run(mutation, input_for(mutation, {})) == VALID_RESULTS[mutation]


BOUNDARIES = [
    pytest.param("spendCredits", {"idempotencyKey": "k" * 255}, id="spend-255-char-key"),
    pytest.param("spendCredits", {"agentId": "a" * 200, "activity": "b" * 100}, id="spend-longest-agent-and-activity"),
    pytest.param("spendCredits", {"credits": "0.000001"}, id="spend-one-micro-credit"),
    pytest.param("spendCredits", {"agentRunId": "r" * 200}, id="spend-longest-run"),
    pytest.param("holdCredits", {"agentRunId": "r" * 200}, id="hold-longest-run"),
    pytest.param("spendCredits", {"credits": 1}, id="spend-integer-credits"),
    pytest.param("spendCredits", {"credits": DROP, "quantity": "0.000001"}, id="spend-smallest-quantity"),
    pytest.param("grantCredits", {"reason": "r" * 500, "idempotencyKey": "k" * 255}, id="grant-longest-reason-and-key"),
    pytest.param("grantCredits", {"expiresAt": "2026-01-15T12:00:01+00:00"}, id="grant-expiring-in-a-second"),
    pytest.param("holdCredits", {"timeoutSeconds": 1}, id="hold-shortest-timeout"),
    pytest.param("holdCredits", {"timeoutSeconds": 7 * 24 * 3600}, id="hold-longest-timeout"),
    pytest.param("captureHold", {"credits": "3"}, id="capture-all-of-the-hold"),
    pytest.param("captureHold", {"credits": DROP}, id="capture-without-credits"),
    pytest.param("holdCredits", {"credits": DROP, "quantity": "0.000001"}, id="hold-smallest-quantity"),
    pytest.param("holdCredits", {"credits": DROP, "quantity": "2500"}, id="hold-all-available-by-quantity"),
    pytest.param("extendHold", {"timeoutSeconds": 1}, id="extend-shortest-timeout"),
    pytest.param("extendHold", {"timeoutSeconds": 7 * 24 * 3600}, id="extend-longest-timeout"),
    pytest.param("increaseHold", {"credits": "0.000001"}, id="increase-one-micro-credit"),
    pytest.param("increaseHold", {"credits": "5"}, id="increase-by-all-available"),
    pytest.param("increaseHold", {"credits": DROP, "quantity": "0.000001"}, id="increase-smallest-quantity"),
]


@pytest.mark.parametrize(("mutation", "changes"), BOUNDARIES)
async def test_inputs_at_the_limits_are_accepted(world: World, mutation: str, changes: dict[str, object]) -> None:
    """The other side of each limit below: the last value it lets through."""
    result = await world.run(mutation, input_for(mutation, changes))

    assert result["__typename"] == VALID_RESULTS[mutation]["__typename"], result


# --------------------------------------------------------------------------------- Credits that don't parse

CREDITS_FIELDS = [
    pytest.param("spendCredits", "credits", id="spend-credits"),
    pytest.param("spendCredits", "quantity", id="spend-quantity"),
    pytest.param("grantCredits", "credits", id="grant-credits"),
    pytest.param("holdCredits", "credits", id="hold-credits"),
    pytest.param("captureHold", "credits", id="capture-credits"),
    pytest.param("holdCredits", "quantity", id="hold-quantity"),
    pytest.param("increaseHold", "credits", id="increase-credits"),
    pytest.param("increaseHold", "quantity", id="increase-quantity"),
]
FLOAT = "Credits must be a decimal string or an integer, got float"
NOT_PLAIN = 'Credits must be a plain decimal such as "12.5", got {!r}'
BAD_CREDITS = [
    # (value sent as a JSON variable, the same value written in the document, the problem named)
    pytest.param(1.5, Raw("1.5"), FLOAT, id="float"),
    pytest.param(1e5, Raw("1e5"), FLOAT, id="float-with-exponent"),
    pytest.param("0.0000001", "0.0000001", "Credits have at most 6 decimal places, got '0.0000001'", id="7-decimals"),
    pytest.param("NaN", "NaN", NOT_PLAIN.format("NaN"), id="nan"),
    pytest.param("1e5", "1e5", NOT_PLAIN.format("1e5"), id="exponent"),
    pytest.param("", "", "Credits must not be empty", id="empty"),
    pytest.param(True, Raw("true"), "Credits must be a decimal string or an integer, not a boolean", id="boolean"),
    pytest.param("1000000000000.000001", "1000000000000.000001", "Credits amount is too large", id="too-large"),
]


def credits_changes(mutation: str, field: str, value: object) -> dict[str, object]:
    if field == "quantity":
        return {"credits": DROP, "quantity": value}
    return {field: value}


@pytest.mark.parametrize(("mutation", "field"), CREDITS_FIELDS)
@pytest.mark.parametrize(("variable", "written", "problem"), BAD_CREDITS)
async def test_credits_that_do_not_parse_as_a_variable_are_a_top_level_error(
    world: World, mutation: str, field: str, variable: object, written: str, problem: str
) -> None:
    before = await world.state()

    body = await world.api.post(
        document(mutation),
        {"input": input_for(mutation, credits_changes(mutation, field, variable))},
        world.token_for(mutation),
    )

    assert body == {
        "data": None,
        "errors": [
            {
                "message": f"Variable '$input' has invalid value at .{field}: Expected value of type 'Credits',"
                f" but encountered error '{problem}'; found: {variable!r}.",
                "locations": ANY,
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }
    assert await world.state() == before


@pytest.mark.parametrize(("mutation", "field"), CREDITS_FIELDS)
@pytest.mark.parametrize(("variable", "written", "problem"), BAD_CREDITS)
async def test_credits_that_do_not_parse_as_a_literal_are_a_top_level_error(
    world: World, mutation: str, field: str, variable: object, written: str, problem: str
) -> None:
    before = await world.state()
    input = input_for(mutation, credits_changes(mutation, field, written))

    body = await world.api.post(inline_document(mutation, input), token=world.token_for(mutation))

    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Expected value of type 'Credits', but"
                f" encountered error '{problem}';"
                f" found: {literal(written)}.",
                "locations": ANY,
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }
    assert await world.state() == before


# ------------------------------------------------------------------------------------------ typed refusals


def validation(message: str, field: str | None) -> dict[str, object]:
    return {"__typename": "ValidationError", "message": message, "field": field}


def not_found(message: str) -> dict[str, object]:
    return {"__typename": "NotFound", "message": message}


def not_active(status: str) -> dict[str, object]:
    return {
        "__typename": "HoldNotActive",
        "message": f"The hold is {status.lower()}, not active",
        "status": status,
    }


KEY_ERROR = validation("idempotencyKey must be 1 to 255 characters", "idempotencyKey")
POSITIVE = validation("credits must be positive", "credits")
ONE_OF = validation("Give exactly one of quantity or credits", None)
USER_NOT_FOUND = not_found("User not found")
ORG_NOT_FOUND = not_found("Organization not found among the user's organizations")
ACCOUNT_NOT_FOUND = not_found("Credit account not found")
HOLD_NOT_FOUND = not_found("Hold not found")
TIMEOUT = validation("timeoutSeconds must be 1 to 604800", "timeoutSeconds")
ONE_USER = validation("Give exactly one of userId or externalUserId", "userId")
ONE_ORG = validation("Give exactly one of organizationId or externalOrganizationId", "organizationId")
ONE_ACCOUNT = validation("Give exactly one of accountId, externalUserId, externalOrganizationId", "accountId")
EXTERNAL_USER_NOT_FOUND = not_found("No user has externalId 'nobody'")
NO_POOL = not_found("This organization has no credit pool: enableCreditPool gives it one")


def case(mutation: str, changes: dict[str, object], expected: dict[str, object], id: str) -> Any:
    return pytest.param(mutation, changes, expected, id=f"{mutation}-{id}")


def key_cases(mutation: str) -> list[Any]:
    return [
        case(mutation, {"idempotencyKey": ""}, KEY_ERROR, "empty-key"),
        case(mutation, {"idempotencyKey": "k" * 256}, KEY_ERROR, "256-char-key"),
    ]


def amount_cases(mutation: str) -> list[Any]:
    return [
        case(mutation, {"credits": "0"}, POSITIVE, "zero"),
        case(mutation, {"credits": 0}, POSITIVE, "zero-int"),
        case(mutation, {"credits": "-0"}, POSITIVE, "minus-zero"),
        case(mutation, {"credits": "-1"}, POSITIVE, "negative"),
        case(mutation, {"credits": -1}, POSITIVE, "negative-int"),
        case(mutation, {"credits": "-0.000001"}, POSITIVE, "negative-micro"),
    ]


def control(field: str) -> dict[str, object]:
    return validation(f"{field} must not contain control characters", field)


def malformed_id_cases(mutation: str, field: str, type_name: str, expected: dict[str, object]) -> list[Any]:
    return [
        case(mutation, {field: "not-an-id"}, expected, f"malformed-{field}"),
        case(mutation, {field: base64.b64encode(type_name.encode()).decode()}, expected, f"{field}-without-number"),
        *(
            case(mutation, {field: unicode_digit_id(type_name, digit)}, expected, f"{field}-with-{name}")
            for name, digit in UNICODE_DIGITS.items()
        ),
    ]


def spender_cases(mutation: str) -> list[Any]:
    """The user (and organization) that spendCredits and holdCredits act for."""
    return [
        *malformed_id_cases(mutation, "userId", "User", USER_NOT_FOUND),
        case(mutation, {"agentId": "agent\x00-1"}, control("agentId"), "nul-in-agent"),
        case(mutation, {"agentId": "agent\n1"}, control("agentId"), "newline-in-agent"),
        case(mutation, {"activity": "ans\x00wer"}, control("activity"), "nul-in-activity"),
        case(mutation, {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
        case(mutation, {"agentId": ""}, validation("agentId must be 1 to 200 characters", "agentId"), "empty-agent"),
        case(mutation, {"agentId": "   "}, validation("agentId must be 1 to 200 characters", "agentId"), "blank-agent"),
        case(
            mutation, {"agentId": "a" * 201}, validation("agentId must be 1 to 200 characters", "agentId"), "long-agent"
        ),
        case(
            mutation, {"activity": ""}, validation("activity must be 1 to 100 characters", "activity"), "empty-activity"
        ),
        case(mutation, {"userId": MISSING_USER}, USER_NOT_FOUND, "unknown-user"),
        case(mutation, {"userId": ACCOUNT}, USER_NOT_FOUND, "account-id-as-user"),
        case(mutation, {"organizationId": OTHER_ORG}, ORG_NOT_FOUND, "other-users-org"),
        case(mutation, {"organizationId": MISSING_ORG}, ORG_NOT_FOUND, "unknown-org"),
        case(mutation, {"organizationId": "not-an-id"}, ORG_NOT_FOUND, "malformed-org"),
        case(mutation, {"organizationId": USER}, ORG_NOT_FOUND, "user-id-as-org"),
        # The platform's ids (issue 11, point 1): exactly one form of each.
        case(mutation, {"externalUserId": "ada"}, ONE_USER, "user-by-both-forms"),
        case(mutation, {"userId": DROP}, ONE_USER, "user-by-neither-form"),
        case(mutation, {"userId": None, "externalUserId": None}, ONE_USER, "user-by-two-nulls"),
        case(mutation, {"userId": DROP, "externalUserId": "nobody"}, EXTERNAL_USER_NOT_FOUND, "unknown-external-user"),
        case(
            mutation,
            {"userId": DROP, "externalUserId": ""},
            validation("externalUserId must be 1 to 255 characters", "externalUserId"),
            "empty-external-user",
        ),
        case(
            mutation,
            {"userId": DROP, "externalUserId": "x" * 256},
            validation("externalUserId must be 1 to 255 characters", "externalUserId"),
            "long-external-user",
        ),
        case(
            mutation, {"userId": DROP, "externalUserId": "ada\x00"}, control("externalUserId"), "nul-in-external-user"
        ),
        case(mutation, {"organizationId": OTHER_ORG, "externalOrganizationId": "bobs"}, ONE_ORG, "org-by-both-forms"),
        case(mutation, {"externalOrganizationId": "nowhere"}, ORG_NOT_FOUND, "unknown-external-org"),
        case(mutation, {"externalOrganizationId": "bobs"}, ORG_NOT_FOUND, "other-users-org-by-external-id"),
        case(
            mutation, {"externalOrganizationId": "bobs\n"}, control("externalOrganizationId"), "newline-in-external-org"
        ),
        # The agent run (issue 12, point 4): an identifier like agentId.
        *(
            case(
                mutation, {"agentRunId": value}, validation("agentRunId must be 1 to 200 characters", "agentRunId"), id
            )
            for value, id in (("", "empty-run"), ("   ", "blank-run"), ("r" * 201, "long-run"))
        ),
        case(mutation, {"agentRunId": "run\x00-1"}, control("agentRunId"), "nul-in-run"),
        case(mutation, {"agentRunId": "run\n1"}, control("agentRunId"), "newline-in-run"),
        *(
            case(
                mutation,
                {"agentRunId": f"run{char}1"},
                validation(
                    f"agentRunId must contain only printable characters: {code} is an invisible or bidirectional"
                    " formatting character",
                    "agentRunId",
                ),
                f"{code}-in-run",
            )
            for char, code in (("\u202e", "U+202E"), ("\u2066", "U+2066"), ("\u200b", "U+200B"))
        ),
    ]


def hold_id_cases(mutation: str) -> list[Any]:
    return [
        *malformed_id_cases(mutation, "holdId", "Hold", HOLD_NOT_FOUND),
        case(mutation, {"holdId": MISSING_HOLD}, HOLD_NOT_FOUND, "unknown-hold"),
        case(mutation, {"holdId": gid("CreditLot", 1)}, HOLD_NOT_FOUND, "lot-id-as-hold"),
        case(mutation, {"holdId": RELEASED_HOLD}, not_active("RELEASED"), "released-hold"),
        case(mutation, {"holdId": CAPTURED_HOLD}, not_active("CAPTURED"), "captured-hold"),
    ]


def one_of_cases(mutation: str) -> list[Any]:
    """Exactly one of quantity or credits (holdCredits, increaseHold; spendCredits has its own below)."""
    return [
        case(mutation, {"quantity": "1"}, ONE_OF, "quantity-and-credits"),
        case(mutation, {"credits": DROP}, ONE_OF, "neither-quantity-nor-credits"),
        case(mutation, {"credits": None, "quantity": None}, ONE_OF, "both-null"),
        case(
            mutation,
            {"credits": DROP, "quantity": "0"},
            validation("quantity must be positive", "quantity"),
            "zero-quantity",
        ),
        case(
            mutation,
            {"credits": DROP, "quantity": "-2"},
            validation("quantity must be positive", "quantity"),
            "negative-quantity",
        ),
    ]


REFUSALS = [
    # spendCredits
    *key_cases("spendCredits"),
    *amount_cases("spendCredits"),
    *spender_cases("spendCredits"),
    case("spendCredits", {"quantity": "1"}, ONE_OF, "quantity-and-credits"),
    case("spendCredits", {"credits": DROP}, ONE_OF, "neither-quantity-nor-credits"),
    case("spendCredits", {"credits": None, "quantity": None}, ONE_OF, "both-null"),
    case(
        "spendCredits",
        {"credits": DROP, "quantity": "1", "activity": "juggling"},
        validation("Activity 'juggling' is not on the rate card: give credits instead", "activity"),
        "unknown-activity-with-quantity",
    ),
    case(
        "spendCredits",
        {"credits": DROP, "quantity": "0"},
        validation("quantity must be positive", "quantity"),
        "zero-quantity",
    ),
    case(
        "spendCredits",
        {"credits": DROP, "quantity": "-2"},
        validation("quantity must be positive", "quantity"),
        "negative-quantity",
    ),
    case(
        "spendCredits",
        {"credits": "5.000001"},
        {
            "__typename": "InsufficientCredits",
            "message": "Not enough credit available",
            "available": "5",
            "required": "5.000001",
        },
        "more-than-available",
    ),
    # grantCredits
    *key_cases("grantCredits"),
    *amount_cases("grantCredits"),
    case(
        "grantCredits",
        {"expiresAt": "2026-01-15T11:59:59+00:00"},
        validation("expiresAt must be in the future", "expiresAt"),
        "expires-in-the-past",
    ),
    case(
        "grantCredits",
        {"expiresAt": "2026-01-15T12:00:00+00:00"},
        validation("expiresAt must be in the future", "expiresAt"),
        "expires-now",
    ),
    case(
        "grantCredits",
        {"expiresAt": "2026-01-15T13:59:59+02:00"},
        validation("expiresAt must be in the future", "expiresAt"),
        "expires-in-the-past-in-another-zone",
    ),
    case(
        "grantCredits",
        {"reason": "r" * 501},
        validation("reason must be at most 500 characters", "reason"),
        "long-reason",
    ),
    case("grantCredits", {"reason": "promo\x00"}, control("reason"), "nul-in-reason"),
    case("grantCredits", {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
    case(
        "grantCredits",
        {"expiresAt": "2020-01-15T12:00:00"},
        validation("expiresAt must include a time zone, e.g. 2026-01-31T00:00:00Z", "expiresAt"),
        "past-expiry-without-zone",
    ),
    case(
        "grantCredits",
        {"expiresAt": "2030-01-15T12:00:00"},
        validation("expiresAt must include a time zone, e.g. 2026-01-31T00:00:00Z", "expiresAt"),
        "future-expiry-without-zone",
    ),
    case(
        "grantCredits",
        {"credits": "999999999993"},
        validation("This grant would take the balance over the maximum an account may hold", "credits"),
        "balance-over-the-maximum",
    ),
    case("grantCredits", {"accountId": MISSING_ACCOUNT}, ACCOUNT_NOT_FOUND, "unknown-account"),
    *malformed_id_cases("grantCredits", "accountId", "CreditAccount", ACCOUNT_NOT_FOUND),
    case("grantCredits", {"accountId": ACTIVE_HOLD}, ACCOUNT_NOT_FOUND, "hold-id-as-account"),
    case("grantCredits", {"accountId": MISSING_USER}, USER_NOT_FOUND, "unknown-user-id-as-account"),
    case("grantCredits", {"accountId": MISSING_ORG}, not_found("Organization not found"), "unknown-org-id-as-account"),
    case("grantCredits", {"accountId": OTHER_ORG}, NO_POOL, "org-without-pool-as-account"),
    case("grantCredits", {"accountId": DROP}, ONE_ACCOUNT, "no-account"),
    case("grantCredits", {"externalUserId": "ada"}, ONE_ACCOUNT, "account-and-external-user"),
    case(
        "grantCredits",
        {"accountId": DROP, "externalUserId": "ada", "externalOrganizationId": "bobs"},
        ONE_ACCOUNT,
        "external-user-and-external-org",
    ),
    case(
        "grantCredits",
        {"accountId": DROP, "externalUserId": "nobody"},
        EXTERNAL_USER_NOT_FOUND,
        "unknown-external-user",
    ),
    case(
        "grantCredits",
        {"accountId": DROP, "externalOrganizationId": "nowhere"},
        not_found("No organization has externalId 'nowhere'"),
        "unknown-external-org",
    ),
    case("grantCredits", {"accountId": DROP, "externalOrganizationId": "bobs"}, NO_POOL, "external-org-without-pool"),
    case(
        "grantCredits",
        {"accountId": DROP, "externalUserId": " "},
        validation("externalUserId must be 1 to 255 characters", "externalUserId"),
        "blank-external-user",
    ),
    # holdCredits
    *key_cases("holdCredits"),
    *amount_cases("holdCredits"),
    *spender_cases("holdCredits"),
    case("holdCredits", {"timeoutSeconds": 0}, TIMEOUT, "zero-timeout"),
    case("holdCredits", {"timeoutSeconds": -1}, TIMEOUT, "negative-timeout"),
    case("holdCredits", {"timeoutSeconds": 7 * 24 * 3600 + 1}, TIMEOUT, "timeout-over-a-week"),
    case(
        "holdCredits",
        {"credits": "5.000001"},
        {
            "__typename": "InsufficientCredits",
            "message": "Not enough credit available",
            "available": "5",
            "required": "5.000001",
        },
        "more-than-available",
    ),
    *one_of_cases("holdCredits"),
    case(
        "holdCredits",
        {"credits": DROP, "quantity": "1", "activity": "juggling"},
        validation("Activity 'juggling' is not on the rate card: give credits instead", "activity"),
        "unknown-activity-with-quantity",
    ),
    case(
        "holdCredits",
        {"credits": DROP, "quantity": "2500.0005"},
        {
            "__typename": "InsufficientCredits",
            "message": "Not enough credit available",
            "available": "5",
            "required": "5.000001",
        },
        "more-than-available-by-quantity",
    ),
    # captureHold
    *key_cases("captureHold"),
    case("captureHold", {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
    *amount_cases("captureHold"),
    *hold_id_cases("captureHold"),
    case(
        "captureHold",
        {"credits": "3.000001"},
        validation("credits is more than the hold set aside", "credits"),
        "more-than-the-hold",
    ),
    # releaseHold
    *key_cases("releaseHold"),
    case("releaseHold", {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
    *hold_id_cases("releaseHold"),
    # extendHold
    *key_cases("extendHold"),
    case("extendHold", {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
    *hold_id_cases("extendHold"),
    case("extendHold", {"timeoutSeconds": 0}, TIMEOUT, "zero-timeout"),
    case("extendHold", {"timeoutSeconds": -1}, TIMEOUT, "negative-timeout"),
    case("extendHold", {"timeoutSeconds": 7 * 24 * 3600 + 1}, TIMEOUT, "timeout-over-a-week"),
    # increaseHold
    *key_cases("increaseHold"),
    case("increaseHold", {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
    *amount_cases("increaseHold"),
    *hold_id_cases("increaseHold"),
    *one_of_cases("increaseHold"),
    case(
        "increaseHold",
        {"credits": "5.000001"},
        {
            "__typename": "InsufficientCredits",
            "message": "Not enough credit available",
            "available": "5",
            "required": "5.000001",
        },
        "more-than-available",
    ),
]


@pytest.mark.parametrize(("mutation", "changes", "expected"), REFUSALS)
async def test_bad_input_is_refused_with_a_typed_error_and_changes_nothing(
    world: World, mutation: str, changes: dict[str, object], expected: dict[str, object]
) -> None:
    before = await world.state()

    result = await world.run(mutation, input_for(mutation, changes))

    assert result == expected
    assert await world.state() == before


def at_event(expected: dict[str, object], index: int) -> dict[str, object]:
    """A single spend's answer as the batch event ``index`` gets it: a field's path starts at the event."""
    if expected.get("__typename") != "ValidationError":
        return expected
    field = expected.get("field")
    return {**expected, "field": f"events.{index}" + ("" if field is None else f".{field}")}


@pytest.mark.parametrize(("mutation", "changes", "expected"), [c for c in REFUSALS if c.values[0] == "spendCredits"])
async def test_bad_input_of_a_batch_event_is_its_typed_error_and_changes_nothing(
    world: World, mutation: str, changes: dict[str, object], expected: dict[str, object]
) -> None:
    """Every refusal of spendCredits, as the second event of a batch whose first is bad too: each event gets
    what spendCredits would answer it, at its own index, and nothing changes."""
    before = await world.state()
    events = [input_for(mutation, {"credits": "0"}), input_for(mutation, changes)]

    body = await world.api.post(batch_document(), {"input": {"events": events}}, world.service)

    assert "errors" not in body, body
    results = body["data"]["spendCreditsBatch"]["results"]
    assert results == [at_event(POSITIVE, 0), at_event(expected, 1)]
    assert await world.state() == before


async def test_a_grant_up_to_the_maximum_balance_is_accepted(world: World) -> None:
    """The other side of "balance-over-the-maximum": Ada's 8 credits plus this make exactly 10^12."""
    result = await world.run("grantCredits", input_for("grantCredits", {"credits": "999999999992"}))

    assert result == {
        "__typename": "GrantCreditsSuccess",
        "lot": {"kind": "FREE", "amount": "999999999992", "expiresAt": None},
        "balance": {"total": "1000000000000", "held": "3"},
    }


async def test_a_timeout_out_of_the_int_range_is_a_top_level_error(world: World) -> None:
    before = await world.state()

    body = await world.api.post(
        document("holdCredits"), {"input": input_for("holdCredits", {"timeoutSeconds": 2**31})}, world.service
    )

    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Variable '$input' has invalid value at .timeoutSeconds:"
                " Int cannot represent non 32-bit signed integer value: 2147483648",
                "locations": ANY,
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }
    assert await world.state() == before


async def test_an_unknown_kind_is_a_top_level_error(world: World) -> None:
    before = await world.state()

    body = await world.api.post(
        document("grantCredits"), {"input": input_for("grantCredits", {"kind": "BONUS"})}, world.admin
    )

    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Variable '$input' has invalid value at .kind:"
                " Value 'BONUS' does not exist in 'CreditKind' enum.",
                "locations": ANY,
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }
    assert await world.state() == before


# ------------------------------------------------------------------------------------ holds that timed out


@pytest.mark.parametrize("swept", [False, True], ids=["before-the-sweep", "after-the-sweep"])
@pytest.mark.parametrize("mutation", ["captureHold", "releaseHold", "extendHold", "increaseHold"])
async def test_a_timed_out_hold_is_not_active_whether_or_not_the_sweep_ran(
    world: World, mutation: str, swept: bool
) -> None:
    timed = await world.run("holdCredits", input_for("holdCredits", {"timeoutSeconds": 60, "idempotencyKey": "short"}))
    assert timed["__typename"] == "HoldCreditsSuccess"
    world.api.clock.advance(timedelta(seconds=60))
    if swept:
        report = await sweep_once(world.api.app.state.services)
        assert report.released_holds == 1
    before = await world.state()

    result = await world.run(mutation, input_for(mutation, {"holdId": gid("Hold", 4)}))

    assert result == not_active("EXPIRED")
    assert await world.state() == before


# ------------------------------------------------------------------------------------------- invitations

INVITATION_DOCUMENTS = {
    "inviteMember": "InviteMemberInput",
    "acceptInvitation": "AcceptInvitationInput",
    "declineInvitation": "DeclineInvitationInput",
    "revokeInvitation": "RevokeInvitationInput",
}
INVITATION_REFUSAL = """
fragment Refusal on Error {
  message
  ... on ValidationError { field }
  ... on IdempotencyConflict { idempotencyKey }
  ... on InvitationExpired { expiresAt }
  ... on InvitationNotPending { status }
}
"""
CAROLS = gid("Invitation", 1)
"""Bob invited carol@example.com (key invite-carol): pending."""
REVOKED_FOR_ADA = gid("Invitation", 2)
PENDING_FOR_ADA = gid("Invitation", 3)
EXPIRED_FOR_ADA = gid("Invitation", 4)
EXPIRED_AT = "2026-01-14T12:00:00+00:00"


def invitation_document(mutation: str) -> str:
    success = f"{mutation[0].upper()}{mutation[1:]}Success"
    return (
        f"mutation Run($input: {INVITATION_DOCUMENTS[mutation]}!) {{\n"
        f"  {mutation}(input: $input) {{ __typename ... on {success} {{ invitation {{ email roles status }} }}"
        " ...Refusal }\n}\n" + INVITATION_REFUSAL
    )


@dataclass
class Invitations:
    """Bob (OWNER of Organization 1) invited Carol (pending, Invitation 1) and Ada (Invitation 2, revoked; then
    Invitation 3, pending); Invitation 4 to Ada expired yesterday. Ada has no account in the organization."""

    world: World

    def token_for(self, mutation: str) -> str:
        return self.world.ada if mutation in ("acceptInvitation", "declineInvitation") else self.world.bob

    async def run(self, mutation: str, input: dict[str, object]) -> Any:
        body = await self.world.api.post(invitation_document(mutation), {"input": input}, self.token_for(mutation))
        assert "errors" not in body, body
        return body["data"][mutation]

    async def state(self) -> tuple[Any, ...]:
        memberships = sorted((m.organization_id, m.user_id, m.roles) for m in await Membership.all())
        invitations = [
            (i.id, i.organization_id, i.email, i.roles, i.status, i.expires_at, i.closed_at, i.idempotency_key)
            for i in await Invitation.all().order_by("id")
        ]
        return memberships, invitations, await self.world.state()


@pytest.fixture
async def invitations(world: World) -> Invitations:
    w = Invitations(world)
    carol: dict[str, object] = {"organizationId": OTHER_ORG, "email": "carol@example.com", "roles": ["MEMBER"]}
    ada: dict[str, object] = {"organizationId": OTHER_ORG, "email": "ada@example.com", "roles": ["BILLING"]}
    assert (await w.run("inviteMember", {**carol, "idempotencyKey": "invite-carol"}))["invitation"]["email"] == (
        "carol@example.com"
    )
    assert (await w.run("inviteMember", ada))["__typename"] == "InviteMemberSuccess"
    assert (await w.run("revokeInvitation", {"invitationId": REVOKED_FOR_ADA}))["invitation"]["status"] == "REVOKED"
    assert (await w.run("inviteMember", ada))["__typename"] == "InviteMemberSuccess"
    now = world.api.clock.now()
    expired = await Invitation.create(
        organization_id=1,
        email="ada@example.com",
        roles="MEMBER",
        status=InvitationStatus.PENDING,
        idempotency_scope="user:2",
        request_hash="-",
        created_at=now - timedelta(days=8),
        expires_at=now - timedelta(days=1),
    )
    assert gid("Invitation", expired.id) == EXPIRED_FOR_ADA
    return w


VALID_INVITATIONS: dict[str, dict[str, object]] = {
    "inviteMember": {"organizationId": OTHER_ORG, "email": "erin@example.com", "roles": ["MEMBER"]},
    "acceptInvitation": {"invitationId": PENDING_FOR_ADA},
    "declineInvitation": {"invitationId": PENDING_FOR_ADA},
    "revokeInvitation": {"invitationId": CAROLS},
}
VALID_INVITATION_RESULTS = {
    "inviteMember": {
        "__typename": "InviteMemberSuccess",
        "invitation": {"email": "erin@example.com", "roles": ["MEMBER"], "status": "PENDING"},
    },
    "acceptInvitation": {
        "__typename": "AcceptInvitationSuccess",
        "invitation": {"email": "ada@example.com", "roles": ["BILLING"], "status": "ACCEPTED"},
    },
    "declineInvitation": {
        "__typename": "DeclineInvitationSuccess",
        "invitation": {"email": "ada@example.com", "roles": ["BILLING"], "status": "DECLINED"},
    },
    "revokeInvitation": {
        "__typename": "RevokeInvitationSuccess",
        "invitation": {"email": "carol@example.com", "roles": ["MEMBER"], "status": "REVOKED"},
    },
}


@pytest.mark.parametrize("mutation", list(VALID_INVITATIONS))
async def test_the_valid_invitation_input_that_the_refusals_start_from_succeeds(
    invitations: Invitations, mutation: str
) -> None:
    assert await invitations.run(mutation, VALID_INVITATIONS[mutation]) == VALID_INVITATION_RESULTS[mutation]


INVITATION_BOUNDARIES = [
    pytest.param({"email": "e" * 64 + "@" + "d" * 185 + ".com"}, id="254-char-email"),
    pytest.param({"email": "  Erin@Example.COM "}, id="email-with-case-and-spaces-around"),
    pytest.param({"email": "ërin@exämple.com"}, id="non-ascii-email"),
    pytest.param({"roles": ["OWNER", "BILLING", "MEMBER", "OWNER"]}, id="every-role-repeated"),
    pytest.param({"idempotencyKey": "k" * 255}, id="255-char-key"),
    pytest.param({"idempotencyKey": None}, id="null-key"),
]


@pytest.mark.parametrize("changes", INVITATION_BOUNDARIES)
async def test_invitation_inputs_at_the_limits_are_accepted(
    invitations: Invitations, changes: dict[str, object]
) -> None:
    result = await invitations.run("inviteMember", {**VALID_INVITATIONS["inviteMember"], **changes})

    assert result["__typename"] == "InviteMemberSuccess", result


EMAIL_LENGTH = validation("email must be 1 to 254 characters", "email")
NOT_AN_EMAIL = validation("email must be an email address such as ada@example.com", "email")
INVITATION_NOT_FOUND = not_found("Invitation not found")
EXPIRED: dict[str, object] = {
    "__typename": "InvitationExpired",
    "message": "This invitation has expired: ask for a new one",
    "expiresAt": EXPIRED_AT,
}


def not_pending(status: str) -> dict[str, object]:
    return {
        "__typename": "InvitationNotPending",
        "message": f"This invitation was {status.lower()} already",
        "status": status,
    }


def invitation_id_cases(mutation: str) -> list[Any]:
    return [
        *malformed_id_cases(mutation, "invitationId", "Invitation", INVITATION_NOT_FOUND),
        case(mutation, {"invitationId": gid("Invitation", 999)}, INVITATION_NOT_FOUND, "unknown-invitation"),
        case(mutation, {"invitationId": gid("Hold", 3)}, INVITATION_NOT_FOUND, "hold-id-as-invitation"),
        case(mutation, {"invitationId": EXPIRED_FOR_ADA}, EXPIRED, "expired-invitation"),
        case(mutation, {"invitationId": REVOKED_FOR_ADA}, not_pending("REVOKED"), "revoked-invitation"),
    ]


INVITATION_REFUSALS = [
    case("inviteMember", {"email": ""}, EMAIL_LENGTH, "empty-email"),
    case("inviteMember", {"email": "   "}, EMAIL_LENGTH, "blank-email"),
    case("inviteMember", {"email": "e" * 64 + "@" + "d" * 186 + ".com"}, EMAIL_LENGTH, "255-char-email"),
    case("inviteMember", {"email": "erin"}, NOT_AN_EMAIL, "no-at-sign"),
    case("inviteMember", {"email": "erin@"}, NOT_AN_EMAIL, "no-domain"),
    case("inviteMember", {"email": "@example.com"}, NOT_AN_EMAIL, "no-local-part"),
    case("inviteMember", {"email": "erin@@example.com"}, NOT_AN_EMAIL, "two-at-signs"),
    case("inviteMember", {"email": "erin smith@example.com"}, NOT_AN_EMAIL, "space-inside"),
    case("inviteMember", {"email": "erin@exam\x00ple.com"}, control("email"), "nul-in-email"),
    case("inviteMember", {"email": "erin\n@example.com"}, control("email"), "newline-in-email"),
    case("inviteMember", {"roles": []}, validation("Give at least one role", "roles"), "no-roles"),
    *key_cases("inviteMember"),
    case("inviteMember", {"idempotencyKey": "key\x001"}, control("idempotencyKey"), "nul-in-key"),
    case(
        "inviteMember",
        {"idempotencyKey": "invite-carol"},
        {
            "__typename": "IdempotencyConflict",
            "message": "This idempotencyKey was already used with a different request",
            "idempotencyKey": "invite-carol",
        },
        "key-of-another-invitation",
    ),
    case(
        "inviteMember",
        {"email": "bob@example.com"},
        {"__typename": "AlreadyMember", "message": "That user is a member already"},
        "a-member",
    ),
    case(
        "inviteMember",
        {"email": "Carol@Example.com"},
        {
            "__typename": "AlreadyInvited",
            "message": "That email has a pending invitation to this organization: revoke it to invite again",
        },
        "pending-invitation-in-other-case",
    ),
    case("inviteMember", {"organizationId": MISSING_ORG}, not_found("Organization not found"), "unknown-org"),
    case("inviteMember", {"organizationId": "not-an-id"}, not_found("Organization not found"), "malformed-org"),
    case("inviteMember", {"organizationId": USER}, not_found("Organization not found"), "user-id-as-org"),
    *invitation_id_cases("acceptInvitation"),
    case("acceptInvitation", {"invitationId": CAROLS}, INVITATION_NOT_FOUND, "someone-elses-invitation"),
    *invitation_id_cases("declineInvitation"),
    case("declineInvitation", {"invitationId": CAROLS}, INVITATION_NOT_FOUND, "someone-elses-invitation"),
    *invitation_id_cases("revokeInvitation"),
]


@pytest.mark.parametrize(("mutation", "changes", "expected"), INVITATION_REFUSALS)
async def test_bad_invitation_input_is_refused_with_a_typed_error_and_changes_nothing(
    invitations: Invitations, mutation: str, changes: dict[str, object], expected: dict[str, object]
) -> None:
    before = await invitations.state()

    result = await invitations.run(mutation, {**VALID_INVITATIONS[mutation], **changes})

    assert result == expected
    assert await invitations.state() == before


async def test_an_invitation_replayed_with_its_key_is_the_same_invitation(invitations: Invitations) -> None:
    carol = {"organizationId": OTHER_ORG, "email": "carol@example.com", "roles": ["MEMBER"]}
    before = await invitations.state()

    replay = await invitations.run("inviteMember", {**carol, "idempotencyKey": "invite-carol"})

    assert replay == {
        "__typename": "InviteMemberSuccess",
        "invitation": {"email": "carol@example.com", "roles": ["MEMBER"], "status": "PENDING"},
    }
    assert await invitations.state() == before


# ------------------------------------------------------------------------------------- createAgentToken

AGENT_TOKEN = """
mutation Mint($input: CreateAgentTokenInput!) {
  createAgentToken(input: $input) {
    __typename ... on CreateAgentTokenSuccess { apiToken { kind agentId } } ... on Error { message }
    ... on ValidationError { field }
  }
}
"""
VALID_AGENT_TOKEN: dict[str, object] = {
    "name": "bot key",
    "agentId": "bot",
    "activities": ["answer"],
    "spendLimit": {"amount": "2", "window": "DAY"},
}


@pytest.fixture
async def agent_minter(api: Api) -> str:
    _, token = await api.user("minter@example.com")
    return token


async def test_the_valid_agent_token_input_succeeds(api: Api, agent_minter: str) -> None:
    body = await api.data(AGENT_TOKEN, {"input": VALID_AGENT_TOKEN}, agent_minter)
    assert body["createAgentToken"] == {
        "__typename": "CreateAgentTokenSuccess",
        "apiToken": {"kind": "SERVICE", "agentId": "bot"},
    }


def _cap(**changes: object) -> dict[str, object]:
    return {"spendLimit": {"amount": "2", "window": "DAY", **changes}}


BAD_AGENT_TOKENS = [
    pytest.param({"name": ""}, "name must be 1 to 200 characters", "name", id="name-empty"),
    pytest.param({"agentId": "a\u200bb"}, ANY, "agentId", id="agent-invisible"),
    pytest.param({"agentId": "x" * 201}, "agentId must be 1 to 200 characters", "agentId", id="agent-long"),
    pytest.param({"activities": []}, "activities: 1 to 50, or null for any", "activities", id="activities-none"),
    pytest.param(
        {"activities": [f"a{n}" for n in range(51)]}, "activities: 1 to 50, or null for any", "activities", id="51"
    ),
    pytest.param(
        {"activities": ["web search"]},
        "activities: 'web search' has a space; activities have none",
        "activities",
        id="activity-space",
    ),
    pytest.param(
        {"activities": ["x" * 101]}, "activities must be 1 to 100 characters", "activities", id="activity-long"
    ),
    pytest.param(
        {"activities": [f"{n:02d}" + "x" * 98 for n in range(21)]},
        "activities: at most 2000 characters in all",
        "activities",
        id="activities-long",
    ),
    pytest.param(_cap(amount="0"), "spendLimit.amount must be positive", "spendLimit.amount", id="cap-zero"),
    pytest.param(
        _cap(window="ROLLING_MINUTES"),
        "spendLimit.window: ROLLING_MINUTES is for velocity breakers; a cap takes DAY, WEEK, MONTH,"
        " ROLLING_HOURS or TOTAL",
        "spendLimit.window",
        id="cap-velocity-window",
    ),
    pytest.param(
        _cap(windowLength=2),
        "spendLimit.windowLength must be 1 to 744 hours for ROLLING_HOURS, else 1",
        "spendLimit.windowLength",
        id="cap-day-length",
    ),
    pytest.param(
        _cap(window="ROLLING_HOURS", windowLength=745),
        "spendLimit.windowLength must be 1 to 744 hours for ROLLING_HOURS, else 1",
        "spendLimit.windowLength",
        id="cap-rolling-long",
    ),
    pytest.param(
        _cap(timeZone="Mars/Olympus"),
        "spendLimit.timeZone: unknown time zone 'Mars/Olympus'",
        "spendLimit.timeZone",
        id="cap-zone",
    ),
    pytest.param(
        _cap(warnAtPercent=101), "spendLimit.warnAtPercent must be 1 to 100", "spendLimit.warnAtPercent", id="warn"
    ),
    pytest.param(
        _cap(maxCreditsPerRun="0"),
        "spendLimit.maxCreditsPerRun must be positive",
        "spendLimit.maxCreditsPerRun",
        id="cap-run-zero",
    ),
    pytest.param({"expiresAt": "2026-01-01T00:00:00Z"}, "expiresAt must be in the future", "expiresAt", id="expired"),
    pytest.param(
        {"idleTimeoutSeconds": 10},
        "idleTimeoutSeconds must be between 60 and 31622400",
        "idleTimeoutSeconds",
        id="idle-short",
    ),
    pytest.param(
        {"accountId": ACCOUNT, "externalUserId": "x"},
        "Give at most one of accountId, externalUserId, externalOrganizationId",
        "accountId",
        id="two-accounts",
    ),
]


@pytest.mark.parametrize(("changes", "message", "field"), BAD_AGENT_TOKENS)
async def test_bad_agent_token_input_is_refused_and_changes_nothing(
    api: Api, agent_minter: str, changes: dict[str, object], message: object, field: str
) -> None:
    before = await snapshot()

    body = await api.data(AGENT_TOKEN, {"input": {**VALID_AGENT_TOKEN, **changes}}, agent_minter)

    assert body["createAgentToken"] == {"__typename": "ValidationError", "message": message, "field": field}
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------- spend limits

LIMIT_DOCUMENTS = {
    "setSpendLimit": ("SetSpendLimitInput", "created limit { scope kind window windowLength timeZone amount agentId }"),
    "removeSpendLimit": ("RemoveSpendLimitInput", "limit { agentId amount }"),
    "resumeAgent": ("ResumeAgentInput", "limits { agentId kind paused }"),
    "setBalanceAlerts": ("SetBalanceAlertsInput", "alertLevels { levels isDefault }"),
}
POOL = gid("Organization", 1)
"""Bob's organization, given a pool by the ``spend_limits`` fixture: accountId takes an Organization ID."""
DAILY_CAP = gid("SpendLimit", 1)
"""A daily cap of 10 on agent-9 in the pool."""
BREAKER = gid("SpendLimit", 2)
"""A tripped velocity limit of 5 a minute on agent-1 in the pool."""


def limit_document(mutation: str) -> str:
    input_type, selection = LIMIT_DOCUMENTS[mutation]
    success = f"{mutation[0].upper()}{mutation[1:]}Success"
    return (
        f"mutation Run($input: {input_type}!) {{\n"
        f"  {mutation}(input: $input) {{ __typename ... on {success} {{ {selection} }} ...Refusal }}\n}}\n" + REFUSAL
    )


@dataclass
class SpendLimits:
    world: World

    async def run(self, mutation: str, input: dict[str, object], token: str | None = None) -> Any:
        body = await self.world.api.post(limit_document(mutation), {"input": input}, token or self.world.admin)
        assert "errors" not in body, body
        return body["data"][mutation]


@pytest.fixture
async def spend_limits(world: World) -> SpendLimits:
    w = SpendLimits(world)
    await organizations.enable_pool(1, world.api.clock.now())
    daily = await w.run(
        "setSpendLimit", {"accountId": POOL, "scope": "AGENT", "agentId": "agent-9", "window": "DAY", "amount": "10"}
    )
    breaker = await w.run(
        "setSpendLimit",
        {"accountId": POOL, "scope": "AGENT", "agentId": "agent-1", "kind": "VELOCITY", "window": "ROLLING_MINUTES",
         "windowLength": 1, "amount": "5"},
    )  # fmt: skip
    assert (daily["created"], breaker["created"]) == (True, True)
    await SpendLimitRow.filter(id=2).update(paused=True, tripped_at=world.api.clock.now())
    return w


VALID_LIMITS: dict[str, dict[str, object]] = {
    "setSpendLimit": {"accountId": POOL, "scope": "AGENT", "agentId": "agent-1", "window": "DAY", "amount": "5"},
    "removeSpendLimit": {"limitId": DAILY_CAP},
    "resumeAgent": {"accountId": POOL, "agentId": "agent-1"},
}
VALID_LIMIT_RESULTS = {
    "setSpendLimit": {
        "__typename": "SetSpendLimitSuccess",
        "created": True,
        "limit": {
            "scope": "AGENT",
            "kind": "CAP",
            "window": "DAY",
            "windowLength": 1,
            "timeZone": "UTC",
            "amount": "5",
            "agentId": "agent-1",
        },
    },
    "removeSpendLimit": {"__typename": "RemoveSpendLimitSuccess", "limit": {"agentId": "agent-9", "amount": "10"}},
    "resumeAgent": {
        "__typename": "ResumeAgentSuccess",
        "limits": [{"agentId": "agent-1", "kind": "VELOCITY", "paused": False}],
    },
}


@pytest.mark.parametrize("mutation", list(VALID_LIMITS))
async def test_the_valid_spend_limit_input_that_the_refusals_start_from_succeeds(
    spend_limits: SpendLimits, mutation: str
) -> None:
    assert await spend_limits.run(mutation, VALID_LIMITS[mutation]) == VALID_LIMIT_RESULTS[mutation]


LIMIT_BOUNDARIES = [
    pytest.param({"window": "ROLLING_HOURS", "windowLength": 744}, id="744-hours"),
    pytest.param({"window": "ROLLING_HOURS", "windowLength": 1}, id="1-hour"),
    pytest.param({"kind": "VELOCITY", "window": "ROLLING_MINUTES", "windowLength": 1440}, id="1440-minutes"),
    pytest.param({"kind": "VELOCITY", "window": "ROLLING_MINUTES", "windowLength": 2, "cooldownSeconds": 2678400},
                 id="31-day-cooldown"),
    pytest.param({"windowLength": 1, "timeZone": "Pacific/Chatham"}, id="day-of-length-1-in-chatham"),
    pytest.param({"warnAtPercent": 100, "maxCreditsPerRun": "0.000001", "amount": "0.000001"}, id="smallest"),
    pytest.param({"warnAtPercent": 1, "action": "NOTIFY", "window": "TOTAL"}, id="total-notify-warn-at-1"),
    pytest.param({"agentId": "a" * 200}, id="200-char-agent"),
]  # fmt: skip


@pytest.mark.parametrize("changes", LIMIT_BOUNDARIES)
async def test_spend_limit_inputs_at_the_limits_are_accepted(
    spend_limits: SpendLimits, changes: dict[str, object]
) -> None:
    result = await spend_limits.run("setSpendLimit", {**VALID_LIMITS["setSpendLimit"], **changes})

    assert result["__typename"] == "SetSpendLimitSuccess", result


HOURS = validation("ROLLING_HOURS needs windowLength: 1 to 744 hours", "windowLength")
MINUTES = validation("ROLLING_MINUTES needs windowLength: 1 to 1440 minutes", "windowLength")
ZONE = validation("timeZone must be an IANA time zone such as Europe/Paris", "timeZone")
WARN = validation("warnAtPercent must be 1 to 100", "warnAtPercent")
COOLDOWN = validation("cooldownSeconds must be 1 to 2678400", "cooldownSeconds")
LIMIT_NOT_FOUND = not_found("Spend limit not found")
VELOCITY = {"kind": "VELOCITY", "window": "ROLLING_MINUTES", "windowLength": 1}
RESUME_ONE_OF = validation("Give limitId, or agentId (with the account unless it is your own)", "limitId")


def limit_id_cases(mutation: str) -> list[Any]:
    alone = {"accountId": None, "agentId": None} if mutation == "resumeAgent" else {}
    return [
        *(
            pytest.param(*param.values[:1], {**alone, **param.values[1]}, *param.values[2:], id=param.id)
            for param in malformed_id_cases(mutation, "limitId", "SpendLimit", LIMIT_NOT_FOUND)
        ),
        case(mutation, {**alone, "limitId": gid("SpendLimit", 999)}, LIMIT_NOT_FOUND, "unknown-limit"),
        case(mutation, {**alone, "limitId": gid("Hold", 1)}, LIMIT_NOT_FOUND, "hold-id-as-limit"),
    ]


LIMIT_REFUSALS = [
    case("setSpendLimit", {"amount": "0"}, validation("amount must be positive", "amount"), "zero-amount"),
    case("setSpendLimit", {"amount": "-1"}, validation("amount must be positive", "amount"), "negative-amount"),
    case("setSpendLimit", {"window": "ROLLING_HOURS"}, HOURS, "rolling-hours-without-length"),
    case("setSpendLimit", {"window": "ROLLING_HOURS", "windowLength": 0}, HOURS, "0-hours"),
    case("setSpendLimit", {"window": "ROLLING_HOURS", "windowLength": 745}, HOURS, "745-hours"),
    case("setSpendLimit", {**VELOCITY, "windowLength": 1441}, MINUTES, "1441-minutes"),
    case("setSpendLimit", {**VELOCITY, "windowLength": None}, MINUTES, "rolling-minutes-without-length"),
    case(
        "setSpendLimit",
        {"window": "ROLLING_MINUTES", "windowLength": 5},
        validation("ROLLING_MINUTES is for VELOCITY limits: a CAP counts hours or more", "window"),
        "cap-by-the-minute",
    ),
    case(
        "setSpendLimit",
        {"kind": "VELOCITY"},
        validation("A VELOCITY limit's window is ROLLING_MINUTES", "window"),
        "velocity-by-the-day",
    ),
    case(
        "setSpendLimit",
        {"windowLength": 2},
        validation("windowLength is for rolling windows only: DAY has none", "windowLength"),
        "day-of-length-2",
    ),
    case("setSpendLimit", {"timeZone": "Mars/Olympus_Mons"}, ZONE, "unknown-zone"),
    case("setSpendLimit", {"timeZone": ""}, ZONE, "empty-zone"),
    case("setSpendLimit", {"timeZone": "../../etc/passwd"}, ZONE, "path-as-zone"),
    case("setSpendLimit", {"timeZone": "Europe/Paris\x00"}, ZONE, "nul-in-zone"),
    case(
        "setSpendLimit",
        {"window": "TOTAL", "timeZone": "UTC"},
        validation("timeZone is for DAY, WEEK and MONTH only", "timeZone"),
        "zone-of-total",
    ),
    case("setSpendLimit", {"warnAtPercent": 0}, WARN, "warn-at-0"),
    case("setSpendLimit", {"warnAtPercent": 101}, WARN, "warn-at-101"),
    case(
        "setSpendLimit",
        {"maxCreditsPerRun": "0"},
        validation("maxCreditsPerRun must be positive", "maxCreditsPerRun"),
        "zero-per-run",
    ),
    case(
        "setSpendLimit",
        {**VELOCITY, "maxCreditsPerRun": "1"},
        validation("maxCreditsPerRun is for CAP limits only", "maxCreditsPerRun"),
        "per-run-on-velocity",
    ),
    case(
        "setSpendLimit",
        {"cooldownSeconds": 60},
        validation("cooldownSeconds is for VELOCITY limits only", "cooldownSeconds"),
        "cooldown-on-cap",
    ),
    case("setSpendLimit", {**VELOCITY, "cooldownSeconds": 0}, COOLDOWN, "0-second-cooldown"),
    case("setSpendLimit", {**VELOCITY, "cooldownSeconds": 2678401}, COOLDOWN, "cooldown-past-31-days"),
    case("setSpendLimit", {"agentId": None}, validation("Scope AGENT needs agentId", "agentId"), "agent-without-id"),
    case("setSpendLimit", {"agentId": ""}, validation("agentId must be 1 to 200 characters", "agentId"), "empty-agent"),
    case("setSpendLimit", {"agentId": "a\nb"}, control("agentId"), "newline-in-agent"),
    case(
        "setSpendLimit",
        {"scope": "ACCOUNT"},
        validation("agentId is for scope AGENT only", "agentId"),
        "agent-id-on-account-scope",
    ),
    case(
        "setSpendLimit",
        {"scope": "AGENT", "tokenId": gid("ApiToken", 1)},
        validation("tokenId is for scope TOKEN only", "tokenId"),
        "token-id-on-agent-scope",
    ),
    case(
        "setSpendLimit",
        {"scope": "MEMBER", "agentId": None},
        validation("Scope MEMBER needs memberId or externalMemberId", "memberId"),
        "member-without-id",
    ),
    case(
        "setSpendLimit",
        {"scope": "MEMBER", "agentId": None, "memberId": USER},
        not_found("Member not found in the pool's organization"),
        "not-a-member",
    ),
    case(
        "setSpendLimit",
        {"scope": "MEMBER", "agentId": None, "externalMemberId": "nobody"},
        not_found("Member not found in the pool's organization"),
        "unknown-external-member",
    ),
    case(
        "setSpendLimit",
        {"scope": "MEMBER", "agentId": None, "memberId": OTHER_USER, "externalMemberId": "ada"},
        validation("Give exactly one of memberId or externalMemberId", "memberId"),
        "both-member-forms",
    ),
    case(
        "setSpendLimit",
        {"scope": "MEMBER", "agentId": None, "memberId": OTHER_USER, "accountId": USER},
        validation("Scope MEMBER is for an organization's pool: a user's own account takes scope ACCOUNT", "scope"),
        "member-scope-on-a-users-account",
    ),
    case(
        "setSpendLimit",
        {"scope": "TOKEN", "agentId": None},
        validation("Scope TOKEN needs tokenId", "tokenId"),
        "token-without-id",
    ),
    case(
        "setSpendLimit",
        {"scope": "TOKEN", "agentId": None, "tokenId": gid("ApiToken", 999)},
        not_found("Token not found"),
        "unknown-token",
    ),
    case("setSpendLimit", {"accountId": MISSING_ACCOUNT}, ACCOUNT_NOT_FOUND, "unknown-account"),
    case("setSpendLimit", {"accountId": "not-an-id"}, ACCOUNT_NOT_FOUND, "malformed-account"),
    case("setSpendLimit", {"accountId": MISSING_ORG}, not_found("Organization not found"), "unknown-organization"),
    case(
        "setSpendLimit",
        {"externalUserId": "ada"},
        validation("Give at most one of accountId, externalUserId, externalOrganizationId", "accountId"),
        "two-account-forms",
    ),
    case("setSpendLimit", {"accountId": None, "externalUserId": "nobody"}, EXTERNAL_USER_NOT_FOUND, "unknown-external"),
    case(
        "setSpendLimit",
        {"accountId": None},
        validation("Give accountId, externalUserId or externalOrganizationId: this token has no account", "accountId"),
        "admin-without-account",
    ),
    *limit_id_cases("removeSpendLimit"),
    *limit_id_cases("resumeAgent"),
    case("resumeAgent", {"accountId": None, "agentId": None, "limitId": DAILY_CAP},
         validation("Only a VELOCITY limit pauses: this one is a CAP", "limitId"), "cap-limit"),
    case("resumeAgent", {"agentId": None}, RESUME_ONE_OF, "neither-limit-nor-agent"),
    case("resumeAgent", {"limitId": BREAKER}, RESUME_ONE_OF, "limit-and-agent"),
    case("resumeAgent", {"agentId": None, "limitId": BREAKER}, RESUME_ONE_OF, "limit-and-account"),
    case("resumeAgent", {"agentId": ""}, validation("agentId must be 1 to 200 characters", "agentId"), "empty-agent"),
    case(
        "resumeAgent",
        {"agentId": "agent-9"},
        not_found("Agent 'agent-9' has no velocity limit on this account"),
        "agent-without-breaker",
    ),
    case("resumeAgent", {"accountId": MISSING_ACCOUNT}, ACCOUNT_NOT_FOUND, "unknown-account"),
]  # fmt: skip


@pytest.mark.parametrize(("mutation", "changes", "expected"), LIMIT_REFUSALS)
async def test_bad_spend_limit_input_is_refused_with_a_typed_error_and_changes_nothing(
    spend_limits: SpendLimits, mutation: str, changes: dict[str, object], expected: dict[str, object]
) -> None:
    before = await snapshot()

    # A null is sent as such: to these inputs it is the same as leaving the field out.
    result = await spend_limits.run(mutation, {**VALID_LIMITS[mutation], **changes})

    assert result == expected
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------- balance alerts

VALID_ALERTS: dict[str, object] = {"accountId": POOL, "levels": ["5", "0.5"]}
LEVELS_NEEDED = validation("Give levels (an empty list: none) or useDefault: true", "levels")
POSITIVE_LEVELS = validation("Every alert level must be more than 0", "levels")
ALERT_REFUSALS = [
    case("setBalanceAlerts", {"levels": None}, LEVELS_NEEDED, "no-levels"),
    case("setBalanceAlerts", {"useDefault": True},
         validation("Give either levels or useDefault: true, not both", "levels"), "levels-and-default"),
    case("setBalanceAlerts", {"levels": ["0"]}, POSITIVE_LEVELS, "zero-level"),
    case("setBalanceAlerts", {"levels": ["5", "-0.000001"]}, POSITIVE_LEVELS, "negative-level"),
    case("setBalanceAlerts", {"levels": ["5", "5.000000"]}, validation("Alert levels must be distinct", "levels"),
         "same-level-twice"),
    case("setBalanceAlerts", {"levels": ["1", "2", "3", "4", "5", "6"]}, validation("At most 5 alert levels", "levels"),
         "six-levels"),
    case("setBalanceAlerts", {"accountId": MISSING_ACCOUNT}, ACCOUNT_NOT_FOUND, "unknown-account"),
    case("setBalanceAlerts", {"accountId": "not-an-id"}, ACCOUNT_NOT_FOUND, "malformed-account"),
    case("setBalanceAlerts", {"accountId": MISSING_ORG}, not_found("Organization not found"), "unknown-organization"),
    case("setBalanceAlerts", {"externalUserId": "ada"},
         validation("Give at most one of accountId, externalUserId, externalOrganizationId", "accountId"),
         "two-account-forms"),
    case("setBalanceAlerts", {"accountId": None},
         validation("Give accountId, externalUserId or externalOrganizationId: this token has no account", "accountId"),
         "admin-without-account"),
]  # fmt: skip


async def test_the_valid_alert_levels_that_the_refusals_start_from_succeed(spend_limits: SpendLimits) -> None:
    assert await spend_limits.run("setBalanceAlerts", VALID_ALERTS) == {
        "__typename": "SetBalanceAlertsSuccess",
        "alertLevels": {"levels": ["5", "0.5"], "isDefault": False},
    }
    assert await spend_limits.run("setBalanceAlerts", {"accountId": POOL, "levels": []}) == {
        "__typename": "SetBalanceAlertsSuccess",
        "alertLevels": {"levels": [], "isDefault": False},
    }


@pytest.mark.parametrize(("mutation", "changes", "expected"), ALERT_REFUSALS)
async def test_bad_alert_levels_are_refused_with_a_typed_error_and_change_nothing(
    spend_limits: SpendLimits, mutation: str, changes: dict[str, object], expected: dict[str, object]
) -> None:
    before = await snapshot()

    result = await spend_limits.run(mutation, {**VALID_ALERTS, **changes})

    assert result == expected
    assert changed(before, await snapshot()) == set()


# --------------------------------------------------------------------------------- webhook endpoints (issue 13)

WEBHOOK_DOCUMENTS = {
    "createWebhookEndpoint": ("CreateWebhookEndpointInput", "secret endpoint { url eventTypes organizationId }"),
    "updateWebhookEndpoint": ("UpdateWebhookEndpointInput", "endpoint { url eventTypes status }"),
    "rotateWebhookSecret": ("RotateWebhookSecretInput", "endpoint { url }"),
    "disableWebhookEndpoint": ("DisableWebhookEndpointInput", "endpoint { status }"),
    "deleteWebhookEndpoint": ("DeleteWebhookEndpointInput", "endpoint { url }"),
    "redeliverWebhookEvent": ("RedeliverWebhookEventInput", "delivery { status }"),
}
ENDPOINT = gid("WebhookEndpoint", 1)
"""https://hooks.example.com/low, for balance.low only; the world's payment.succeeded event is not for it."""
OPEN_ENDPOINT = gid("WebhookEndpoint", 2)
"""https://hooks.example.com/all, DISABLED by an admin."""
HOOK_URL = "https://hooks.example.com/in"


def webhook_document(mutation: str) -> str:
    input_type, selection = WEBHOOK_DOCUMENTS[mutation]
    success = f"{mutation[0].upper()}{mutation[1:]}Success"
    return (
        f"mutation Run($input: {input_type}!) {{\n"
        f"  {mutation}(input: $input) {{ __typename ... on {success} {{ {selection} }} ...Refusal }}\n}}\n" + REFUSAL
    )


@dataclass
class Webhooks:
    world: World
    low_event: str
    paid_event: str

    async def run(self, mutation: str, input: dict[str, object]) -> Any:
        body = await self.world.api.post(webhook_document(mutation), {"input": input}, self.world.admin)
        assert "errors" not in body, body
        return body["data"][mutation]


@pytest.fixture
async def webhooks(world: World) -> Webhooks:
    now = world.api.clock.now()
    low = await WebhookEndpoint.create(
        url="https://hooks.example.com/low",
        event_types="balance.low",
        secret=new_secret(),
        created_at=now,
        updated_at=now,
    )
    off = await WebhookEndpoint.create(
        url="https://hooks.example.com/all", secret=new_secret(), status=WebhookEndpointStatus.DISABLED,
        disabled_reason="Disabled by an admin", disabled_at=now, created_at=now, updated_at=now,
    )  # fmt: skip
    assert (gid("WebhookEndpoint", low.id), gid("WebhookEndpoint", off.id)) == (ENDPOINT, OPEN_ENDPOINT)
    low_event = await webhook_event(now, type=EventType.BALANCE_LOW)
    paid = await webhook_event(now, type=EventType.PAYMENT_SUCCEEDED)
    return Webhooks(world, low_event.public_id, paid.public_id)


def valid_webhook_input(mutation: str, hooks: Webhooks) -> dict[str, object]:
    inputs: dict[str, dict[str, object]] = {
        "createWebhookEndpoint": {"url": HOOK_URL, "eventTypes": ["balance.low"], "organizationId": OTHER_ORG},
        "updateWebhookEndpoint": {"endpointId": ENDPOINT, "url": HOOK_URL, "eventTypes": []},
        "rotateWebhookSecret": {"endpointId": ENDPOINT},
        "disableWebhookEndpoint": {"endpointId": ENDPOINT},
        "deleteWebhookEndpoint": {"endpointId": ENDPOINT},
        "redeliverWebhookEvent": {"endpointId": ENDPOINT, "eventId": hooks.low_event},
    }
    return inputs[mutation]


VALID_WEBHOOK_RESULTS = {
    "createWebhookEndpoint": {
        "__typename": "CreateWebhookEndpointSuccess",
        "secret": ANY,
        "endpoint": {"url": HOOK_URL, "eventTypes": ["balance.low"], "organizationId": OTHER_ORG},
    },
    "updateWebhookEndpoint": {
        "__typename": "UpdateWebhookEndpointSuccess",
        "endpoint": {"url": HOOK_URL, "eventTypes": [], "status": "ENABLED"},
    },
    "rotateWebhookSecret": {
        "__typename": "RotateWebhookSecretSuccess",
        "endpoint": {"url": "https://hooks.example.com/low"},
    },
    "disableWebhookEndpoint": {"__typename": "DisableWebhookEndpointSuccess", "endpoint": {"status": "DISABLED"}},
    "deleteWebhookEndpoint": {
        "__typename": "DeleteWebhookEndpointSuccess",
        "endpoint": {"url": "https://hooks.example.com/low"},
    },
    "redeliverWebhookEvent": {"__typename": "RedeliverWebhookEventSuccess", "delivery": {"status": "PENDING"}},
}


@pytest.mark.parametrize("mutation", list(WEBHOOK_DOCUMENTS))
async def test_the_valid_webhook_input_that_the_refusals_start_from_succeeds(webhooks: Webhooks, mutation: str) -> None:
    result = await webhooks.run(mutation, valid_webhook_input(mutation, webhooks))

    assert result == VALID_WEBHOOK_RESULTS[mutation]


PRIVATE = validation("url must not point to a private, loopback or link-local address", "url")
NOT_HTTP = validation("url must be an absolute http:// or https:// URL with a host", "url")
CREDENTIALS = validation("url must not contain credentials (user:password@)", "url")
ENDPOINT_NOT_FOUND = not_found("Webhook endpoint not found")
UNKNOWN_TYPES = (
    "Unknown event types {}: give some of balance.low, balance.depleted, balance.recovered, balance.runs_out_soon,"
    " credit.expiring, credit.expired, spend_limit.warning, spend_limit.reached, agent.paused, budget.warning,"
    " budget.reached, payment.succeeded, payment.failed, auto_top_up.succeeded, auto_top_up.failed,"
    " auto_top_up.disabled, subscription.renewed, subscription.past_due, subscription.canceled, invoice.created,"
    " refund.created, webhook_endpoint.disabled"
)
NO_ORG = validation("organizationId names no organization", "organizationId")


def url_cases(mutation: str) -> list[Any]:
    return [
        case(mutation, {"url": "http://127.0.0.1:8080/hook"}, PRIVATE, "loopback"),
        case(mutation, {"url": "https://10.1.2.3/hook"}, PRIVATE, "private"),
        case(mutation, {"url": "https://169.254.169.254/latest"}, PRIVATE, "link-local-metadata"),
        case(mutation, {"url": "https://[::1]/hook"}, PRIVATE, "ipv6-loopback"),
        case(mutation, {"url": "https://[::ffff:192.168.0.1]/hook"}, PRIVATE, "ipv4-mapped-private"),
        case(mutation, {"url": "https://localhost/hook"}, PRIVATE, "localhost"),
        case(mutation, {"url": "https://0.0.0.0/hook"}, PRIVATE, "unspecified"),
        case(mutation, {"url": "ftp://hooks.example.com/x"}, NOT_HTTP, "ftp"),
        case(mutation, {"url": "/relative/hook"}, NOT_HTTP, "relative"),
        case(mutation, {"url": "https:///no-host"}, NOT_HTTP, "no-host"),
        case(mutation, {"url": ""}, NOT_HTTP, "empty"),
        case(mutation, {"url": "https://user:pw@hooks.example.com/x"}, CREDENTIALS, "credentials"),
        case(mutation, {"url": "https://hooks.example.com:port/x"}, validation("url is not a valid URL", "url"),
             "bad-port"),
        case(mutation, {"url": "https://hooks.example.com/a b"},
             validation("url must not contain spaces or control characters", "url"), "space"),
        case(mutation, {"url": "https://hooks.example.com/" + "x" * 1980},
             validation("url must be at most 2000 characters", "url"), "2001-chars"),
        case(mutation, {"url": "https://hooks.example.com/x#frag"},
             validation("url must not have a #fragment", "url"), "fragment"),
        case(mutation, {"eventTypes": ["balance.low", "balance.lo"]},
             validation(UNKNOWN_TYPES.format("'balance.lo'"), "eventTypes"), "unknown-type"),
        case(mutation, {"eventTypes": ["BALANCE.LOW"]},
             validation(UNKNOWN_TYPES.format("'BALANCE.LOW'"), "eventTypes"), "type-in-capitals"),
        case(mutation, {"organizationId": MISSING_ORG}, NO_ORG, "unknown-organization"),
        case(mutation, {"organizationId": USER}, NO_ORG, "user-id-as-organization"),
        case(mutation, {"description": "x" * 501},
             validation("description must be at most 500 characters", "description"), "long-description"),
    ]  # fmt: skip


def endpoint_id_cases(mutation: str) -> list[Any]:
    return [
        case(mutation, {"endpointId": gid("WebhookEndpoint", 999)}, ENDPOINT_NOT_FOUND, "unknown-endpoint"),
        case(mutation, {"endpointId": gid("User", 1)}, ENDPOINT_NOT_FOUND, "user-id-as-endpoint"),
        case(mutation, {"endpointId": "not-an-id"}, ENDPOINT_NOT_FOUND, "malformed-endpoint"),
    ]


WEBHOOK_REFUSALS = [
    *url_cases("createWebhookEndpoint"),
    *url_cases("updateWebhookEndpoint"),
    case("createWebhookEndpoint", {"idempotencyKey": ""}, KEY_ERROR, "empty-key"),
    case("rotateWebhookSecret", {"idempotencyKey": "k" * 256}, KEY_ERROR, "long-key"),
    *(cell for mutation in list(WEBHOOK_DOCUMENTS)[1:] for cell in endpoint_id_cases(mutation)),
    case("redeliverWebhookEvent", {"eventId": "evt_missing"},
         not_found("Event not found (events are kept for CREDITLINE_EVENT_RETENTION_DAYS)"), "unknown-event"),
    case("redeliverWebhookEvent", {"eventId": "e" * 5000},
         not_found("Event not found (events are kept for CREDITLINE_EVENT_RETENTION_DAYS)"), "huge-event-id"),
    case("redeliverWebhookEvent", {"eventId": "PAID"},
         validation("The endpoint does not take this event (payment.succeeded, or another organization's)",
                    "eventId"), "event-the-endpoint-does-not-take"),
    case("redeliverWebhookEvent", {"endpointId": OPEN_ENDPOINT},
         validation("The endpoint is DISABLED: enable it with updateWebhookEndpoint first", "endpointId"),
         "disabled-endpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("mutation", "changes", "expected"), WEBHOOK_REFUSALS)
async def test_bad_webhook_input_is_refused_with_a_typed_error_and_changes_nothing(
    webhooks: Webhooks, mutation: str, changes: dict[str, object], expected: dict[str, object]
) -> None:
    if changes.get("eventId") == "PAID":
        changes = {**changes, "eventId": webhooks.paid_event}
    before = await snapshot()

    result = await webhooks.run(mutation, {**valid_webhook_input(mutation, webhooks), **changes})

    assert result == expected
    assert changed(before, await snapshot()) == set()
