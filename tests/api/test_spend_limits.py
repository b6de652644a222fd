"""Spend limits as a client sees them on spendCredits and holdCredits: the typed refusals, replayed the same,
nothing changed; warnings on successes and their replays; the velocity breaker's SpendPaused and its
LIMIT_TRIPPED balance event; a budget for an organization without a pool."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from models import limits, organizations
from models.credits import MICRO
from models.ledger import BalanceChange
from models.limit_rules import LimitSpec
from models.tables import CreditAccount, LimitAction, LimitKind, LimitScope, LimitWindow, MemberRole
from tests.support.backends import T0
from tests.support.helpers import Api, gid
from tests.support.organizations import BUDGET
from tests.support.snapshots import changed, snapshot

LIMIT = "limit { id scope window amount }"
SPEND = f"""mutation($input: SpendCreditsInput!) {{ spendCredits(input: $input) {{ __typename
  ... on SpendCreditsSuccess {{ balance {{ available }} limitWarnings {{ {LIMIT} spent held resetsAt }} }}
  ... on SpendLimitExceeded {{ message {LIMIT} spent held required resetsAt agentRunId }}
  ... on SpendPaused {{ message {LIMIT} trippedAt pausedUntil }} }} }}"""
HOLD = f"""mutation($input: HoldCreditsInput!) {{ holdCredits(input: $input) {{ __typename
  ... on HoldCreditsSuccess {{ balance {{ available held }} }}
  ... on SpendLimitExceeded {{ message {LIMIT} spent held required resetsAt agentRunId }} }} }}"""


def _input(user_id: int, credits: str, key: str, **extra: object) -> dict[str, object]:
    return {
        "userId": gid("User", user_id),
        "agentId": "bot",
        "activity": "answer",
        "credits": credits,
        "idempotencyKey": key,
        **extra,
    }


async def _account(api: Api) -> tuple[int, int, str]:
    user_id, _ = await api.user("ada@example.com", bonus=100)
    account = await CreditAccount.get(user_id=user_id)
    return user_id, int(account.id), await api.service()


def _limit(limit_id: int, scope: str, window: str, amount: str) -> dict[str, Any]:
    return {"id": gid("SpendLimit", limit_id), "scope": scope, "window": window, "amount": amount}


async def test_a_run_past_its_cap_is_refused_typed_and_replayed_the_same(api: Api) -> None:
    user_id, account_id, service = await _account(api)
    capped, _ = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 20 * MICRO, LimitWindow.DAY, agent_id="bot", max_credits_per_run=3 * MICRO),
        T0,
    )
    ok = await api.data(SPEND, {"input": _input(user_id, "2", "s1", agentRunId="run-1")}, service)
    assert ok["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    before = await snapshot()
    refused = await api.data(SPEND, {"input": _input(user_id, "1.5", "s2", agentRunId="run-1")}, service)
    expected = {
        "__typename": "SpendLimitExceeded",
        "message": "This spend would exceed a spend limit for run 'run-1'",
        "limit": _limit(capped.id, "AGENT", "DAY", "20"),
        "spent": "2",
        "held": "0",
        "required": "1.5",
        "resetsAt": None,
        "agentRunId": "run-1",
    }
    assert refused["spendCredits"] == expected
    assert changed(before, await snapshot()) == {"idempotency_records"}
    again = await api.data(SPEND, {"input": _input(user_id, "1.5", "s2", agentRunId="run-1")}, service)
    assert again == refused


async def test_a_hold_past_a_daily_cap_is_refused_typed(api: Api) -> None:
    user_id, account_id, service = await _account(api)
    daily, _ = await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 5 * MICRO, LimitWindow.DAY), T0)
    await api.data(SPEND, {"input": _input(user_id, "4", "s1")}, service)
    before = await snapshot()
    refused = await api.data(HOLD, {"input": _input(user_id, "1.5", "h1")}, service)
    assert refused["holdCredits"] == {
        "__typename": "SpendLimitExceeded",
        "message": "This hold would exceed a spend limit",
        "limit": _limit(daily.id, "ACCOUNT", "DAY", "5"),
        "spent": "4",
        "held": "0",
        "required": "1.5",
        "resetsAt": "2026-01-16T00:00:00+00:00",
        "agentRunId": None,
    }
    # The refusal under its key, and the cap's first refusal today: its spend_limit.reached.
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "events",
        "spend_limits",
    }  # reached_period: told once


async def test_warnings_are_reported_and_replayed(api: Api) -> None:
    user_id, account_id, service = await _account(api)
    monthly, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.MONTH, warn_percent=50), T0
    )
    await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 100 * MICRO, LimitWindow.DAY, agent_id="bot", action=LimitAction.NOTIFY),
        T0,
    )
    first = await api.data(SPEND, {"input": _input(user_id, "6", "s1")}, service)
    assert first["spendCredits"] == {
        "__typename": "SpendCreditsSuccess",
        "balance": {"available": "94"},
        "limitWarnings": [
            {
                "limit": _limit(monthly.id, "ACCOUNT", "MONTH", "10"),
                "spent": "6",
                "held": "0",
                "resetsAt": "2026-02-01T00:00:00+00:00",
            }
        ],
    }
    assert await api.data(SPEND, {"input": _input(user_id, "6", "s1")}, service) == first


async def test_a_velocity_trip_pauses_spending_and_is_on_the_balance_stream(api: Api) -> None:
    user_id, account_id, service = await _account(api)
    breaker, _ = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.ROLLING_MINUTES, 1, kind=LimitKind.VELOCITY, agent_id="bot"),
        T0,
    )
    await api.data(SPEND, {"input": _input(user_id, "3", "s1")}, service)
    watcher = api.app.state.services.bus.subscribe(frozenset({account_id}))
    try:
        tripped = await api.data(SPEND, {"input": _input(user_id, "3", "s2")}, service)
        paused = {
            "__typename": "SpendPaused",
            "message": "Spending is paused: a velocity limit tripped",
            "limit": _limit(breaker.id, "AGENT", "ROLLING_MINUTES", "5"),
            "trippedAt": T0.isoformat(),
            "pausedUntil": None,
        }
        assert tripped["spendCredits"] == paused
        events = [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
        assert [(e.reason, e.delta, e.balance.available) for e in events if isinstance(e, BalanceChange)] == [
            ("LIMIT_TRIPPED", 0, 97 * MICRO)
        ]
        # An hour later, still paused (no cool-down: until a person resumes it).
        api.clock.advance(timedelta(hours=1))
        later = await api.data(SPEND, {"input": _input(user_id, "0.1", "s3")}, service)
        assert later["spendCredits"] == paused
        assert watcher.queue.qsize() == 0  # a refusal while paused trips nothing again
    finally:
        watcher.close()


BREAKER = {
    "scope": "AGENT",
    "agentId": "bot",
    "kind": "VELOCITY",
    "window": "ROLLING_MINUTES",
    "windowLength": 1,
    "amount": "5",
}
SET = """mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { __typename } }"""
SHOWN = "{ me { credit { spendLimits { spent held remaining windowStartsAt resetsAt } } } }"


async def test_ten_credits_within_one_second_trip_a_breaker_of_five_a_minute(api: Api) -> None:
    """A burst split across a minute's edge: 4.9 credits at 12:00:59 and 4.9 at 12:01:00."""
    user_id, token = await api.user("ada@example.com", bonus=100)
    service = await api.service()
    assert (await api.data(SET, {"input": BREAKER}, token))["setSpendLimit"]["__typename"] == "SetSpendLimitSuccess"
    api.clock.advance(timedelta(seconds=59))
    a = await api.data(SPEND, {"input": _input(user_id, "4.9", "a")}, service)
    api.clock.advance(timedelta(seconds=1))
    shown = (await api.data(SHOWN, {}, token))["me"]["credit"]["spendLimits"]
    b = await api.data(SPEND, {"input": _input(user_id, "4.9", "b")}, service)
    assert [a["spendCredits"]["__typename"], b["spendCredits"]["__typename"]] == ["SpendCreditsSuccess", "SpendPaused"]
    # What the API shows agrees: the 4.9 of a second ago is in the window, a minute of one-second buckets.
    assert shown == [
        {
            "spent": "4.9",
            "held": "0",
            "remaining": "0.1",
            "windowStartsAt": "2026-01-15T12:00:01+00:00",
            "resetsAt": "2026-01-15T12:01:01+00:00",
        }
    ]


