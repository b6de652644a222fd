"""Hostile documents (issue 9, points 1-3): every check linear in the document, refused before it runs.

Each graphql-cop finding (and each of its checks that could become one) has a test here of its own.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import parse

from creditline import graphql
from creditline import query_limits as checks
from creditline.app import create_app
from creditline.document_cache import CACHE_TEXT_BYTES, CACHEABLE_TEXT_BYTES, TextCache
from creditline.graphql import build_schema, query_limits
from creditline.query_limits import (
    FIELD_MERGE_BUDGET,
    QueryLimits,
    _validate,
    check_document_size,
    choose_operation,
    measure_operation,
    validation_rules,
)
from creditline.settings import Settings
from models.tables import Membership, Organization
from tests.support.helpers import Api, gid
from tests.support.live import connect, receive, serve
from tests.support.statements import StatementCounter, counter, tables_read  # noqa: F401


def alias_limit(found: int) -> dict[str, object]:
    return {"code": "TOO_MANY_ALIASES", "found": found, "limit": 15}


FAST = 0.5
"""Seconds a refused or answered hostile document may take: generous for a loaded machine (the exponential
validators took 6 s at 20 levels)."""

DEVELOPMENT = Settings(database_url="unused", token_cache_seconds=0)
# Production refuses the sandbox gateway unless told, and a missing or short secret key.
PRODUCTION = Settings(
    env="production",
    database_url="unused",
    token_cache_seconds=0,
    allow_sandbox_in_production=True,
    secret_key="test-secret-key-0123456789abcdefghij",
)


def nested_fragments(levels: int, name: str = "F", leaf: str = "__typename") -> str:
    """``fragment F{n} on Query { ...F{n-1} ...F{n-1} }`` down to ``F0``: 2**levels spreads once expanded."""
    lines = [f"fragment {name}0 on Query {{ {leaf} }}"]
    lines += [f"fragment {name}{n} on Query {{ ...{name}{n - 1} ...{name}{n - 1} }}" for n in range(1, levels + 1)]
    lines.append(f"query {{ ...{name}{levels} }}")
    return "\n".join(lines)


@asynccontextmanager
async def app_with(settings: Settings, api: Api) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def timed(send: Any) -> tuple[httpx.Response, float]:
    """The response and the CPU time this process spent on it (the ASGI app runs in it; CPU time, unlike
    wall time, does not grow with the machine's other work)."""
    started = time.process_time()
    response = await send
    return response, time.process_time() - started


def refusal(message: str, code: str, found: int, limit: int) -> dict[str, Any]:
    extensions = {"code": code, "found": found, "limit": limit}
    return {"data": None, "errors": [{"message": message, "extensions": extensions}]}


# ----------------------------------------------------------------------- 1. nested fragment spreads


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("name", ["F", "Renamed"])
async def test_twenty_levels_of_nested_fragments_are_refused_at_once(api: Api, method: str, name: str) -> None:
    query = nested_fragments(20, name)
    assert len(query) < 1400  # the "1 KB anonymous query"

    if method == "POST":
        response, took = await timed(api.client.post("/graphql", json={"query": query}))
    else:
        response, took = await timed(api.client.get("/graphql", params={"query": query}))

    assert took < FAST
    assert response.json() == refusal(
        "The document has 21 fragment definitions; at most 20 are allowed", "TOO_MANY_FRAGMENTS", 21, 20
    )


async def test_forty_levels_are_refused_for_their_spreads_before_anything_else(api: Api) -> None:
    response, took = await timed(api.client.post("/graphql", json={"query": nested_fragments(40)}))

    assert took < FAST
    assert response.json() == refusal(
        "The document has 81 fragment spreads; at most 50 are allowed", "TOO_MANY_FRAGMENT_SPREADS", 81, 50
    )


async def test_nested_fragments_within_raised_limits_are_answered_quickly(api: Api) -> None:
    """With the count limits out of the way, validation and analysis still look at each fragment once."""
    roomy = Settings(database_url="unused", token_cache_seconds=0, max_fragments=500, max_fragment_spreads=1000)
    async with app_with(roomy, api) as client:
        for levels in (20, 40, 80):
            for name in ("F", "G"):  # a renamed copy misses every cache and must be as quick
                response, took = await timed(client.post("/graphql", json={"query": nested_fragments(levels, name)}))
                assert took < FAST, (levels, name, took)
                assert response.json() == {"data": {"__typename": "Query"}}


async def test_aliases_are_counted_with_fragments_expanded_without_expanding_them(api: Api) -> None:
    roomy = Settings(database_url="unused", token_cache_seconds=0, max_fragments=500, max_fragment_spreads=1000)
    async with app_with(roomy, api) as client:
        query = nested_fragments(40, leaf="a: __typename")
        response, took = await timed(client.post("/graphql", json={"query": query}))

    assert took < FAST
    assert response.json() == {
        "data": None,
        "errors": [{"message": f"{2**40} aliases found. Allowed: 15", "extensions": alias_limit(2**40)}],
    }


@pytest.mark.parametrize("levels", [20, 40, 80, 160])
def test_the_standard_validation_rules_are_quick_on_nested_fragments(levels: int) -> None:
    """graphql-core's own rules (NoFragmentCycles, OverlappingFieldsCanBeMerged, NoUnusedFragments, ...) on
    the nested shape, with a nested object in every fragment, uncached (a new document each time). The
    field-merging rule compares each level's ``me`` with those of the levels below (quadratic): past 40
    levels its budget ends it, so it stays quick however deep."""
    schema = build_schema(DEVELOPMENT)._schema
    rules = validation_rules(QueryLimits())
    lines = ["fragment F0 on Query { __typename me { email } }"]
    lines += [f"fragment F{n} on Query {{ ...F{n - 1} me {{ id }} ...F{n - 1} }}" for n in range(1, levels + 1)]
    document = parse("\n".join([*lines, f"query {{ ...F{levels} }}"]))

    started = time.process_time()
    errors = _validate(schema, document, rules)

    assert time.process_time() - started < FAST
    if levels <= 40:
        assert errors == []
    else:
        assert [e.extensions for e in errors] == [
            {"code": "QUERY_TOO_COMPLEX", "found": FIELD_MERGE_BUDGET + 1, "limit": FIELD_MERGE_BUDGET}
        ]


# --------------------------------------------------------------------- repeated fields and directives


async def test_field_duplication_is_refused(api: Api) -> None:
    """graphql-cop's field duplication check: 500 copies of one field."""
    query = "query cop { " + "__typename \n" * 500 + "}"

    response, took = await timed(api.client.post("/graphql", json={"query": query}))

    assert took < FAST
    assert response.json() == refusal(
        "'__typename' is selected 4 times in one selection set; at most 3 are allowed", "REPEATED_FIELD", 4, 3
    )


async def test_a_field_repeated_up_to_the_limit_and_one_key_per_type_condition_are_answered(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=10)
    query = """{ me { email email email } n1: node(id: "x") { ... on User { id } ... on CreditAccount { id }
                 ... on Hold { id } ... on Organization { id } } }"""

    body = await api.post(query, token=token)

    assert body == {"data": {"me": {"email": "ada@example.com"}, "n1": None}}


def test_repeated_fields_spread_through_fragments_stop_at_the_merging_budget() -> None:
    """Under the per-selection-set cap, fields can still repeat through many fragments: the field-merging
    rule then compares pairs until its budget runs out, and the document is refused quickly."""
    schema = build_schema(DEVELOPMENT)._schema
    fragments = [f"fragment R{n} on Query {{ me {{ id }} me {{ id }} me {{ id }} }}" for n in range(40)]
    spreads = " ".join(f"...R{n}" for n in range(40))
    document = parse("\n".join([*fragments, f"{{ {spreads} }}"]))

    started = time.process_time()
    errors = _validate(schema, document, validation_rules(QueryLimits()))

    assert time.process_time() - started < FAST
    assert [(e.message, e.extensions) for e in errors] == [
        (
            "The document repeats fields too often to be checked; merge the repeated selections",
            {"code": "QUERY_TOO_COMPLEX", "found": FIELD_MERGE_BUDGET + 1, "limit": FIELD_MERGE_BUDGET},
        )
    ]


async def test_directive_overloading_is_refused_with_one_error(api: Api) -> None:
    """graphql-cop's directive overloading check (HIGH) counted ten errors, one per unknown directive."""
    query = "query cop { __typename @aa@aa@aa@aa@aa@aa@aa@aa@aa@aa }"

    body = (await api.client.post("/graphql", json={"query": query})).json()

    assert body == refusal(
        "10 directives on one field, fragment or operation; at most 3 are allowed", "TOO_MANY_DIRECTIVES", 10, 3
    )


async def test_directives_are_capped_per_document(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=10)
    twice = "@include(if: true) @skip(if: false)"
    query = f"""{{ me {{ id {twice} email {twice} }} rateCard {{ activity {twice} unit {twice} price {twice} }}
      plans {{ id {twice} name {twice} interval {twice} creditsPerPeriod {twice} creditsExpireAtPeriodEnd {twice} }}
      billingConfig {{ gateway }} }}"""
    over = query.replace("gateway", "gateway @include(if: true)")

    answered = await api.post(query, token=token)
    refused = await api.client.post("/graphql", json={"query": over}, headers={"authorization": f"Bearer {token}"})

    assert answered["data"]["me"]["email"] == "ada@example.com"
    assert answered["data"]["billingConfig"] == {"gateway": "sandbox"}
    assert refused.json() == refusal(
        "The document has 21 directives; at most 20 are allowed", "TOO_MANY_DIRECTIVES", 21, 20
    )


async def test_alias_overloading_is_refused(api: Api) -> None:
    """graphql-cop's alias overloading check: 101 aliases of __typename."""
    query = "query cop { " + "".join(f"alias{n}:__typename \n" for n in range(101)) + " }"

    body = (await api.client.post("/graphql", json={"query": query})).json()

    assert body == {
        "data": None,
        "errors": [{"message": "101 aliases found. Allowed: 15", "extensions": alias_limit(101)}],
    }


async def test_circular_introspection_is_refused_in_development(api: Api) -> None:
    """graphql-cop's introspection-based circular query (production refuses introspection altogether)."""
    query = (
        "query cop { __schema { types { fields { type { fields { type { fields { type { fields { type { name }"
        " } } } } } } } } } }"
    )

    response, took = await timed(api.client.post("/graphql", json={"query": query}))

    assert took < FAST
    assert response.json() == {
        "data": None,
        "errors": [{"message": "Maximum introspection depth exceeded", "locations": [{"line": 1, "column": 13}]}],
    }


# ------------------------------------------------------------------------------------------- 2. cost


def cost_of(query: str, variables: dict[str, Any] | None = None, limits: QueryLimits | None = None) -> int:
    schema = build_schema(DEVELOPMENT)._schema
    document = parse(query)
    operation = choose_operation(document, None)
    assert operation is not None
    return measure_operation(schema, document, operation, variables, limits or QueryLimits()).cost


def test_cost_counts_objects_with_lists_weighted_by_their_page() -> None:
    # me, credit, lots (the connection), the 10 rows it loads, 10 edges each with its node, pageInfo
    assert cost_of("{ me { credit { lots(first: 10) { edges { node { id } } pageInfo { hasNextPage } } } } }") == 34
    # the rows are loaded whatever is selected
    assert cost_of("{ me { credit { lots(first: 10) { __typename } } } }") == 13
    # no first: the resolver's default page of 20; a variable counts as given, or its default
    assert cost_of("{ me { credit { lots { edges { node { id } } } } } }") == 63
    assert cost_of("query($n: Int) { me { credit { lots(first: $n) { edges { cursor } } } } }", {"n": 3}) == 9
    assert cost_of("query($n: Int = 5) { me { credit { lots(first: $n) { edges { cursor } } } } }") == 13
    # over the resolver's maximum (which refuses it) counts as the maximum
    assert cost_of("{ me { credit { lots(first: 1000) { edges { cursor } } } } }") == 203
    # an unpaginated list counts 20 items (10 for the operator's plans); leaves and __typename cost nothing;
    # aliases count again
    assert cost_of("{ me { organizations { organization { id } } } }") == 41
    assert cost_of("{ plans { id price { amount } } }") == 20
    assert cost_of("{ a: plans { id } b: plans { id } __typename }") == 20


def test_a_usage_reports_rows_count_its_buckets_times_the_keys() -> None:
    report = """query($input: UsageReportInput!) { me { credit { usageReport(input: $input) {
      ... on UsageReport { rows { key totals { events } } } } } } }"""
    month = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-31T00:00:00Z"}

    # me, credit, the report, and each row with its totals: (30 days + 1) buckets, 20 keys counted when grouped
    assert cost_of(report, {"input": {**month, "granularity": "DAY"}}) == 3 + 31 * 2
    assert cost_of(report, {"input": {**month, "granularity": "DAY", "groupBy": "AGENT"}}) == 3 + 31 * 20 * 2
    assert cost_of(report, {"input": {**month, "granularity": "HOUR", "groupBy": "AGENT"}}) == 3 + 721 * 20 * 2
    # an input the resolver refuses (to before from) runs no report
    assert cost_of(report, {"input": {"from": month["to"], "to": month["from"], "granularity": "DAY"}}) == 3


def test_cost_of_nested_fragments_is_memoized_and_multiplied() -> None:
    fragments = ["fragment P0 on Query { plans { id } }"]
    fragments += [f"fragment P{n} on Query {{ ...P{n - 1} ...P{n - 1} }}" for n in range(1, 41)]
    started = time.process_time()
    cost = cost_of("\n".join([*fragments, "{ ...P40 }"]))

    assert time.process_time() - started < FAST
    assert cost == 10 * 2**40


CYCLIC = """query Cycle {
  me { email organizations { roles organization { name members { email roles userId organization { name members {
    email roles userId organization { name members { email roles userId organization { name members { email
    roles userId } } } } } } } } } }
  again: me { email organizations { roles organization { myRoles members { organization { members {
    organization { myRoles members { email roles userId organization { members { organization { members { email
    roles userId } } } } } } } } } } } }
}"""


async def test_the_cyclic_members_query_of_a_plain_member_is_refused_before_it_runs(
    api: Api,
    counter: StatementCounter,  # noqa: F811
) -> None:
    """The issue's cycle Organization.members -> Membership.organization -> members: 23,000 objects from an
    organization of 6. Now refused by its cost, with the cost and the limit, and nothing executed."""
    org = await Organization.create(name="Acme", created_at=api.clock.now())
    tokens = []
    for n in range(6):
        user_id, token = await api.user(f"m{n}@example.com", bonus=0)
        await Membership.create(organization=org, user_id=user_id, roles="MEMBER", created_at=api.clock.now())
        tokens.append(token)
    assert 500 < len(CYCLIC.encode()) < 600  # the was 543 bytes

    response = await counter.during(
        api.client.post("/graphql", json={"query": CYCLIC}, headers={"authorization": f"Bearer {tokens[0]}"})
    )

    cost = cost_of(CYCLIC)
    assert cost > 1_000_000
    assert response.json() == {
        "data": None,
        "errors": [
            {
                "message": f"Query cost {cost:,} is over the limit of 1,600: it could produce {cost:,} objects."
                " Ask for smaller pages (first), fewer nested lists or fewer aliases.",
                "extensions": {"code": "QUERY_TOO_COMPLEX", "cost": cost, "limit": 1600},
            }
        ],
    }
    assert tables_read(counter.statements) == ["api_tokens"]  # the token lookup, no resolver


async def test_a_list_inside_itself_is_refused_and_one_back_edge_answered(
    api: Api,
    counter: StatementCounter,  # noqa: F811
) -> None:
    """Cheap by its cost (20 members counted), but an organization of 500 would produce 250,000 objects."""
    org = await Organization.create(name="Acme", created_at=api.clock.now())
    user_id, token = await api.user("ada@example.com", bonus=0)
    await Membership.create(organization=org, user_id=user_id, roles="MEMBER", created_at=api.clock.now())
    headers = {"authorization": f"Bearer {token}"}
    back = "{ me { organizations { organization { members { email organization { name } } } } } }"
    nested = """query($org: ID!) { node(id: $org) { ... on Organization { ...Members } } }
      fragment Members on Organization { members { organization { members { email } } } }"""

    answered = await api.data(back, token=token)
    refused = await counter.during(
        api.client.post(
            "/graphql", json={"query": nested, "variables": {"org": gid("Organization", org.id)}}, headers=headers
        )
    )

    assert answered == {
        "me": {
            "organizations": [
                {"organization": {"members": [{"email": "ada@example.com", "organization": {"name": "Acme"}}]}}
            ]
        }
    }
    assert cost_of(nested) == 441
    assert refused.json() == {
        "data": None,
        "errors": [
            {
                "message": "Organization.members is selected inside itself; select it once and follow the ids instead",
                "extensions": {"code": "NESTED_LIST", "field": "Organization.members"},
            }
        ],
    }
    assert tables_read(counter.statements) == ["api_tokens"]


async def test_a_query_at_the_cost_limit_is_answered_and_one_past_it_refused(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=10)
    tight = Settings(database_url="unused", token_cache_seconds=0, max_query_cost=36)
    query = "query($n: Int) { me { credit { lots(first: $n) { edges { node { kind } } } } } }"
    async with app_with(tight, api) as client:
        headers = {"authorization": f"Bearer {token}"}
        answered = await client.post("/graphql", json={"query": query, "variables": {"n": 11}}, headers=headers)
        refused = await client.post("/graphql", json={"query": query, "variables": {"n": 12}}, headers=headers)

    assert answered.json() == {"data": {"me": {"credit": {"lots": {"edges": [{"node": {"kind": "FREE"}}]}}}}}
    assert refused.json()["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 39, "limit": 36}


def test_every_readme_example_is_within_the_default_limits() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    examples = re.findall(r"```graphql\n(.*?)```", readme, re.DOTALL)
    schema = build_schema(DEVELOPMENT)._schema
    limits = query_limits(Settings())
    assert len(examples) >= 5
    for example in examples:
        document = parse(example)
        assert check_document_size(document, limits) is None
        assert _validate(schema, document, validation_rules(limits)) == []
        for operation in document.definitions:
            measure = measure_operation(schema, document, operation, {}, limits)  # type: ignore[arg-type]
            assert measure.cost <= limits.max_cost, example
            assert measure.depth <= limits.max_depth, example


# ---------------------------------------------------------------------------------- GET and CSRF


GET_QUERY = {"query": "query cop { __typename }"}


async def test_queries_over_get_are_off_in_production(api: Api) -> None:
    """graphql-cop's GET method query support (MEDIUM): a GET is a simple cross-site request."""
    async with app_with(PRODUCTION, api) as client:
        response = await client.get("/graphql", params=GET_QUERY)

    assert (response.status_code, response.text) == (400, "queries are not allowed when using GET")


async def test_a_setting_turns_queries_over_get_on_in_production(api: Api) -> None:
    settings = Settings.from_env({"CREDITLINE_ENV": "production", "CREDITLINE_ALLOW_GET_QUERIES": "1"})
    assert settings.allow_get_queries
    assert settings.get_queries
    allowed = dataclasses.replace(PRODUCTION, allow_get_queries=True)
    async with app_with(allowed, api) as client:
        response = await client.get("/graphql", params=GET_QUERY)
        mutation = await client.get("/graphql", params={"query": "mutation cop { __typename }"})

    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})
    assert (mutation.status_code, mutation.text) == (400, "mutations are not allowed when using GET")


