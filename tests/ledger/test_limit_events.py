"""The spend limits' events (models/ledger/limit_events.py) on both databases: spend_limit.warning and .reached
once per crossing, in the spend's or the hold's transaction, none for spends beyond them or for a refusal
that repeats; a BLOCK cap's first refusal in its period; agent.paused when a breaker trips; budget.* for a
member's budget; concurrent spends crossing a warning write it once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from models import ledger, limits, organizations
from models.credits import MICRO
from models.ids import encode_id
from models.limit_rules import LimitSpec, LimitView
from models.organizations import budget_spec
from models.tables import (
    CreditAccount,
    CreditKind,
    LimitAction,
    LimitKind,
    LimitScope,
    LimitWindow,
    LotSource,
    MemberRole,
    OutboxEvent,
    SpendLimit,
)
from tests.support.backends import T0, Backend
from tests.support.events import account_data, emitted
from tests.support.snapshots import changed, snapshot

DAY_START = "2026-01-15T00:00:00Z"
DAY_END = "2026-01-16T00:00:00Z"


async def _account(credit: int = 100 * MICRO) -> tuple[int, int]:
    user_id = await ledger.create_user(
        "ada@example.com", signup_bonus=credit, bonus_lifetime=timedelta(days=90), now=T0
    )
    return user_id, int((await CreditAccount.get(user_id=user_id)).id)


def _key(name: str) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:t", name, "spendCredits", {"n": name})


async def _spend(user_id: int, account_id: int, credits: float, key: str, now: datetime = T0) -> ledger.SpendResult:
    return await ledger.spend(
        ("id", account_id),
        user_id=user_id,
        organization_id=None,
        agent_id="bot",
        activity="answer",
        credits=int(credits * MICRO),
        quantity=None,
        idem=_key(key),
        now=now,
    )


def _limit(view: LimitView) -> dict[str, object]:
    return {
        "id": encode_id("SpendLimit", view.id),
        "scope": view.scope.value,
        "kind": view.kind.value,
        "window": view.window.value,
        "windowLength": view.window_length,
        "timeZone": view.time_zone,
        "action": view.action.value,
        "amount": str(view.amount // MICRO),
        "warnPercent": view.warn_percent,
        "userId": None if view.user_id is None else encode_id("User", view.user_id),
        "agentId": view.agent_id,
        "tokenId": None,
    }


def _data(account: dict[str, object], view: LimitView, used: str, requested: str) -> dict[str, object]:
    return {
        "account": account,
        "limit": _limit(view),
        "used": used,
        "requested": requested,
        "periodStart": DAY_START,
        "resetsAt": DAY_END,
    }


async def test_a_warning_and_a_reached_amount_fire_once_per_crossing(db: Backend) -> None:
    user_id, account_id = await _account()
    daily, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, 10 * MICRO, LimitWindow.DAY, agent_id="bot", warn_percent=80), T0
    )
    me = account_data(account_id, user_id)
    before = await snapshot()
    await _spend(user_id, account_id, 7, "s1")  # 7 of 10: below 80 %
    assert await emitted() == []
    assert "events" not in changed(before, await snapshot())
    await _spend(user_id, account_id, 1, "s2")  # 8: crosses 80 %
    await _spend(user_id, account_id, 1, "s3")  # 9: beyond it, nothing
    assert await emitted() == [("spend_limit.warning", _data(me, daily, "8", "1"))]
    await _spend(user_id, account_id, 1, "s4")  # 10: reaches the amount exactly (a BLOCK cap lets it)
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 1, "s5")  # refused: reached already today, nothing more
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 1, "s5")  # the replay: nothing
    assert await emitted() == [
        ("spend_limit.warning", _data(me, daily, "8", "1")),
        ("spend_limit.reached", _data(me, daily, "10", "1")),
    ]
    # The next day starts at 0: crossing again is a new warning.
    tomorrow = T0 + timedelta(days=1)
    await _spend(user_id, account_id, 9, "s6", tomorrow)
    ((kind, data),) = (await emitted())[2:]
    assert (kind, data["used"], data["periodStart"]) == ("spend_limit.warning", "9", "2026-01-16T00:00:00Z")


async def test_a_block_caps_first_refusal_in_its_period_is_its_reached_and_the_next_ones_are_not(db: Backend) -> None:
    user_id, account_id = await _account()
    daily, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.DAY, agent_id="bot"), T0
    )
    await _spend(user_id, account_id, 4, "s1")
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 2, "s2")
    before = await snapshot()
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 3, "s3")  # a second refusal: its key only
    assert changed(before, await snapshot()) == {"idempotency_records"}
    assert await emitted() == [("spend_limit.reached", _data(account_data(account_id, user_id), daily, "4", "2"))]


async def reached_period(limit: LimitView) -> int | None:
    row = await SpendLimit.get(id=limit.id)
    return None if row.reached_period is None else int(row.reached_period)


async def test_a_caps_reached_is_told_once_a_period_even_after_the_outbox_is_pruned(db: Backend) -> None:
    """The once-ness is the limit's ``reached_period``, not a search of the events (which pruning forgets)."""
    user_id, account_id = await _account()
    daily, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.DAY, agent_id="bot"), T0
    )
    await _spend(user_id, account_id, 5, "s1")  # reaches the amount: told, and marked for the day
    assert await reached_period(daily) == int(datetime.fromisoformat(DAY_START).timestamp())
    await OutboxEvent.all().delete()  # as the sweep prunes events past retention
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 1, "s2")  # refused the same day: not told again
    assert await emitted() == []

    tomorrow = T0 + timedelta(days=1)
    await _spend(user_id, account_id, 4, "s3", tomorrow)
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 2, "s4", tomorrow)  # the next day's first refusal: told
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 2, "s5", tomorrow)
    assert [(kind, data["used"], data["periodStart"]) for kind, data in await emitted()] == [
        ("spend_limit.reached", "4", "2026-01-16T00:00:00Z")
    ]


