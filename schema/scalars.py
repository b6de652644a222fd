"""Scalars: ``Credits`` (exact amounts as decimal strings, integer micro-credits inside) and ``DateTime``
(ISO 8601, refused outside the instants the databases and Python hold, so no resolver meets one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NewType

import strawberry
from graphql import GraphQLError, ValueNode, value_from_ast_untyped
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types.scalar import ScalarDefinition

from models.credits import format_credits, parse_credits
from resolvers import boundary

Metadata = NewType("Metadata", object)
"""A platform's small JSON object; any JSON is parsed, and the resolver refuses what breaks the limits with a
typed ``ValidationError`` (field ``metadata``)."""

Credits = NewType("Credits", int)
"""Micro-credits (1 credit = 1 000 000)."""

MAX_CREDITS_TEXT = 32
"""The largest amount (10^12 credits) with 6 decimals and a sign is 21 characters; longer is never one."""

BAD_USER_INPUT = {"code": "BAD_USER_INPUT"}
"""The code of a value the client sent that its type refuses."""


class ScalarInputError(ValueError):
    """A client's value a scalar refuses. graphql-core wraps it (the message stays in its own, "encountered
    error '...'") and copies ``extensions`` from it, for variables and literals alike: the code survives."""

    extensions = BAD_USER_INPUT


def parse_credits_input(value: object) -> int:
    # A 5,000-digit string would reach int() and fail there with CPython's digit limit in the message.
    if isinstance(value, str) and len(value) > MAX_CREDITS_TEXT:
        raise ScalarInputError(f"Credits must be at most {MAX_CREDITS_TEXT} characters, got {len(value)}")
    try:
        return parse_credits(value)
    except ValueError as exc:
        raise ScalarInputError(str(exc)) from None


def _refused(message: str) -> StrawberryInputCoercionError:
    return StrawberryInputCoercionError(message, extensions=dict(BAD_USER_INPUT))


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= boundary.MAX_TIMESTAMP_TEXT else text[: boundary.MAX_TIMESTAMP_TEXT] + "..."


def parse_datetime(value: object) -> datetime:
    """ISO 8601 as strawberry parses it; a value without a zone is left to the resolver to refuse
    with its field's name, but both kinds must lie between ``boundary.EARLIEST`` and ``boundary.LATEST``."""
    if not isinstance(value, str):
        raise _refused(f'Value cannot represent a DateTime: "{_shown(value)}". Expected a string.')
    if len(value) > boundary.MAX_TIMESTAMP_TEXT:
        raise _refused(
            f'Value cannot represent a DateTime: "{_shown(value)}". Expected at most'
            f" {boundary.MAX_TIMESTAMP_TEXT} characters."
        )
    assert DateTimeDefinition.parse_value is not None
    try:
        parsed = DateTimeDefinition.parse_value(value)  # strawberry's own parser and messages
    except GraphQLError as exc:
        raise _refused(exc.message) from None
    if not isinstance(parsed, datetime):
        raise _refused(f'Value cannot represent a DateTime: "{value}".')
    try:
        boundary.timestamp(parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC), "DateTime")
    except boundary.InputError as exc:
        raise _refused(f'Value cannot represent a DateTime: "{value}". {exc.message}.') from None
    return parsed


def _metadata_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> object:
    """A metadata object written in the query itself: any GraphQL value, as JSON."""
    return value_from_ast_untyped(node, variables)


SCALAR_MAP: dict[object, ScalarDefinition] = {
    Credits: strawberry.scalar(
        name="Credits",
        description=(
            "An exact amount of credit with up to 6 decimal places, serialized as a decimal string without "
            'trailing zeros ("12.5", "0.002", "100"). Input may be such a string or an integer; floats, '
            "exponents and more than 6 decimals are refused."
        ),
        serialize=format_credits,
        parse_value=parse_credits_input,
    ),
    Metadata: strawberry.scalar(
        name="Metadata",
        description=(
            "A flat JSON object the platform keeps on a user or an organization: at most 50 keys of 1 to 40"
            " printable characters; each value a string of at most 500 characters, a number (integers within"
            " +-(2^53 - 1)), a boolean or null; at most 8 KiB as compact JSON. Replaced wholesale on update."
        ),
        serialize=lambda value: value,
        parse_value=lambda value: value,
        parse_literal=_metadata_literal,
    ),
    datetime: ScalarDefinition(
        name=DateTimeDefinition.name,
        description=("Date with time (isoformat), with a time zone, from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z"),
        specified_by_url=DateTimeDefinition.specified_by_url,
        serialize=DateTimeDefinition.serialize,
        parse_value=parse_datetime,
        parse_literal=None,
        origin=datetime,
    ),
}
