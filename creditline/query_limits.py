"""Limits on what one GraphQL document may ask for, checked before anything runs.

Every check here is linear in the size of the document: each fragment is looked at once and its result
memoized, so nested spreads (``fragment F2 on Query { ...F1 ...F1 }``) cost no more than they weigh.
In order:

1. ``check_document_size``: one walk over the parsed document counting fragment definitions, fragment
   spreads, directives (per document and per field or spread), aliases, and fields that repeat a response
   key in one selection set. Runs before validation.
2. ``validation_rules``: graphql-core's standard rules, with the field-merging rule (the one rule whose work
   grows with pairs of fields) on a small budget of comparisons.
3. ``analyze_operation``: for the operation to run, with its variables: depth, aliases with fragments
   expanded, and the cost, the number of objects the operation can produce (a list field counts its
   ``first`` argument, the page size, or ``list_size`` items, and a connection its rows too, loaded
   whatever is selected; a usage report's rows, its buckets; counts
   multiply along each path and add up over siblings, aliases included). A list field selected inside
   itself is refused: the back-edge of a cycle (``Organization.members -> Membership.organization ->
   members``) would square a list whose real length the cost can only guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graphql import (
    ASTValidationRule,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NoSchemaIntrospectionCustomRule,
    ObjectValueNode,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    ValidationContext,
    ValuesOfCorrectTypeRule,
    VariableNode,
    get_named_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    specified_rules,
)
from graphql.type.definition import GraphQLOutputType
from graphql.utilities import value_from_ast_untyped
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.schema.schema import validate_document

from creditline.document_cache import TextCache, document_bytes
from models.reports import MAX_HOURLY_BUCKETS, MAX_RANGE
from resolvers.pagination import DEFAULT_PAGE, MAX_PAGE

LIST_BOUNDS = {
    "Invoice.lines": 1,  # the system writes one line per invoice
    "Transaction.refunds": 2,  # refunds are made by admins, not by the caller
    "Query.plans": 10,  # the operator's configuration
    "Query.rateCard": 10,
    "WebhookDelivery.attemptLog": 10,  # the worker's tries of one delivery, about a dozen over its retry period
}
"""Items counted for unpaginated lists whose length the caller cannot grow; every other list without
``first`` counts ``QueryLimits.list_size``."""

FIELD_MERGE_BUDGET = 20_000
"""Work units (about one per pair of fields compared) the field-merging rule may spend on one document.
graphql-core's own default (500,000) lets a 2,000-token document of repeated fields take seconds."""


class QueryLimitError(GraphQLError):
    """A document over one of the limits: refused before it runs, with what it has and what is allowed."""

    def __init__(self, message: str, code: str, found: int, limit: int) -> None:
        super().__init__(message, extensions={"code": code, "found": found, "limit": limit})


def too_long(text: object, limit: int) -> QueryLimitError | None:
    """The refusal of a document text over ``limit`` UTF-8 bytes (``Settings.max_query_bytes``), or ``None``."""
    if not isinstance(text, str) or len(text) * 4 <= limit:  # a character is at most 4 bytes: no encoding
        return None
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return QueryLimitError(
        f"The document is {size:,} bytes long; at most {limit:,} are allowed", "QUERY_TOO_LARGE", size, limit
    )


class QueryTooComplex(GraphQLError):
    def __init__(self, cost: int, limit: int) -> None:
        super().__init__(
            f"Query cost {cost:,} is over the limit of {limit:,}: it could produce {cost:,} objects."
            " Ask for smaller pages (first), fewer nested lists or fewer aliases.",
            extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost, "limit": limit},
        )


@dataclass(frozen=True)
class QueryLimits:
    max_depth: int = 12
    max_aliases: int = 15
    max_fragments: int = 20
    """Fragment definitions in one document."""
    max_fragment_spreads: int = 50
    max_directives: int = 20
    max_directives_per_location: int = 3
    """Directives on one field, spread, inline fragment, operation or fragment definition."""
    max_repeated_fields: int = 3
    """Fields with one response key in one selection set (inline fragments on the same type included)."""
    max_cost: int = 1_600
    list_size: int = DEFAULT_PAGE
    """Items a list field without ``first`` is counted as."""
    production: bool = False
    """Adds the rule that refuses introspection."""


