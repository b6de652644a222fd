"""The run-out forecast (models/forecast.py; docs/rules.md, "Run-out forecast") and its event: exact values
from usage spent at chosen instants, the window's edges, holds, and balance.runs_out_soon raised once per
crossing by the sweep, on both databases."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from models import ledger
from models.credits import MICRO
from models.forecast import Forecast, forecasts, sweep_runs_out_soon
from models.ids import encode_id
from models.tables import Alert, AlertStatus, CreditAccount, CreditKind, LotSource, OutboxEvent
from tests.support import readme_events
from tests.support.backends import T0, Backend
from tests.support.statements import StatementCounter, tables_read
from tests.support.statements import counter as counter

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def key(name: str) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:test", name, "spend", {"k": name})


async def new_account(credits: int, at: datetime) -> tuple[int, int]:
    """A user with ``credits`` PAID credits granted at ``at``: (user id, account id)."""
    user_id = await ledger.create_user("ada@example.com", signup_bonus=0, bonus_lifetime=DAY, now=at)
    account_id = (await CreditAccount.get(user_id=user_id)).id
    await ledger.grant(
        account_id,
        credits=credits * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.TOP_UP,
        expires_at=None,
        reason=None,
        idem=None,
        now=at,
    )
    return user_id, account_id


async def spend(user_id: int, credits: int, at: datetime) -> None:
    result = await ledger.spend(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=credits * MICRO,
        quantity=None,
        idem=key(f"spend-{user_id}-{at.isoformat()}-{credits}"),
        now=at,
    )
    assert result.usage_event_id


async def forecast_at(account_id: int, now: datetime) -> Forecast | None:
    balances = await ledger.read_balances([account_id], now)
    return (await forecasts([account_id], balances, now)).get(account_id)


async def test_the_forecast_is_the_rate_since_the_first_hour_with_usage_in_the_last_7_days(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0 - 10 * DAY)
    now = T0 + 6 * DAY + timedelta(minutes=20)  # the window's first hour is T0 - 23h
    await spend(user_id, 50, T0 - 24 * HOUR + timedelta(minutes=59))  # the hour before the window: not counted
    await spend(user_id, 10, T0 + HOUR)
    await spend(user_id, 4, T0 + 2 * DAY)
    await spend(user_id, 6, T0 + 5 * DAY + timedelta(minutes=30))
    # 20 credits over T0+1h .. now = 143h20m = 516,000 s: 3.348837... a day; 30 left last 774,000 s = 8d23h.
    assert await forecast_at(account_id, now) == Forecast(
        burn_per_day=3_348_837,
        runs_out_at=datetime(2026, 1, 30, 11, 20, tzinfo=UTC),
        since=datetime(2026, 1, 15, 13, 0, tzinfo=UTC),
        until=now,
        spent=20 * MICRO,
        available=30 * MICRO,
        held=0,
        covered_microseconds=516_000 * 1_000_000,
    )
    assert (await forecast_at(account_id, now)).hours == 143  # type: ignore[union-attr]


async def test_usage_in_the_windows_first_hour_counts_and_the_window_starts_there(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0 - 10 * DAY)
    await spend(user_id, 7, T0 - 23 * HOUR + timedelta(minutes=59))
    now = T0 + 6 * DAY + timedelta(minutes=30)
    found = await forecast_at(account_id, now)
    assert found is not None
    # 167h30m: the 168 hours of the window, the current one half gone.
    assert (found.since, found.covered_microseconds, found.hours) == (T0 - 23 * HOUR, 603_000 * 10**6, 167)
    assert found.burn_per_day == 7 * MICRO * 86_400 // 603_000 == 1_002_985
    assert found.runs_out_at == now + timedelta(microseconds=93 * MICRO * 603_000 * 10**6 // (7 * MICRO))
    # An hour later its hour has left the window: no usage, no forecast.
    assert await forecast_at(account_id, now + HOUR) is None


async def test_no_usage_no_forecast_and_a_first_spend_counts_as_at_least_an_hour(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0)
    assert await forecast_at(account_id, T0 + DAY) is None
    await spend(user_id, 3, T0 + DAY + timedelta(minutes=20))
    found = await forecast_at(account_id, T0 + DAY + timedelta(minutes=20, seconds=10))
    assert found is not None
    assert (found.burn_per_day, found.covered_microseconds, found.hours) == (72 * MICRO, 3_600 * 10**6, 1)
    # 97 credits at 3 an hour: 32h20m after the instant of the forecast.
    assert found.runs_out_at == T0 + DAY + timedelta(minutes=20, seconds=10) + timedelta(hours=32, minutes=20)


async def test_active_holds_count_against_available_and_an_empty_account_runs_out_now(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0)
    await spend(user_id, 24, T0)
    now = T0 + DAY
    await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=26 * MICRO,
        expires_at=now + HOUR,
        idem=key("hold"),
        now=now,
    )
    found = await forecast_at(account_id, now)
    assert found is not None
    # 24 a day; 100 - 24 - 26 held = 50 available: 2 days and 2 hours.
    assert (found.burn_per_day, found.available, found.held) == (24 * MICRO, 50 * MICRO, 26 * MICRO)
    assert found.runs_out_at == now + 2 * DAY + 2 * HOUR
    await spend(user_id, 50, now)
    emptied = await forecast_at(account_id, now)
    assert emptied is not None
    assert (emptied.available, emptied.runs_out_at, emptied.burn_per_day) == (0, now, 74 * MICRO)


async def runs_out_soon_alerts(account_id: int) -> list[tuple[str, AlertStatus, int | None, datetime | None]]:
    rows = await Alert.filter(account_id=account_id).order_by("id")
    return [(row.kind, row.status, row.raised_event_id, row.resolved_at) for row in rows]


async def test_runs_out_soon_fires_once_per_crossing_and_resolves_when_back_above(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0)
    await spend(user_id, 10, T0)
    now = T0 + DAY
    assert await sweep_runs_out_soon(now, 3) == []  # 10 a day, 90 left: 9 days
    await spend(user_id, 60, now)  # 70 over the day, 30 left: under half a day
    [event] = await sweep_runs_out_soon(now, 3)
    assert await sweep_runs_out_soon(now, 3) == []  # still under: no second event
    assert await sweep_runs_out_soon(now + timedelta(minutes=5), 3) == []
    row = await OutboxEvent.get(id=event.id)
    assert (row.type, row.account_id, row.sequence, row.created_at) == ("balance.runs_out_soon", account_id, 1, now)
    assert readme_events.undocumented(row.type, json.loads(row.data)) == []
    assert json.loads(row.data) == {
        "account": {
            "id": encode_id("CreditAccount", account_id),
            "userId": encode_id("User", user_id),
            "organizationId": None,
        },
        "burnPerDay": "70",
        "available": "30",
        # 30 / 70 of a day = 37,028.571428 s
        "runsOutAt": "2026-01-16T22:17:08.571428Z",
        "days": 0,
        "thresholdDays": 3,
    }
    assert await runs_out_soon_alerts(account_id) == [("balance.runs_out_soon", AlertStatus.OPEN, event.id, None)]

    later = now + timedelta(minutes=10)
    await ledger.grant(
        account_id,
        credits=1000 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.TOP_UP,
        expires_at=None,
        reason=None,
        idem=None,
        now=later,
    )
    assert await sweep_runs_out_soon(later, 3) == []  # 1,030 at about 70 a day: resolved, without an event
    assert await runs_out_soon_alerts(account_id) == [("balance.runs_out_soon", AlertStatus.RESOLVED, event.id, later)]
    assert await sweep_runs_out_soon(later, 3) == []

    await spend(user_id, 900, later)  # under again: a new alert and a second event
    [again] = await sweep_runs_out_soon(later, 3)
    assert (await OutboxEvent.get(id=again.id)).sequence == 2
    assert await runs_out_soon_alerts(account_id) == [
        ("balance.runs_out_soon", AlertStatus.RESOLVED, event.id, later),
        ("balance.runs_out_soon", AlertStatus.OPEN, again.id, None),
    ]

    # A week on, the usage has left the window: no forecast, the alert is resolved, nothing is emitted.
    gone = T0 + 9 * DAY
    assert await sweep_runs_out_soon(gone, 3) == []
    assert [status for _, status, _, _ in await runs_out_soon_alerts(account_id)] == [AlertStatus.RESOLVED] * 2
    assert await OutboxEvent.filter(account_id=account_id).count() == 2


async def test_old_usage_raises_nothing(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0)
    await spend(user_id, 95, T0)  # 5 left at 95 a day: soon, but only while that hour is in the window
    assert await sweep_runs_out_soon(T0 + 8 * DAY, 3) == []
    assert await Alert.all().count() == 0
    assert await OutboxEvent.all().count() == 0


async def test_runs_out_soon_means_strictly_within_the_settings_days(db: Backend) -> None:
    user_id, account_id = await new_account(100, T0)
    await spend(user_id, 50, T0)  # 50 a day, 50 left: exactly one day
    assert await sweep_runs_out_soon(T0 + DAY, 1) == []
    assert await Alert.all().count() == 0
    [event] = await sweep_runs_out_soon(T0 + DAY, 2)
    assert (event.data["days"], event.data["thresholdDays"], event.data["runsOutAt"]) == (
        1,
        2,
        "2026-01-17T12:00:00Z",
    )


async def new_user(n: int, credits: int) -> tuple[int, int]:
    user_id = await ledger.create_user(f"u{n}@example.com", signup_bonus=0, bonus_lifetime=DAY, now=T0)
    account_id = (await CreditAccount.get(user_id=user_id)).id
    await ledger.grant(
        account_id,
        credits=credits * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.TOP_UP,
        expires_at=None,
        reason=None,
        idem=None,
        now=T0,
    )
    return user_id, account_id


async def test_a_sweep_that_changes_nothing_is_one_statement(db: Backend, counter: StatementCounter) -> None:
    soon: list[int] = []
    later: list[int] = []
    for n in range(6):
        user_id, account_id = await new_user(n, 100)
        await spend(user_id, 60 if n % 2 else 10, T0)  # 60 a day, 40 left: soon; 10 a day, 90 left: not
        (soon if n % 2 else later).append(account_id)
    raised = await counter.during(sweep_runs_out_soon(T0 + DAY, 3))
    assert sorted(event.account_id for event in raised) == soon
    # The candidates, then for each account that crosses: lock, burn, live lots, its alert, the event, the alert.
    assert len(counter.statements) == 1 + 6 * len(soon), counter.statements
    assert await counter.during(sweep_runs_out_soon(T0 + DAY + HOUR, 3)) == []
    assert len(counter.statements) == 1, counter.statements
    assert tables_read(counter.statements) == ["credit_accounts"]


async def test_concurrent_sweeps_raise_each_crossing_once(db: Backend) -> None:
    accounts = []
    for n in range(4):
        user_id, account_id = await new_user(n, 100)
        await spend(user_id, 80, T0)
        accounts.append(account_id)
    results = await asyncio.gather(*(sweep_runs_out_soon(T0 + DAY, 3) for _ in range(3)))
    assert sorted(event.account_id or 0 for result in results for event in result) == accounts
    assert sorted((e.account_id, e.sequence) for e in await OutboxEvent.all()) == [(a, 1) for a in accounts]
    assert await Alert.filter(status=AlertStatus.OPEN).count() == 4
