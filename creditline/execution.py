"""GraphQL execution with a short path for plain scalar fields (issue 9, point 2: server CPU per object).

Most fields of a large answer are scalars read off an object (``amount``, ``createdAt``, a node's ``id``):
87% of the 4,300 fields of the costliest document the limits admit. graphql-core builds a resolve info for
each, calls strawberry's resolver through its wrappers and dispatches the value through ``complete_value``;
for relay's ``id`` strawberry also builds an ``Info`` and runs its argument and extension chain. That
bookkeeping was about a fifth of the request's CPU. This executor takes a short path for two kinds of field:

- one strawberry marks as basic (no resolver, no permission or field extension, no exception handler; its
  resolver ignores the info) whose type is a scalar or enum: the attribute is read as strawberry reads it;
- relay's ``Node.id`` on a node class that keeps relay's ``resolve_id`` and ``resolve_typename``: the same
  ``GlobalID`` of the parent type's name and the ``NodeID`` attribute.

The value is coerced by the same ``complete_leaf_value``. Everything else, and everything when a schema
extension wraps resolvers, takes graphql-core's own path. Errors are the same: a null for a non-null field,
or a value the scalar cannot serialize, is located and propagated by graphql-core's ``handle_field_error``
as ``complete_value`` would raise it (tests/api/test_execution.py compares both paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLLeafType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    get_nullable_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path, Undefined
from strawberry.relay import GlobalID, Node
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter


@dataclass(frozen=True)
class _Plain:
    field: GraphQLField
    leaf: GraphQLLeafType
    non_null: bool
    node_id: bool
    """Relay's ``Node.id``: the global ID of the node's type name and its ``NodeID`` attribute."""
    attribute: str | None
    """The attribute strawberry's basic resolver reads, when it reads it with ``getattr`` (the default)."""


_NODE_ID = Node._id.__func__
"""Relay's resolver of ``Node.id`` (a classmethod: each node type binds its own)."""


def _plain_leaf(field: GraphQLField) -> _Plain | None:
    """How to read a field without graphql-core's resolve info, when strawberry resolves it as basic (or it is
    relay's ``id``); None for any other field."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    resolver = getattr(definition, "base_resolver", None)
    node_id = resolver is not None and getattr(resolver.wrapped_func, "__func__", None) is _NODE_ID
    if node_id and getattr(definition, "extensions", None):
        return None  # a permission or field extension: strawberry's path
    if field.args or not (node_id or getattr(field.resolve, "_is_default", False)):
        return None
    type_: GraphQLOutputType = field.type
    non_null = is_non_null_type(type_)
    inner = get_nullable_type(type_)
    if not isinstance(inner, GraphQLScalarType | GraphQLEnumType):
        return None
    attribute = None
    if not node_id and definition is not None and definition.default_resolver is getattr:
        attribute = definition.python_name
    return _Plain(field, inner, non_null, node_id, attribute)


def _default_node(source: object) -> bool:
    """A node whose class keeps relay's own ``resolve_id`` and ``resolve_typename`` (every node of ours)."""
    cls = type(source)
    return (
        isinstance(source, Node)
        and cls.resolve_id.__func__ is _RESOLVE_ID  # type: ignore[attr-defined]
        and cls.resolve_typename.__func__ is _RESOLVE_TYPENAME  # type: ignore[attr-defined]
    )


_RESOLVE_ID = Node.resolve_id.__func__  # type: ignore[attr-defined]
_RESOLVE_TYPENAME = Node.resolve_typename.__func__  # type: ignore[attr-defined]


_plain: dict[int, tuple[GraphQLField, _Plain | None]] = {}
"""By ``id`` of the field definition (graphql-core's fields are not hashable); each entry keeps its field
alive, so an id is not reused while it is here. Bounded by the fields of the schemas built in this process."""


def plain_leaf(field: GraphQLField) -> _Plain | None:
    known = _plain.get(id(field))
    if known is None:
        known = _plain[id(field)] = (field, _plain_leaf(field))
    return known[1]


class PlainLeafExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        field = self.schema.get_field(parent_type, node.name.value)
        plain = plain_leaf(field) if field is not None else None
        manager = self.middleware_manager
        if plain is None or node.arguments or (manager is not None and manager.middlewares):
            return super().execute_field(parent_type, source, field_details_list, path, position_context)
        if plain.node_id and not _default_node(source):
            return super().execute_field(parent_type, source, field_details_list, path, position_context)
        result: Any
        try:
            if plain.node_id:
                # What relay's Node._id returns: the type name is the path's (the parent type's).
                result = GlobalID(type_name=parent_type.name, node_id=str(getattr(source, source.resolve_id_attr())))
            elif plain.attribute is not None:
                result = getattr(source, plain.attribute)
            else:
                # Strawberry's basic resolver ignores its info: it reads the attribute (config.default_resolver).
                assert plain.field.resolve is not None
                result = plain.field.resolve(source, None)
            if self.is_awaitable(result):  # never for a dataclass attribute; graphql-core's path if it is
                return super().execute_field(parent_type, source, field_details_list, path, position_context)
            if isinstance(result, Exception):
                raise result
            if result is None or result is Undefined:
                if plain.non_null:
                    raise TypeError(f"Cannot return null for non-nullable field {parent_type}.{node.name.value}.")
                return None
            return self.complete_leaf_value(plain.leaf, result)
        except Exception as raw_error:
            self.handle_field_error(raw_error, plain.field.type, field_details_list, path)
            return None
