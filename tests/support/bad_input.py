"""What the tests of bad input share: a client whose JSON escapes every non-ASCII character, a world of callers
(a user, a service, an admin) with the state a refused request must leave unchanged, and a few documents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from models.tables import Membership, Organization
from tests.support.backends import row_counts
from tests.support.helpers import Api, gid


async def post(api: Api, query: str, variables: dict[str, Any], token: str | None) -> Any:
    """POST as a client whose JSON escapes every non-ASCII character, so that lone surrogates arrive."""
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
    response = await api.client.post(
        "/graphql", content=json.dumps({"query": query, "variables": variables}).encode(), headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


class World:
    def __init__(self, api: Api, user: str, service: str, admin: str) -> None:
        self.api, self.user, self.service, self.admin = api, user, service, admin

    async def state(self) -> Any:
        balance = await self.api.data(
            "{ me { credit { balance { total held } lots(first: 10) { edges { node { amount expiresAt } } } } } }",
            token=self.user,
        )
        return balance, await row_counts()


@pytest.fixture
async def world(api: Api) -> World:
    _, user = await api.user("ada@example.com", bonus=10)
    await api.user("bob@example.com", bonus=0)
    org = await Organization.create(name="Ada's org", created_at=api.clock.now())
    await Membership.create(organization=org, user_id=1, roles="OWNER", created_at=api.clock.now())
    return World(api, user, await api.service(), await api.admin())


SPEND_INPUT = {"userId": gid("User", 1), "agentId": "agent-1", "activity": "answer", "credits": "1"}

GRANT = """mutation($input: GrantCreditsInput!) { grantCredits(input: $input) {
  __typename ... on ValidationError { message field } } }"""

DATETIME_RANGE = "DateTime must be between 1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z"


def without_locations(body: Any) -> Any:
    for error in body.get("errors", []):
        error.pop("locations", None)
    return body
