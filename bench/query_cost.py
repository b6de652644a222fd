"""The most expensive document the query limits still admit, and the server CPU it costs (target: 100 ms).

1. A fresh SQLite database with the data a hostile but ordinary account can have: an OWNER of an
   organization of ``list_size`` members with a credit pool; on their own account 100+ lots and ledger
   entries, 100 spends over 5 activities and 5 agents, 30 top-ups with their invoices (6 of them partly
   refunded), holds, 5 saved cards, a subscription and auto top-up. Every connection the limits let a
   document ask for is full.
2. The real server (``creditline serve``) in production mode, with the default limits.
3. A search for the costliest document: random documents built from the schema (each field taken with
   some probability, connections with a random ``first``, usage reports with random ranges, the roots
   ``me``, ``node`` on the organization and on the account, and the lists at the top, under up to
   ``max_aliases`` aliases), plus greedy ones (every field), each fitted to the limits (fewer aliases,
   then smaller pages, until the server's own analysis admits it). Each admitted document is sent a few
   times and the server process's CPU time per request read from /proc; the costliest ones are measured
   again, more times, and the worst is printed with its CPU time.

Settings (environment): ``BENCH_QUERY_SECONDS`` (20, the time the search may take), ``BENCH_QUERY_SEED``
(1, the search's random seed). Run alone with ``python -m bench.query_cost``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    get_named_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    parse,
)
from tortoise.transactions import in_transaction

from bench import fixtures
from bench.http_run import BenchError, Server, server_process
from bench.live import cpu_seconds
from bench.loop import arun
from creditline import db
from creditline.clock import Clock
from creditline.graphql import build_schema, query_limits
from creditline.query_limits import (
    QueryLimits,
    _validate,
    check_document_size,
    choose_operation,
    measure_operation,
    validation_rules,
)
from creditline.settings import MICRO, Settings
from models import ledger, organizations
from models.ids import encode_id
from models.tables import MemberRole, TokenKind
from models.tokens import create_token

TARGET_MS = 100.0
PAGES = (100, 50, 20, 10, 5, 2, 1)
"""The ``first`` values a fitted document tries, largest first."""
MAX_FIELD_DEPTH = 7
REPORT_FROM = "2026-01-01T00:00:00Z"
REPORT_TO = {"HOUR": "2026-01-08T00:00:00Z", "DAY": "2026-01-31T00:00:00Z", "WEEK": "2026-03-31T00:00:00Z"}
PRODUCTION_ENV = {
    "CREDITLINE_ENV": "production",
    "CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1",
    "CREDITLINE_SECRET_KEY": "bench-secret-key-0123456789abcdefghij",
}


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


@dataclass(frozen=True)
class Seeded:
    token: str
    """The OWNER's user token."""
    roots: dict[str, str]
    """Root selections a document may start from, by name: ``node(id: ...)`` with the ids filled in."""


@dataclass
class Measured:
    document: str
    cost: int
    cpu_ms: list[float]
    size: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.cpu_ms)


@dataclass
class QueryCostResult:
    worst: Measured | None
    candidates: int
    admitted: int
    seconds: float
    limits: QueryLimits
    failures: list[str]


# -------------------------------------------------------------------------------------------- seeding


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, query: str, token: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.base + "/graphql",
            data=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def must(self, query: str, token: str) -> dict[str, Any]:
        result = self.post(query, token)
        if result.get("errors") or not result.get("data"):
            raise BenchError(f"seeding failed: {json.dumps(result)[:500]}\n{query[:300]}")
        data: dict[str, Any] = result["data"]
        return data


async def _migrate(url: str) -> None:
    await db.migrate(url)
    await db.close_db()