async def test_development_keeps_queries_over_get_and_every_limit_applies_to_them(api: Api) -> None:
    answered = await api.client.get("/graphql", params=GET_QUERY)
    mutation = await api.client.get("/graphql", params={"query": "mutation cop { __typename }"})
    costly = await api.client.get("/graphql", params={"query": CYCLIC})

    assert (answered.status_code, answered.json()) == (200, {"data": {"__typename": "Query"}})
    assert (mutation.status_code, mutation.text) == (400, "mutations are not allowed when using GET")
    assert costly.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


async def test_a_form_encoded_post_is_refused(api: Api) -> None:
    """graphql-cop's POST-based CSRF check: a form post is a simple cross-site request too."""
    async with app_with(PRODUCTION, api) as client:
        response = await client.post("/graphql", data=GET_QUERY)

    assert (response.status_code, response.text) == (400, "Unsupported content type")


async def test_production_answers_no_trace_and_no_suggestion(api: Api) -> None:
    """graphql-cop's trace-mode and field-suggestion checks, in production."""
    async with app_with(PRODUCTION, api) as client:
        plain = (await client.post("/graphql", json=GET_QUERY)).json()
        typo = (await client.post("/graphql", json={"query": "query cop { __schema { directive } }"})).json()

    assert plain == {"data": {"__typename": "Query"}}
    assert "Did you mean" not in str(typo)


