"""The ledger's rules (docs/rules.md: Spend order, Refusal whole, Expiry at the instant, Holds, Idempotency,
Audit invariant), exercised directly on both databases."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from models import ledger
from models.balance import Balance
from models.credits import MICRO
from models.tables import (
    CreditAccount,
    CreditKind,
    CreditLot,
    IdempotencyRecord,
    LedgerEntry,
    LotSource,
    UsageAllocation,
    UsageEvent,
)
from tests.support.backends import T0, Backend
from tests.support.statements import StatementCounter
from tests.support.statements import counter as counter

DAY = timedelta(days=1)


def key(name: str, **request: object) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:test", name, "spend", request or {"k": name})


async def new_user(email: str = "ada@example.com", bonus: int = 0, days: int = 30) -> tuple[int, int]:
    user_id = await ledger.create_user(email, signup_bonus=bonus, bonus_lifetime=timedelta(days=days), now=T0)
    account = await CreditAccount.get(user_id=user_id)
    return user_id, account.id


async def grant(account_id: int, credits: int, kind: CreditKind, expires_in: timedelta | None = None, at=T0) -> int:
    result = await ledger.grant(
        account_id,
        credits=credits,
        kind=kind,
        source=LotSource.PROMOTION if kind is CreditKind.FREE else LotSource.TOP_UP,
        expires_at=None if expires_in is None else at + expires_in,
        reason=None,
        idem=None,
        now=at,
    )
    return result.lot_id


async def spend(user_id: int, credits: int, name: str, at=T0) -> ledger.SpendResult:
    return await ledger.spend(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=credits,
        quantity=None,
        idem=key(name, credits=credits),
        now=at,
    )


async def allocations(usage_event_id: int) -> list[tuple[int, str, int]]:
    rows = await UsageAllocation.filter(usage_event_id=usage_event_id).order_by("id")
    return [(row.lot_id, str(row.kind), row.amount) for row in rows]


async def test_signup_bonus_is_free_credit_that_expires(db: Backend) -> None:
    _user_id, account_id = await new_user(bonus=100 * MICRO, days=30)

    assert await ledger.read_balances([account_id], T0) == {account_id: Balance(free=100 * MICRO, paid=0, held=0)}
    assert await ledger.read_balances([account_id], T0 + 30 * DAY) == {account_id: Balance(0, 0, 0)}


async def test_spend_order_free_first_then_soonest_expiry_then_oldest_then_lowest_id(db: Backend) -> None:
    user_id, account_id = await new_user()
    paid_never = await grant(account_id, 5 * MICRO, CreditKind.PAID)
    paid_soon = await grant(account_id, 5 * MICRO, CreditKind.PAID, expires_in=10 * DAY)
    free_never = await grant(account_id, 1 * MICRO, CreditKind.FREE)
    free_late = await grant(account_id, 1 * MICRO, CreditKind.FREE, expires_in=20 * DAY)
    free_soon = await grant(account_id, 1 * MICRO, CreditKind.FREE, expires_in=5 * DAY)
    free_old = await grant(account_id, 1 * MICRO, CreditKind.FREE, expires_in=6 * DAY, at=T0 - 2 * DAY)  # T0+4d
    free_same_a = await grant(account_id, 1 * MICRO, CreditKind.FREE, expires_in=7 * DAY)
    free_same_b = await grant(account_id, 1 * MICRO, CreditKind.FREE, expires_in=7 * DAY)

    result = await spend(user_id, 12 * MICRO, "big", at=T0 + DAY)

    assert await allocations(result.usage_event_id) == [
        (free_old, "FREE", MICRO),
        (free_soon, "FREE", MICRO),
        (free_same_a, "FREE", MICRO),
        (free_same_b, "FREE", MICRO),
        (free_late, "FREE", MICRO),
        (free_never, "FREE", MICRO),
        (paid_soon, "PAID", 5 * MICRO),
        (paid_never, "PAID", 1 * MICRO),
    ]
    assert (result.free_credits, result.paid_credits) == (6 * MICRO, 6 * MICRO)
    assert result.balance == Balance(free=0, paid=4 * MICRO, held=0)


async def test_expired_lot_stops_counting_at_its_instant(db: Backend) -> None:
    user_id, account_id = await new_user()
    await grant(account_id, 3 * MICRO, CreditKind.FREE, expires_in=DAY)
    await grant(account_id, 2 * MICRO, CreditKind.PAID)
    instant = T0 + DAY
    just_before = instant - timedelta(microseconds=1)

    assert (await ledger.read_balances([account_id], just_before))[account_id] == Balance(3 * MICRO, 2 * MICRO, 0)
    assert (await ledger.read_balances([account_id], instant))[account_id] == Balance(0, 2 * MICRO, 0)

    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await spend(user_id, 3 * MICRO, "at-instant", at=instant)
    assert (refused.value.available, refused.value.required) == (2 * MICRO, 3 * MICRO)
    ok = await spend(user_id, 3 * MICRO, "just-before", at=just_before)
    assert (ok.free_credits, ok.paid_credits) == (3 * MICRO, 0)


async def test_sweep_records_expiry_once_and_reads_do_not_change(db: Backend) -> None:
    _user_id, account_id = await new_user(bonus=0)
    lot_id = await grant(account_id, 3 * MICRO, CreditKind.FREE, expires_in=DAY)
    await grant(account_id, 2 * MICRO, CreditKind.PAID)
    later = T0 + 2 * DAY
    before = await ledger.read_balances([account_id], later)

    first = await ledger.sweep(later)
    second = await ledger.sweep(later)

    assert (first.expired_lots, second.expired_lots) == (1, 0)
    assert [
        (c.account_id, c.delta, c.reason, c.balance) for c in first.changes if isinstance(c, ledger.BalanceChange)
    ] == [(account_id, -3 * MICRO, "EXPIRE", Balance(0, 2 * MICRO, 0))]
    assert await ledger.read_balances([account_id], later) == before
    expire = await LedgerEntry.filter(account_id=account_id, entry_type="EXPIRE").all()
    assert [(e.lot_id, e.amount, e.balance_after) for e in expire] == [(lot_id, -3 * MICRO, 2 * MICRO)]


async def test_overspend_is_refused_whole(db: Backend) -> None:
    user_id, account_id = await new_user(bonus=5 * MICRO)
    with pytest.raises(ledger.InsufficientCreditsError):
        await spend(user_id, 5 * MICRO + 1, "too-much")
    assert await UsageEvent.all().count() == 0
    assert await LedgerEntry.filter(account_id=account_id).count() == 1  # the signup grant only
    assert (await ledger.read_balances([account_id], T0))[account_id] == Balance(5 * MICRO, 0, 0)


async def test_concurrent_spends_never_overdraw_and_succeed_exactly(db: Backend) -> None:
    user_id, account_id = await new_user(bonus=10 * MICRO)
    price = 150_000  # 0.15 credit: 66 fit into 10 credits, with 0.1 left

    outcomes = await asyncio.gather(*(spend(user_id, price, f"spend-{n}") for n in range(100)), return_exceptions=True)

    succeeded = [o for o in outcomes if isinstance(o, ledger.SpendResult)]
    refused = [o for o in outcomes if isinstance(o, ledger.InsufficientCreditsError)]
    assert (len(succeeded), len(refused)) == (66, 34)
    assert (await ledger.read_balances([account_id], T0))[account_id] == Balance(100_000, 0, 0)
    assert await UsageEvent.all().count() == 66
    versions = sorted(e.version for e in await LedgerEntry.filter(account_id=account_id))
    assert versions == list(range(1, 68))


async def test_parallel_calls_with_one_key_have_one_effect(db: Backend) -> None:
    user_id, account_id = await new_user(bonus=10 * MICRO)

    outcomes = await asyncio.gather(*(spend(user_id, MICRO, "one-key") for _ in range(50)))

    assert {o.usage_event_id for o in outcomes} == {outcomes[0].usage_event_id}
    assert sum(not o.replayed for o in outcomes) == 1
    assert {o.balance for o in outcomes} == {Balance(9 * MICRO, 0, 0)}
    assert await UsageEvent.all().count() == 1
    assert (await ledger.read_balances([account_id], T0))[account_id] == Balance(9 * MICRO, 0, 0)


async def test_hold_lowers_available_not_total_and_capture_returns_the_rest(db: Backend) -> None:
    user_id, _account_id = await new_user(bonus=10 * MICRO)
    held = await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="transcription",
        credits=4 * MICRO,
        expires_at=T0 + timedelta(hours=1),
        idem=key("hold"),
        now=T0,
    )
    assert held.balance == Balance(10 * MICRO, 0, 4 * MICRO)
    assert held.balance.available == 6 * MICRO
    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await spend(user_id, 7 * MICRO, "over-available")
    assert refused.value.available == 6 * MICRO

    captured = await ledger.capture_hold(held.hold_id, credits=3 * MICRO, idem=key("capture"), now=T0)

    assert captured.balance == Balance(7 * MICRO, 0, 0)
    assert captured.usage_event_id is not None
    event = await UsageEvent.get(id=captured.usage_event_id)
    assert (event.credits, event.hold_id, event.activity) == (3 * MICRO, held.hold_id, "transcription")
    with pytest.raises(ledger.HoldNotActiveError) as again:
        await ledger.capture_hold(held.hold_id, credits=None, idem=key("capture-2"), now=T0)
    assert again.value.status == "CAPTURED"


async def test_release_and_timeout_give_the_hold_back(db: Backend) -> None:
    user_id, account_id = await new_user(bonus=10 * MICRO)

    async def place(name: str, minutes: int) -> int:
        result = await ledger.hold(
            ("user_id", user_id),
            user_id=user_id,
            organization_id=None,
            agent_id="agent",
            activity="answer",
            credits=2 * MICRO,
            expires_at=T0 + timedelta(minutes=minutes),
            idem=key(name),
            now=T0,
        )
        return result.hold_id

    released_id = await place("a", 60)
    timed_out_id = await place("b", 5)
    released = await ledger.release_hold(released_id, idem=key("release"), now=T0)
    assert released.balance == Balance(10 * MICRO, 0, 2 * MICRO)

    with pytest.raises(ledger.HoldNotActiveError) as late:
        await ledger.capture_hold(timed_out_id, credits=None, idem=key("late"), now=T0 + timedelta(minutes=5))
    assert late.value.status == "EXPIRED"
    report = await ledger.sweep(T0 + timedelta(minutes=5))
    assert report.released_holds == 1
    assert (await ledger.read_balances([account_id], T0))[account_id] == Balance(10 * MICRO, 0, 0)
    assert (await ledger.sweep(T0 + timedelta(minutes=6))).released_holds == 0


async def test_audit_finds_drift(db: Backend) -> None:
    _user_id, account_id = await new_user(bonus=10 * MICRO)

    await connections.get("default").execute_query(
        "UPDATE credit_accounts SET balance = balance + 1 WHERE id = $1"
        if db.name == "postgres"
        else "UPDATE credit_accounts SET balance = balance + 1 WHERE id = ?",
        [account_id],
    )
    findings = await ledger.audit()
    assert [f.problem for f in findings] == [
        "sum of lot remaining 10000000 != cached balance 10000001",
        "sum of ledger amounts 10000000 != cached balance 10000001",
    ]
    await connections.get("default").execute_query(
        "UPDATE credit_accounts SET balance = balance - 1 WHERE id = $1"
        if db.name == "postgres"
        else "UPDATE credit_accounts SET balance = balance - 1 WHERE id = ?",
        [account_id],
    )


async def test_a_timed_out_hold_stops_counting_at_its_instant_before_the_sweep(db: Backend) -> None:
    user_id, account_id = await new_user(bonus=10 * MICRO)
    await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=4 * MICRO,
        expires_at=T0 + timedelta(minutes=5),
        idem=key("hold"),
        now=T0,
    )
    instant = T0 + timedelta(minutes=5)
    assert (await ledger.read_balances([account_id], instant - timedelta(microseconds=1)))[account_id].held == 4 * MICRO
    assert (await ledger.read_balances([account_id], instant))[account_id] == Balance(10 * MICRO, 0, 0)
    assert await ledger.account_state(account_id, instant) == (Balance(10 * MICRO, 0, 0), 2)

    spent = await spend(user_id, 10 * MICRO, "all-of-it", at=instant)

    assert spent.balance == Balance(0, 0, 0)
    assert (await ledger.sweep(instant)).released_holds == 1


# ------------------------------------------------------------------------ the folded spend (issue 15)


async def test_a_spend_stores_the_response_a_replay_answers_with_byte_for_byte(db: Backend) -> None:
    """On PostgreSQL the stored response is joined in SQL around the new usage event's id: the text is the one
    ``json.dumps`` of the result gives (as a refusal's, a batch's or SQLite's), and a replay answers the same."""
    user_id, account_id = await new_user(bonus=2 * MICRO)
    await grant(account_id, 3 * MICRO, CreditKind.PAID)
    spent = await spend(user_id, 2_500_000, "split")  # 2 free, 0.5 paid: two lots, two allocations

    record = await IdempotencyRecord.get(key="split")
    expected = {
        "usage_event_id": spent.usage_event_id,
        "credits": 2_500_000,
        "free": 2 * MICRO,
        "paid": 500_000,
        "balance": {"free": 0, "paid": 2_500_000, "held": 0, "owed": 0, "overdraft": 0},
    }
    assert record.response == json.dumps(expected, separators=(",", ":"))
    assert await allocations(spent.usage_event_id) == [
        (lot.id, str(lot.kind), lot.amount - lot.remaining)
        for lot in await CreditLot.filter(account_id=account_id).order_by("kind")  # FREE, then PAID
    ]
    again = await spend(user_id, 2_500_000, "split")
    assert again == replace(spent, replayed=True, changes=(), queued_top_up=None)
    assert (await ledger.read_balances([account_id], T0))[account_id] == Balance(0, 2_500_000, 0)


async def test_a_plain_spend_is_two_statements_lock_and_read_then_write(db: Backend, counter: StatementCounter) -> None:
    """The lock's statement reads the idempotency record, the live lots and the holds; then PostgreSQL runs one
    data-modifying statement that writes the lot, the usage event, its allocations and rollups, the ledger row,
    the account and the record, and SQLite (no such CTE) the same writes as statements of their own, in one
    hop to its connection's thread."""
    user_id, account_id = await new_user(bonus=10 * MICRO)
    await spend(user_id, MICRO, "warm")
    spent = await counter.during(spend(user_id, MICRO, "counted"))
    assert spent.balance == Balance(8 * MICRO, 0, 0)
    statements = list(counter.statements)
    assert len(statements) == 2, statements
    assert statements[0].startswith("SELECT a.id")
    written = statements[1]
    for table in ("credit_lots", "usage_events", "usage_allocations", "usage_rollups", "ledger_entries"):
        assert table in written
    assert "INSERT INTO idempotency_records" in written
    assert "UPDATE credit_accounts" in written
    if db.name == "postgres":
        assert "FOR UPDATE OF a" in statements[0]
        assert "creditline_live_credit(a.id, a.held)" in statements[0]  # the lots and holds, by the function
        assert written.startswith("WITH taken AS (UPDATE credit_lots")
    else:
        assert "FROM credit_lots l" in statements[0]
        # lot, usage event, allocations, rollups, ledger row, account, record
        assert written.count("; ") == 6
    entry = await LedgerEntry.filter(account_id=account_id).order_by("-version").first()
    assert entry is not None
    assert (entry.version, entry.usage_event_id, entry.balance_after) == (3, spent.usage_event_id, 8 * MICRO)


async def test_a_spend_that_waited_for_the_lock_spends_what_a_grant_added_meanwhile(
    db: Backend, counter: StatementCounter
) -> None:
    """Its lock statement began before the grant committed; the function that reads the lots in it is called
    again for the row the grant left, and its query sees the grant's commit: the granted credit is spent, in
    the two statements of any spend (the lots read as the statement began would have refused it)."""
    if db.name != "postgres":
        pytest.skip("concurrent transactions need PostgreSQL (SQLite has one writer)")
    user_id, account_id = await new_user(bonus=MICRO)
    locked = asyncio.Event()

    async def spend_once_locked() -> ledger.SpendResult:
        await locked.wait()
        result: ledger.SpendResult = await counter.during(spend(user_id, 3 * MICRO, "after-grant"))
        return result

    waiting = asyncio.create_task(spend_once_locked())
    async with in_transaction():
        await grant(account_id, 5 * MICRO, CreditKind.PAID)  # nested: the lock is kept until this commits
        locked.set()
        await asyncio.sleep(0.5)
        assert not waiting.done()
    spent = await waiting
    assert (spent.free_credits, spent.paid_credits) == (MICRO, 2 * MICRO)
    assert spent.balance == Balance(0, 3 * MICRO, 0)
    assert len(counter.statements) == 2
    assert (await ledger.read_balances([account_id], T0))[account_id] == Balance(0, 3 * MICRO, 0)
    assert [f for f in await ledger.audit() if f.account_id == account_id] == []


async def test_the_database_refuses_a_lot_taken_below_zero(db: Backend) -> None:
    """Whatever writes it, a lot's remaining credit cannot go negative: the write fails and nothing changes."""
    _, account_id = await new_user(bonus=0)
    lot_id = await grant(account_id, 2 * MICRO, CreditKind.PAID)
    conn = connections.get("default")
    with pytest.raises(Exception, match="remaining"):
        async with in_transaction() as tx:
            await tx.execute_query(
                "UPDATE credit_lots SET remaining = remaining - 3000000 WHERE id = " + str(int(lot_id))
            )
    rows = await conn.execute_query_dict("SELECT remaining FROM credit_lots WHERE id = " + str(int(lot_id)))
    assert rows == [{"remaining": 2 * MICRO}]
