"""Every version, in order, once (issue 9, point 17): balance events that reach a process out of version
order are put back in order within a short window; a version whose event never comes is read from the
ledger instead of being skipped."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from creditline.clock import Clock
from creditline.events import BusEvent, InProcessBus, RedisBus
from creditline.jobs import sweep_once
from creditline.settings import Settings
from models.credits import MICRO
from models.ledger import BalanceChange
from tests.support.backends import Backend
from tests.support.helpers import SPEND, Api, gid
from tests.support.live import Live, connect, post_graphql, reachable_redis, receive, serve, server_process

WATCH = "subscription { balanceChanged { delta reason version balance { free paid held } } }"
HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename ... on HoldCreditsSuccess { hold { id } } } }"""
CAPTURE = """mutation($input: CaptureHoldInput!) { captureHold(input: $input) { __typename } }"""
GRANT = """mutation($account: ID!, $key: String!, $expires: DateTime) { grantCredits(input: {accountId: $account,
  credits: "5", kind: PAID, expiresAt: $expires, idempotencyKey: $key}) { __typename } }"""
REORDER_MS = 100


def credits(micro: int) -> str:
    whole, part = divmod(abs(micro), MICRO)
    text = f"{whole}.{part:06d}".rstrip("0").rstrip(".")
    return f"-{text}" if micro < 0 else text


def seen_as(change: BalanceChange) -> dict[str, Any]:
    """How a committed change reaches a subscriber of WATCH."""
    b = change.balance
    return {
        "delta": credits(change.delta),
        "reason": change.reason,
        "version": change.version,
        "balance": {"free": credits(b.free), "paid": credits(b.paid), "held": credits(b.held)},
    }


async def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [(await receive(ws))["payload"]["data"]["balanceChanged"] for _ in range(count)]


async def nothing_more(ws: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), timeout=3 * REORDER_MS / 1000)


@pytest.fixture
async def live(db: Backend, clock: Clock, settings: Settings) -> AsyncIterator[Live]:
    async with serve(replace(settings, live_reorder_ms=REORDER_MS), clock) as server:
        yield server


