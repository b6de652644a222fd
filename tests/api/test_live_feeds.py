"""Live balance over graphql-transport-ws, against a real uvicorn server on a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from creditline.app import CreditlineApp
from creditline.clock import Clock
from creditline.events import QUEUE_LIMIT
from creditline.graphql import GraphQLEndpoint
from creditline.settings import Settings
from models.balance import Balance
from models.ledger import BalanceChange
from models.organizations import enable_pool
from models.tables import ApiToken, CreditAccount, Membership, Organization, TokenKind
from models.tokens import Principal, create_token, revoke_token
from resolvers.context import Context
from tests.support.backends import Backend
from tests.support.helpers import SPEND, gid, spend_variables
from tests.support.live import Live, connect, receive, serve

WATCH = """
subscription($id: ID) {
  balanceChanged(accountId: $id) {
    delta reason version balance { total free held available } account { id balance { total } }
  }
}
"""


@pytest.fixture
async def live(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    async with serve(
        replace(settings, ws_init_timeout_seconds=1, token_recheck_seconds=1, max_subscriptions_per_connection=3), clock
    ) as server:
        yield server


async def spend(live: Live, service: str, user_id: int, credits: str, key: str) -> None:
    data = await live.api.data(
        SPEND,
        spend_variables(user_id, credits, key),
        service,
    )
    assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"


async def test_snapshot_then_every_change_in_order(live: Live) -> None:
    user_id, user_token = await live.api.user("ada@example.com", bonus=10)
    service = await live.api.service()
    ws = await connect(live, user_token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert await receive(ws) == {
            "id": "1",
            "type": "next",
            "payload": {
                "data": {
                    "balanceChanged": {
                        "delta": "0",
                        "reason": "SNAPSHOT",
                        "version": 1,
                        "balance": {"total": "10", "free": "10", "held": "0", "available": "10"},
                        "account": {"id": gid("CreditAccount", 1), "balance": {"total": "10"}},
                    }
                }
            },
        }
        await asyncio.gather(*(spend(live, service, user_id, "1", f"k{n}") for n in range(5)))
        events = [(await receive(ws))["payload"]["data"]["balanceChanged"] for _ in range(5)]
        assert [(e["version"], e["delta"], e["reason"], e["balance"]["total"]) for e in events] == [
            (2, "-1", "SPEND", "9"),
            (3, "-1", "SPEND", "8"),
            (4, "-1", "SPEND", "7"),
            (5, "-1", "SPEND", "6"),
            (6, "-1", "SPEND", "5"),
        ]
        # Each pushed event reads through fresh DataLoaders: the nested balance is current, not cached.
        assert events[-1]["account"]["balance"] == {"total": "5"}
    finally:
        await ws.close()


async def test_another_tenants_account_is_forbidden_and_sends_nothing(live: Live) -> None:
    await live.api.user("ada@example.com", bonus=10)
    mallory_id, mallory_token = await live.api.user("mallory@example.com", bonus=10)
    ws = await connect(live, mallory_token)
    try:
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": WATCH, "variables": {"id": gid("CreditAccount", 1)}},
                }
            )
        )
        message = await receive(ws)
        assert message["type"] == "next"
        assert message["payload"]["data"] is None
        assert [(e["message"], e["extensions"]["code"]) for e in message["payload"]["errors"]] == [
            ("You may not watch this account", "FORBIDDEN")
        ]
        assert await receive(ws) == {"id": "1", "type": "complete"}
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("null", id="null"),
        pytest.param('"x"', id="a-string"),
        pytest.param("[1]", id="a-list"),
        pytest.param('{"type": 1}', id="type-not-text"),
        pytest.param('{"type": "subscribe", "id": "x", "payload": null}', id="payload-null"),
        pytest.param('{"type": "subscribe", "id": "x", "payload": {"query": 1}}', id="query-not-text"),
        pytest.param('{"type": "subscribe", "id": 7, "payload": {"query": "{ me { id } }"}}', id="id-not-text"),
        pytest.param(
            '{"type": "subscribe", "id": "x", "payload": {"query": "{ me { id } }", "variables": []}}',
            id="variables-not-an-object",
        ),
        pytest.param('{"type": "ping", "payload": [[[]]]}', id="ping-payload-not-an-object"),
        pytest.param('{"type": "complete"}', id="complete-without-id"),
        pytest.param("[" * 1100 + "]" * 1100, id="nested-deeper-than-the-parser-goes"),
        pytest.param('{"type": "ping", "payload": {"x": ' + "9" * 5000 + "}}", id="an-integer-too-long"),
    ],
)
async def test_a_message_not_of_the_protocols_shape_closes_with_4400_and_the_server_logs_no_error(
    live: Live, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    not_json = message.startswith("[[") or "9" * 5000 in message  # not JSON to the parser, as malformed text
    reason = "WebSocket message must be valid JSON" if not_json else "Failed to parse message"
    _, token = await live.api.user("ada@example.com", bonus=10)
    ws = await connect(live, token)
    try:
        await ws.send(message)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=5)
    finally:
        await ws.close()

    assert closed.value.rcvd is not None  # a close frame, not a dropped connection
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4400, reason)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    again = await connect(live, token)  # the server goes on as before
    try:
        await again.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(again))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
    finally:
        await again.close()


async def test_protocol_guards(live: Live) -> None:
    _, user_token = await live.api.user("ada@example.com", bonus=10)
    proto = [websockets.Subprotocol("graphql-transport-ws")]

    async with websockets.connect(live.ws, subprotocols=proto) as silent:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(silent.recv(), timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4408, "Connection initialisation timeout")

    async with websockets.connect(live.ws, subprotocols=proto) as eager:
        await eager.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(eager.recv(), timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "Unauthorized")

    async with websockets.connect(live.ws, subprotocols=proto) as stranger:
        await stranger.send(json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(stranger.recv(), timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "Forbidden")

    # The legacy graphql-ws protocol is off.
    async with websockets.connect(live.ws, subprotocols=[websockets.Subprotocol("graphql-ws")]) as legacy:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(legacy.recv(), timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4406, "Subprotocol not acceptable")

    ws = await connect(live, user_token)
    try:
        for n in range(3):
            await ws.send(json.dumps({"id": str(n), "type": "subscribe", "payload": {"query": WATCH}}))
            assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        await ws.send(json.dumps({"id": "4", "type": "subscribe", "payload": {"query": WATCH}}))
        assert await receive(ws) == {
            "id": "4",
            "type": "error",
            "payload": [{"message": "Subscription limit reached"}],
        }
    finally:
        await ws.close()


async def test_a_revoked_token_ends_its_live_subscriptions_and_no_other(live: Live) -> None:
    ada_id, ada_token = await live.api.user("ada@example.com", bonus=10)
    bob_id, bob_token = await live.api.user("bob@example.com", bonus=10)
    service = await live.api.service()
    ada = await connect(live, ada_token)
    bob = await connect(live, bob_token)
    try:
        for ws in (ada, bob):
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
            assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        ada_token_row = await ApiToken.get(kind="USER", user_id=ada_id)
        assert await revoke_token(ada_token_row.id, live.api.clock.now())

        message = await receive(ada)  # within token_recheck_seconds (1 s here)
        assert message == {
            "id": "1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {"message": "The token of this subscription was revoked", "extensions": {"code": "FORBIDDEN"}}
                ],
            },
        }
        assert await receive(ada) == {"id": "1", "type": "complete"}

        await asyncio.sleep(1.5)  # another round of checks: Bob's token is still good
        await spend(live, service, bob_id, "1", "after-revocation")
        event = (await receive(bob))["payload"]["data"]["balanceChanged"]
        assert (event["reason"], event["version"], event["balance"]["total"]) == ("SPEND", 2, "9")
        assert live.api.app.state.services.bus.subscriber_count == 1
    finally:
        await ada.close()
        await bob.close()


async def test_an_idle_subscription_holds_no_task(live: Live) -> None:
    _, user_token = await live.api.user("ada@example.com", bonus=10)
    ws = await connect(live, user_token)
    try:
        await asyncio.sleep(0.1)
        tasks_with_no_subscription = len(asyncio.all_tasks())
        for n in range(3):
            await ws.send(json.dumps({"id": str(n), "type": "subscribe", "payload": {"query": WATCH}}))
            assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        await asyncio.sleep(0.1)
        assert len(asyncio.all_tasks()) == tasks_with_no_subscription
        assert live.api.app.state.services.bus.subscriber_count == 3
        # Completing one ends its bus subscription; the others stay.
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        for _ in range(50):
            if live.api.app.state.services.bus.subscriber_count == 2:
                break
            await asyncio.sleep(0.02)
        assert live.api.app.state.services.bus.subscriber_count == 2
    finally:
        await ws.close()


async def test_a_client_giving_up_during_connection_init_does_not_cut_the_token_lookup_short(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancelling a lookup halfway through its query left the pooled PostgreSQL connection busy
    # ("another operation is in progress"); the lookup now runs to its end whatever happens to its caller.
    _, user_token = await live.api.user("ada@example.com", bonus=10)
    app = live.api.app
    assert isinstance(app, CreditlineApp)
    endpoint = app.graphql
    assert isinstance(endpoint, GraphQLEndpoint)
    authenticate = endpoint.auth.authenticate
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[Principal | None] = []

    async def slow_authenticate(header: str | None) -> Principal | None:
        started.set()
        await release.wait()
        principal = await authenticate(header)
        finished.append(principal)
        return principal

    monkeypatch.setattr(endpoint.auth, "authenticate", slow_authenticate)
    context = Context.build(live.api.app.state.services, None)
    context.connection_params = {"authorization": f"Bearer {user_token}"}
    connecting = asyncio.create_task(endpoint.on_ws_connect(context))
    await started.wait()
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    release.set()
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.01)
    assert [p.user_id if p else None for p in finished] == [1]
    assert context.principal is None  # the cancelled connection was not let in
    ws = await connect(live, user_token)  # and the database is fine for the next one
    await ws.close()


async def test_disconnects_leave_no_subscriber_or_task_behind(live: Live) -> None:
    _, user_token = await live.api.user("ada@example.com", bonus=10)
    bus = live.api.app.state.services.bus
    ws = await connect(live, user_token)  # warm up: the server's own long-lived tasks exist from here on
    await ws.close()
    await asyncio.sleep(0.1)
    tasks_before = len(asyncio.all_tasks())
    for _ in range(1000):
        ws = await connect(live, user_token)
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        await ws.close()
    for _ in range(250):
        if bus.subscriber_count == 0 and len(asyncio.all_tasks()) <= tasks_before:
            break
        await asyncio.sleep(0.02)
    assert bus.subscriber_count == 0
    assert len(asyncio.all_tasks()) <= tasks_before


USAGE = """subscription($org: ID!) {
  usageRecorded(organizationId: $org) { id credits activity agentId freeCredits agentRunId } }"""


async def test_billing_members_watch_usage_in_their_organization(live: Live) -> None:
    now = live.api.clock.now()
    worker_id, _ = await live.api.user("worker@example.com", bonus=10)
    billing_id, billing_token = await live.api.user("billing@example.com", bonus=0)
    member_id, member_token = await live.api.user("member@example.com", bonus=0)
    org = await Organization.create(name="Acme", created_at=now)
    for user_id, roles in ((worker_id, "MEMBER"), (billing_id, "BILLING"), (member_id, "MEMBER")):
        await Membership.create(organization_id=org.id, user_id=user_id, roles=roles, created_at=now)
    service = await live.api.service()
    variables = {"org": gid("Organization", org.id)}

    plain = await connect(live, member_token)
    billing = await connect(live, billing_token)
    try:
        await plain.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": USAGE, "variables": variables}})
        )
        refused = await receive(plain)
        assert [e["message"] for e in refused["payload"]["errors"]] == [
            "Watching usage needs the BILLING or OWNER role in that organization"
        ]
        await billing.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": USAGE, "variables": variables}})
        )
        await asyncio.sleep(0.2)  # the subscription is registered once its resolver has started

        await spend(live, service, worker_id, "1", "outside")  # no organization: not this feed
        data = await live.api.data(
            SPEND,
            {
                "input": {
                    "userId": gid("User", worker_id),
                    "organizationId": gid("Organization", org.id),
                    "agentId": "org-agent",
                    "agentRunId": "run-1",
                    "activity": "answer",
                    "credits": "0.5",
                    "idempotencyKey": "inside",
                }
            },
            service,
        )
        assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
        assert await receive(billing) == {
            "id": "1",
            "type": "next",
            "payload": {
                "data": {
                    "usageRecorded": {
                        "id": gid("UsageEvent", 2),
                        "credits": "0.5",
                        "activity": "answer",
                        "agentId": "org-agent",
                        "freeCredits": "0.5",
                        "agentRunId": "run-1",  # carried on the bus, not read back
                    }
                }
            },
        }
    finally:
        await plain.close()
        await billing.close()


async def test_a_subscriber_too_slow_for_its_queue_is_closed_with_a_clear_code(live: Live) -> None:
    _, user_token = await live.api.user("ada@example.com", bonus=10)
    bus = live.api.app.state.services.bus
    ws = await connect(live, user_token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        # More events than the queue holds arrive before the subscriber can take any of them.
        at = live.api.clock.now()
        bus.publish(BalanceChange(1, v, 0, "HOLD", Balance(10, 0, 0), at) for v in range(2, QUEUE_LIMIT + 3))
        # The queue is cleared when it overflows: nothing more is sent, the connection is closed.
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4413, "Subscriber too slow: events dropped")
        assert bus.subscriber_count == 0
    finally:
        await ws.close()


async def test_billing_members_watch_their_organizations_pool(live: Live) -> None:
    now = live.api.clock.now()
    billing_id, billing_token = await live.api.user("billing@example.com", bonus=0)
    member_id, member_token = await live.api.user("member@example.com", bonus=0)
    org = await Organization.create(name="Acme", created_at=now)
    await Membership.create(organization_id=org.id, user_id=billing_id, roles="BILLING", created_at=now)
    await Membership.create(organization_id=org.id, user_id=member_id, roles="MEMBER", created_at=now)
    pool = await enable_pool(org.id, now)
    variables = {"id": gid("CreditAccount", pool.id)}
    billing = await connect(live, billing_token)
    member = await connect(live, member_token)
    try:
        await billing.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH, "variables": variables}})
        )
        first = (await receive(billing))["payload"]["data"]["balanceChanged"]
        assert (first["reason"], first["balance"]["total"]) == ("SNAPSHOT", "0")
        await member.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH, "variables": variables}})
        )
        refused = await receive(member)
        assert [e["message"] for e in refused["payload"]["errors"]] == ["You may not watch this account"]
    finally:
        await billing.close()
        await member.close()


@pytest.mark.parametrize(
    ("scopes", "errors"),
    [
        (("balance:read",), [("This needs a service token with the 'billing:read' scope", "FORBIDDEN")]),
        (("billing:read",), [("You may not watch this account", "FORBIDDEN")]),
    ],
    ids=["balance-read", "billing-read"],
)
async def test_a_service_watches_a_balance_with_balance_read_and_its_billing_with_billing_read(
    live: Live, scopes: tuple[str, ...], errors: list[tuple[str, str]]
) -> None:
    """Issue 9, point 9: the events carry the balance (balance:read); payments under them need billing:read."""
    await live.api.user("ada@example.com", bonus=10)
    reader = await live.api.service("reader", scopes=scopes)
    ws = await connect(live, reader)
    watch = """subscription($id: ID) { balanceChanged(accountId: $id) {
      reason balance { total } account { transactions(first: 1) { edges { node { id } } } } } }"""
    try:
        subscribe = {"query": watch, "variables": {"id": gid("CreditAccount", 1)}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        message = await receive(ws)
        assert message["type"] == "next"
        assert message["payload"]["data"] is None
        assert [(e["message"], e["extensions"]["code"]) for e in message["payload"]["errors"]] == errors
        if scopes == ("balance:read",):
            await ws.send(json.dumps({"id": "1", "type": "complete"}))
            plain = {"query": WATCH, "variables": {"id": gid("CreditAccount", 1)}}
            await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": plain}))
            snapshot = await receive(ws)
            while snapshot["id"] != "2":  # the first subscription may still be ending
                snapshot = await receive(ws)
            assert snapshot["payload"] == {
                "data": {
                    "balanceChanged": {
                        "delta": "0",
                        "reason": "SNAPSHOT",
                        "version": 1,
                        "balance": {"total": "10", "free": "10", "held": "0", "available": "10"},
                        "account": {"id": gid("CreditAccount", 1), "balance": {"total": "10"}},
                    }
                }
            }
    finally:
        await ws.close()


ALERT_WATCH = "subscription { alertRaised { type eventId } }"


async def test_a_viewer_holds_at_most_the_limit_of_subscriptions_to_one_feed_over_all_its_sockets_and_tokens(
    db: Backend, clock: Clock, settings: Settings
) -> None:
    """Each subscription renders every event of its feed: 200 of one client on its own account made each of
    that account's spends cost 68 ms of the server's CPU (an outside attack). A user gets the limit per feed
    over all its connections and tokens (it may make tokens of its own); another feed, another viewer, or a
    subscription given back, is accepted again."""
    limited = replace(settings, max_subscriptions_per_feed=2, max_subscriptions_per_connection=5)
    async with serve(limited, clock) as server:
        user_id, token = await server.api.user("ada@example.com", bonus=10)
        other_token = await create_token(TokenKind.USER, name="second", user_id=user_id, now=clock.now())
        reader = await server.api.service("dashboard", scopes=("balance:read",))
        account = gid("CreditAccount", (await CreditAccount.get(user_id=user_id)).id)
        app = server.api.app
        assert isinstance(app, CreditlineApp)
        assert isinstance(app.graphql, GraphQLEndpoint)
        watchers = app.graphql.feed_watchers
        first, second, third, service = [await connect(server, t) for t in (token, token, other_token, reader)]

        async def subscribe(ws: ClientConnection, op: str, query: str = WATCH, **variables: str) -> dict[str, Any]:
            await ws.send(
                json.dumps({"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}})
            )
            return await receive(ws)

        refusal = {
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {
                        "message": "You hold 2 live subscriptions to the same feed already (the most a server"
                        " process allows): end one, or watch once and share the events",
                        "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS"},
                    }
                ],
            },
        }
        try:
            for ws in (first, second):
                assert (await subscribe(ws, "1"))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"

            assert await subscribe(second, "2") == {"id": "2", **refusal}
            assert await receive(second) == {"id": "2", "type": "complete"}
            assert await subscribe(third, "1") == {"id": "1", **refusal}  # a new token of hers changes nothing
            assert await receive(third) == {"id": "1", "type": "complete"}
            assert len(watchers) == 2  # the refused ones count for nothing

            await second.send(json.dumps({"id": "3", "type": "subscribe", "payload": {"query": ALERT_WATCH}}))
            watched = await subscribe(service, "1", id=account)  # another viewer of her account
            assert watched["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
            assert len(watchers) == 4  # another feed (alerts), another viewer

            await first.send(json.dumps({"id": "1", "type": "complete"}))
            assert (await subscribe(third, "2"))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        finally:
            for ws in (first, second, third, service):
                await ws.close()
        for _ in range(100):  # the server sees the closes a moment later
            if not len(watchers):
                break
            await asyncio.sleep(0.02)
        assert len(watchers) == 0
