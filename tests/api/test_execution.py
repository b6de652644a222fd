"""The executor's short path for plain scalar fields and relay ids (creditline/execution.py) answers exactly
what graphql-core's own path answers: the same data, and the same errors at the same paths."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NewType

import pytest
import strawberry
from strawberry import relay
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from creditline.execution import PlainLeafExecutionContext
from creditline.graphql import GraphQLEndpoint
from models import ledger
from models.credits import MICRO
from models.tables import CreditAccount, CreditKind, LotSource
from tests.support.helpers import Api, gid

Strict = NewType("Strict", int)


def _serialize_strict(value: int) -> int:
    if value < 0:
        raise ValueError(f"Strict cannot be negative, got {value}")
    return value


@strawberry.type
class Item(relay.Node):
    id: relay.NodeID[int]
    name: str
    label: str | None
    amount: Strict


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return [
            Item(id=1, name="one", label=None, amount=Strict(1)),
            Item(id=2, name=None, label="two", amount=Strict(2)),  # type: ignore[arg-type]  # null in a non-null
            Item(id=3, name="three", label="three", amount=Strict(-3)),  # a value its scalar refuses
        ]


def _schema(execution: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        execution_context_class=execution,
        config=StrawberryConfig(scalar_map={Strict: strawberry.scalar(name="Strict", serialize=_serialize_strict)}),
    )


async def test_nulls_and_refused_values_fail_as_on_graphql_cores_path() -> None:
    query = "{ items { id name label amount } }"
    ours = await _schema(PlainLeafExecutionContext).execute(query)
    theirs = await _schema(StrawberryGraphQLCoreExecutionContext).execute(query)

    assert (
        ours.data
        == theirs.data
        == {"items": [{"id": gid("Item", 1), "name": "one", "label": None, "amount": 1}, None, None]}
    )
    assert ours.errors is not None
    assert theirs.errors is not None
    assert [(e.message, e.path) for e in ours.errors] == [(e.message, e.path) for e in theirs.errors]
    assert [(e.message, e.path) for e in ours.errors] == [
        ("Cannot return null for non-nullable field Item.name.", ["items", 1, "name"]),
        ("Strict cannot be negative, got -3", ["items", 2, "amount"]),
    ]


MY_CREDIT = """
query MyCredit($account: ID!) {
  me { id email credit { id balance { total free paid held available }
    lots(first: 10) { pageInfo { hasNextPage endCursor }
      edges { cursor node { id kind source amount remaining grantedAt expiresAt status reason } } }
    ledger(first: 10) {
      edges { node { id type delta freeDelta paidDelta heldDelta balanceAfter heldAfter version reason createdAt } } }
  } }
  node(id: $account) { __typename id ... on CreditAccount { balance { total } } }
}
"""


@pytest.fixture
def endpoint(api: Api) -> GraphQLEndpoint:
    found = [getattr(route, "endpoint", None) for route in api.app.routes]
    endpoints = [e for e in found if isinstance(e, GraphQLEndpoint)]
    assert len(endpoints) == 1
    return endpoints[0]


async def test_a_page_answers_the_same_on_both_paths(
    api: Api, endpoint: GraphQLEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = api.clock.now()
    user_id, token = await api.user("pages@example.com", bonus=5)
    account = await CreditAccount.get(user_id=user_id)
    for n in range(4):
        await ledger.grant(
            account.id,
            credits=(n + 1) * MICRO,
            kind=CreditKind.PAID,
            source=LotSource.ADJUSTMENT,
            expires_at=now + timedelta(days=n + 1) if n % 2 else None,
            reason="bonus" if n % 2 else None,
            idem=None,
            now=now,
        )
    variables = {"account": gid("CreditAccount", account.id)}
    schema = endpoint.schema
    assert isinstance(schema, strawberry.Schema)
    assert schema.execution_context_class is PlainLeafExecutionContext

    ours: dict[str, Any] = await api.data(MY_CREDIT, variables, token)
    monkeypatch.setattr(schema, "execution_context_class", StrawberryGraphQLCoreExecutionContext)
    theirs: dict[str, Any] = await api.data(MY_CREDIT, variables, token)

    assert ours == theirs
    assert ours["me"]["credit"]["balance"]["total"] == "15"
    assert ours["node"]["id"] == gid("CreditAccount", account.id)
    assert [edge["node"]["amount"] for edge in ours["me"]["credit"]["lots"]["edges"]] == ["4", "3", "2", "1", "5"]