class Withheld:
    """The bus of a server, with what is published kept back: the test delivers it, in any order, or not."""

    def __init__(self, live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
        bus = live.api.app.state.services.bus
        assert isinstance(bus, InProcessBus)
        self.bus = bus
        self.changes: dict[int, BalanceChange] = {}
        monkeypatch.setattr(bus, "publish", self._keep)

    def _keep(self, events: Iterable[BusEvent]) -> None:
        for event in events:
            if isinstance(event, BalanceChange):
                assert event.version not in self.changes
                self.changes[event.version] = event

    def deliver(self, *versions: int) -> None:
        InProcessBus.publish(self.bus, [self.changes[v] for v in versions])


async def changes_of_every_kind(api: Api, user_id: int) -> None:
    """Versions 2-7 of the account: a spend, a hold, a grant, a capture of part of the hold, two spends."""
    service, admin = await api.service(), await api.admin()

    async def spend(key: str, amount: str) -> None:
        variables = {"userId": gid("User", user_id), "agentId": "a", "activity": "answer", "credits": amount}
        data = await api.data(SPEND, {"input": {**variables, "idempotencyKey": key}}, service)
        assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"

    await spend("s1", "1")
    hold_input = {"userId": gid("User", user_id), "agentId": "a", "activity": "answer", "credits": "2"}
    held = await api.data(HOLD, {"input": {**hold_input, "idempotencyKey": "h"}}, service)
    hold_id = held["holdCredits"]["hold"]["id"]
    granted = await api.data(GRANT, {"account": gid("CreditAccount", 1), "key": "g"}, admin)
    assert granted == {"grantCredits": {"__typename": "GrantCreditsSuccess"}}
    captured = await api.data(CAPTURE, {"input": {"holdId": hold_id, "credits": "1.5", "idempotencyKey": "c"}}, service)
    assert captured == {"captureHold": {"__typename": "CaptureHoldSuccess"}}
    await spend("s2", "0.25")
    await spend("s3", "0.25")


async def test_out_of_order_and_missing_versions_arrive_once_in_order(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, token = await live.api.user("ada@example.com", bonus=10)
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 1
        withheld = Withheld(live, monkeypatch)
        await changes_of_every_kind(live.api, user_id)
        truth = withheld.changes
        assert sorted(truth) == [2, 3, 4, 5, 6, 7]
        assert [truth[v].reason for v in sorted(truth)] == ["SPEND", "HOLD", "GRANT", "CAPTURE", "SPEND", "SPEND"]

        # 3 comes before 2: it waits for 2, then both go out at once.
        withheld.deliver(3, 2)
        assert await events(ws, 2) == [seen_as(truth[2]), seen_as(truth[3])]
        # 4 and 6 never come: 5 and 7 wait the reorder window, then 4 and 6 are read from the ledger.
        withheld.deliver(5, 7)
        assert await asyncio.wait_for(events(ws, 4), timeout=2) == [seen_as(truth[v]) for v in (4, 5, 6, 7)]
        # 4 comes after all, and 7 again: both were sent already.
        withheld.deliver(4, 7)
        await nothing_more(ws)
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
    finally:
        await ws.close()


async def test_a_lost_version_waits_only_for_the_window(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, token = await live.api.user("ada@example.com", bonus=10)
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 1
        withheld = Withheld(live, monkeypatch)
        await changes_of_every_kind(live.api, user_id)
        truth = withheld.changes
        loop = asyncio.get_running_loop()
        started = loop.time()
        withheld.deliver(3)
        assert await events(ws, 2) == [seen_as(truth[2]), seen_as(truth[3])]
        waited = loop.time() - started
        assert REORDER_MS / 1000 <= waited < REORDER_MS / 1000 + 1.0
        withheld.deliver(4)  # in order: at once
        assert await asyncio.wait_for(events(ws, 1), timeout=REORDER_MS / 2000) == [seen_as(truth[4])]
    finally:
        await ws.close()


async def test_after_events_were_lost_the_missed_versions_come_from_the_ledger_then_a_snapshot(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a Redis reconnect does: every subscriber is told that events may have been lost meanwhile.
    user_id, token = await live.api.user("ada@example.com", bonus=10)
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 1
        withheld = Withheld(live, monkeypatch)
        await changes_of_every_kind(live.api, user_id)
        truth = withheld.changes
        withheld.deliver(2)
        assert await events(ws, 1) == [seen_as(truth[2])]
        withheld.bus.resync()
        snapshot = {**seen_as(truth[7]), "delta": "0", "reason": "SNAPSHOT"}
        assert await events(ws, 6) == [seen_as(truth[v]) for v in range(3, 8)] + [snapshot]
        withheld.deliver(5, 7)  # late: sent already
        await nothing_more(ws)
    finally:
        await ws.close()


async def test_one_event_of_several_versions_is_sent_version_by_version(live: Live) -> None:
    # The sweep expires two lots of one account in one transaction: two ledger versions, one event.
    user_id, token = await live.api.user("ada@example.com", bonus=0)
    admin = await live.api.admin()
    soon = (live.api.clock.now() + timedelta(hours=1)).isoformat()
    for key in ("a", "b"):
        granted = await live.api.data(GRANT, {"account": gid("CreditAccount", 1), "key": key, "expires": soon}, admin)
        assert granted == {"grantCredits": {"__typename": "GrantCreditsSuccess"}}
    ws = await connect(live, token)
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
        assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 2
        live.api.clock.advance(timedelta(hours=2))
        report = await sweep_once(live.api.app.state.services)
        assert [(c.version, c.delta) for c in report.changes if isinstance(c, BalanceChange)] == [(4, -10 * MICRO)]
        zero = {"free": "0", "paid": "0", "held": "0"}
        assert await asyncio.wait_for(events(ws, 2), timeout=2) == [
            {"delta": "-5", "reason": "EXPIRE", "version": 3, "balance": {**zero, "paid": "5"}},
            {"delta": "-5", "reason": "EXPIRE", "version": 4, "balance": zero},
        ]
        await nothing_more(ws)
    finally:
        await ws.close()


async def test_concurrent_writers_on_two_processes_miss_no_version(
    db: Backend, clock: Clock, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.name != "postgres":
        pytest.skip("two server processes share a database only on PostgreSQL (SQLite is one process)")
    redis_url = await reachable_redis()
    channel = f"creditline:test-order:{uuid.uuid4().hex}"
    settings = replace(settings, redis_url=redis_url, redis_channel=channel)
    async with (
        serve(settings, clock) as live,
        server_process(db.url, CREDITLINE_REDIS_URL=redis_url, CREDITLINE_REDIS_CHANNEL=channel) as (_, other),
    ):
        bus = live.api.app.state.services.bus
        assert isinstance(bus, RedisBus)
        await asyncio.wait_for(bus.connected.wait(), timeout=5)
        # This process publishes late, as a busy one does: its versions reach Redis after the other's later ones.
        publish = bus.publish
        monkeypatch.setattr(bus, "publish", lambda events: asyncio.get_running_loop().call_later(0.03, publish, events))
        # The other process runs on the real clock: the bonus must outlive the test clock's frozen date.
        user_id, token = await live.api.user("ada@example.com", bonus=200, bonus_days=3650)
        service = await live.api.service()
        watchers = [await connect(live, token) for _ in range(2)]
        try:
            for ws in watchers:
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
                assert (await receive(ws))["payload"]["data"]["balanceChanged"]["version"] == 1

            concurrent = asyncio.Semaphore(16)

            async def spend(n: int) -> None:
                async with concurrent:
                    await spend_now(n)

            async def spend_now(n: int) -> None:
                variables = {
                    "input": {
                        "userId": gid("User", user_id),
                        "agentId": "a",
                        "activity": "answer",
                        "credits": "1",
                        "idempotencyKey": f"k{n}",
                    }
                }
                if n % 2:
                    data = await post_graphql(other, SPEND, variables, service)
                else:
                    data = await live.api.data(SPEND, variables, service)
                assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"

            spends = 120
            await asyncio.gather(*(spend(n) for n in range(spends)))
            for ws in watchers:
                received = await asyncio.wait_for(events(ws, spends), timeout=20)
                assert [(e["version"], e["delta"], e["balance"]["free"]) for e in received] == [
                    (v, "-1", str(200 - (v - 1))) for v in range(2, spends + 2)
                ]
                await nothing_more(ws)
        finally:
            for ws in watchers:
                await ws.close()
