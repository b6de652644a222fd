"""Spend limits enforced by the ledger (models/ledger/limits.py) on both databases: exact refusals that change
nothing and replay the same, warnings, holds counting as held, captures as spent, releases giving back,
windows across a period boundary, per-run caps and the velocity breaker (which counts a hold when it is placed,
and a burst across a minute's edge whole)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from tortoise.transactions import in_transaction

from models import ledger, limits
from models.credits import MICRO
from models.limit_rules import LimitSpec, LimitView
from models.tables import (
    ApiToken,
    CreditAccount,
    LimitAction,
    LimitKind,
    LimitScope,
    LimitWindow,
    SpendLimit,
    SpendLimitUsage,
    TokenKind,
)
from tests.support.backends import T0, Backend
from tests.support.snapshots import changed, snapshot
from tests.support.statements import StatementCounter
from tests.support.statements import counter as counter

HOUR = timedelta(hours=1)
T = TypeVar("T")


async def _account(credit: int = 100 * MICRO) -> tuple[int, int]:
    user_id = await ledger.create_user(
        "ada@example.com", signup_bonus=credit, bonus_lifetime=timedelta(days=90), now=T0
    )
    return user_id, int((await CreditAccount.get(user_id=user_id)).id)


def _key(name: str) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:t", name, "spendCredits", {"n": name})


async def _spend(
    user_id: int,
    account_id: int,
    credits: float,
    key: str,
    now: datetime = T0,
    *,
    agent: str = "bot",
    run: str | None = None,
    token: int | None = None,
) -> ledger.SpendResult:
    return await ledger.spend(
        ("id", account_id),
        user_id=user_id,
        organization_id=None,
        agent_id=agent,
        activity="answer",
        credits=int(credits * MICRO),
        quantity=None,
        idem=_key(key),
        now=now,
        run_id=run,
        token_id=token,
    )


async def _hold(
    user_id: int, account_id: int, credits: float, key: str, now: datetime = T0, lasting: timedelta = HOUR
) -> ledger.HoldResult:
    return await ledger.hold(
        ("id", account_id),
        user_id=user_id,
        organization_id=None,
        agent_id="bot",
        activity="answer",
        credits=int(credits * MICRO),
        expires_at=now + lasting,
        idem=ledger.IdempotencyKey.for_request("service:t", key, "holdCredits", {"n": key}),
        now=now,
    )


async def test_a_block_cap_refuses_exactly_changes_nothing_and_replays_the_same(db: Backend) -> None:
    user_id, account_id = await _account()
    daily, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.DAY, agent_id="bot"), T0
    )
    await _spend(user_id, account_id, 3, "s1")
    await _hold(user_id, account_id, 1.5, "h1")
    before = await snapshot()
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 1, "s2")
    over = refused.value
    assert (over.limit, over.spent, over.held, over.required, over.resets_at, over.run_id) == (
        daily,
        3 * MICRO,
        int(1.5 * MICRO),
        MICRO,
        datetime(2026, 1, 16, tzinfo=UTC),
        None,
    )
    # Only the refusal, stored under its key, and its spend_limit.reached (the cap's first refusal today).
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "events",
        "spend_limits",
    }  # reached_period: told once
    # Replayed after the limit is lifted: refused the same way, from the stored answer.
    await limits.remove_limit(daily.id)
    with pytest.raises(ledger.SpendLimitExceededError) as again:
        await _spend(user_id, account_id, 1, "s2")
    assert (again.value.limit, again.value.spent, again.value.held) == (daily, 3 * MICRO, int(1.5 * MICRO))
    # Another agent is not limited by the bot's cap.
    await limits.set_limit(account_id, LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.DAY, agent_id="bot"), T0)
    assert (await _spend(user_id, account_id, 10, "s3", agent="other")).credits == 10 * MICRO


async def test_holds_count_captures_count_as_spent_and_releases_give_back(db: Backend) -> None:
    user_id, account_id = await _account()
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.TOTAL), T0)
    first = await _hold(user_id, account_id, 6, "h1")
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _hold(user_id, account_id, 5, "h2")
    assert (refused.value.spent, refused.value.held, refused.value.required) == (0, 6 * MICRO, 5 * MICRO)
    captured = await ledger.capture_hold(
        first.hold_id, credits=4 * MICRO, idem=_key("c1"), now=T0 + timedelta(minutes=1)
    )
    assert captured.usage_event_id is not None
    # 4 spent, the hold's 6 no longer held: 6 left.
    with pytest.raises(ledger.SpendLimitExceededError) as after_capture:
        await _spend(user_id, account_id, 7, "s1")
    assert (after_capture.value.spent, after_capture.value.held) == (4 * MICRO, 0)
    second = await _hold(user_id, account_id, 6, "h3")
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 1, "s2")
    await ledger.release_hold(second.hold_id, idem=_key("r1"), now=T0)
    assert (await _spend(user_id, account_id, 6, "s3")).credits == 6 * MICRO


async def test_a_hold_past_its_timeout_stops_counting_at_that_instant(db: Backend) -> None:
    user_id, account_id = await _account()
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.TOTAL), T0)
    await _hold(user_id, account_id, 8, "h1")
    with pytest.raises(ledger.SpendLimitExceededError):
        await _spend(user_id, account_id, 3, "s1", T0 + HOUR - timedelta(seconds=1))
    assert (await _spend(user_id, account_id, 3, "s2", T0 + HOUR)).credits == 3 * MICRO


async def test_a_day_window_resets_at_local_midnight(db: Backend) -> None:
    user_id, account_id = await _account()
    paris, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.ACCOUNT, 2 * MICRO, LimitWindow.DAY, time_zone="Europe/Paris"), T0
    )
    before_midnight = datetime(2026, 1, 15, 22, 59, 59, tzinfo=UTC)  # 23:59:59 in Paris
    await _spend(user_id, account_id, 2, "s1", before_midnight)
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 1, "s2", before_midnight)
    assert refused.value.resets_at == datetime(2026, 1, 15, 23, tzinfo=UTC)
    assert (await _spend(user_id, account_id, 2, "s3", datetime(2026, 1, 15, 23, tzinfo=UTC))).credits == 2 * MICRO
    with pytest.raises(ledger.SpendLimitExceededError) as next_day:
        await _spend(user_id, account_id, 1, "s4", datetime(2026, 1, 16, 12, tzinfo=UTC))
    assert (next_day.value.limit, next_day.value.spent) == (paris, 2 * MICRO)


async def test_a_rolling_window_lets_the_oldest_hour_go(db: Backend) -> None:
    user_id, account_id = await _account()
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 3 * MICRO, LimitWindow.ROLLING_HOURS, 2), T0)
    await _spend(user_id, account_id, 2, "s1", T0)
    await _spend(user_id, account_id, 1, "s2", T0 + HOUR)
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 1, "s3", T0 + 2 * HOUR - timedelta(seconds=1))
    assert refused.value.spent == 3 * MICRO
    assert refused.value.resets_at == T0 + 2 * HOUR
    assert (await _spend(user_id, account_id, 2, "s4", T0 + 2 * HOUR)).credits == 2 * MICRO


async def test_a_run_over_its_cap_is_refused_while_other_runs_go_on(db: Backend) -> None:
    user_id, account_id = await _account()
    capped, _ = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 50 * MICRO, LimitWindow.DAY, agent_id="bot", max_credits_per_run=3 * MICRO),
        T0,
    )
    await _spend(user_id, account_id, 2, "s1", run="r1")
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 2, "s2", run="r1")
    over = refused.value
    assert (over.limit, over.spent, over.held, over.required, over.resets_at, over.run_id) == (
        capped,
        2 * MICRO,
        0,
        2 * MICRO,
        None,
        "r1",
    )
    assert (await _spend(user_id, account_id, 3, "s3", run="r2")).credits == 3 * MICRO
    assert (await _spend(user_id, account_id, 5, "s4")).credits == 5 * MICRO  # no run: the run cap is not asked


async def test_warnings_at_the_threshold_and_past_a_notify_limit_are_stored_for_replays(db: Backend) -> None:
    user_id, account_id = await _account()
    warned, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.MONTH, warn_percent=80), T0
    )
    noted, _ = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 2 * MICRO, LimitWindow.DAY, agent_id="bot", action=LimitAction.NOTIFY),
        T0,
    )
    assert (await _spend(user_id, account_id, 2, "s1")).warnings == ()
    result = await _spend(user_id, account_id, 6, "s2")
    expected = (
        ledger.LimitWarning(warned, 8 * MICRO, 0, datetime(2026, 2, 1, tzinfo=UTC)),
        ledger.LimitWarning(noted, 8 * MICRO, 0, datetime(2026, 1, 16, tzinfo=UTC)),
    )
    assert result.warnings == expected
    replayed = await _spend(user_id, account_id, 6, "s2")
    assert replayed.replayed
    assert replayed.warnings == expected


async def test_a_velocity_breaker_trips_pauses_and_cools_down(db: Backend) -> None:
    user_id, account_id = await _account()
    breaker, _ = await limits.set_limit(
        account_id,
        LimitSpec(
            LimitScope.AGENT,
            5 * MICRO,
            LimitWindow.ROLLING_MINUTES,
            1,
            kind=LimitKind.VELOCITY,
            agent_id="bot",
            cooldown_seconds=600,
        ),
        T0,
    )
    await _spend(user_id, account_id, 4, "s1")
    before = await snapshot()
    with pytest.raises(ledger.SpendPausedError) as tripped:
        await _spend(user_id, account_id, 2, "s2", T0 + timedelta(seconds=10))
    trip_at = T0 + timedelta(seconds=10)
    assert (tripped.value.limit, tripped.value.tripped_at, tripped.value.paused_until) == (
        breaker,
        trip_at,
        trip_at + timedelta(minutes=10),
    )
    # The trip committed with the refusal, and its event (delta 0, the balance, a version of its own) rides on it.
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "spend_limits",
        "ledger_entries",
        "credit_accounts",
        "events",  # its agent.paused
    }
    row = await SpendLimit.get(id=breaker.id)
    assert (row.paused, row.tripped_at, row.paused_until) == (True, trip_at, trip_at + timedelta(minutes=10))
    (event,) = tripped.value.changes
    account = await CreditAccount.get(id=account_id)
    assert (event.reason, event.delta, event.version, event.balance.available) == (
        "LIMIT_TRIPPED",
        0,
        account.version,
        96 * MICRO,
    )
    # Paused: even a small spend, a minute later, is refused; another agent is not.
    with pytest.raises(ledger.SpendPausedError) as paused:
        await _spend(user_id, account_id, 0.5, "s3", T0 + timedelta(minutes=5))
    assert paused.value.tripped_at == trip_at
    assert paused.value.changes == ()
    assert (await _spend(user_id, account_id, 9, "s4", T0 + timedelta(minutes=5), agent="other")).credits == 9 * MICRO
    # Replay of the tripping request: refused the same, nothing tripped again.
    with pytest.raises(ledger.SpendPausedError) as replay:
        await _spend(user_id, account_id, 2, "s2", T0 + timedelta(minutes=5))
    assert (replay.value.tripped_at, replay.value.changes) == (trip_at, ())
    # The cool-down over: spending goes on.
    assert (await _spend(user_id, account_id, 1, "s5", trip_at + timedelta(minutes=10))).credits == MICRO


async def _breaker(account_id: int) -> LimitView:
    """ "Stop if it burns 5 credits in a minute": the agent bot's, paused until resumed."""
    view, _ = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.ROLLING_MINUTES, 1, kind=LimitKind.VELOCITY, agent_id="bot"),
        T0,
    )
    return view