async def test_a_rolling_caps_refusals_tell_reached_once_per_breach_episode(db: Backend) -> None:
    """A rolling window's period moves every bucket: an episode lasts until the bucket the cap was reached in
    has left the window (here an hour of 60 one-minute buckets)."""
    user_id, account_id = await _account()
    hourly, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.ROLLING_HOURS, agent_id="bot"), T0
    )
    await _spend(user_id, account_id, 4, "s1")
    for n, minutes in enumerate((0, 1, 30, 59)):  # the T0 bucket still counts at T0 + 59 min
        with pytest.raises(ledger.SpendLimitExceededError):
            await _spend(user_id, account_id, 2, f"r{n}", T0 + timedelta(minutes=minutes))
    assert [(kind, data["used"]) for kind, data in await emitted()] == [("spend_limit.reached", "4")]

    later = T0 + timedelta(minutes=60)  # the T0 bucket has left the window: usage 0, a new episode
    await _spend(user_id, account_id, 4, "s2", later)
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 2, "r4", later)
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 2, "r5", later + timedelta(minutes=1))
    assert [(kind, data["used"], data["periodStart"]) for kind, data in await emitted()] == [
        ("spend_limit.reached", "4", "2026-01-15T11:01:00Z"),
        ("spend_limit.reached", "4", "2026-01-15T12:01:00Z"),
    ]
    assert await reached_period(hourly) == int(later.timestamp())


async def test_a_notify_limit_reaches_its_amount_once_and_spends_go_on(db: Backend) -> None:
    user_id, account_id = await _account()
    notify, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.ACCOUNT, 5 * MICRO, LimitWindow.DAY, action=LimitAction.NOTIFY), T0
    )
    await _spend(user_id, account_id, 4, "s1")
    await _spend(user_id, account_id, 3, "s2")  # 7: past 5
    await _spend(user_id, account_id, 3, "s3")  # 10: beyond, nothing
    assert await emitted() == [("spend_limit.reached", _data(account_data(account_id, user_id), notify, "7", "3"))]