# ------------------------------------------------------------------------------------------ 1. size


def _directive_error(node_directives: tuple[DirectiveNode, ...], limits: QueryLimits) -> QueryLimitError | None:
    if len(node_directives) > limits.max_directives_per_location:
        return QueryLimitError(
            f"{len(node_directives)} directives on one field, fragment or operation; at most"
            f" {limits.max_directives_per_location} are allowed",
            "TOO_MANY_DIRECTIVES",
            len(node_directives),
            limits.max_directives_per_location,
        )
    return None


def check_document_size(document: DocumentNode, limits: QueryLimits) -> GraphQLError | None:
    """The first limit the document's text is over, found in one walk (no fragment is followed)."""
    fragments = spreads = directives = aliases = 0
    # Each entry: a selection set, the response-key counts of the level it belongs to (an inline fragment's
    # fields are on the level of the selection set around it) and the type condition it is under: the same
    # key under different type conditions (``... on A { message } ... on B { message }``) is no repeat.
    stack: list[tuple[SelectionSetNode, dict[tuple[str, str], int], str]] = []
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments += 1
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            own = tuple(definition.directives or ())
            directives += len(own)
            if error := _directive_error(own, limits):
                return error
            for variable in getattr(definition, "variable_definitions", None) or ():
                directives += len(variable.directives or ())
            stack.append((definition.selection_set, {}, ""))
    while stack:
        selection_set, keys, condition = stack.pop()
        for selection in selection_set.selections:
            own = tuple(selection.directives or ())
            directives += len(own)
            if error := _directive_error(own, limits):
                return error
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                key = selection.alias.value if selection.alias else selection.name.value
                seen = keys.get((condition, key), 0) + 1
                keys[condition, key] = seen
                if seen > limits.max_repeated_fields:
                    return QueryLimitError(
                        f"'{key}' is selected {seen} times in one selection set; at most"
                        f" {limits.max_repeated_fields} are allowed",
                        "REPEATED_FIELD",
                        seen,
                        limits.max_repeated_fields,
                    )
                if selection.selection_set is not None:
                    stack.append((selection.selection_set, {}, ""))
            elif isinstance(selection, InlineFragmentNode):
                typed = selection.type_condition
                stack.append((selection.selection_set, keys, typed.name.value if typed else condition))
            elif isinstance(selection, FragmentSpreadNode):
                spreads += 1
    counted = (
        (spreads, limits.max_fragment_spreads, "fragment spreads", "TOO_MANY_FRAGMENT_SPREADS"),
        (fragments, limits.max_fragments, "fragment definitions", "TOO_MANY_FRAGMENTS"),
        (directives, limits.max_directives, "directives", "TOO_MANY_DIRECTIVES"),
    )
    for found, limit, what, code in counted:
        if found > limit:
            return QueryLimitError(f"The document has {found} {what}; at most {limit} are allowed", code, found, limit)
    if aliases > limits.max_aliases:
        return too_many_aliases(aliases, limits.max_aliases)
    return None


def too_many_aliases(found: int, limit: int) -> GraphQLError:
    # The message strawberry's own alias limiter gives, with the code and figures the other limits carry.
    return QueryLimitError(f"{found} aliases found. Allowed: {limit}", "TOO_MANY_ALIASES", found, limit)


# ------------------------------------------------------------------------------------- 2. validation


