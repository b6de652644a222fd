"""Balance alerts through the API: setBalanceAlerts, CreditAccount.alerts and alertLevels, and alertRaised
over graphql-transport-ws (in-process bus and Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

import pytest

from creditline.clock import Clock
from creditline.events import BusEvent, InProcessBus
from creditline.settings import Settings
from models.credits import MICRO
from models.ledger.alerts import AlertChanged
from models.tables import CreditAccount, OutboxEvent
from tests.support.backends import Backend, row_counts
from tests.support.helpers import SPEND, Api, gid, spend_variables
from tests.support.live import Live, connect, reachable_redis, receive, serve
from tests.support.payments import TOP_UP, top_up

SET = """
mutation($input: SetBalanceAlertsInput!) {
  setBalanceAlerts(input: $input) {
    __typename
    ... on SetBalanceAlertsSuccess { account { id } alertLevels { levels isDefault } }
    ... on ValidationError { message field }
    ... on Forbidden { message }
  }
}
"""

ALERTS = """
query($id: ID!, $status: AlertStatus) {
  node(id: $id) {
    ... on CreditAccount {
      alertLevels { levels isDefault }
      alerts(status: $status) { edges { node { id kind level status raisedEventId resolvedEventId } } }
    }
  }
}
"""

WATCH = """
subscription($id: ID) {
  alertRaised(accountId: $id) {
    type eventId sequence level available previous account { id }
    alert { id kind level status raisedEventId resolvedEventId }
  }
}
"""


async def spend(api: Api, service: str, user_id: int, credits: str, key: str) -> None:
    data = await api.data(
        SPEND,
        spend_variables(user_id, credits, key),
        service,
    )
    assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"


async def account_of(user_id: int) -> int:
    return int((await CreditAccount.get(user_id=user_id)).id)


async def test_set_levels_then_a_crossing_spend_opens_an_alert_the_account_lists(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=20)
    account = gid("CreditAccount", await account_of(user_id))
    service = await api.service()
    result = await api.data(SET, {"input": {"levels": ["5", "12.5"]}}, token)
    assert result["setBalanceAlerts"] == {
        "__typename": "SetBalanceAlertsSuccess",
        "account": {"id": account},
        "alertLevels": {"levels": ["12.5", "5"], "isDefault": False},
    }
    await spend(api, service, user_id, "10", "k1")  # 20 -> 10: crosses 12.5
    await spend(api, service, user_id, "1", "k2")  # 10 -> 9: nothing more
    event = await OutboxEvent.get(type="balance.low")
    data = (await api.data(ALERTS, {"id": account}, token))["node"]
    assert data["alertLevels"] == {"levels": ["12.5", "5"], "isDefault": False}
    assert [e["node"] for e in data["alerts"]["edges"]] == [
        {
            "id": data["alerts"]["edges"][0]["node"]["id"],
            "kind": "balance.low",
            "level": "12.5",
            "status": "OPEN",
            "raisedEventId": event.public_id,
            "resolvedEventId": None,
        }
    ]
    assert json.loads(event.data) == {
        "account": {"id": account, "userId": gid("User", user_id), "organizationId": None},
        "level": "12.5",
        "previous": "20",
        "available": "10",
    }
    resolved = (await api.data(ALERTS, {"id": account, "status": "RESOLVED"}, token))["node"]["alerts"]
    assert resolved == {"edges": []}
    back = await api.data(SET, {"input": {"useDefault": True}}, token)
    assert back["setBalanceAlerts"]["alertLevels"] == {"levels": [], "isDefault": True}
    after = (await api.data(ALERTS, {"id": account}, token))["node"]
    assert [e["node"]["status"] for e in after["alerts"]["edges"]] == ["RESOLVED"]  # its level was removed


ALERT_NODE = "query($id: ID!) { node(id: $id) { __typename ... on Alert { id kind level status raisedEventId } } }"


async def test_node_reads_an_alert_for_whoever_may_read_its_account(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=20)
    _, mallory = await api.user("mallory@example.com", bonus=20)
    admin = await api.admin()
    service = await api.service()
    reader = await api.service("dashboard", scopes=("balance:read",))
    await api.data(SET, {"input": {"levels": ["12.5"]}}, token)
    await spend(api, service, user_id, "10", "k1")  # 20 -> 10: crosses 12.5
    event = await OutboxEvent.get(type="balance.low")
    listed = (await api.data(ALERTS, {"id": gid("CreditAccount", await account_of(user_id))}, token))["node"]
    [edge] = listed["alerts"]["edges"]
    alert_id = edge["node"]["id"]
    shown = {
        "__typename": "Alert",
        "id": alert_id,
        "kind": "balance.low",
        "level": "12.5",
        "status": "OPEN",
        "raisedEventId": event.public_id,
    }
    for who in (token, admin, reader):  # the account's user, an admin, a service with balance:read
        assert (await api.data(ALERT_NODE, {"id": alert_id}, who))["node"] == shown
    for who in (mallory, service):  # another user; a service without balance:read: as for the account
        assert (await api.data(ALERT_NODE, {"id": alert_id}, who))["node"] is None
    assert (await api.data(ALERT_NODE, {"id": gid("Alert", 999)}, admin))["node"] is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "Give levels (an empty list: none) or useDefault: true"),
        ({"levels": ["1"], "useDefault": True}, "Give either levels or useDefault: true, not both"),
        ({"levels": ["0"]}, "Every alert level must be more than 0"),
        ({"levels": ["-1"]}, "Every alert level must be more than 0"),
        ({"levels": ["1", "1.0"]}, "Alert levels must be distinct"),
        ({"levels": ["1", "2", "3", "4", "5", "6"]}, "At most 5 alert levels"),
    ],
)
async def test_bad_levels_are_refused_and_change_nothing(api: Api, given: dict[str, Any], message: str) -> None:
    user_id, token = await api.user("ada@example.com", bonus=20)
    before = await row_counts()
    result = await api.data(SET, {"input": given}, token)
    assert result["setBalanceAlerts"] == {"__typename": "ValidationError", "message": message, "field": "levels"}
    assert await row_counts() == before
    assert (await CreditAccount.get(user_id=user_id)).alert_levels is None


async def test_another_users_account_is_refused(api: Api) -> None:
    ada_id, _ = await api.user("ada@example.com", bonus=20)
    _, mallory = await api.user("mallory@example.com", bonus=20)
    account = gid("CreditAccount", await account_of(ada_id))
    result = await api.data(SET, {"input": {"accountId": account, "levels": ["5"]}}, mallory)
    assert result["setBalanceAlerts"]["__typename"] == "Forbidden"
    assert (await CreditAccount.get(user_id=ada_id)).alert_levels is None


async def test_the_deployment_default_shows_as_default(db: Backend, clock: Clock, settings: Settings) -> None:
    async with serve(replace(settings, default_low_balance_credits=7 * MICRO), clock) as live:
        user_id, token = await live.api.user("ada@example.com", bonus=20)
        account = gid("CreditAccount", await account_of(user_id))
        data = (await live.api.data(ALERTS, {"id": account}, token))["node"]
        assert data["alertLevels"] == {"levels": ["7"], "isDefault": True}
        await spend(live.api, await live.api.service(), user_id, "14", "k1")  # 20 -> 6: crosses the default
        assert [(e.type, json.loads(e.data)["level"]) for e in await OutboxEvent.all()] == [("balance.low", "7")]


async def watch_alerts(live: Live) -> None:
    user_id, token = await live.api.user("ada@example.com", bonus=20)
    service = await live.api.service()
    account = gid("CreditAccount", await account_of(user_id))
    await live.api.data(SET, {"input": {"levels": ["10"]}}, token)
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        await asyncio.sleep(0.2)  # subscribed (nothing is sent first)
        await spend(live.api, service, user_id, "5", "k1")  # 20 -> 15: nothing
        await spend(live.api, service, user_id, "6", "k2")  # 15 -> 9: low
        raised = (await receive(ws))["payload"]["data"]["alertRaised"]
        low = await OutboxEvent.get(type="balance.low")
        assert raised == {
            "type": "balance.low",
            "eventId": low.public_id,
            "sequence": 1,
            "level": "10",
            "available": "9",
            "previous": "15",
            "account": {"id": account},
            "alert": {
                "id": raised["alert"]["id"],
                "kind": "balance.low",
                "level": "10",
                "status": "OPEN",
                "raisedEventId": low.public_id,
                "resolvedEventId": None,
            },
        }
        admin = await live.api.admin()
        granted = await live.api.data(
            "mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { __typename } }",
            {"input": {"accountId": account, "credits": "5", "kind": "PAID", "idempotencyKey": "g1"}},
            admin,
        )
        assert granted["grantCredits"]["__typename"] == "GrantCreditsSuccess"
        recovered = (await receive(ws))["payload"]["data"]["alertRaised"]
        event = await OutboxEvent.get(type="balance.recovered")
        assert (recovered["type"], recovered["eventId"], recovered["sequence"], recovered["available"]) == (
            "balance.recovered",
            event.public_id,
            2,
            "14",
        )
        assert recovered["alert"] == {
            "id": raised["alert"]["id"],
            "kind": "balance.low",
            "level": "10",
            "status": "RESOLVED",
            "raisedEventId": None,
            "resolvedEventId": event.public_id,
        }
    finally:
        await ws.close()


@pytest.fixture
async def live(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    async with serve(settings, clock) as server:
        yield server


async def test_alert_raised_is_pushed_after_commit(live: Live) -> None:
    await watch_alerts(live)


async def test_alert_raised_goes_through_redis(db: Backend, clock: Clock, settings: Settings) -> None:
    url = await reachable_redis()
    async with serve(replace(settings, redis_url=url), clock) as live:
        await watch_alerts(live)


async def test_a_top_up_over_an_open_low_alert_pushes_its_recovery(live: Live) -> None:
    """A paid grant's alert changes reach alertRaised, not only its balance change."""
    user_id, token = await live.api.user("ada@example.com", bonus=20)
    await live.api.data(SET, {"input": {"levels": ["10"]}}, token)
    await spend(live.api, await live.api.service(), user_id, "12", "k1")  # 20 -> 8: low, before watching
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        await asyncio.sleep(0.2)  # subscribed (nothing is sent first)
        paid = await live.api.data(TOP_UP, top_up("10", "t1", paymentToken="tok_visa"), token)
        assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
        recovered = (await receive(ws))["payload"]["data"]["alertRaised"]
    finally:
        await ws.close()
    low = await OutboxEvent.get(type="balance.low")
    event = await OutboxEvent.get(type="balance.recovered")
    assert recovered == {
        "type": "balance.recovered",
        "eventId": event.public_id,
        "sequence": event.sequence,
        "level": "10",
        "available": "18",
        "previous": "8",
        "account": {"id": gid("CreditAccount", await account_of(user_id))},
        "alert": {
            "id": recovered["alert"]["id"],
            "kind": "balance.low",
            "level": "10",
            "status": "RESOLVED",
            "raisedEventId": None,
            "resolvedEventId": event.public_id,
        },
    }
    assert (low.sequence, low.account_id) == (1, event.account_id)