async def _breaker_usage(view: LimitView, now: datetime) -> tuple[int, int]:
    """The breaker's (spent, held) as the limits API shows them."""
    shown = (await limits.usage([view], now))[view.id]
    return shown.spent, shown.held


async def test_a_burst_split_across_a_minutes_edge_trips_the_breaker(db: Backend) -> None:
    """A minute is 60 one-second buckets: 4.9 credits at 12:00:59 still count at 12:01:00, and stop counting a
    minute after they were spent."""
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    await _spend(user_id, account_id, 4.9, "s1", T0 + timedelta(seconds=59))
    before = await snapshot()
    with pytest.raises(ledger.SpendPausedError) as tripped:
        await _spend(user_id, account_id, 4.9, "s2", T0 + timedelta(seconds=60))
    assert (tripped.value.limit, tripped.value.tripped_at) == (breaker, T0 + timedelta(seconds=60))
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "spend_limits",
        "ledger_entries",
        "credit_accounts",
        "events",  # its agent.paused
    }
    # Another agent's breaker, the same burst a minute apart: the first spend has left the window.
    other, _ = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 5 * MICRO, LimitWindow.ROLLING_MINUTES, 1, kind=LimitKind.VELOCITY, agent_id="b2"),
        T0,
    )
    await _spend(user_id, account_id, 4.9, "o1", T0 + timedelta(minutes=2, seconds=59), agent="b2")
    assert await _breaker_usage(other, T0 + timedelta(minutes=3, seconds=58)) == (4_900_000, 0)
    assert await _breaker_usage(other, T0 + timedelta(minutes=3, seconds=59)) == (0, 0)
    assert (await _spend(user_id, account_id, 4.9, "o2", T0 + timedelta(minutes=3, seconds=59), agent="b2")).credits