def test_the_limit_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CREDITLINE_MAX_QUERY_COST": "123",
            "CREDITLINE_MAX_FRAGMENTS": "4",
            "CREDITLINE_MAX_FRAGMENT_SPREADS": "5",
            "CREDITLINE_MAX_DIRECTIVES": "6",
        }
    )
    limits = query_limits(settings)

    assert (limits.max_cost, limits.max_fragments, limits.max_fragment_spreads, limits.max_directives) == (123, 4, 5, 6)
    assert Settings.from_env({}).get_queries
    assert not Settings.from_env({"CREDITLINE_ENV": "production"}).get_queries


async def test_a_subscription_over_the_limits_is_refused_on_the_websocket(api: Api) -> None:
    """The websocket runs the same checks: a costly subscription document gets an error and nothing more."""
    _, token = await api.user("ada@example.com", bonus=10)
    pages = " ".join(f"l{n}: lots(first: 100) {{ edges {{ node {{ id }} }} }}" for n in range(6))
    costly = f"subscription {{ balanceChanged {{ account {{ {pages} }} }} }}"
    async with serve(DEVELOPMENT, api.clock) as live:
        ws = await connect(live, token)
        try:
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": costly}}))
            message = await receive(ws)
        finally:
            await ws.close()

    assert message == {
        "id": "1",
        "type": "error",
        "payload": [
            {
                "message": "Query cost 1,808 is over the limit of 1,600: it could produce 1,808 objects."
                " Ask for smaller pages (first), fewer nested lists or fewer aliases.",
                "extensions": {"code": "QUERY_TOO_COMPLEX", "cost": 1808, "limit": 1600},
            }
        ],
    }


