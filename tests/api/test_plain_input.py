"""Inputs built by their planned converter (schema/plain_input.py) are the values strawberry's own conversion
builds, for every kind of field, and spendCreditsBatch's events are.

No ``from __future__ import annotations``: the inputs are classes of a function, whose annotations strawberry
could not resolve from strings."""

import dataclasses
import enum
import re
from typing import Any, NewType

import pytest
import strawberry
from strawberry import relay
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import convert_argument
from strawberry.types.base import get_object_definition

from creditline.graphql import build_schema
from creditline.settings import Settings
from schema.mutations.spend_credits import SpendCreditsBatchInput, SpendCreditsInput
from schema.plain_input import plain_input
from tests.support.helpers import gid

Cents = NewType("Cents", int)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def _described(value: object) -> object:
    """A converted value as plain data, with the class of each object (so that two builds compare)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _described(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"class": type(value).__name__, **fields}
    if isinstance(value, list | tuple):
        return [type(value).__name__, *(_described(v) for v in value)]
    if isinstance(value, relay.GlobalID):
        return ("GlobalID", value.type_name, value.node_id)
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__name__, value.name)
    return value


def _schema(plain: bool) -> tuple[strawberry.Schema, list[Any]]:
    """A schema whose inputs have every kind of field, built by strawberry or (``plain``) by their plans; and
    the arguments its field was given."""
    given: list[Any] = []
    mark: Any = plain_input if plain else (lambda cls: cls)

    @strawberry.input
    class Untouched:  # strawberry's conversion, inside a plain input
        node: relay.GlobalID
        colors: list[Color] = strawberry.field(default_factory=list)

    @mark
    @strawberry.input
    class Leaf:
        name: str
        where: relay.GlobalID | None = None
        inner: Untouched | None = None

    @mark
    @strawberry.input
    class Everything:
        text: str
        number: int
        amount: Cents
        color: Color
        ident: strawberry.ID
        maybe_text: str | None
        default_text: str = "fallback"
        unset_text: str | None = strawberry.UNSET
        tags: list[str] = strawberry.field(default_factory=lambda: ["a", "b"])
        optional_tags: list[str | None] | None = None
        colors: list[Color] | None = None
        node: relay.GlobalID | None = None
        untouched: Untouched | None = None
        leaves: list[Leaf] = strawberry.field(default_factory=list)
        maybe_leaves: list[Leaf | None] | None = None

    @strawberry.type
    class Query:
        @strawberry.field
        def take(self, value: Everything, more: list[Everything] | None = None) -> bool:
            given.append((value, more))
            return True

    schema = strawberry.Schema(
        query=Query,
        config=StrawberryConfig(scalar_map={Cents: strawberry.scalar(name="Cents", serialize=int, parse_value=int)}),
    )
    return schema, given


FULL = {
    "text": "t",
    "number": 3,
    "amount": 250,
    "color": "BLUE",
    "ident": "id-1",
    "maybeText": None,
    "optionalTags": ["x", None],
    "colors": ["RED", "BLUE"],
    "node": gid("Item", 7),
    "untouched": {"node": gid("Item", 8), "colors": ["RED"]},
    "leaves": [
        {"name": "one"},
        {"name": "two", "where": gid("Item", 9), "inner": {"node": gid("Item", 10)}},
    ],
    "maybeLeaves": [None, {"name": "three", "inner": None}],
}


@pytest.mark.parametrize(
    "variables",
    [
        {"value": FULL, "more": [FULL, {**FULL, "leaves": [], "tags": []}]},
        {"value": {"text": "t", "number": 1, "amount": 1, "color": "RED", "ident": "1", "maybeText": "m"}},
        {"value": {**FULL, "defaultText": "given", "unsetText": None, "untouched": None}, "more": None},
    ],
)
async def test_a_plain_input_is_the_value_strawberry_builds(variables: dict[str, Any]) -> None:
    query = """query Q($value: Everything!, $more: [Everything!]) { take(value: $value, more: $more) }"""
    built = []
    for plain in (False, True):
        schema, given = _schema(plain)
        result = await schema.execute(query, variable_values=variables)
        assert result.errors is None
        built.append(_described(given))

    assert built[1] == built[0]


async def test_a_list_of_leaves_is_a_copy_and_a_default_is_never_shared() -> None:
    schema, given = _schema(plain=True)
    query = """query Q($value: Everything!) { a: take(value: $value) b: take(value: $value) }"""
    value = {"text": "t", "number": 1, "amount": 1, "color": "RED", "ident": "1", "maybeText": None}

    assert (await schema.execute(query, variable_values={"value": value})).errors is None

    (first, _), (second, _) = given
    assert first.tags == second.tags == ["a", "b"]
    assert first.tags is not second.tags


async def test_errors_of_strawberrys_conversion_inside_a_plain_input_are_the_same() -> None:
    query = """query Q($value: Everything!) { take(value: $value) }"""
    bad = {**FULL, "leaves": [{"name": "x", "where": "not-a-global-id"}]}
    errors = []
    for plain in (False, True):
        schema, _ = _schema(plain)
        result = await schema.execute(query, variable_values={"value": bad})
        assert result.errors is not None
        errors.append([(e.message, e.path) for e in result.errors])

    assert errors[1] == errors[0]
    assert errors[0] == [('Value cannot represent a GlobalID: "not-a-global-id".', ["take"])]


def test_a_maybe_field_is_refused() -> None:
    @strawberry.input
    class WithMaybe:
        name: strawberry.Maybe[str]

    with pytest.raises(TypeError, match=re.escape("WithMaybe.name: a Maybe field needs strawberry's conversion")):
        plain_input(WithMaybe)


def test_spend_events_are_built_as_strawberry_builds_them(monkeypatch: pytest.MonkeyPatch) -> None:
    events = [
        {
            "userId": gid("User", 1),
            "externalUserId": None,
            "organizationId": None,
            "externalOrganizationId": None,
            "agentId": "agent",
            "agentRunId": None,
            "activity": "answer",
            "quantity": None,
            "credits": 1500,
            "idempotencyKey": "k1",
        },
        {
            "userId": None,
            "externalUserId": "ext-1",
            "organizationId": gid("Organization", 2),
            "externalOrganizationId": None,
            "agentId": "agent",
            "agentRunId": "run-1",
            "activity": "tokens",
            "quantity": 3_000_000,
            "credits": None,
            "idempotencyKey": "k2",
        },
    ]
    value = {"events": events}
    schema = build_schema(Settings())
    registry, config = schema.schema_converter.scalar_registry, schema.config
    ours = convert_argument(value, SpendCreditsBatchInput, registry, config, path=("input",))
    for cls in (SpendCreditsBatchInput, SpendCreditsInput):
        monkeypatch.setattr(get_object_definition(cls, strict=True), "from_input", None)
    theirs = convert_argument(value, SpendCreditsBatchInput, registry, config, path=("input",))

    assert isinstance(ours, SpendCreditsBatchInput)
    assert _described(ours) == _described(theirs)
    assert [type(e) for e in ours.events] == [SpendCreditsInput, SpendCreditsInput]
    assert ours.events[1].agent_run_id == "run-1"