async def test_a_hold_crosses_as_a_spend_does(db: Backend) -> None:
    user_id, account_id = await _account()
    daily, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, 10 * MICRO, LimitWindow.DAY, agent_id="bot", warn_percent=50), T0
    )
    await ledger.hold(
        ("id", account_id),
        user_id=user_id,
        organization_id=None,
        agent_id="bot",
        activity="answer",
        credits=6 * MICRO,
        expires_at=T0 + timedelta(hours=1),
        idem=_key("h1"),
        now=T0,
    )
    assert await emitted() == [("spend_limit.warning", _data(account_data(account_id, user_id), daily, "6", "6"))]


async def test_concurrent_spends_crossing_a_warning_write_it_once(db: Backend) -> None:
    user_id, account_id = await _account()
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 20 * MICRO, LimitWindow.DAY, warn_percent=50), T0)
    await asyncio.gather(*(_spend(user_id, account_id, 1, f"c{n}") for n in range(16)))
    found = await emitted()
    assert [kind for kind, _ in found] == ["spend_limit.warning"]
    assert found[0][1]["used"] == "10"  # the spend that took it from 9 to 10, whichever it was


async def test_a_breaker_that_trips_writes_agent_paused_once(db: Backend) -> None:
    user_id, account_id = await _account()
    breaker, _ = await limits.set_limit(
        account_id,
        LimitSpec(
            LimitScope.AGENT,
            5 * MICRO,
            LimitWindow.ROLLING_MINUTES,
            agent_id="bot",
            kind=LimitKind.VELOCITY,
            window_length=1,
            cooldown_seconds=600,
        ),
        T0,
    )
    await _spend(user_id, account_id, 4, "s1")
    with pytest.raises(ledger.SpendPausedError):
        await _spend(user_id, account_id, 2, "s2")
    with pytest.raises(ledger.SpendPausedError):
        await _spend(user_id, account_id, 1, "s3")  # paused: refused before the breaker, nothing more
    assert await emitted() == [
        (
            "agent.paused",
            {
                "account": account_data(account_id, user_id),
                "limit": _limit(breaker),
                "used": "4",
                "requested": "2",
                "trippedAt": "2026-01-15T12:00:00Z",
                "pausedUntil": "2026-01-15T12:10:00Z",
            },
        )
    ]


async def test_a_members_budget_writes_budget_events_instead_of_spend_limit_ones(db: Backend) -> None:
    owner = await ledger.create_user("owner@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    member = await ledger.create_user("member@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    org = await organizations.create("Acme", owner, T0)
    await organizations.add_member(org.id, member, [MemberRole.MEMBER], T0)
    pool = await organizations.enable_pool(org.id, T0)
    await ledger.grant(
        pool.id,
        credits=20 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.TOP_UP,
        expires_at=None,
        reason=None,
        idem=None,
        now=T0,
    )
    await organizations.set_budget(org.id, member, 4 * MICRO, T0)
    # The same limit (its identity: subject, kind, window, action) with a warning at 50 %: still the budget.
    budget, created = await limits.set_limit(pool.id, replace(budget_spec(member, 4 * MICRO), warn_percent=50), T0)
    assert not created

    async def spend(credits: int, name: str) -> None:
        await ledger.spend(
            ("organization_id", org.id),
            user_id=member,
            organization_id=org.id,
            agent_id="bot",
            activity="answer",
            credits=credits * MICRO,
            quantity=None,
            idem=_key(name),
            now=T0,
        )

    await spend(2, "s1")  # 50 %
    with pytest.raises(ledger.BudgetExceededError):
        await spend(3, "s2")  # refused: the budget's first refusal this month
    with pytest.raises(ledger.BudgetExceededError):
        await spend(3, "s3")
    pool_ref = account_data(pool.id, None, org.id)
    month = {"periodStart": "2026-01-01T00:00:00Z", "resetsAt": "2026-02-01T00:00:00Z"}
    assert await emitted() == [
        ("budget.warning", {"account": pool_ref, "limit": _limit(budget), "used": "2", "requested": "2", **month}),
        ("budget.reached", {"account": pool_ref, "limit": _limit(budget), "used": "2", "requested": "3", **month}),
    ]
