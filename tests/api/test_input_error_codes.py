"""Every value a client sends that its type refuses is a request error coded ``BAD_USER_INPUT`` (issue 9,
point 7 follow-up): graphql-core gives scalar and variable errors no code of its own. The message stays
graphql-core's, naming the variable's path; nothing is masked, nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.bad_input import DATETIME_RANGE, GRANT, SPEND_INPUT, World, post, without_locations
from tests.support.bad_input import world as world
from tests.support.helpers import SPEND

CODE = {"code": "BAD_USER_INPUT"}
LONG = "1" * 5000


CREDITS_RULES = [
    # (value, as written in a document, the scalar's message)
    pytest.param(1.5, "1.5", "Credits must be a decimal string or an integer, got float", id="float"),
    pytest.param("0.0000001", '"0.0000001"', "Credits have at most 6 decimal places, got '0.0000001'", id="7-decimals"),
    pytest.param("NaN", '"NaN"', "Credits must be a plain decimal such as \"12.5\", got 'NaN'", id="nan"),
    pytest.param("1e5", '"1e5"', "Credits must be a plain decimal such as \"12.5\", got '1e5'", id="exponent"),
    pytest.param("", '""', "Credits must not be empty", id="empty"),
    pytest.param(LONG, f'"{LONG}"', "Credits must be at most 32 characters, got 5000", id="5000-digits"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "written", "problem"), CREDITS_RULES)
async def test_credits_refused_as_a_variable_are_bad_user_input(
    world: World, value: object, written: str, problem: str
) -> None:
    before = await world.state()

    body = await post(world.api, SPEND, {"input": {**SPEND_INPUT, "credits": value, "idempotencyKey": "k"}},
                      world.service)  # fmt: skip

    [error] = body["errors"]
    assert body["data"] is None
    assert error["extensions"] == CODE
    assert error["message"].startswith(
        "Variable '$input' has invalid value at .credits: Expected value of type 'Credits', but encountered"
        f" error '{problem}'; found: "
    )
    if value != LONG:  # graphql-core cuts a long value in its message
        assert error["message"].endswith(f"found: {value!r}.")
    assert await world.state() == before


@pytest.mark.parametrize(("value", "written", "problem"), CREDITS_RULES)
async def test_credits_refused_inline_are_bad_user_input(
    world: World, value: object, written: str, problem: str
) -> None:
    before = await world.state()
    document = (
        'mutation { spendCredits(input: {userId: "VXNlcjox", agentId: "agent-1", activity: "answer",'
        f' credits: {written}, idempotencyKey: "k"}}) {{ __typename }} }}'
    )

    body = await post(world.api, document, {}, world.service)

    [error] = body["errors"]
    assert body["data"] is None
    assert error["extensions"] == CODE
    assert error["message"].startswith(f"Expected value of type 'Credits', but encountered error '{problem}'; found: ")
    if value != LONG:
        assert error["message"] == (
            f"Expected value of type 'Credits', but encountered error '{problem}'; found: {written}."
        )
    assert await world.state() == before


GRANT_INPUT = {"accountId": "Q3JlZGl0QWNjb3VudDox", "credits": "1", "kind": "FREE", "idempotencyKey": "g"}
DATETIME_RULES = [
    pytest.param("9999-12-31T23:59:59-14:00", f'Value cannot represent a DateTime: "9999-12-31T23:59:59-14:00".'
                 f" {DATETIME_RANGE}.", id="out-of-range"),
    pytest.param("1900-01-01T00:00:00Z", f'Value cannot represent a DateTime: "1900-01-01T00:00:00Z".'
                 f" {DATETIME_RANGE}.", id="before-1970"),
    pytest.param("garbage", "Value cannot represent a DateTime: \"garbage\". Expected 4 digits, got 'garb'",
                 id="garbage"),
    pytest.param("x" * 41, f'Value cannot represent a DateTime: "{"x" * 40}...". Expected at most 40 characters.',
                 id="over-long"),
]  # fmt: skip


@pytest.mark.parametrize(("moment", "problem"), DATETIME_RULES)
async def test_datetimes_refused_as_a_variable_are_bad_user_input(world: World, moment: str, problem: str) -> None:
    before = await world.state()

    body = await post(world.api, GRANT, {"input": {**GRANT_INPUT, "expiresAt": moment}}, world.admin)

    assert without_locations(body) == {
        "data": None,
        "errors": [{"message": f"Variable '$input' has invalid value at .expiresAt: {problem}", "extensions": CODE}],
    }
    assert await world.state() == before


@pytest.mark.parametrize(("moment", "problem"), DATETIME_RULES)
async def test_datetimes_refused_inline_are_bad_user_input(world: World, moment: str, problem: str) -> None:
    before = await world.state()
    document = (
        'mutation { grantCredits(input: {accountId: "Q3JlZGl0QWNjb3VudDox", credits: "1", kind: FREE,'
        f' idempotencyKey: "g", expiresAt: "{moment}"}}) {{ __typename }} }}'
    )

    body = await post(world.api, document, {}, world.admin)

    assert without_locations(body) == {"data": None, "errors": [{"message": problem, "extensions": CODE}]}
    assert await world.state() == before


@pytest.mark.parametrize("inline", [False, True], ids=["variable", "inline"])
async def test_a_datetime_without_a_zone_is_the_fields_validation_error(world: World, inline: bool) -> None:
    """Left to the resolver, which names the field: a typed error in the payload, not a request error."""
    before = await world.state()
    moment = "2030-01-01T00:00:00"
    if inline:
        document = (
            'mutation { grantCredits(input: {accountId: "Q3JlZGl0QWNjb3VudDox", credits: "1", kind: FREE,'
            f' idempotencyKey: "g", expiresAt: "{moment}"}})'
            " { __typename ... on ValidationError { message field } } }"
        )
        body = await post(world.api, document, {}, world.admin)
    else:
        body = await post(world.api, GRANT, {"input": {**GRANT_INPUT, "expiresAt": moment}}, world.admin)

    assert body == {
        "data": {
            "grantCredits": {
                "__typename": "ValidationError",
                "message": "expiresAt must include a time zone, e.g. 2026-01-31T00:00:00Z",
                "field": "expiresAt",
            }
        }
    }
    assert await world.state() == before


async def test_a_refused_literal_is_logged_as_a_client_error_on_one_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """graphql-core keeps the scalar's own exception for a literal: it was logged as an unexpected error,
    traceback and all."""
    document = (
        'mutation { spendCredits(input: {userId: "VXNlcjox", agentId: "agent-1", activity: "answer",'
        ' credits: "NaN", idempotencyKey: "k"}) { __typename } }'
    )
    caplog.set_level("INFO", logger="creditline.graphql")

    await post(world.api, document, {}, world.service)

    lines: list[Any] = [r for r in caplog.records if r.name == "creditline.graphql"]
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        (
            "INFO",
            "client error [BAD_USER_INPUT]: Expected value of type 'Credits', but encountered error"
            " 'Credits must be a plain decimal such as \"12.5\", got 'NaN''; found: \"NaN\".",
        )
    ]