async def test_a_hold_counts_against_a_breaker_when_placed_not_for_its_life(db: Backend) -> None:
    """An agent that set 4 credits aside an hour ago may spend 1.5 now: the burn rate is about what is committed
    in the window, and the hold was committed an hour ago."""
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    await _hold(user_id, account_id, 4, "h1", lasting=timedelta(days=1))
    assert await _breaker_usage(breaker, T0) == (4 * MICRO, 0)
    later = T0 + HOUR
    assert await _breaker_usage(breaker, later) == (0, 0)
    assert (await _spend(user_id, account_id, 1.5, "s1", later)).credits == 1_500_000
    assert not (await SpendLimit.get(id=breaker.id)).paused


async def test_a_hold_then_a_spend_in_the_same_minute_trips_the_breaker(db: Backend) -> None:
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    await _hold(user_id, account_id, 4, "h1")
    with pytest.raises(ledger.SpendPausedError) as tripped:
        await _spend(user_id, account_id, 1.5, "s1", T0 + timedelta(seconds=30))
    assert tripped.value.limit == breaker
    assert (await SpendLimit.get(id=breaker.id)).paused


async def test_a_hold_captured_within_the_minute_is_counted_once_and_does_not_trip(db: Backend) -> None:
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    placed = await _hold(user_id, account_id, 4, "h1")
    captured = await ledger.capture_hold(
        placed.hold_id, credits=4 * MICRO, idem=_key("c1"), now=T0 + timedelta(seconds=20)
    )
    assert captured.usage_event_id is not None
    assert not (await SpendLimit.get(id=breaker.id)).paused
    # Counted once, when placed: 1 more within the minute reaches 5 and passes; anything past it trips.
    assert await _breaker_usage(breaker, T0 + timedelta(seconds=30)) == (4 * MICRO, 0)
    assert (await _spend(user_id, account_id, 1, "s1", T0 + timedelta(seconds=30))).credits == MICRO
    with pytest.raises(ledger.SpendPausedError):
        await _spend(user_id, account_id, 0.1, "s2", T0 + timedelta(seconds=40))