async def test_after_a_reconnect_the_alert_changes_missed_are_sent_from_the_outbox(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a Redis reconnect does: alert changes published meanwhile were lost, then every subscriber is told.
    user_id, token = await live.api.user("ada@example.com", bonus=20)
    service = await live.api.service()
    await live.api.data(SET, {"input": {"levels": ["10", "5"]}}, token)
    bus = live.api.app.state.services.bus
    assert isinstance(bus, InProcessBus)
    ws = await connect(live, token)
    try:
        watchers = bus.subscriber_count
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        for _ in range(1000):  # until subscribed
            if bus.subscriber_count > watchers:
                break
            await asyncio.sleep(0.01)
        await spend(live.api, service, user_id, "11", "k1")  # 20 -> 9: low at 10, delivered as it happens
        first = (await receive(ws))["payload"]["data"]["alertRaised"]
        assert (first["type"], first["sequence"], first["level"]) == ("balance.low", 1, "10")
        lost: list[BusEvent] = []

        def losing(events: Iterable[BusEvent]) -> None:
            batch = list(events)
            lost.extend(e for e in batch if isinstance(e, AlertChanged))
            InProcessBus.publish(bus, [e for e in batch if not isinstance(e, AlertChanged)])

        monkeypatch.setattr(bus, "publish", losing)
        await spend(live.api, service, user_id, "5", "k2")  # 9 -> 4: low at 5, lost
        await spend(live.api, service, user_id, "4", "k3")  # 4 -> 0: depleted, lost
        monkeypatch.undo()
        assert [(e.event_type, e.sequence) for e in lost if isinstance(e, AlertChanged)] == [
            ("balance.low", 2),
            ("balance.depleted", 3),
        ]
        bus.resync()
        missed = [(await receive(ws))["payload"]["data"]["alertRaised"] for _ in range(2)]
        events = await OutboxEvent.filter(sequence__in=[2, 3]).order_by("sequence")
        told = [(m["type"], m["eventId"], m["sequence"], m["level"], m["available"], m["previous"]) for m in missed]
        assert told == [
            ("balance.low", events[0].public_id, 2, "5", "4", "9"),
            ("balance.depleted", events[1].public_id, 3, "0", "0", "4"),
        ]
        assert [m["alert"]["status"] for m in missed] == ["OPEN", "OPEN"]
        for late in lost:  # the lost messages turning up after all: sent once already
            InProcessBus.publish(bus, [late])
        bus.resync()  # nothing more was missed
        admin = await live.api.admin()
        granted = await live.api.data(
            "mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { __typename } }",
            {
                "input": {
                    "accountId": gid("CreditAccount", await account_of(user_id)),
                    "credits": "6",
                    "kind": "PAID",
                    "idempotencyKey": "g1",
                }
            },
            admin,
        )
        assert granted["grantCredits"]["__typename"] == "GrantCreditsSuccess"  # 0 -> 6: depleted and 5 recover
        after = [(await receive(ws))["payload"]["data"]["alertRaised"] for _ in range(2)]
        assert sorted((a["type"], a["sequence"]) for a in after) == [("balance.recovered", 4), ("balance.recovered", 5)]
    finally:
        await ws.close()


async def test_watching_another_tenants_alerts_is_forbidden(live: Live) -> None:
    ada_id, _ = await live.api.user("ada@example.com", bonus=10)
    _, mallory = await live.api.user("mallory@example.com", bonus=10)
    ws = await connect(live, mallory)
    try:
        variables = {"id": gid("CreditAccount", await account_of(ada_id))}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH, "variables": variables}}))
        message = await receive(ws)
        assert [(e["message"], e["extensions"]["code"]) for e in message["payload"]["errors"]] == [
            ("You may not watch this account", "FORBIDDEN")
        ]
        assert await receive(ws) == {"id": "1", "type": "complete"}
    finally:
        await ws.close()
