"""Input types that strawberry builds from graphql-core's coerced values in one step (issue 15, point 1).

Strawberry converts an argument field by field through ``convert_argument``, which for each field of each
input object resolves its annotation, checks it against every kind of type (``Maybe``, optional, list, scalar,
lazy, enum, object) and converts its GraphQL name. For ``spendCreditsBatch``'s 100 events that was 900 fields
and about 40% of the server's CPU per batch, to copy values graphql-core had already coerced.

``plain_input`` sets strawberry's ``from_input`` hook of an input type (the one ``strawberry.pydantic`` uses)
to a converter planned once per type and configuration: each field's GraphQL name, its Python name, and what
its value needs, which for a scalar or an enum (optional or not) is nothing, for a list of them a copy (as
strawberry makes one), and for a list of ``plain_input`` inputs their own converter. Any other field is
converted by strawberry itself (``InputContext.convert``), so the values are exactly those strawberry builds;
a ``Maybe`` field is refused, as a type that sets ``from_input`` must check its nulls itself
(tests/api/test_plain_input.py compares both conversions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, replace
from typing import Any, TypeVar

from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryOptional,
    StrawberryType,
    get_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.lazy_type import LazyType

T = TypeVar("T", bound=type)

Convert = Callable[[Any, InputContext], Any]
"""A field's value (never None) to what strawberry would pass for it, given the field's context (its path)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    defaults: dict[str, None]
    """The fields that are None unless given."""
    fields: tuple[tuple[str, str, Convert | None], ...]
    """Each field's GraphQL name, Python name and conversion."""
    located: bool
    """Whether a conversion reads the context's path (strawberry converts a field): a nested input is then
    given a context of its own, as strawberry gives it."""


_plans: dict[tuple[type, int], tuple[object, _Plan]] = {}
"""By input class and ``id`` of the configuration (kept alive in the entry, so the id is not reused)."""


def plain_input(cls: T) -> T:
    """Build ``cls`` (a ``strawberry.input``) from its coerced value with a planned converter."""
    definition = get_object_definition(cls, strict=True)
    if not definition.is_input:
        raise TypeError(f"{cls.__name__} is not a strawberry input")
    if definition.from_input is not None:
        raise TypeError(f"{cls.__name__} builds its value already")
    for field in definition.fields:
        if isinstance(field.type, StrawberryMaybe):
            raise TypeError(f"{cls.__name__}.{field.python_name}: a Maybe field needs strawberry's conversion")
    definition.from_input = _from_input
    return cls


def _plan_of(type_: type, context: InputContext) -> _Plan:
    key = (type_, id(context.config))
    known = _plans.get(key)
    if known is None:
        known = _plans[key] = (context.config, _plan(type_, context))
    return known[1]


def _from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
    plan = _plan_of(type_, context)
    kwargs: dict[str, Any] = dict(plan.defaults)
    for graphql_name, python_name, convert in plan.fields:
        if graphql_name in value:
            item = value[graphql_name]
            kwargs[python_name] = item if convert is None or item is None else convert(item, context)
    return type_(**kwargs)


def _plan(type_: type, context: InputContext) -> _Plan:
    definition = get_object_definition(type_, strict=True)
    # As strawberry: a field without a default is None unless given (graphql-core has checked the required ones).
    defaults = {
        f.python_name: None for f in definition.fields if f.default_value is MISSING and f.default_factory is MISSING
    }
    fields = []
    located = False
    for field in definition.fields:
        graphql_name = context.config.name_converter.from_field(field)
        convert, reads_path = _conversion(field.resolve_type(type_definition=definition), graphql_name, context)
        located = located or reads_path
        fields.append((graphql_name, field.python_name, convert))
    return _Plan(defaults, tuple(fields), located)


def _is_leaf(type_: StrawberryType | type, context: InputContext) -> bool:
    if isinstance(type_, LazyType):
        return _is_leaf(type_.resolve_type(), context)
    if type_ is GlobalID:
        return False  # decoded from its string by strawberry
    return (
        is_scalar(type_, context.scalar_registry)
        or isinstance(type_, StrawberryEnumDefinition)
        or has_enum_definition(type_)
    )


def _conversion(type_: StrawberryType | type, graphql_name: str, context: InputContext) -> tuple[Convert | None, bool]:
    """What a value of ``type_`` (not None) needs to become strawberry's (None: nothing), and whether that
    reads the context's path."""
    if isinstance(type_, StrawberryOptional) and not isinstance(type_, StrawberryMaybe):
        return _conversion(type_.of_type, graphql_name, context)
    if _is_leaf(type_, context):
        return None, False
    if isinstance(type_, StrawberryList):
        of = type_.of_type
        if _is_leaf(of, context) or (isinstance(of, StrawberryOptional) and _is_leaf(of.of_type, context)):
            return _copy, False  # as strawberry: graphql-core shares a list's default between requests
        item = of.of_type if isinstance(of, StrawberryOptional) and not isinstance(of, StrawberryMaybe) else of
        nested = get_object_definition(item) if isinstance(item, type) else None
        if isinstance(item, type) and nested is not None and nested.from_input is _from_input:
            located = _plan_of(item, context).located
            return _each(item, graphql_name, located), located

    def strawberry_s(value: Any, context: InputContext) -> Any:
        return context.convert(value, type_, graphql_name)

    return strawberry_s, True


def _each(item: type, graphql_name: str, located: bool) -> Convert:
    """A list of ``plain_input`` inputs: each built by its own plan, with its own context when it reads it."""

    def convert(values: Any, context: InputContext) -> list[Any]:
        if not located:
            return [None if v is None else _from_input(item, v, context) for v in values]
        return [
            None if v is None else _from_input(item, v, replace(context, path=(*context.path, graphql_name, n)))
            for n, v in enumerate(values)
        ]

    return convert


def _copy(values: Any, context: InputContext) -> list[Any]:
    return list(values)
