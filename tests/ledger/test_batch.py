"""Batches of spends (models/ledger/batch.py) on both databases: each spend decided exactly as the same spends
one by one would be (limits, breakers, runs, warnings, credit), one balance event per account, a handful of
statements whatever the number of spends, and batches racing single spends and each other without deadlock."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from typing import Any

import pytest

from models import ledger, limits
from models.credits import MICRO
from models.ledger import alerts
from models.limit_rules import LimitSpec
from models.tables import (
    CreditAccount,
    CreditKind,
    LedgerEntry,
    LimitKind,
    LimitScope,
    LimitWindow,
    LotSource,
    OutboxEvent,
    SpendLimitUsage,
    UsageEvent,
)
from tests.support.backends import T0, Backend
from tests.support.snapshots import changed, snapshot
from tests.support.statements import StatementCounter
from tests.support.statements import counter as counter


async def _account(email: str, credit: int) -> tuple[int, int]:
    user_id = await ledger.create_user(email, signup_bonus=credit, bonus_lifetime=timedelta(days=90), now=T0)
    return user_id, int((await CreditAccount.get(user_id=user_id)).id)


def _key(name: str, account: int) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:t", f"{account}-{name}", "spendCredits", {"n": name})


def _spend(user_id: int, account_id: int, credits: int, name: str, agent: str = "bot", run: str | None = None):
    return ledger.BatchSpend(
        ("id", account_id), user_id, None, agent, "answer", credits, None, _key(name, account_id), run
    )


async def _serially(spends: list[ledger.BatchSpend], now=T0) -> list[ledger.batch.Outcome]:
    out: list[ledger.batch.Outcome] = []
    for s in spends:
        try:
            out.append(
                await ledger.spend(
                    s.account,
                    user_id=s.user_id,
                    organization_id=s.organization_id,
                    agent_id=s.agent_id,
                    activity=s.activity,
                    credits=s.credits,
                    quantity=s.quantity,
                    idem=s.idem,
                    now=now,
                    run_id=s.run_id,
                )
            )
        except ledger.LedgerError as refusal:
            out.append(refusal)
    return out


def _seen(outcome: ledger.batch.Outcome) -> Any:
    """What a caller sees of an outcome (ids aside)."""
    if isinstance(outcome, ledger.SpendResult):
        warnings = [(_limit(w.limit), w.spent, w.held, w.resets_at) for w in outcome.warnings]
        return ("ok", outcome.credits, outcome.free_credits, outcome.paid_credits, outcome.balance, warnings)
    fields = {k: v for k, v in vars(outcome).items() if k != "changes"}
    if "limit" in fields:
        fields["limit"] = _limit(fields["limit"])
    return (type(outcome).__name__, fields)


def _limit(view: Any) -> tuple[Any, ...]:
    """A limit by what it is (the twin accounts' limits have ids of their own)."""
    return (view.scope, view.kind, view.agent_id, view.amount)


async def _with_limits(account_id: int) -> None:
    await limits.set_limit(account_id, LimitSpec(LimitScope.ACCOUNT, 30 * MICRO, LimitWindow.DAY, warn_percent=50), T0)
    await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 8 * MICRO, LimitWindow.DAY, max_credits_per_run=3 * MICRO, agent_id="runner"),
        T0,
    )
    await limits.set_limit(
        account_id,
        LimitSpec(
            LimitScope.AGENT,
            6 * MICRO,
            LimitWindow.ROLLING_MINUTES,
            1,
            kind=LimitKind.VELOCITY,
            agent_id="burst",
            cooldown_seconds=600,
        ),
        T0,
    )