# ----------------------------------------------------------------------- documents bounded in bytes


async def test_a_document_past_the_byte_limit_is_refused_before_it_is_parsed(api: Api) -> None:
    """The token limit counts no comment and no string's length: a megabyte of either cost graphql-core's lexer
    130-210 ms of CPU, and 20 such requests a second from one address, unauthenticated, held the server (an
    outside attack). The text is measured in UTF-8 bytes, before anything reads it."""
    limit = api.settings.max_query_bytes
    assert limit == 32 * 1024
    head = "{ __typename } # "
    at_limit = head + "x" * (limit - len(head))
    over_in_ascii = at_limit + "x"
    over_in_bytes = head + "é" * ((limit - len(head)) // 2 + 1)  # fewer characters than the limit: 2 bytes each
    graphql.PARSED.clear()

    answered = await api.client.post("/graphql", json={"query": at_limit})
    refused = [(await api.client.post("/graphql", json={"query": q})).json() for q in (over_in_ascii, over_in_bytes)]

    assert answered.json() == {"data": {"__typename": "Query"}}
    assert refused == [
        refusal(f"The document is {limit + 1:,} bytes long; at most {limit:,} are allowed", "QUERY_TOO_LARGE",
                limit + 1, limit),
        refusal(f"The document is {limit + 1:,} bytes long; at most {limit:,} are allowed", "QUERY_TOO_LARGE",
                limit + 1, limit),
    ]  # fmt: skip
    assert len(over_in_bytes) < limit
    assert graphql.PARSED.entries == {}  # neither was parsed (the one at the limit is past what is cached)


async def test_the_byte_limit_is_a_setting(api: Api) -> None:
    roomy = Settings(database_url="unused", token_cache_seconds=0, max_query_bytes=64 * 1024)
    app = create_app(roomy, clock=api.clock, manage_database=False, run_jobs=False)
    text = "#" + "x" * 40_000 + "\n{ __typename }"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.post("/graphql", json={"query": text})).json() == {"data": {"__typename": "Query"}}
    assert (
        Settings.from_env(
            {"CREDITLINE_DATABASE_URL": "sqlite://:memory:", "CREDITLINE_MAX_QUERY_BYTES": "65536"}
        ).max_query_bytes
        == 65536
    )