async def test_a_hold_placed_an_hour_ago_does_not_trip_the_breaker_on_a_small_spend(api: Api) -> None:
    """A breaker counts a hold when it is placed, not while it lives: the 4 credits set aside an hour ago are
    not in this minute's burn."""
    user_id, token = await api.user("ada@example.com", bonus=100)
    service = await api.service()
    assert (await api.data(SET, {"input": BREAKER}, token))["setSpendLimit"]["__typename"] == "SetSpendLimitSuccess"
    held = await api.data(HOLD, {"input": _input(user_id, "4", "task", timeoutSeconds=86400)}, service)
    assert held["holdCredits"]["__typename"] == "HoldCreditsSuccess"
    placed = (await api.data(SHOWN, {}, token))["me"]["credit"]["spendLimits"][0]
    api.clock.advance(timedelta(hours=1))
    later = (await api.data(SHOWN, {}, token))["me"]["credit"]["spendLimits"][0]
    small = await api.data(SPEND, {"input": _input(user_id, "1.5", "small")}, service)
    assert small["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    assert [(x["spent"], x["held"], x["remaining"]) for x in (placed, later)] == [("4", "0", "1"), ("0", "0", "5")]


async def test_a_budget_needs_the_organizations_pool(api: Api) -> None:
    owner_id, owner = await api.user("owner@example.com")
    member_id, _ = await api.user("member@example.com")
    org = await organizations.create("Acme", owner_id, api.clock.now())
    await organizations.add_member(org.id, member_id, [MemberRole.MEMBER], api.clock.now())
    before = await snapshot()
    refused = await api.data(
        BUDGET, {"org": gid("Organization", org.id), "user": gid("User", member_id), "credits": "5"}, owner
    )
    assert refused["setMemberBudget"] == {
        "__typename": "ValidationError",
        "message": "The organization has no credit pool: enable it first (a budget limits spending from it)",
    }
    assert changed(before, await snapshot()) == set()