async def test_a_released_hold_stays_committed_and_an_increase_commits_more(db: Backend) -> None:
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    placed = await _hold(user_id, account_id, 2, "h1")
    increased = await ledger.increase_hold(
        placed.hold_id, credits=2 * MICRO, quantity=None, idem=_key("i1"), now=T0 + timedelta(seconds=5)
    )
    assert increased.warnings == ()
    await ledger.release_hold(placed.hold_id, idem=_key("r1"), now=T0 + timedelta(seconds=10))
    # The release gives nothing back: 4 committed within the minute, so 1.5 more trips.
    assert await _breaker_usage(breaker, T0 + timedelta(seconds=10)) == (4 * MICRO, 0)
    with pytest.raises(ledger.SpendPausedError):
        await _spend(user_id, account_id, 1.5, "s1", T0 + timedelta(seconds=20))


async def test_an_increase_past_a_breaker_trips_it_and_a_cap_still_counts_holds_as_held(db: Backend) -> None:
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    cap, _ = await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 50 * MICRO, LimitWindow.DAY), T0)
    placed = await _hold(user_id, account_id, 3, "h1")
    assert (await limits.usage([cap], T0))[cap.id] == limits.Usage(0, 3 * MICRO)
    with pytest.raises(ledger.SpendPausedError) as tripped:
        await ledger.increase_hold(
            placed.hold_id, credits=2_500_000, quantity=None, idem=_key("i1"), now=T0 + timedelta(seconds=5)
        )
    assert tripped.value.limit == breaker
    assert (await limits.usage([cap], T0 + timedelta(seconds=5)))[cap.id] == limits.Usage(0, 3 * MICRO)