async def _seed_rows(url: str, members: int) -> tuple[int, int, list[int], str, str, str]:
    """The owner, the organization and its members, and the tokens (user, service, admin)."""
    await db.init_db(url)
    try:
        now = Clock().now()
        owner = await ledger.create_user(
            "owner@bench.local", signup_bonus=1_000 * MICRO, bonus_lifetime=timedelta(days=30), now=now
        )
        org = await organizations.create("Bench", owner, now)
        for n in range(members - 1):  # User.organizations as long as a list without first is counted
            await organizations.create(f"Other {n}", owner, now)
        async with in_transaction():
            ids = []
            for n in range(members - 1):
                ids.append(
                    await ledger.create_user(
                        f"member{n}@bench.local", signup_bonus=0, bonus_lifetime=timedelta(days=30), now=now
                    )
                )
        for n, user_id in enumerate(ids):
            roles = [MemberRole.BILLING] if n % 3 == 0 else [MemberRole.MEMBER]
            await organizations.add_member(org.id, user_id, roles, now)
        user = await create_token(TokenKind.USER, name="owner", user_id=owner, now=now)
        service = await create_token(TokenKind.SERVICE, name="bench", scopes=("usage:write",), now=now)
        admin = await create_token(TokenKind.ADMIN, name="bench", now=now)
        return owner, org.id, ids, user, service, admin
    finally:
        await db.close_db()


def _aliased(calls: list[str]) -> Iterator[str]:
    for start in range(0, len(calls), 15):
        yield "mutation {\n" + "\n".join(f"m{n}: {call}" for n, call in enumerate(calls[start : start + 15])) + "\n}"


def seed_account(client: Client, rows: tuple[int, int, list[int], str, str, str], limits_list_size: int) -> Seeded:
    owner, org, _members, user, service, admin = rows
    user_id, org_id = encode_id("User", owner), encode_id("Organization", org)
    account = encode_id("CreditAccount", 1)  # the owner's: the first account
    ok = "{ __typename }"
    grants = [
        f'grantCredits(input: {{accountId: "{account}", credits: "10", kind: PAID, idempotencyKey: "g{n}"}}) {ok}'
        for n in range(100)
    ]
    spends = [
        f'spendCredits(input: {{userId: "{user_id}", agentId: "agent-{n % 5}", activity: "a{n % 5}",'
        f' credits: "0.01", idempotencyKey: "s{n}"}}) {ok}'
        for n in range(100)
    ]
    holds = [
        f'holdCredits(input: {{userId: "{user_id}", agentId: "agent-1", activity: "a1", credits: "0.5",'
        f' idempotencyKey: "h{n}"}}) {ok}'
        for n in range(20)
    ]
    top_ups = [
        f'topUp(input: {{credits: "10", paymentToken: "tok_visa", idempotencyKey: "t{n}"}})'
        " { ... on TopUpSuccess { transaction { id } } }"
        for n in range(100)
    ]
    cards = ['addPaymentMethod(input: {token: "tok_visa"}) { __typename }' for _ in range(limits_list_size)]
    for document in _aliased(grants):
        client.must(document, admin)
    for document in _aliased(spends + holds):
        client.must(document, service)
    transactions: list[str] = []
    for document in _aliased(top_ups + cards):
        data = client.must(document, user)
        transactions += [v["transaction"]["id"] for v in data.values() if v.get("transaction")]
    refunds = [  # two partial refunds of every payment (what a refund list is counted as)
        f'refundPayment(input: {{transactionId: "{t}", amount: 100, idempotencyKey: "r{n}-{k}"}}) {ok}'
        for n, t in enumerate(transactions)
        for k in range(2)
    ]
    for document in _aliased(refunds):
        client.must(document, admin)
    client.must(
        'mutation { subscribe(input: {planId: "pro-monthly", idempotencyKey: "sub"}) { __typename }'
        ' configureAutoTopUp(input: {threshold: "1", amount: "100", monthlyCap: "5000"}) { __typename } }',
        user,
    )
    client.must(f'mutation {{ enableCreditPool(input: {{organizationId: "{org_id}"}}) {{ __typename }} }}', user)
    roots = {
        "me": "me",
        "organization": f'node(id: "{org_id}")',
        "account": f'node(id: "{account}")',
        "plans": "plans",
        "rateCard": "rateCard",
        "billingConfig": "billingConfig",
    }
    return Seeded(user, roots)


# ------------------------------------------------------------------------------------------ documents


def _is_list(field: GraphQLField) -> bool:
    inner = field.type.of_type if is_non_null_type(field.type) else field.type
    return is_list_type(inner)


