"""Overdraft (docs/rules.md, "Overdraft"): spends, holds and captures may take ``available`` down to -overdraft;
what the lots could not give is owed, on the ledger (``owed_delta``) and on the usage event; every grant pays it
back first; the audit checks it. On both databases; the db fixture audits after every test."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from models import ledger
from models.balance import Balance
from models.credits import MICRO
from models.ledger import BalanceChange
from models.ledger.alerts import AlertChanged
from models.sql import Sql
from models.tables import CreditAccount, CreditKind, CreditLot, LedgerEntry, LotSource, UsageEvent
from tests.support.backends import T0, Backend
from tests.support.snapshots import changed, snapshot

HOUR = timedelta(hours=1)


def key(name: str, **request: object) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:test", name, "spend", request or {"k": name})


async def account(overdraft: int = 0, bonus: int = 0) -> tuple[int, int]:
    user_id = await ledger.create_user("ada@example.com", signup_bonus=bonus, bonus_lifetime=timedelta(days=30), now=T0)
    account_id = (await CreditAccount.get(user_id=user_id)).id
    if overdraft:
        await ledger.set_overdraft(account_id, overdraft, T0)
    return user_id, account_id


async def grant(
    account_id: int,
    credits: int,
    kind: CreditKind = CreditKind.PAID,
    *,
    source: LotSource = LotSource.ADJUSTMENT,
    expires_in: timedelta | None = None,
) -> ledger.GrantResult:
    return await ledger.grant(
        account_id,
        credits=credits,
        kind=kind,
        source=source,
        expires_at=None if expires_in is None else T0 + expires_in,
        reason=None,
        idem=None,
        now=T0,
    )


async def spend(user_id: int, credits: int, name: str, at: Any = T0) -> ledger.SpendResult:
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


async def hold(user_id: int, credits: int, name: str) -> ledger.HoldResult:
    return await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=credits,
        expires_at=T0 + 24 * HOUR,
        idem=key(name, credits=credits),
        now=T0,
    )


async def balance(account_id: int, at: Any = T0) -> Balance:
    return (await ledger.read_balances([account_id], at))[account_id]


async def entries(account_id: int) -> list[tuple[str, int, int, int, int, int]]:
    """(type, amount, free, paid, owed_delta, balance_after) of every ledger row, in order."""
    rows = await LedgerEntry.filter(account_id=account_id).order_by("version")
    return [(str(r.entry_type), r.amount, r.free_amount, r.paid_amount, r.owed_delta, r.balance_after) for r in rows]


async def owed(account_id: int) -> int:
    return int((await CreditAccount.get(id=account_id)).owed)


async def execute(db: Backend, statement: str, *args: object) -> None:
    """Raw SQL written with ``$n`` placeholders, on either database (to corrupt a row on purpose)."""
    if db.name != "postgres":
        for n in range(len(args), 0, -1):
            statement = statement.replace(f"${n}", "?")
    await connections.get("default").execute_query(statement, list(args))


# ------------------------------------------------------------------------------------ without an overdraft


async def test_without_an_overdraft_nothing_is_owed_and_a_spend_past_available_is_refused(db: Backend) -> None:
    user_id, account_id = await account(bonus=3 * MICRO)
    await ledger.set_overdraft(account_id, 0, T0)  # setting 0 is today's behaviour, and changes nothing else
    before = await snapshot()

    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await spend(user_id, 3 * MICRO + 1, "too-much")

    assert (refused.value.available, refused.value.required) == (3 * MICRO, 3 * MICRO + 1)
    assert changed(before, await snapshot()) == {"idempotency_records"}
    result = await spend(user_id, 3 * MICRO, "all")
    assert result.balance == Balance(0, 0, 0) == Balance(0, 0, 0, owed=0, overdraft=0)
    assert (await UsageEvent.get(id=result.usage_event_id)).owed_credits == 0
    assert await entries(account_id) == [
        ("GRANT", 3 * MICRO, 3 * MICRO, 0, 0, 3 * MICRO),
        ("SPEND", -3 * MICRO, -3 * MICRO, 0, 0, 0),
    ]


# ------------------------------------------------------------------------------------------------ spends


async def test_spends_go_down_to_minus_the_overdraft_exactly_and_the_owed_part_is_on_the_ledger(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO)
    await grant(account_id, 1 * MICRO, CreditKind.FREE)
    await grant(account_id, 2 * MICRO, CreditKind.PAID)
    assert await balance(account_id) == Balance(MICRO, 2 * MICRO, 0, owed=0, overdraft=5 * MICRO)

    first = await spend(user_id, 2 * MICRO, "from-the-lots")
    second = await spend(user_id, 4 * MICRO, "partly-owed")
    third = await spend(user_id, 2 * MICRO, "all-owed")

    assert [(r.free_credits, r.paid_credits) for r in (first, second, third)] == [(MICRO, MICRO), (0, MICRO), (0, 0)]
    assert third.balance == Balance(0, 0, 0, owed=5 * MICRO, overdraft=5 * MICRO)
    assert third.balance.available == -5 * MICRO
    assert await balance(account_id) == third.balance
    assert await owed(account_id) == 5 * MICRO
    assert await entries(account_id) == [
        ("GRANT", MICRO, MICRO, 0, 0, MICRO),
        ("GRANT", 2 * MICRO, 0, 2 * MICRO, 0, 3 * MICRO),
        ("SPEND", -2 * MICRO, -MICRO, -MICRO, 0, MICRO),
        ("SPEND", -MICRO, 0, -MICRO, 3 * MICRO, 0),
        ("SPEND", 0, 0, 0, 2 * MICRO, 0),
    ]
    usage = await UsageEvent.filter(account_id=account_id).order_by("id")
    assert [(u.credits, u.free_credits, u.paid_credits, u.owed_credits) for u in usage] == [
        (2 * MICRO, MICRO, MICRO, 0),
        (4 * MICRO, 0, MICRO, 3 * MICRO),
        (2 * MICRO, 0, 0, 2 * MICRO),
    ]
    # The live event's delta is the change to total, as the ledger row's amount (a replay from the ledger
    # agrees); its balance carries what is owed.
    change = second.changes[0]
    assert isinstance(change, ledger.BalanceChange)
    assert (change.delta, change.balance.owed, change.balance.available) == (-MICRO, 3 * MICRO, -3 * MICRO)

    before = await snapshot()
    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await spend(user_id, 1, "one-micro-too-many")

    assert (refused.value.available, refused.value.required) == (-5 * MICRO, 1)
    assert changed(before, await snapshot()) == {"idempotency_records"}


async def test_a_spend_past_the_overdraft_is_refused_whole(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO, bonus=3 * MICRO)
    before = await snapshot()

    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await spend(user_id, 8 * MICRO + 1, "past")

    assert (refused.value.available, refused.value.required) == (3 * MICRO, 8 * MICRO + 1)
    assert changed(before, await snapshot()) == {"idempotency_records"}
    assert (await spend(user_id, 8 * MICRO, "to-the-floor")).balance.available == -5 * MICRO


async def test_a_replayed_overdraft_spend_borrows_once_and_a_replayed_refusal_stays_refused(db: Backend) -> None:
    user_id, account_id = await account(overdraft=2 * MICRO, bonus=MICRO)

    first = await spend(user_id, 3 * MICRO, "once")
    again = await spend(user_id, 3 * MICRO, "once")
    with pytest.raises(ledger.InsufficientCreditsError):
        await spend(user_id, MICRO, "refused")
    await grant(account_id, 10 * MICRO)  # now there would be enough: the key still answers as it did

    assert again.replayed
    assert not first.replayed
    assert (again.usage_event_id, again.free_credits, again.paid_credits) == (first.usage_event_id, MICRO, 0)
    assert again.balance == first.balance == Balance(0, 0, 0, owed=2 * MICRO, overdraft=2 * MICRO)
    with pytest.raises(ledger.InsufficientCreditsError) as replayed:
        await spend(user_id, MICRO, "refused")
    assert (replayed.value.available, replayed.value.required) == (-2 * MICRO, MICRO)
    assert await UsageEvent.filter(account_id=account_id).count() == 1
    assert await balance(account_id) == Balance(0, 8 * MICRO, 0, owed=0, overdraft=2 * MICRO)


async def test_concurrent_spends_never_pass_the_overdraft(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO, bonus=5 * MICRO)

    outcomes = await asyncio.gather(*(spend(user_id, MICRO, f"spend-{n}") for n in range(25)), return_exceptions=True)

    succeeded = [o for o in outcomes if isinstance(o, ledger.SpendResult)]
    refused = [o for o in outcomes if isinstance(o, ledger.InsufficientCreditsError)]
    assert (len(succeeded), len(refused)) == (10, 15)
    assert {(r.available, r.required) for r in refused} == {(-5 * MICRO, MICRO)}
    assert await balance(account_id) == Balance(0, 0, 0, owed=5 * MICRO, overdraft=5 * MICRO)
    assert sorted(r.free_credits for r in succeeded) == [0] * 5 + [MICRO] * 5
    assert sum(u.owed_credits for u in await UsageEvent.filter(account_id=account_id)) == 5 * MICRO


# ------------------------------------------------------------------------------------------------- grants


async def test_a_grant_pays_back_what_is_owed_first(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO)
    await spend(user_id, 5 * MICRO, "borrow")

    small = await grant(account_id, 3 * MICRO, CreditKind.FREE, source=LotSource.PROMOTION)
    large = await grant(account_id, 10 * MICRO, CreditKind.PAID)

    lots = await CreditLot.filter(account_id=account_id).order_by("id")
    assert [(lot.amount, lot.remaining, str(lot.status)) for lot in lots] == [
        (3 * MICRO, 0, "DEPLETED"),
        (10 * MICRO, 8 * MICRO, "ACTIVE"),
    ]
    assert small.balance == Balance(0, 0, 0, owed=2 * MICRO, overdraft=5 * MICRO)
    assert small.balance.available == -2 * MICRO
    assert large.balance == Balance(0, 8 * MICRO, 0, owed=0, overdraft=5 * MICRO)
    assert await owed(account_id) == 0
    assert (await entries(account_id))[1:] == [
        ("GRANT", 0, 0, 0, -3 * MICRO, 0),
        ("GRANT", 8 * MICRO, 0, 8 * MICRO, -2 * MICRO, 8 * MICRO),
    ]
    assert [(c.delta, c.reason) for c in (*small.changes, *large.changes) if isinstance(c, ledger.BalanceChange)] == [
        (0, "GRANT"),
        (8 * MICRO, "GRANT"),
    ]
    # What is left spends as usual, within the limit again.
    assert (await spend(user_id, 13 * MICRO, "again")).balance.owed == 5 * MICRO


async def test_an_expiring_grant_repays_too_and_its_expiry_leaves_the_debt_paid(db: Backend) -> None:
    user_id, account_id = await account(overdraft=4 * MICRO)
    await spend(user_id, 3 * MICRO, "borrow")

    await grant(account_id, 5 * MICRO, CreditKind.FREE, source=LotSource.PROMOTION, expires_in=HOUR)
    assert await balance(account_id) == Balance(2 * MICRO, 0, 0, owed=0, overdraft=4 * MICRO)

    report = await ledger.sweep(T0 + HOUR)

    assert report.expired_lots == 1
    assert await balance(account_id, T0 + HOUR) == Balance(0, 0, 0, owed=0, overdraft=4 * MICRO)
    assert (await entries(account_id))[-1] == ("EXPIRE", -2 * MICRO, -2 * MICRO, 0, 0, 0)


async def test_a_refund_voids_only_what_the_lot_kept_after_paying_the_debt(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO)
    await spend(user_id, 3 * MICRO, "borrow")
    topped = await grant(account_id, 5 * MICRO, source=LotSource.TOP_UP)

    async with in_transaction() as conn:
        sql = Sql(conn)
        row = await ledger.lock_account(sql, account_id)
        voided, changes = await ledger.void_lot_locked(sql, row, topped.lot_id, 5 * MICRO, "Refund", T0)

    assert voided == 2 * MICRO
    change, depleted = changes
    assert isinstance(change, BalanceChange)
    assert change.balance == Balance(0, 0, 0, owed=0, overdraft=5 * MICRO)
    # 2 -> 0: the void depleted the account, and hands its alert back with its balance change, to publish.
    assert isinstance(depleted, AlertChanged)
    assert (depleted.event_type, depleted.level, depleted.previous, depleted.available) == (
        "balance.depleted",
        0,
        2 * MICRO,
        0,
    )
    assert await owed(account_id) == 0  # the repaid part was spent credit: a refund does not bring the debt back
    assert (await entries(account_id))[-1] == ("REFUND", -2 * MICRO, 0, -2 * MICRO, 0, 0)


async def test_a_grant_that_repays_may_exceed_the_maximum_balance_by_what_it_repays(db: Backend) -> None:
    user_id, account_id = await account(overdraft=MICRO, bonus=0)
    await spend(user_id, MICRO, "borrow")

    result = await grant(account_id, ledger.MAX_BALANCE + MICRO)  # what the lots keep is the maximum

    assert result.balance == Balance(0, ledger.MAX_BALANCE, 0, owed=0, overdraft=MICRO)
    with pytest.raises(ledger.BalanceLimitError):
        await grant(account_id, 1)


# ------------------------------------------------------------------------------------------------- limits


async def test_lowering_the_overdraft_below_what_is_owed_keeps_the_debt_and_stops_new_borrowing(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO)
    await spend(user_id, 5 * MICRO, "borrow")

    lowered, alerts = await ledger.set_overdraft(account_id, 2 * MICRO, T0)

    assert lowered == Balance(0, 0, 0, owed=5 * MICRO, overdraft=2 * MICRO)
    assert lowered.available == -2 * MICRO  # never shown below -overdraft; `owed` says the rest
    assert alerts == ()  # available was -5 and is -2: still depleted, nothing crossed
    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await spend(user_id, 1, "more")
    assert (refused.value.available, refused.value.required) == (-2 * MICRO, 1)
    await grant(account_id, 4 * MICRO)  # owes 1: one credit may be borrowed again
    assert (await balance(account_id)).available == -MICRO
    assert (await spend(user_id, MICRO, "within")).balance == Balance(0, 0, 0, owed=2 * MICRO, overdraft=2 * MICRO)
    with pytest.raises(ledger.InsufficientCreditsError):
        await spend(user_id, 1, "past-the-new-limit")


async def test_setting_the_overdraft_moves_no_credit(db: Backend) -> None:
    _user_id, account_id = await account(bonus=2 * MICRO)
    before = await snapshot()

    result, alerts = await ledger.set_overdraft(account_id, 7 * MICRO, T0)

    assert result == Balance(2 * MICRO, 0, 0, owed=0, overdraft=7 * MICRO)
    assert alerts == ()
    assert changed(before, await snapshot()) == {"credit_accounts"}
    assert (await CreditAccount.get(id=account_id)).overdraft == 7 * MICRO
    assert await LedgerEntry.filter(account_id=account_id).count() == 1
    with pytest.raises(ledger.NotFoundError):
        await ledger.set_overdraft(999, MICRO, T0)


# -------------------------------------------------------------------------------------------------- holds


async def test_holds_may_go_down_to_minus_the_overdraft_and_their_capture_borrows_what_the_lots_lack(
    db: Backend,
) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO, bonus=10 * MICRO)

    held = await hold(user_id, 15 * MICRO, "big")

    assert held.balance == Balance(10 * MICRO, 0, 15 * MICRO, owed=0, overdraft=5 * MICRO)
    assert held.balance.available == -5 * MICRO
    before = await snapshot()
    with pytest.raises(ledger.InsufficientCreditsError) as refused_hold:
        await hold(user_id, 1, "one-more")
    with pytest.raises(ledger.InsufficientCreditsError) as refused_spend:
        await spend(user_id, 1, "one-more-spend")
    assert (refused_hold.value.available, refused_spend.value.available) == (-5 * MICRO, -5 * MICRO)
    assert changed(before, await snapshot()) == {"idempotency_records"}

    captured = await ledger.capture_hold(held.hold_id, credits=None, idem=key("capture"), now=T0)

    assert captured.balance == Balance(0, 0, 0, owed=5 * MICRO, overdraft=5 * MICRO)
    assert captured.usage_event_id is not None
    event = await UsageEvent.get(id=captured.usage_event_id)
    assert (event.credits, event.free_credits, event.paid_credits, event.owed_credits) == (
        15 * MICRO,
        10 * MICRO,
        0,
        5 * MICRO,
    )
    assert (await entries(account_id))[-1] == ("CAPTURE", -10 * MICRO, -10 * MICRO, 0, 5 * MICRO, 0)
    change = captured.changes[0]
    assert isinstance(change, ledger.BalanceChange)
    assert change.delta == -10 * MICRO


async def test_a_spend_beside_a_hold_may_take_its_lots_and_the_capture_then_borrows(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO, bonus=10 * MICRO)
    held = await hold(user_id, 8 * MICRO, "hold")

    spent = await spend(user_id, 7 * MICRO, "beside")  # available 2, down to -5
    captured = await ledger.capture_hold(held.hold_id, credits=None, idem=key("capture"), now=T0)

    assert spent.balance == Balance(3 * MICRO, 0, 8 * MICRO, owed=0, overdraft=5 * MICRO)
    assert spent.balance.available == -5 * MICRO
    assert captured.balance == Balance(0, 0, 0, owed=5 * MICRO, overdraft=5 * MICRO)


async def test_a_capture_may_borrow_only_up_to_the_overdraft_when_the_free_lots_expired_under_it(
    db: Backend,
) -> None:
    user_id, account_id = await account(overdraft=2 * MICRO)
    await grant(account_id, 4 * MICRO, CreditKind.FREE, source=LotSource.PROMOTION, expires_in=HOUR)
    held = await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=6 * MICRO,
        expires_at=T0 + 2 * HOUR,
        idem=key("hold"),
        now=T0,
    )
    later = T0 + HOUR
    assert (await balance(account_id, later)).available == -2 * MICRO  # -6 held, shown no lower than -overdraft

    before = await snapshot()
    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await ledger.capture_hold(held.hold_id, credits=None, idem=key("all"), now=later)
    assert (refused.value.available, refused.value.required) == (2 * MICRO, 6 * MICRO)
    assert changed(before, await snapshot()) == {"idempotency_records"}

    captured = await ledger.capture_hold(held.hold_id, credits=2 * MICRO, idem=key("part"), now=later)

    assert captured.balance == Balance(0, 0, 0, owed=2 * MICRO, overdraft=2 * MICRO)


# -------------------------------------------------------------------------------------------------- audit


async def test_the_audit_finds_a_corrupted_owed(db: Backend) -> None:
    user_id, account_id = await account(overdraft=5 * MICRO, bonus=MICRO)
    await spend(user_id, 3 * MICRO, "borrow")
    assert await ledger.audit() == []

    await execute(db, "UPDATE credit_accounts SET owed = owed + 1 WHERE id = $1", account_id)
    assert [(f.account_id, f.problem) for f in await ledger.audit()] == [
        (account_id, "sum of ledger owed deltas 2000000 != cached owed 2000001")
    ]

    await execute(db, "UPDATE credit_accounts SET owed = -1 WHERE id = $1", account_id)
    assert [f.problem for f in await ledger.audit()] == [
        "sum of ledger owed deltas 2000000 != cached owed -1",
        "cached owed -1 < 0",
    ]
    await execute(db, "UPDATE credit_accounts SET owed = $1 WHERE id = $2", 2 * MICRO, account_id)

    await execute(db, "UPDATE usage_events SET owed_credits = owed_credits + 1 WHERE account_id = $1", account_id)
    assert [f.problem for f in await ledger.audit()] == [
        "sum of usage owed credits 2000001 != sum of ledger owed borrowed 2000000"
    ]
    await execute(db, "UPDATE usage_events SET owed_credits = owed_credits - 1 WHERE account_id = $1", account_id)
    assert await ledger.audit() == []


# ----------------------------------------------------------------------------------------- stored balances


def test_a_balance_stored_before_overdrafts_existed_reads_as_none_owed() -> None:
    old = Balance.from_json({"free": 1, "paid": 2, "held": 4})

    assert old == Balance(1, 2, 4, owed=0, overdraft=0)
    assert old.available == 0  # clamped at zero, as before
    assert Balance.from_json(Balance(1, 2, 0, owed=3, overdraft=5).to_json()) == Balance(1, 2, 0, 3, 5)
    assert Balance(1, 2, 0, owed=3, overdraft=5).available == 0
    assert Balance(0, 0, 1, 3, 2).available == -2