# ----------------------------------------------------------------------- caches bounded in bytes


async def test_many_long_distinct_documents_keep_the_caches_under_their_byte_bound(api: Api) -> None:
    """A megabyte of comment around ``{ __typename }`` passed the token limit (the lexer skips comments): each
    distinct one was kept by the parser cache and the checks' caches, 1.3 GB for 512 of them. Documents are
    now at most ``max_query_bytes`` (32 KiB) long; one just under it, past what the caches keep, is not kept."""
    caches: list[TextCache[Any]] = [
        graphql.PARSED,
        graphql.SUBSCRIPTIONS,
        checks._CHECKED.cache,
        checks._ANALYSED.cache,
    ]
    for cache in caches:
        cache.clear()
    # One long document first, outside the count: a first request allocates what every later one
    # reuses (pooled connections, compiled statements), which is not a document kept.
    warm_up = f"#{'w' * 30_000}\n{{ __typename }}"
    response = await api.client.post("/graphql", json={"query": warm_up})
    assert response.json() == {"data": {"__typename": "Query"}}
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(32):
            text = f"#{str(n % 10) * 30_000}\n{{ __typename }} # subscription {n}"
            response = await api.client.post("/graphql", json={"query": text})
            assert response.json() == {"data": {"__typename": "Query"}}
        gc.collect()  # the tokens of a parsed document are a cycle
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Anything that kept the documents would hold 960 KB. What is counted besides is bounded: the last
    # text (30 KB, still in ``text``) and the names CPython's method cache keeps (4,096 entries of about
    # 64 bytes: graphql-core looks up ``enter_<kind>`` on fresh visitors), 250-310 KB measured in all.
    assert kept < 480_000, f"{kept} bytes kept by 32 documents of 30 KB"
    assert [len(cache.entries) for cache in caches] == [0, 0, 0, 0]
    for n in range(300):  # short ones are kept, up to the bound in bytes
        text = f"{{ __typename }} # subscription {n} " + "d" * (CACHEABLE_TEXT_BYTES - 60)
        assert (await api.client.post("/graphql", json={"query": text})).json() == {"data": {"__typename": "Query"}}
    for cache in caches:
        assert 0 < cache.bytes <= CACHE_TEXT_BYTES
        assert len(cache.entries) < 300


