"""A websocket is only as good as its token right now: every operation sent on it (query, mutation,
subscription) checks the token again as an HTTP request would, so a revoked admin token, user token or
signed-out portal session stops on the sockets it opened earlier too; the re-check of live subscriptions
marks the socket so that nothing more runs on it; a token that stays valid keeps its socket working."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

import resolvers.auth
from creditline.clock import Clock
from creditline.db_backends import SERVICE_UNAVAILABLE_MESSAGE, DatabaseUnavailable
from creditline.live import EXPIRED, NO_LONGER_VALID
from creditline.settings import Settings
from models.tables import ApiToken, CreditAccount, TokenKind
from models.tokens import StoredToken, create_token, token_for
from tests.support.backends import Backend
from tests.support.helpers import SPEND, gid
from tests.support.live import Live, connect, receive, serve
from tests.support.snapshots import changed, snapshot

MINT = """mutation($kind: TokenKind!) { createApiToken(input: {kind: $kind, name: "phoenix"}) { __typename } }"""
LOOK = "query($id: ID!) { node(id: $id) { id } }"
WATCH = "subscription($id: ID) { balanceChanged(accountId: $id) { reason balance { total } } }"
REVOKE = "mutation($id: ID!) { revokeApiToken(input: {tokenId: $id}) { __typename } }"
SIGN_OUT = "mutation { revokePortalSession(input: {}) { __typename } }"
REFUSED = [{"message": NO_LONGER_VALID, "extensions": {"code": "UNAUTHENTICATED"}}]


@pytest.fixture
async def live(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    """No token cache: a revocation shows at once; no re-check of live subscriptions within a test."""
    async with serve(replace(settings, token_cache_seconds=0, token_recheck_seconds=3600), clock) as server:
        yield server


@pytest.fixture
async def rechecked(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    """A long token cache (the authenticator would still let a revoked token in) and a re-check every second."""
    async with serve(replace(settings, token_cache_seconds=3600, token_recheck_seconds=1), clock) as server:
        yield server


async def send(ws: ClientConnection, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
    payload = {"query": query, "variables": variables or {}}
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))


async def run(ws: ClientConnection, op_id: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    """A query or mutation on the socket: its data, once ``complete`` came."""
    await send(ws, op_id, query, variables)
    message = await receive(ws)
    assert message["type"] == "next", message
    assert await receive(ws) == {"id": op_id, "type": "complete"}
    return message["payload"]["data"]


async def caller(live: Live, kind: str, account: int) -> str:
    if kind == "ADMIN":
        return await live.api.admin("attacker")
    if kind == "USER":
        _, token = await live.api.user("eve@example.com", bonus=0)
        return token
    return await create_token(TokenKind.PORTAL, name="portal", account_id=account, now=live.api.clock.now())


async def revoke(live: Live, kind: str, token: str, ops: str) -> None:
    if kind == "PORTAL":  # signs out with its own token, over HTTP
        data = await live.api.data(SIGN_OUT, token=token)
        assert data == {"revokePortalSession": {"__typename": "RevokePortalSessionSuccess"}}
        return
    stored = await token_for(token)
    assert stored is not None
    data = await live.api.data(REVOKE, {"id": gid("ApiToken", stored.principal.token_id)}, ops)
    assert data == {"revokeApiToken": {"__typename": "RevokeApiTokenSuccess"}}


@pytest.mark.parametrize("kind", ["ADMIN", "USER", "PORTAL"])
async def test_a_revoked_token_can_do_nothing_more_on_the_socket_it_opened(live: Live, kind: str) -> None:
    ops = await live.api.admin("ops")
    ada_id, _ = await live.api.user("ada@example.com", bonus=10)
    account = (await CreditAccount.get(user_id=ada_id)).id
    token = await caller(live, kind, account)
    if kind == "USER":  # a user token sees its own account
        account = (await CreditAccount.get(user__email="eve@example.com")).id
    mint_kind = "USER" if kind == "USER" else "ADMIN"
    ws = await connect(live, token)
    try:
        # Before: all three kinds of operation work.
        tokens = await ApiToken.all().count()
        minted = await run(ws, "m1", MINT, {"kind": mint_kind})
        if kind == "PORTAL":
            assert minted == {"createApiToken": {"__typename": "Forbidden"}}
            assert await ApiToken.all().count() == tokens
        else:
            assert minted == {"createApiToken": {"__typename": "CreateApiTokenSuccess"}}
            assert await ApiToken.all().count() == tokens + 1
        assert await run(ws, "q1", LOOK, {"id": gid("CreditAccount", account)}) == {
            "node": {"id": gid("CreditAccount", account)}
        }
        await send(ws, "s1", WATCH, {"id": gid("CreditAccount", account)})
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        await ws.send(json.dumps({"id": "s1", "type": "complete"}))

        await revoke(live, kind, token, ops)
        before = await snapshot()
        tokens = await ApiToken.all().count()

        # After: the same socket, the same operations, each refused; nothing minted, nothing changed.
        await send(ws, "m2", MINT, {"kind": mint_kind})
        assert await receive(ws) == {"id": "m2", "type": "error", "payload": REFUSED}
        await send(ws, "q2", LOOK, {"id": gid("CreditAccount", account)})
        assert await receive(ws) == {"id": "q2", "type": "error", "payload": REFUSED}
        await send(ws, "s2", WATCH, {"id": gid("CreditAccount", account)})
        assert await receive(ws) == {"id": "s2", "type": "error", "payload": REFUSED}
        assert await ApiToken.all().count() == tokens
        assert changed(before, await snapshot()) == set()
        # And over HTTP, as ever.
        response = await live.api.post(LOOK, {"id": gid("CreditAccount", account)}, token)
        assert response["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        await ws.close()


async def test_a_sockets_operations_and_other_uses_slide_an_idle_timeout_and_an_idle_token_stops(live: Live) -> None:
    ada_id, _ = await live.api.user("ada@example.com", bonus=10)
    now = live.api.clock.now()
    token = await create_token(TokenKind.USER, name="idle", user_id=ada_id, now=now, idle_timeout_seconds=60)
    account = gid("CreditAccount", (await CreditAccount.get(user_id=ada_id)).id)
    ws = await connect(live, token)
    try:
        for _ in range(3):  # 150 s, never 60 s without a use: the socket's operations count as uses
            live.api.clock.advance(timedelta(seconds=50))
            assert await run(ws, "q", LOOK, {"id": account}) == {"node": {"id": account}}
        # Kept alive over HTTP meanwhile: 100 s since the socket's last use, 50 s since the token's.
        live.api.clock.advance(timedelta(seconds=50))
        assert (await live.api.data(LOOK, {"id": account}, token)) == {"node": {"id": account}}
        live.api.clock.advance(timedelta(seconds=50))
        assert await run(ws, "q", LOOK, {"id": account}) == {"node": {"id": account}}
        live.api.clock.advance(timedelta(seconds=61))
        await send(ws, "late", LOOK, {"id": account})
        expired = [{"message": EXPIRED, "extensions": {"code": "UNAUTHENTICATED"}}]
        assert await receive(ws) == {"id": "late", "type": "error", "payload": expired}
    finally:
        await ws.close()


async def test_the_recheck_ends_a_revoked_sockets_subscriptions_and_refuses_what_comes_after(
    rechecked: Live,
) -> None:
    ops = await rechecked.api.admin("ops")
    token = await rechecked.api.admin("attacker")
    ws = await connect(rechecked, token)
    account = gid("CreditAccount", (await CreditAccount.get(user_id=(await rechecked.api.user("a@example.com"))[0])).id)
    try:
        await send(ws, "s1", WATCH, {"id": account})
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        assert await run(ws, "m1", MINT, {"kind": "ADMIN"}) == {
            "createApiToken": {"__typename": "CreateApiTokenSuccess"}
        }
        await revoke(rechecked, "ADMIN", token, ops)
        tokens = await ApiToken.all().count()

        assert await receive(ws) == {  # within the re-check (1 s here)
            "id": "s1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {"message": "The token of this subscription was revoked", "extensions": {"code": "FORBIDDEN"}}
                ],
            },
        }
        assert await receive(ws) == {"id": "s1", "type": "complete"}
        # The authenticator's cache (an hour here) still holds the token as valid: the socket is refused anyway.
        await send(ws, "m2", MINT, {"kind": "ADMIN"})
        assert await receive(ws) == {"id": "m2", "type": "error", "payload": REFUSED}
        await send(ws, "s2", WATCH, {"id": account})
        assert await receive(ws) == {"id": "s2", "type": "error", "payload": REFUSED}
        assert await ApiToken.all().count() == tokens
    finally:
        await ws.close()


async def test_a_valid_tokens_socket_keeps_working_across_the_recheck(rechecked: Live) -> None:
    ada_id, ada_token = await rechecked.api.user("ada@example.com", bonus=10)
    service = await rechecked.api.service()
    account = gid("CreditAccount", (await CreditAccount.get(user_id=ada_id)).id)
    ws = await connect(rechecked, ada_token)
    try:
        await send(ws, "s1", WATCH, {"id": account})
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        await asyncio.sleep(2.5)  # two rounds of checks
        assert await run(ws, "q1", LOOK, {"id": account}) == {"node": {"id": account}}
        assert await run(ws, "m1", MINT, {"kind": "USER"}) == {
            "createApiToken": {"__typename": "CreateApiTokenSuccess"}
        }
        spend = {"userId": gid("User", ada_id), "agentId": "a", "activity": "x", "credits": "1", "idempotencyKey": "k"}
        assert (await rechecked.api.data(SPEND, {"input": spend}, service))["spendCredits"]["__typename"] == (
            "SpendCreditsSuccess"
        )
        event = await receive(ws)
        assert event == {
            "id": "s1",
            "type": "next",
            "payload": {"data": {"balanceChanged": {"reason": "SPEND", "balance": {"total": "9"}}}},
        }
    finally:
        await ws.close()


async def test_a_token_that_cannot_be_checked_refuses_the_operation_as_unavailable_and_the_socket_stays(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada_id, ada_token = await live.api.user("ada@example.com", bonus=10)
    account = gid("CreditAccount", (await CreditAccount.get(user_id=ada_id)).id)
    ws = await connect(live, ada_token)

    async def down(secret: str) -> StoredToken | None:
        raise DatabaseUnavailable("test")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(resolvers.auth, "token_for", down)
            await send(ws, "q1", LOOK, {"id": account})
            assert await receive(ws) == {
                "id": "q1",
                "type": "error",
                "payload": [{"message": SERVICE_UNAVAILABLE_MESSAGE, "extensions": {"code": "SERVICE_UNAVAILABLE"}}],
            }
        assert await run(ws, "q2", LOOK, {"id": account}) == {"node": {"id": account}}
    finally:
        await ws.close()