class Generator:
    """Random selections of the schema's fields; ``page`` is every connection's ``first``."""

    def __init__(self, schema: GraphQLSchema, rng: random.Random, keep: float, page: int) -> None:
        self.schema = schema
        self.rng = rng
        self.keep = keep
        self.page = page

    def arguments(self, name: str, field: GraphQLField) -> str | None:
        """The arguments of a field the generator can call, or None to leave it out."""
        given = []
        if "first" in field.args:
            given.append(f"first: {self.page}")
        if name == "usageReport":
            granularity = self.rng.choice(list(REPORT_TO))
            group = self.rng.choice(["NONE", "ACTIVITY", "AGENT", "MEMBER"])
            given.append(
                f'input: {{from: "{REPORT_FROM}", to: "{REPORT_TO[granularity]}", granularity: {granularity},'
                f" groupBy: {group}}}"
            )
        required = [a for a, arg in field.args.items() if is_non_null_type(arg.type) and a != "input"]
        if required:
            return None  # node(id:) only at the top
        return f"({', '.join(given)})" if given else ""

    def selection(self, type_: Any, depth: int, lists: frozenset[str]) -> str:
        if isinstance(type_, GraphQLUnionType | GraphQLInterfaceType):
            parts = [
                f"... on {possible.name} {{ {self.selection(possible, depth, lists)} }}"
                for possible in self.schema.get_possible_types(type_)
                if self.rng.random() < max(self.keep, 0.5)
            ]
            return " ".join(["__typename", *parts])
        assert isinstance(type_, GraphQLObjectType)
        chosen = []
        for name, field in type_.fields.items():
            named = get_named_type(field.type)
            if is_leaf_type(named):
                if self.rng.random() < self.keep:
                    chosen.append(name)
                continue
            edge = f"{type_.name}.{name}"
            if depth >= MAX_FIELD_DEPTH or (_is_list(field) and edge in lists) or self.rng.random() >= self.keep:
                continue
            arguments = self.arguments(name, field)
            if arguments is None:
                continue
            inner = self.selection(named, depth + 1, lists | {edge} if _is_list(field) else lists)
            chosen.append(f"{name}{arguments} {{ {inner} }}")
        return " ".join(chosen) or "__typename"

    def parts(self, roots: dict[str, str], aliases: int) -> list[str]:
        query = self.schema.query_type
        assert query is not None
        parts = []
        for n in range(aliases):
            name = self.rng.choice(list(roots))
            if name in ("organization", "account"):
                possible = self.schema.get_type("Organization" if name == "organization" else "CreditAccount")
                assert possible is not None
                inner = f"... on {possible.name} {{ {self.selection(possible, 1, frozenset())} }}"
            else:
                named = get_named_type(query.fields[roots[name]].type)
                inner = self.selection(named, 1, frozenset())
            parts.append(f"a{n}: {roots[name]} {{ {inner} }}")
        return parts


def admitted_cost(schema: GraphQLSchema, document: str, limits: QueryLimits, max_tokens: int) -> int | None:
    """The document's cost if the server's limits admit it, else None."""
    try:
        parsed = parse(document, max_tokens=max_tokens)
    except Exception:  # too many tokens: not admitted
        return None
    if check_document_size(parsed, limits) is not None or _validate(schema, parsed, validation_rules(limits)):
        return None
    operation = choose_operation(parsed, None)
    assert operation is not None
    measure = measure_operation(schema, parsed, operation, {}, limits)
    if measure.cost > limits.max_cost or measure.depth > limits.max_depth or measure.nested_list:
        return None
    if measure.aliases > limits.max_aliases:
        return None
    return measure.cost


def fitted(
    schema: GraphQLSchema, seeded: Seeded, limits: QueryLimits, max_tokens: int, seed: int, keep: float
) -> tuple[str, int] | None:
    """One random structure under ``max_aliases`` aliases at the largest page the limits admit, keeping the
    aliases in order while their costs (which add up at the top) fit under the cost limit."""
    for page in PAGES:
        generator = Generator(schema, random.Random(seed), keep, page)
        parts, total = [], 0
        for part in generator.parts(seeded.roots, limits.max_aliases):
            cost = admitted_cost(schema, "{ " + part + " }", limits, max_tokens)
            if cost is not None and total + cost <= limits.max_cost:
                parts.append(part)
                total += cost
        if not parts:
            continue
        document = "{\n" + "\n".join(parts) + "\n}"
        cost = admitted_cost(schema, document, limits, max_tokens)
        if cost is not None:
            return document, cost
    return None


# ------------------------------------------------------------------------------------------ measuring