async def test_a_refused_document_is_not_kept_by_the_parser_cache(api: Api) -> None:
    graphql.PARSED.clear()
    refused = await api.client.post("/graphql", json={"query": "{ nosuchfield }"})
    assert refused.json()["errors"][0]["message"] == "Cannot query field 'nosuchfield' on type 'Query'."
    assert graphql.PARSED.entries == {}
    assert (await api.client.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
    assert len(graphql.PARSED.entries) == 1


@pytest.mark.parametrize(
    "query",
    [
        "{",
        "query {",
        "{ __typename",
        "subscription {",
        "query " + "{ me " * 2100,
        "#" + "x" * 33_000 + "\n{ me { id } }",
    ],
    ids=["brace", "query", "unclosed", "subscription", "over-the-token-limit", "over-the-byte-limit"],
)
async def test_a_document_that_does_not_parse_gets_the_same_error_on_the_websocket_as_over_http(
    api: Api, query: str
) -> None:
    """Syntax errors and the token limit ended the operation with ``complete`` alone on the websocket: a client
    could not tell a broken document from an empty result."""
    _, token = await api.user("ada@example.com", bonus=10)
    over_http = (await api.client.post("/graphql", json={"query": query})).json()
    assert over_http["data"] is None
    async with serve(DEVELOPMENT, api.clock) as live:
        ws = await connect(live, token)
        try:
            await ws.send(json.dumps({"id": "q", "type": "subscribe", "payload": {"query": query}}))
            message = await receive(ws)
            await ws.send(json.dumps({"id": "after", "type": "subscribe", "payload": {"query": "{ __typename }"}}))
            after = await receive(ws)  # the connection stays open
        finally:
            await ws.close()
    assert message == {"id": "q", "type": "error", "payload": over_http["errors"]}
    assert after == {"id": "after", "type": "next", "payload": {"data": {"__typename": "Query"}}}
