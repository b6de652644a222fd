"""Test helpers: a GraphQL client over the real ASGI app, and makers of users and tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from starlette.applications import Starlette

from creditline.clock import Clock
from creditline.settings import Settings
from gateway.base import Charge
from gateway.sandbox import SandboxGateway
from models import ledger
from models.credits import MICRO
from models.ids import encode_id
from models.tables import TokenKind
from models.tokens import create_token


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Starlette
    clock: Clock
    settings: Settings

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> Any:
        body = await self.post(query, variables, token)
        assert "errors" not in body, body
        return body["data"]

    async def user(self, email: str, bonus: int = 100, bonus_days: int = 30) -> tuple[int, str]:
        """A new user with ``bonus`` free credits; returns the primary key and a user token."""
        user_id = await ledger.create_user(
            email, signup_bonus=bonus * MICRO, bonus_lifetime=timedelta(days=bonus_days), now=self.clock.now()
        )
        token = await create_token(TokenKind.USER, name=email, user_id=user_id, now=self.clock.now())
        return user_id, token

    async def service(self, name: str = "agent-runtime", scopes: tuple[str, ...] = ("usage:write",)) -> str:
        return await create_token(TokenKind.SERVICE, name=name, scopes=scopes, now=self.clock.now())

    async def admin(self, name: str = "ops") -> str:
        return await create_token(TokenKind.ADMIN, name=name, now=self.clock.now())


def gid(type_name: str, pk: int) -> str:
    return encode_id(type_name, pk)


def spend_variables(user_id: int, credits: str, key: str) -> dict[str, Any]:
    """``SPEND``'s variables: ``credits`` for the user's agent "a" answering, under ``key``."""
    return {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": credits,
            "idempotencyKey": key,
        }
    }


SPEND = """
mutation Spend($input: SpendCreditsInput!) {
  spendCredits(input: $input) {
    __typename
    ... on SpendCreditsSuccess {
      usageEvent { id credits freeCredits paidCredits activity agentId }
      balance { total free paid held available }
    }
    ... on InsufficientCredits { message available required }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
"""

BALANCE = """
query { me { credit { balance { total free paid held available } } } }
"""


class ScriptedGateway(SandboxGateway):
    """The sandbox, except that its next charges are declined with the reasons in ``declines`` (a card that
    works today and fails later, which the deterministic test tokens cannot express). Records each charge's
    idempotency key in ``calls``."""

    def __init__(self, declines: list[str] | None = None) -> None:
        self.declines = list(declines or [])
        self.calls: list[str] = []

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        card: str,
        idempotency_key: str,
        description: str,
        customer: str | None = None,
        off_session: bool = False,
    ) -> Charge:
        self.calls.append(idempotency_key)
        if self.declines:
            return Charge(False, f"ch_declined_{len(self.calls)}", self.declines.pop(0))
        return await super().charge(
            amount=amount, currency=currency, card=card, idempotency_key=idempotency_key, description=description
        )