def cpu_per_request(
    client: Client, server: Server, token: str, document: str, batches: int, per_batch: int
) -> list[float]:
    """The server's CPU milliseconds per request, one reading per batch of requests (/proc counts in clock
    ticks of 10 ms: a batch divides that)."""
    readings = []
    for _ in range(batches):
        before = cpu_seconds(server.pid)
        for _ in range(per_batch):
            result = client.post(document, token)
            if result.get("errors"):
                raise BenchError(f"an admitted document was answered with errors: {json.dumps(result)[:400]}")
        readings.append((cpu_seconds(server.pid) - before) * 1000 / per_batch)
    return readings


def run_query_cost(seconds: float, seed: int) -> QueryCostResult:
    settings = Settings.from_env({**os.environ, **PRODUCTION_ENV})  # the server's limits (it reads the same)
    limits = query_limits(settings)
    schema = build_schema(settings)._schema
    failures: list[str] = []
    with fixtures.workdir() as tmp:
        work = Path(tmp)
        url = f"sqlite://{work / 'query-cost.sqlite3'}"
        arun(_migrate(url))
        rows = arun(_seed_rows(url, limits.list_size))
        with server_process(url, work, PRODUCTION_ENV) as server:
            client = Client(server.base)
            say("seeding a full account and an organization through the API")
            seeded = seed_account(client, rows, limits.list_size)
            say(f"searching for {seconds:.0f} s for the costliest admitted document (server pid {server.pid})")
            started = time.monotonic()
            rng = random.Random(seed)
            measured: list[Measured] = []
            candidates = 0
            plans = [1.0, 0.9] + [0.0] * 1000  # greedy (every field) first, then random
            while time.monotonic() - started < seconds:
                keep = plans[candidates] or rng.uniform(0.3, 0.95)
                candidates += 1
                found = fitted(schema, seeded, limits, settings.max_query_tokens, rng.randrange(1 << 30), keep)
                if found is None:
                    continue
                document, cost = found
                try:
                    cpu = cpu_per_request(client, server, seeded.token, document, 1, 3)
                except BenchError as exc:
                    failures.append(str(exc))
                    continue
                measured.append(Measured(document, cost, cpu, len(document.encode())))
            say(f"{candidates} documents built, {len(measured)} admitted and measured; measuring the top 5 again")
            top = sorted(measured, key=lambda m: -m.median_ms)[:5]
            for entry in top:
                entry.cpu_ms = cpu_per_request(client, server, seeded.token, entry.document, 5, 4)
            worst = max(top, key=lambda m: m.median_ms) if top else None
            return QueryCostResult(worst, candidates, len(measured), time.monotonic() - started, limits, failures)


def report(result: QueryCostResult) -> str:
    limits = result.limits
    lines = [
        "Costliest admitted document (production limits: cost "
        f"{limits.max_cost:,}, depth {limits.max_depth}, aliases {limits.max_aliases}, lists without first"
        f" {limits.list_size})",
        f"  searched {result.seconds:.0f} s: {result.candidates} documents built, {result.admitted} admitted",
    ]
    if result.worst is None:
        lines.append("  no document was admitted")
        return "\n".join(lines)
    worst = result.worst
    verdict = "met" if worst.median_ms <= TARGET_MS else "not met"
    lines += [
        f"  server CPU per request: median {worst.median_ms:.1f} ms, max {max(worst.cpu_ms):.1f} ms (batches of 4)"
        f" (target <= {TARGET_MS:.0f} ms: {verdict}); its static cost {worst.cost:,}, {worst.size:,} bytes",
        "  the document:",
        *("    " + line for line in worst.document.splitlines()),
    ]
    return "\n".join(lines)


def main() -> bool:
    seconds = float(os.environ.get("BENCH_QUERY_SECONDS", "20"))
    seed = int(os.environ.get("BENCH_QUERY_SEED", "1"))
    print("Creditline benchmark: the costliest document the query limits admit")
    try:
        result = run_query_cost(seconds, seed)
    except BenchError as exc:
        print(f"!!! QUERY COST: the run could not complete: {exc}")
        return False
    print()
    print(report(result))
    for failure in result.failures:
        print(f"!!!   {failure}")
    # A missed target is reported (like the spend ratio's), not a failed run: that is an error or no document.
    return not result.failures and result.worst is not None


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