async def test_a_token_limit_applies_to_that_token_only(db: Backend) -> None:
    user_id, account_id = await _account()
    token = await ApiToken.create(
        name="t", kind=TokenKind.SERVICE, token_hash="h" * 64, scopes="usage:write", created_at=T0, user_id=user_id
    )
    view, _ = await limits.set_limit(
        account_id, LimitSpec(LimitScope.TOKEN, MICRO, LimitWindow.DAY, token_id=token.id), T0
    )
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 2, "s1", token=token.id)
    assert isinstance(refused.value.limit, LimitView)
    assert refused.value.limit == view
    assert (await _spend(user_id, account_id, 2, "s2")).credits == 2 * MICRO


def _of_limits(statement: str) -> bool:
    return "FROM spend_limits" in statement or "INTO spend_limit_usage" in statement


async def test_statements_no_extra_without_limits_and_with_them_the_read_rides_on_the_lock_the_write_on_the_save(
    db: Backend, counter: StatementCounter
) -> None:
    user_id, account_id = await _account()
    token = await ApiToken.create(
        name="t", kind=TokenKind.SERVICE, token_hash="k" * 64, scopes="usage:write", created_at=T0, user_id=user_id
    )
    await _spend(user_id, account_id, 1, "warm", token=token.id)
    plain = await counter.during(_spend(user_id, account_id, 1, "plain", token=token.id))
    assert plain.credits == MICRO
    without = list(counter.statements)
    # The lock's statement (the first) reads the limits when the account has some (CASE on spend_limits):
    # no other statement touches them.
    assert [n for n, s in enumerate(without) if _of_limits(s)] == [0]
    assert "FOR UPDATE OF a" in without[0] or db.name == "sqlite"
    for spec in (
        LimitSpec(LimitScope.ACCOUNT, 50 * MICRO, LimitWindow.MONTH),
        LimitSpec(LimitScope.AGENT, 20 * MICRO, LimitWindow.DAY, agent_id="bot", warn_percent=80),
        LimitSpec(LimitScope.TOKEN, 10 * MICRO, LimitWindow.ROLLING_HOURS, 3, token_id=token.id),
    ):
        await limits.set_limit(account_id, spec, T0)
    limited_spend = await counter.during(_spend(user_id, account_id, 1, "limited", token=token.id))
    assert [(w.limit.scope, w.spent) for w in limited_spend.warnings] == []
    limited = list(counter.statements)
    # Uncontended, the spend with three limits runs the statements of the plain one (the same lock statement,
    # which now reads the limits), and the counters' upsert is one of the writes: on PostgreSQL a sub-statement
    # of the one data-modifying statement that writes everything, on SQLite (no such CTE) one more statement of
    # those its thread runs in one hop.
    upserts = [s for s in limited if "INTO spend_limit_usage" in s]
    assert len(without) == len(limited) == 2
    assert limited[0] == without[0]
    assert upserts == [limited[1]]
    assert "spend_limit_usage" not in without[1]
    if db.name == "postgres":
        assert "counted AS (INSERT INTO spend_limit_usage" in limited[1]
    else:
        assert limited[1].count("; ") == without[1].count("; ") + 1
    counted = await SpendLimitUsage.filter(limit__account_id=account_id)
    assert sorted(usage.spent for usage in counted) == [MICRO, MICRO, MICRO]