class BoundedFieldMergingRule(OverlappingFieldsCanBeMergedRule):
    """graphql-core's rule on a budget of ``FIELD_MERGE_BUDGET``: past it, validation is aborted (and the
    document refused as too complex) instead of comparing every pair of repeated fields."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        # graphql-core 3.3 reads its budget from a module attribute; this sets ours for this document only.
        self.rule_context.remaining_complexity_budget = FIELD_MERGE_BUDGET


class CodedValuesOfCorrectTypeRule(ValuesOfCorrectTypeRule):
    """graphql-core's check of literal values, its errors coded ``BAD_USER_INPUT`` like the variables'."""

    def report_error(self, error: GraphQLError) -> None:
        if "code" not in (error.extensions or {}):
            error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
        super().report_error(error)


_REPLACED: dict[type[ASTValidationRule], type[ASTValidationRule]] = {
    OverlappingFieldsCanBeMergedRule: BoundedFieldMergingRule,
    ValuesOfCorrectTypeRule: CodedValuesOfCorrectTypeRule,
}


def validation_rules(limits: QueryLimits) -> tuple[type[ASTValidationRule], ...]:
    rules: list[type[ASTValidationRule]] = [_REPLACED.get(rule, rule) for rule in specified_rules]
    if limits.production:
        rules.append(NoSchemaIntrospectionCustomRule)
    return tuple(rules)


def _validate(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    errors = validate_document(schema, document, rules)
    if any(isinstance(e, ValidationAbortedError) and e.message == "Validation aborted." for e in errors):
        # The field-merging budget ran out: say so in terms a client can act on.
        return [
            QueryLimitError(
                "The document repeats fields too often to be checked; merge the repeated selections",
                "QUERY_TOO_COMPLEX",
                FIELD_MERGE_BUDGET + 1,
                FIELD_MERGE_BUDGET,
            )
        ]
    return errors


# --------------------------------------------------------------------------------------- 3. analysis


@dataclass(frozen=True)
class Measure:
    depth: int
    aliases: int
    cost: int
    lists: frozenset[str] = frozenset()
    """The list fields (``Type.field``) selected anywhere inside."""
    nested_list: str | None = None
    """A list field selected inside itself (a cycle such as ``Organization.members -> Membership.organization
    -> members``), if any."""

    def add(self, other: Measure) -> Measure:
        """This and a sibling selection (of a fragment) side by side."""
        return Measure(
            max(self.depth, other.depth),
            self.aliases + other.aliases,
            self.cost + other.cost,
            self.lists | other.lists,
            self.nested_list or other.nested_list,
        )


NOTHING = Measure(0, 0, 0)


class _Analysis:
    """Depth, aliases and cost of one operation; each fragment measured once per page size it is spread
    under (the only context its measure depends on)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        defaults: Mapping[str, Any],
        limits: QueryLimits,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.defaults = defaults
        self.limits = limits
        self.memo: dict[tuple[str, int | None], Measure] = {}

    def page_size(self, field: FieldNode) -> int:
        """What ``first`` asks for, as the resolver will take it (at most ``MAX_PAGE``)."""
        for argument in field.arguments or ():
            if argument.name.value != "first":
                continue
            value: object = None
            if isinstance(argument.value, IntValueNode):
                value = int(argument.value.value)
            elif isinstance(argument.value, VariableNode):
                name = argument.value.name.value
                value = self.variables.get(name, self.defaults.get(name))
            if value is None:
                return DEFAULT_PAGE
            if not isinstance(value, int) or isinstance(value, bool):
                return MAX_PAGE  # refused when the arguments are coerced; counted at the most
            return max(0, min(value, MAX_PAGE))
        return DEFAULT_PAGE

    def report_rows(self, field: FieldNode) -> int:
        """The most rows a usage report can have: its buckets (from its range and granularity), times
        ``list_size`` keys when grouped. The page size of its ``rows``; 0 for an input the DateTime scalar
        or the resolver refuses (a range that is not one, past its bounds), which runs nothing."""
        given: Any = None
        for argument in field.arguments or ():
            if argument.name.value == "input":
                given = value_from_ast_untyped(argument.value, dict(self.variables))
        if not isinstance(given, Mapping):
            return 0
        try:
            start, end = _instant(given["from"]), _instant(given["to"])
            per_bucket = _BUCKET_HOURS[str(given["granularity"])]
        except (KeyError, TypeError, ValueError):
            return 0
        hours = math.ceil((end - start).total_seconds() / 3600)
        if hours <= 0 or end - start > MAX_RANGE or (per_bucket == 1 and hours > MAX_HOURLY_BUCKETS):
            return 0
        buckets = math.ceil(hours / per_bucket) + 1  # + 1: a range off the buckets' edges (time zones)
        keys = 1 if str(given.get("groupBy", "NONE")) == "NONE" else self.limits.list_size
        return buckets * keys

    def selection_set(self, node: SelectionSetNode, parent: Any, page: int | None) -> Measure:
        total = NOTHING
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    total = total.add(Measure(0, 1, 0))
                name = selection.name.value
                if name.startswith("__"):
                    continue  # __typename; introspection is bounded by graphql-core's own rule
                if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) or name not in parent.fields:
                    continue  # validation reports it
                definition = parent.fields[name]
                named = get_named_type(definition.type)
                if is_leaf_type(named) or selection.selection_set is None:
                    continue
                child_page = None
                if "first" in definition.args:
                    child_page = self.page_size(selection)
                elif name == "usageReport":
                    child_page = self.report_rows(selection)
                inner = self.selection_set(selection.selection_set, named, child_page)
                items, lists, nested = 1, inner.lists, inner.nested_list
                if _is_list(definition.type):
                    edge = f"{parent.name}.{name}"
                    items = page if page is not None else LIST_BOUNDS.get(edge, self.limits.list_size)
                    nested = nested or (edge if edge in lists else None)
                    lists = lists | {edge}
                # A connection loads its page of rows whatever is selected of it (pageInfo alone too).
                loaded = child_page if "first" in definition.args and child_page is not None else 0
                total = total.add(
                    Measure(1 + inner.depth, inner.aliases, items * (1 + loaded + inner.cost), lists, nested)
                )
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                typed = self.schema.get_type(condition.name.value) if condition else parent
                total = total.add(self.selection_set(selection.selection_set, typed, page))
            elif isinstance(selection, FragmentSpreadNode):
                total = total.add(self.fragment(selection.name.value, page))
        return total

    def fragment(self, name: str, page: int | None) -> Measure:
        key = (name, page)
        known = self.memo.get(key)
        if known is not None:
            return known
        definition = self.fragments.get(name)
        if definition is None:
            return NOTHING  # validation reports it
        self.memo[key] = NOTHING  # a cycle of fragments (refused by validation) ends here
        measure = self.selection_set(
            definition.selection_set, self.schema.get_type(definition.type_condition.name.value), page
        )
        self.memo[key] = measure
        return measure


