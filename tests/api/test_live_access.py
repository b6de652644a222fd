"""Live data ends with access (issue 9, point 5): a BILLING member removed from an organization, demoted to
MEMBER, or leaving it, stops receiving the pool's balance events and the organization's usage at once, on
every server process; a member who keeps the role keeps receiving."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from creditline.clock import Clock
from creditline.events import MembershipChanged, RedisBus
from creditline.live import ACCESS_LOST
from creditline.settings import Settings
from models.balance import Balance
from models.ledger import BalanceChange
from models.organizations import enable_pool
from models.tables import Membership, Organization
from tests.support.backends import Backend
from tests.support.helpers import SPEND, Api, gid
from tests.support.live import Live, connect, post_graphql, reachable_redis, receive, serve, server_process

POOL_WATCH = """
subscription($id: ID) {
  balanceChanged(accountId: $id) {
    reason version balance { total }
    account { ledger(first: 5) { edges { node { type delta } } } transactions(first: 5) { edges { node { id } } } }
  }
}
"""
USAGE_WATCH = "subscription($org: ID!) { usageRecorded(organizationId: $org) { credits agentId } }"
ROLES = """mutation($org: ID!, $user: ID!, $roles: [MemberRole!]!) {
  setMemberRoles(input: {organizationId: $org, userId: $user, roles: $roles}) { __typename } }"""
REMOVE = """mutation($org: ID!, $user: ID!) { removeMember(input: {organizationId: $org, userId: $user}) {
  __typename } }"""
LEAVE = """mutation($org: ID!) { leaveOrganization(input: {organizationId: $org}) { __typename } }"""
GRANT = """mutation($account: ID!, $key: String!) { grantCredits(input: {accountId: $account, credits: "100",
  kind: PAID, idempotencyKey: $key}) { __typename } }"""
FORBIDDEN = {"data": None, "errors": [{"message": ACCESS_LOST, "extensions": {"code": "FORBIDDEN"}}]}


@dataclass
class Acme:
    org: int
    pool: int
    owner: str
    leaving_id: int
    leaving: str
    staying: str
    worker_id: int
    service: str


async def acme(api: Api) -> Acme:
    """An organization with a pool of 100 credits: its owner, two BILLING members and a worker who spends."""
    now = api.clock.now()
    owner_id, owner = await api.user("owner@example.com", bonus=0)
    leaving_id, leaving = await api.user("leaving@example.com", bonus=0)
    staying_id, staying = await api.user("staying@example.com", bonus=0)
    worker_id, _ = await api.user("worker@example.com", bonus=0)
    org = await Organization.create(name="Acme", created_at=now)
    members = ((owner_id, "OWNER"), (leaving_id, "BILLING"), (staying_id, "BILLING"), (worker_id, "MEMBER"))
    for user_id, roles in members:
        await Membership.create(organization_id=org.id, user_id=user_id, roles=roles, created_at=now)
    pool = await enable_pool(org.id, now)
    admin = await api.admin()
    granted = await api.data(GRANT, {"account": gid("CreditAccount", pool.id), "key": "fund"}, admin)
    assert granted == {"grantCredits": {"__typename": "GrantCreditsSuccess"}}
    return Acme(org.id, pool.id, owner, leaving_id, leaving, staying, worker_id, await api.service())


def spend_variables(s: Acme, key: str) -> dict[str, Any]:
    return {
        "input": {
            "userId": gid("User", s.worker_id),
            "organizationId": gid("Organization", s.org),
            "agentId": "pool-agent",
            "activity": "answer",
            "credits": "1",
            "idempotencyKey": key,
        }
    }


async def watch(ws: ClientConnection, s: Acme) -> None:
    """The pool's balance (operation "pool") and the organization's usage (operation "usage")."""
    pool = {"query": POOL_WATCH, "variables": {"id": gid("CreditAccount", s.pool)}}
    await ws.send(json.dumps({"id": "pool", "type": "subscribe", "payload": pool}))
    first = await receive(ws)
    assert first["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
    usage = {"query": USAGE_WATCH, "variables": {"org": gid("Organization", s.org)}}
    await ws.send(json.dumps({"id": "usage", "type": "subscribe", "payload": usage}))


async def one_spend_seen(ws: ClientConnection, version: int) -> None:
    """What a watcher receives for one pool spend: the balance event and the usage event (either order)."""
    messages = {(m := await receive(ws))["id"]: m["payload"]["data"] for _ in range(2)}
    assert messages["usage"] == {"usageRecorded": {"credits": "1", "agentId": "pool-agent"}}
    event = messages["pool"]["balanceChanged"]
    assert (event["reason"], event["version"], event["balance"]["total"]) == ("SPEND", version, str(101 - version))
    assert [edge["node"]["type"] for edge in event["account"]["ledger"]["edges"]][:1] == ["SPEND"]


async def ended_forbidden(ws: ClientConnection) -> None:
    """Both operations end with FORBIDDEN then complete, and nothing else comes."""
    messages = [await receive(ws) for _ in range(4)]
    for operation in ("pool", "usage"):
        assert [(m["type"], m.get("payload")) for m in messages if m["id"] == operation] == [
            ("next", FORBIDDEN),
            ("complete", None),
        ]


async def nothing_more(ws: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), timeout=0.5)


@pytest.fixture
async def live(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    # The periodic re-check is far away: what ends the subscriptions here is the change of membership itself.
    async with serve(replace(settings, token_recheck_seconds=3600), clock) as server:
        yield server


CHANGES: dict[str, tuple[str, Callable[[Acme], dict[str, Any]], str]] = {
    "removed": (REMOVE, lambda s: {"org": gid("Organization", s.org), "user": gid("User", s.leaving_id)}, "owner"),
    "demoted": (
        ROLES,
        lambda s: {"org": gid("Organization", s.org), "user": gid("User", s.leaving_id), "roles": ["MEMBER"]},
        "owner",
    ),
    "left": (LEAVE, lambda s: {"org": gid("Organization", s.org)}, "leaving"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_member_losing_the_billing_role_stops_receiving_at_once(live: Live, change: str) -> None:
    s = await acme(live.api)
    leaving, staying = await connect(live, s.leaving), await connect(live, s.staying)
    try:
        for ws in (leaving, staying):
            await watch(ws, s)
        await asyncio.sleep(0.2)  # the usage subscriptions are registered once their resolvers have run
        assert (await live.api.data(SPEND, spend_variables(s, "before"), s.service))["spendCredits"][
            "__typename"
        ] == "SpendCreditsSuccess"
        for ws in (leaving, staying):
            await one_spend_seen(ws, 2)

        mutation, variables, actor = CHANGES[change]
        data = await live.api.data(mutation, variables(s), getattr(s, actor))
        assert next(iter(data.values()))["__typename"].endswith("Success")
        await asyncio.wait_for(ended_forbidden(leaving), timeout=2)

        assert (await live.api.data(SPEND, spend_variables(s, "after"), s.service))["spendCredits"][
            "__typename"
        ] == "SpendCreditsSuccess"
        await one_spend_seen(staying, 3)
        await nothing_more(leaving)
        # What is left on the bus: the staying member's two subscriptions.
        assert live.api.app.state.services.bus.subscriber_count == 2 + 1  # + the watch's membership feed
    finally:
        await leaving.close()
        await staying.close()


async def test_no_event_is_rendered_once_access_is_gone(live: Live) -> None:
    # The change and a balance event reach the process in one burst: the event is not rendered for the
    # member who lost the role (rights are read again before anything more is sent).
    s = await acme(live.api)
    ws = await connect(live, s.leaving)
    try:
        await watch(ws, s)
        await asyncio.sleep(0.2)
        await Membership.filter(organization_id=s.org, user_id=s.leaving_id).delete()
        bus = live.api.app.state.services.bus
        at = live.api.clock.now()
        bus.publish([MembershipChanged(s.org, s.leaving_id), BalanceChange(s.pool, 2, 0, "HOLD", Balance(0, 1, 0), at)])
        await ended_forbidden(ws)
        await nothing_more(ws)
    finally:
        await ws.close()


async def test_a_lost_change_message_is_caught_by_the_periodic_check(
    db: Backend, clock: Clock, settings: Settings
) -> None:
    # No MembershipChanged reaches this process (Redis delivers at most once): the re-check every
    # CREDITLINE_TOKEN_RECHECK_SECONDS (1 s here) ends the subscriptions all the same.
    async with serve(replace(settings, token_recheck_seconds=1), clock) as live:
        s = await acme(live.api)
        leaving, staying = await connect(live, s.leaving), await connect(live, s.staying)
        try:
            for ws in (leaving, staying):
                await watch(ws, s)
            await asyncio.sleep(0.2)
            await Membership.filter(organization_id=s.org, user_id=s.leaving_id).update(roles="MEMBER")
            await asyncio.wait_for(ended_forbidden(leaving), timeout=3)
            await asyncio.sleep(1.2)  # another round: the staying member still holds the role
            data = await live.api.data(SPEND, spend_variables(s, "after"), s.service)
            assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
            await one_spend_seen(staying, 2)
        finally:
            await leaving.close()
            await staying.close()


@pytest.mark.parametrize("change", ["removed", "demoted"])
async def test_a_change_on_another_process_ends_the_live_subscriptions_here(
    db: Backend, clock: Clock, settings: Settings, change: str
) -> None:
    if db.name != "postgres":
        pytest.skip("two server processes share a database only on PostgreSQL (SQLite is one process)")
    redis_url = await reachable_redis()
    channel = f"creditline:test-access:{uuid.uuid4().hex}"
    settings = replace(settings, redis_url=redis_url, redis_channel=channel, token_recheck_seconds=3600)
    async with (
        serve(settings, clock) as live,
        server_process(db.url, CREDITLINE_REDIS_URL=redis_url, CREDITLINE_REDIS_CHANNEL=channel) as (_, other),
    ):
        bus = live.api.app.state.services.bus
        assert isinstance(bus, RedisBus)
        await asyncio.wait_for(bus.connected.wait(), timeout=5)
        s = await acme(live.api)
        watchers = {"leaving": await connect(live, s.leaving), "staying": await connect(live, s.staying)}
        try:
            for ws in watchers.values():
                await watch(ws, s)
            await asyncio.sleep(0.2)
            data = await post_graphql(other, SPEND, spend_variables(s, "before"), s.service)
            assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
            for ws in watchers.values():
                await one_spend_seen(ws, 2)

            mutation, variables, actor = CHANGES[change]
            data = await post_graphql(other, mutation, variables(s), getattr(s, actor))
            assert next(iter(data.values()))["__typename"].endswith("Success")
            await asyncio.wait_for(ended_forbidden(watchers["leaving"]), timeout=2)

            data = await post_graphql(other, SPEND, spend_variables(s, "after"), s.service)
            assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
            await one_spend_seen(watchers["staying"], 3)
            await nothing_more(watchers["leaving"])
        finally:
            for ws in watchers.values():
                await ws.close()