async def test_concurrent_spends_of_five_agents_pass_no_cap(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("concurrent transactions need PostgreSQL (SQLite has one writer)")
    user_id, account_id = await _account(1000 * MICRO)
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 25 * MICRO, LimitWindow.DAY), T0)
    caps = {f"agent-{n}": (4 + n) * MICRO for n in range(5)}  # 4 + 5 + 6 + 7 + 8 = 30 > 25
    for agent, cap in caps.items():
        await limits.set_limit(account_id, LimitSpec(LimitScope.AGENT, cap, LimitWindow.DAY, agent_id=agent), T0)
    outcomes = await asyncio.gather(
        *(_spend(user_id, account_id, 1, f"c{n}", agent=f"agent-{n % 5}") for n in range(50)), return_exceptions=True
    )
    won = [n for n, o in enumerate(outcomes) if isinstance(o, ledger.SpendResult)]
    assert all(isinstance(o, ledger.SpendResult | ledger.SpendLimitExceededError) for o in outcomes), outcomes
    # Serially: every agent may spend its cap (30 in all) but the account only 25.
    assert len(won) == 25
    for n, agent in enumerate(caps):
        assert len([w for w in won if w % 5 == n]) <= caps[agent] // MICRO
    assert (await ledger.read_balances([account_id], T0))[account_id].total == 975 * MICRO


async def _while_a_spend_waits(change: Coroutine[Any, Any, object], spend: Callable[[], Awaitable[T]]) -> T:
    """Run ``change`` in a transaction that keeps the account's lock while ``spend`` begins and waits for it:
    the spend's lock statement starts before the change commits (its snapshot does not see the change)."""
    locked = asyncio.Event()

    async def spend_once_locked() -> T:
        await locked.wait()
        return await spend()

    waiting = asyncio.create_task(spend_once_locked())  # made outside the transaction: a connection of its own
    async with in_transaction():
        await change  # its own transaction nests in this one: the lock is kept until this one commits
        locked.set()
        await asyncio.sleep(0.5)
        assert not waiting.done()
    return await waiting


async def test_a_spend_that_waited_for_the_lock_sees_the_limit_lowered_meanwhile(
    db: Backend, counter: StatementCounter
) -> None:
    if db.name != "postgres":
        pytest.skip("concurrent transactions need PostgreSQL (SQLite has one writer)")
    user_id, account_id = await _account()
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.DAY), T0)
    lowered = limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, MICRO, LimitWindow.DAY), T0)
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _while_a_spend_waits(lowered, lambda: counter.during(_spend(user_id, account_id, 2, "s1")))
    assert (refused.value.limit.amount, refused.value.spent, refused.value.required) == (MICRO, 0, 2 * MICRO)
    # The limits it read as its statement began were stale (the row changed under it): the statement ran again.
    assert counter.statements[0].startswith("SELECT a.id")
    assert counter.statements[1] == counter.statements[0]
    assert (await ledger.read_balances([account_id], T0))[account_id].total == 100 * MICRO


async def test_a_spend_that_waited_for_the_lock_sees_the_agent_resumed_meanwhile(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("concurrent transactions need PostgreSQL (SQLite has one writer)")
    user_id, account_id = await _account()
    breaker = await _breaker(account_id)
    with pytest.raises(ledger.SpendPausedError):
        await _spend(user_id, account_id, 6, "s1")
    resumed = limits.resume(account_id, T0, limit_id=breaker.id)
    spent = await _while_a_spend_waits(resumed, lambda: _spend(user_id, account_id, 2, "s2"))
    assert (spent.credits, spent.balance.total) == (2 * MICRO, 98 * MICRO)


async def test_a_runs_active_holds_count_against_its_cap(db: Backend) -> None:
    user_id, account_id = await _account()
    await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.ACCOUNT, 50 * MICRO, LimitWindow.DAY, max_credits_per_run=4 * MICRO),
        T0,
    )
    await ledger.hold(
        ("id", account_id),
        user_id=user_id,
        organization_id=None,
        agent_id="bot",
        activity="answer",
        credits=3 * MICRO,
        expires_at=T0 + HOUR,
        idem=_key("h-run"),
        now=T0,
        run_id="r1",
    )
    await _hold(user_id, account_id, 5, "h-other")  # no run: held against the day, not the run
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 2, "s1", run="r1")
    assert (refused.value.spent, refused.value.held, refused.value.run_id) == (0, 3 * MICRO, "r1")
    assert (await _spend(user_id, account_id, 1, "s2", run="r1")).credits == MICRO