_BUCKET_HOURS = {"HOUR": 1, "DAY": 24, "WEEK": 7 * 24, "MONTH": 28 * 24}
"""Hours in the shortest bucket of each granularity."""


def _instant(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise TypeError(value)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _is_list(type_: GraphQLOutputType) -> bool:
    inner = type_.of_type if is_non_null_type(type_) else type_
    return is_list_type(inner)


def choose_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name is not None and op.name.value == operation_name), None)


def measure_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> Measure:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    defaults: dict[str, Any] = {}
    for variable in operation.variable_definitions or ():
        if isinstance(variable.default_value, IntValueNode):
            defaults[variable.variable.name.value] = int(variable.default_value.value)
    root = schema.get_root_type(operation.operation)
    analysis = _Analysis(schema, fragments, variables or {}, defaults, limits)
    return analysis.selection_set(operation.selection_set, root, None)


def analyze_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> GraphQLError | None:
    operation = choose_operation(document, operation_name)
    if operation is None:
        return None  # strawberry reports the missing or ambiguous operation
    measure = measure_operation(schema, document, operation, variables, limits)
    # The depth and alias messages are those of strawberry's limiters, which these replace.
    if measure.depth > limits.max_depth:
        name = operation.name.value if operation.name else "anonymous"
        return GraphQLError(f"'{name}' exceeds maximum operation depth of {limits.max_depth}", [operation])
    if measure.aliases > limits.max_aliases:
        return too_many_aliases(measure.aliases, limits.max_aliases)
    if measure.cost > limits.max_cost:
        return QueryTooComplex(measure.cost, limits.max_cost)
    if measure.nested_list is not None:
        # The cost counts an unpaginated list as list_size items, whatever its real length: a list inside
        # itself would square the real length, so the back-edge of a cycle is cut here.
        return GraphQLError(
            f"{measure.nested_list} is selected inside itself; select it once and follow the ids instead",
            extensions={"code": "NESTED_LIST", "field": measure.nested_list},
        )
    return None