def _plan(user_id: int, account_id: int) -> list[ledger.BatchSpend]:
    """Spends that warn, reach and pass the account's cap, take a run past its cap, trip a breaker and are
    refused while it is paused, and run out of credit: in one fixed order."""
    rng = random.Random(15)
    spends = []
    for n in range(60):
        agent = rng.choice(["bot", "runner", "burst"])
        run = rng.choice(["r1", "r2", None]) if agent == "runner" else None
        spends.append(_spend(user_id, account_id, rng.randint(1, 4) * MICRO // 2, f"s{n}", agent, run))
    return spends


async def test_a_batch_decides_every_spend_as_the_same_spends_one_by_one(db: Backend) -> None:
    serial_user, serial_account = await _account("serial@example.com", 40 * MICRO)
    batch_user, batch_account = await _account("batch@example.com", 40 * MICRO)
    await _with_limits(serial_account)
    await _with_limits(batch_account)

    serial = await _serially(_plan(serial_user, serial_account))
    done = await ledger.spend_batch(_plan(batch_user, batch_account), now=T0)

    assert [_seen(o) for o in done.outcomes] == [_seen(o) for o in serial]
    kinds = {type(o).__name__ for o in serial}
    assert kinds >= {"SpendResult", "SpendLimitExceededError", "SpendPausedError"}, kinds
    assert any(isinstance(o, ledger.SpendResult) and o.warnings for o in serial)
    serial_row, batch_row = await CreditAccount.get(id=serial_account), await CreditAccount.get(id=batch_account)
    assert (batch_row.balance, batch_row.version) == (serial_row.balance, serial_row.version)

    async def counters(account_id: int) -> list[tuple[str, int, int]]:
        rows = await SpendLimitUsage.filter(limit__account_id=account_id).order_by("limit_id", "run_id")
        return [(r.run_id, r.period, r.spent) for r in rows]

    assert await counters(batch_account) == await counters(serial_account)

    async def ledger_rows(account_id: int) -> list[tuple[Any, ...]]:
        rows = await LedgerEntry.filter(account_id=account_id).order_by("version")
        return [(r.entry_type, r.amount, r.balance_after, r.version, r.reason) for r in rows]

    assert await ledger_rows(batch_account) == await ledger_rows(serial_account)
    # One balance event for the account: its last version, covering every change the batch made.
    (change,) = [c for c in done.changes if isinstance(c, ledger.BalanceChange)]
    initial = 1  # the signup bonus
    assert (change.account_id, change.version, change.changes, change.reason) == (
        batch_account,
        batch_row.version,
        batch_row.version - initial,
        "SPEND",
    )
    assert change.delta == batch_row.balance - 40 * MICRO
    assert await ledger.audit() == []


async def test_holds_and_an_overdraft_bound_a_batch_as_they_bound_the_same_spends_one_by_one(db: Backend) -> None:
    twins = [await _account(f"{name}@example.com", 10 * MICRO) for name in ("serial", "batch")]
    for user_id, account_id in twins:  # 5 of the 10 held, 2 to borrow
        await ledger.hold(
            ("id", account_id),
            user_id=user_id,
            organization_id=None,
            agent_id="bot",
            activity="answer",
            credits=5 * MICRO,
            expires_at=T0 + timedelta(hours=1),
            idem=_key("h", account_id),
            now=T0,
        )
        await ledger.set_overdraft(account_id, 2 * MICRO, T0)
    credits = [3, 3, 2, 1, 1]

    (serial_user, serial_account), (batch_user, batch_account) = twins
    serial = await _serially([_spend(serial_user, serial_account, c * MICRO, f"s{n}") for n, c in enumerate(credits)])
    done = await ledger.spend_batch(
        [_spend(batch_user, batch_account, c * MICRO, f"s{n}") for n, c in enumerate(credits)], now=T0
    )

    assert [_seen(o) for o in done.outcomes] == [_seen(o) for o in serial]
    refused = "InsufficientCreditsError"
    assert [type(o).__name__ for o in serial] == ["SpendResult", "SpendResult", refused, "SpendResult", refused]
    last = done.outcomes[3]
    assert isinstance(last, ledger.SpendResult)
    assert (last.balance.available, last.balance.total, last.balance.held) == (-2 * MICRO, 3 * MICRO, 5 * MICRO)
    serial_row, batch_row = await CreditAccount.get(id=serial_account), await CreditAccount.get(id=batch_account)
    assert (batch_row.balance, batch_row.owed, batch_row.version) == (
        serial_row.balance,
        serial_row.owed,
        serial_row.version,
    )


async def test_what_the_lots_cannot_give_is_owed_in_a_batch_as_one_by_one(db: Backend) -> None:
    twins = [await _account(f"{name}@example.com", 2 * MICRO) for name in ("serial", "batch")]
    for _, account_id in twins:
        await ledger.set_overdraft(account_id, 3 * MICRO, T0)
    credits = [1, 2, 1, 2]
    (serial_user, serial_account), (batch_user, batch_account) = twins

    serial = await _serially([_spend(serial_user, serial_account, c * MICRO, f"s{n}") for n, c in enumerate(credits)])
    done = await ledger.spend_batch(
        [_spend(batch_user, batch_account, c * MICRO, f"s{n}") for n, c in enumerate(credits)], now=T0
    )

    assert [_seen(o) for o in done.outcomes] == [_seen(o) for o in serial]
    third = done.outcomes[2]
    assert isinstance(third, ledger.SpendResult)
    assert (third.balance.available, third.balance.owed) == (-2 * MICRO, 2 * MICRO)
    assert isinstance(done.outcomes[3], ledger.InsufficientCreditsError)
    owed = [e.owed_credits for e in await UsageEvent.filter(account_id=batch_account).order_by("id")]
    assert owed == [0, MICRO, MICRO]


async def test_events_written_by_a_batch_are_those_of_the_same_spends_one_by_one(db: Backend) -> None:
    serial_user, serial_account = await _account("serial@example.com", 40 * MICRO)
    batch_user, batch_account = await _account("batch@example.com", 40 * MICRO)
    await _with_limits(serial_account)
    await _with_limits(batch_account)
    await _serially(_plan(serial_user, serial_account))
    await ledger.spend_batch(_plan(batch_user, batch_account), now=T0)

    async def events(account_id: int) -> list[tuple[str, Any]]:
        rows = await OutboxEvent.filter(account_id=account_id).order_by("sequence")
        found = []
        for r in rows:
            data = {k: v for k, v in json.loads(r.data).items() if k != "account"}
            data.get("limit", {}).pop("id", None)  # each account's limits have ids of their own
            found.append((r.type, data))
        return found

    serial_events = await events(serial_account)
    assert {t for t, _ in serial_events} >= {"spend_limit.warning", "spend_limit.reached", "agent.paused"}
    assert await events(batch_account) == serial_events


async def test_a_batch_of_refusals_changes_nothing_but_their_records(db: Backend) -> None:
    user_id, account_id = await _account("ada@example.com", 2 * MICRO)
    before = await snapshot()

    done = await ledger.spend_batch([_spend(user_id, account_id, 3 * MICRO, f"s{n}") for n in range(3)], now=T0)

    assert [type(o) for o in done.outcomes] == [ledger.InsufficientCreditsError] * 3
    assert changed(before, await snapshot()) == {"idempotency_records"}
    assert done.changes == ()


async def test_balance_alerts_fire_once_per_crossing_inside_a_batch(db: Backend) -> None:
    user_id, account_id = await _account("ada@example.com", 10 * MICRO)
    await alerts.configure(account_id, (5 * MICRO, 2 * MICRO), T0)

    done = await ledger.spend_batch([_spend(user_id, account_id, 2 * MICRO, f"s{n}") for n in range(6)], now=T0)

    assert [type(o).__name__ for o in done.outcomes] == ["SpendResult"] * 5 + ["InsufficientCreditsError"]
    rows = await OutboxEvent.filter(account_id=account_id).order_by("sequence")
    assert [(r.type, json.loads(r.data)["previous"], json.loads(r.data)["available"]) for r in rows] == [
        ("balance.low", "6", "4"),
        ("balance.low", "2", "0"),
        ("balance.depleted", "2", "0"),
    ]
    assert [c.event_type for c in done.changes if isinstance(c, alerts.AlertChanged)] == [
        "balance.low",
        "balance.low",
        "balance.depleted",
    ]


def _heads(statements: list[str], expected: list[str]) -> list[str]:
    """Each statement as the expected beginning it has (else its first 40 characters), in order."""
    return sorted(next((e for e in expected if s.startswith(e)), s[:40]) for s in statements)


@pytest.mark.parametrize("accounts", [1, 10])
async def test_a_hundred_spends_cost_the_same_handful_of_statements_on_one_account_or_ten(
    db: Backend, counter: StatementCounter, accounts: int
) -> None:
    users = [await _account(f"u{n}@example.com", 1000 * MICRO) for n in range(accounts)]
    for _, account_id in users:  # a paid lot beside the free one: spends take from both
        await ledger.grant(
            account_id,
            credits=MICRO,
            kind=CreditKind.PAID,
            source=LotSource.TOP_UP,
            expires_at=None,
            reason=None,
            idem=None,
            now=T0,
        )
    spends = [_spend(*users[n % accounts], MICRO, f"s{n}") for n in range(100)]

    done = await counter.during(ledger.spend_batch(spends, now=T0))

    assert all(isinstance(o, ledger.SpendResult) for o in done.outcomes)
    expected = sorted(
        [
            "SELECT a.id, a.balance",  # the locks
            "SELECT scope, key",  # the idempotency records
            "SELECT account_id, id, kind",  # the lots
            "INSERT INTO usage_events",
            "INSERT INTO usage_allocations",
            "INSERT INTO ledger_entries",
            "INSERT INTO usage_rollups",
            "UPDATE credit_lots AS" if db.name == "postgres" else "UPDATE credit_lots SET",
            "UPDATE credit_accounts AS" if db.name == "postgres" else "UPDATE credit_accounts SET",
            "INSERT INTO idempotency_records",
        ]
    )
    assert _heads(counter.statements, expected) == expected
    assert await UsageEvent.all().count() == 100


async def test_an_empty_batch_runs_no_statement(db: Backend, counter: StatementCounter) -> None:
    done = await counter.during(ledger.spend_batch([], now=T0))

    assert (done.outcomes, done.changes, counter.statements) == ((), (), [])


async def test_a_replayed_batch_costs_three_statements(db: Backend, counter: StatementCounter) -> None:
    user_id, account_id = await _account("ada@example.com", 100 * MICRO)
    spends = [_spend(user_id, account_id, MICRO, f"s{n}") for n in range(100)]
    first = await ledger.spend_batch(spends, now=T0)

    again = await counter.during(ledger.spend_batch(spends, now=T0))

    assert [o.replayed for o in again.outcomes] == [True] * 100
    assert [o.usage_event_id for o in again.outcomes] == [o.usage_event_id for o in first.outcomes]  # type: ignore[union-attr]
    assert len(counter.statements) == 3  # the locks, the records, the lots
    assert again.changes == ()


async def test_batches_racing_single_spends_and_each_other_never_deadlock_and_balance_exactly(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite has one writer: nothing to race")
    users = [await _account(f"u{n}@example.com", 50 * MICRO) for n in range(20)]
    rng = random.Random(7)
    spent: dict[int, int] = dict.fromkeys((a for _, a in users), 0)

    async def one_batch(b: int) -> None:
        chosen = rng.sample(users, 8)
        spends = [_spend(u, a, rng.randint(1, 3) * MICRO, f"b{b}-{n}") for n, (u, a) in enumerate(chosen * 3)]
        rng.shuffle(spends)  # accounts in any order in the input: the locks are taken in id order
        done = await ledger.spend_batch(spends, now=T0)
        for s, o in zip(spends, done.outcomes, strict=True):
            if isinstance(o, ledger.SpendResult):
                spent[int(s.account[1])] += o.credits

    async def singles(k: int) -> None:
        for n in range(10):
            u, a = rng.choice(users)
            try:
                r = await ledger.spend(
                    ("id", a),
                    user_id=u,
                    organization_id=None,
                    agent_id="bot",
                    activity="answer",
                    credits=MICRO,
                    quantity=None,
                    idem=_key(f"single-{k}-{n}", a),
                    now=T0,
                )
                spent[a] += r.credits
            except ledger.InsufficientCreditsError:
                pass

    await asyncio.wait_for(
        asyncio.gather(*(one_batch(b) for b in range(12)), *(singles(k) for k in range(4))), timeout=120
    )

    for _, account_id in users:
        row = await CreditAccount.get(id=account_id)
        assert row.balance == 50 * MICRO - spent[account_id]
        assert row.balance >= 0
    assert await ledger.audit() == []


def _shared(name: str, request: dict[str, Any]) -> ledger.IdempotencyKey:
    """A key by its name alone (``_key`` names keys by account too): the same key on two accounts."""
    return ledger.IdempotencyKey.for_request("service:t", name, "spendCredits", request)


async def test_a_key_used_on_two_accounts_in_one_batch_is_decided_by_its_first_use_in_input_order(
    db: Backend,
) -> None:
    low_user, low = await _account("low@example.com", 10 * MICRO)
    high_user, high = await _account("high@example.com", 10 * MICRO)
    assert low < high
    # The same key, other input: the earlier event (on the later account) spends, the later one is a conflict.
    first = ledger.BatchSpend(("id", high), high_user, None, "bot", "answer", MICRO, None, _shared("k5", {"u": 2}))
    later = ledger.BatchSpend(("id", low), low_user, None, "bot", "answer", MICRO, None, _shared("k5", {"u": 1}))
    done = await ledger.spend_batch([first, later], now=T0)
    assert isinstance(done.outcomes[0], ledger.SpendResult)
    assert not done.outcomes[0].replayed
    assert isinstance(done.outcomes[1], ledger.IdempotencyConflictError)
    assert (await CreditAccount.get(id=high)).balance == 9 * MICRO
    assert (await CreditAccount.get(id=low)).balance == 10 * MICRO
    # The same input twice (a client's own duplicate): the later event is the earlier one's replay.
    same = _shared("k6", {"u": "any"})
    again = [
        ledger.BatchSpend(("id", high), high_user, None, "bot", "answer", MICRO, None, same),
        ledger.BatchSpend(("id", low), low_user, None, "bot", "answer", MICRO, None, same),
    ]
    replayed = await ledger.spend_batch(again, now=T0)
    spent, replay = replayed.outcomes
    assert isinstance(spent, ledger.SpendResult)
    assert isinstance(replay, ledger.SpendResult)
    assert (spent.replayed, replay.replayed, replay.usage_event_id) == (False, True, spent.usage_event_id)
    assert (await CreditAccount.get(id=high)).balance == 8 * MICRO
    assert (await CreditAccount.get(id=low)).balance == 10 * MICRO


async def test_keys_are_recorded_in_one_order_whatever_the_batchs_order(
    db: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches inserting the same keys in opposite orders (for different accounts) deadlocked on
    PostgreSQL; in the keys' order every batch waits for the other's in the same direction."""
    users = [await _account(f"o{n}@example.com", 10 * MICRO) for n in range(4)]
    inserted: list[list[tuple[str, str]]] = []
    insert = ledger.batch._insert

    async def spy(sql: Any, head: str, rows: Any, tail: str = "") -> Any:
        if "idempotency_records" in head:
            inserted.append([(r[0], r[1]) for r in rows])
        return await insert(sql, head, rows, tail)

    monkeypatch.setattr(ledger.batch, "_insert", spy)
    names = [f"o-{n}" for n in range(8)]
    spends = [
        ledger.BatchSpend(("id", a), u, None, "bot", "answer", MICRO, None, _shared(name, {"a": a}))
        for name, (u, a) in zip(reversed(names), users * 2, strict=True)
    ]
    await ledger.spend_batch(spends, now=T0)
    assert inserted == [sorted(("service:t", name) for name in names)]


async def test_a_batch_chosen_as_a_deadlocks_victim_runs_again(db: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, account_id = await _account("victim@example.com", 10 * MICRO)

    class DeadlockDetected(Exception):
        sqlstate = "40P01"

    run = ledger.batch._run
    calls: list[int] = []

    async def once_a_victim(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            try:
                raise DeadlockDetected("deadlock detected")
            except DeadlockDetected as error:
                raise RuntimeError("wrapped by the driver") from error
        return await run(*args)

    monkeypatch.setattr(ledger.batch, "_run", once_a_victim)
    done = await ledger.spend_batch([_spend(user_id, account_id, MICRO, "v")], now=T0)
    assert isinstance(done.outcomes[0], ledger.SpendResult)
    assert len(calls) == 2
    assert (await CreditAccount.get(id=account_id)).balance == 9 * MICRO