# ------------------------------------------------------------------------ a calendar limit moved to another zone


@pytest.mark.parametrize(
    ("zone", "later"),
    [
        # East: Tokyo's day began at 15:00 UTC the day before, before the UTC day's counter.
        ("Asia/Tokyo", T0 + 2 * HOUR),
        # West: Los Angeles' day began at 08:00 UTC, after the UTC day's counter; past midnight UTC too.
        ("America/Los_Angeles", T0 + 13 * HOUR),
    ],
)
async def test_a_day_limit_moved_to_another_zone_keeps_counting_and_shows_what_it_enforces(
    db: Backend, zone: str, later: datetime
) -> None:
    user_id, account_id = await _account()
    spec = LimitSpec(LimitScope.AGENT, 10 * MICRO, LimitWindow.DAY, agent_id="bot")
    daily, _ = await limits.set_limit(account_id, spec, T0)
    await _spend(user_id, account_id, 4, "s0")

    moved, created = await limits.set_limit(account_id, replace(spec, time_zone=zone), T0)
    assert (moved.id, moved.time_zone, created) == (daily.id, zone, False)
    assert (await limits.usage([moved], T0))[moved.id].spent == 4 * MICRO

    for now in (T0, later):
        shown = (await limits.usage([moved], now))[moved.id].spent
        with pytest.raises(ledger.SpendLimitExceededError) as refused:
            await _spend(user_id, account_id, 7, f"over {now}", now)
        # What the refusal counted is what the listing shows.
        assert refused.value.spent == shown
    assert shown == 4 * MICRO
    await _spend(user_id, account_id, 6, "fits", later)
    assert (await limits.usage([moved], later))[moved.id].spent == 10 * MICRO
    with pytest.raises(ledger.SpendLimitExceededError) as full:
        await _spend(user_id, account_id, 0.000001, "full", later)
    assert full.value.spent == 10 * MICRO


async def test_moving_a_day_limit_east_and_back_west_keeps_one_counter_of_the_current_day(db: Backend) -> None:
    user_id, account_id = await _account()
    spec = LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.DAY)
    daily, _ = await limits.set_limit(account_id, spec, T0)
    await _spend(user_id, account_id, 3, "s0")
    await limits.set_limit(account_id, replace(spec, time_zone="Asia/Tokyo"), T0)
    await _spend(user_id, account_id, 2, "s1")
    back, _ = await limits.set_limit(account_id, spec, T0)
    rows = await SpendLimitUsage.filter(limit_id=daily.id).values_list("run_id", "period", "spent")
    assert rows == [("", int(datetime(2026, 1, 15, tzinfo=UTC).timestamp()), 5 * MICRO)]
    assert (await limits.usage([back], T0))[back.id].spent == 5 * MICRO
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 6, "over")
    assert refused.value.spent == 5 * MICRO


async def test_the_listing_counts_a_calendar_period_as_the_enforcement_does_with_a_later_counter(db: Backend) -> None:
    # A counter after the current period's start (none is written since set_limit moves a zone's counters)
    # makes the period count nothing, in the listing as in the spend.
    user_id, account_id = await _account()
    daily, _ = await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 10 * MICRO, LimitWindow.DAY), T0)
    day = int(datetime(2026, 1, 15, tzinfo=UTC).timestamp())
    await SpendLimitUsage.create(limit_id=daily.id, run_id="", period=day, spent=4 * MICRO)
    assert (await limits.usage([daily], T0))[daily.id].spent == 4 * MICRO
    with pytest.raises(ledger.SpendLimitExceededError) as refused:
        await _spend(user_id, account_id, 7, "over")
    assert refused.value.spent == 4 * MICRO
    await SpendLimitUsage.create(limit_id=daily.id, run_id="", period=day + 3600, spent=1 * MICRO)
    assert (await limits.usage([daily], T0))[daily.id].spent == 0
    with pytest.raises(ledger.SpendLimitExceededError) as alone:
        await _spend(user_id, account_id, 11, "alone")
    assert alone.value.spent == 0