# -------------------------------------------------------------------------------------- the extension


class QueryLimitsExtension(SchemaExtension):
    """Replaces strawberry's validation step (and its ValidationCache): size first, then the standard rules
    (cached per document), then depth, aliases and cost for the operation and variables of this request."""

    def __init__(self, limits: QueryLimits, rules: tuple[type[ASTValidationRule], ...]) -> None:
        super().__init__()
        self.limits = limits
        self.rules = rules
        """Built once per schema (``validation_rules``): the validation cache is keyed by them."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None
        schema = context.schema._schema
        # The same text is the same document (the parser cache): what depends on the document alone is
        # checked once for it, and the analysis too when no variable can change it (a spend's).
        errors = list(_checked(schema, document, self.rules, self.limits))
        if not errors:
            if measure_reads_variables(document):
                analysis_error = analyze_operation(
                    schema, document, context.operation_name, context.variables, self.limits
                )
            else:
                analysis_error = _static_analysis(schema, document, context.operation_name, self.limits)
            if analysis_error:
                errors = [analysis_error]
        context.pre_execution_errors = errors
        yield


class _ByIdentity:
    """Results per parsed document, by identity: graphql-core's nodes are frozen dataclasses whose hash walks
    the whole tree on every call (about 40 us for a spend's document, each request, under ``lru_cache``).
    The parser cache hands back the same document for the same text, so its identity is key enough; each
    entry keeps what its key names alive, so an id is not reused while it is here. Bounded in bytes of the
    documents' texts as the parser cache is (creditline/document_cache.py): a document too long for it is
    checked again on each request, and not kept here either."""

    def __init__(self, maxsize: int) -> None:
        self.cache: TextCache[tuple[tuple[object, ...], Any]] = TextCache(maxsize)

    def get(self, key: tuple[Any, ...], keep: tuple[object, ...], compute: Callable[[], Any]) -> Any:
        documents = [document_bytes(kept) for kept in keep if isinstance(kept, DocumentNode)]
        size = None if None in documents else sum(d for d in documents if d is not None)
        return self.cache.get(key, size, lambda: (keep, compute()))[1]


_CHECKED = _ByIdentity(512)
_ANALYSED = _ByIdentity(1024)
_READS_VARIABLES = _ByIdentity(512)


def _checked(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...], limits: QueryLimits
) -> tuple[GraphQLError, ...]:
    """The size limits, then the standard rules: what a document is refused for whatever its variables."""

    def check() -> tuple[GraphQLError, ...]:
        if size_error := check_document_size(document, limits):
            return (size_error,)
        return tuple(_validate(schema, document, rules))

    result: tuple[GraphQLError, ...] = _CHECKED.get(
        (id(schema), id(document), id(rules), limits), (schema, document, rules), check
    )
    return result


def _static_analysis(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, limits: QueryLimits
) -> GraphQLError | None:
    result: GraphQLError | None = _ANALYSED.get(
        (id(schema), id(document), operation_name, limits),
        (schema, document),
        lambda: analyze_operation(schema, document, operation_name, None, limits),
    )
    return result


def _holds_variable(value: object) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, VariableNode):
            return True
        if isinstance(node, ObjectValueNode):
            stack.extend(field.value for field in node.fields)
        elif isinstance(node, ListValueNode):
            stack.extend(node.values)
    return False


def measure_reads_variables(document: DocumentNode) -> bool:
    reads: bool = _READS_VARIABLES.get((id(document),), (document,), lambda: _reads_variables(document))
    return reads


def _reads_variables(document: DocumentNode) -> bool:
    """Whether ``analyze_operation`` reads the request's variables for this document: a page size (``first``)
    given by one, or a usage report's arguments holding one. Every other measure is the document's own."""
    stack = [
        d.selection_set for d in document.definitions if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while stack:
        selection_set = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                for argument in selection.arguments or ():
                    counted = argument.name.value == "first" or selection.name.value == "usageReport"
                    if counted and _holds_variable(argument.value):
                        return True
                if selection.selection_set is not None:
                    stack.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
    return False
