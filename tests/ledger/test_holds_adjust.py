"""Adjusting a running task's hold (docs/rules.md, "Holds"): ``extend_hold`` gives it a new timeout,
``increase_hold`` sets more aside, refused as a new hold of the extra would be; both under the account lock,
idempotent, with refusals stored under the key and nothing else changed. The audit runs after every test."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from models import ledger, organizations
from models.balance import Balance
from models.credits import MICRO
from models.tables import CreditAccount, CreditKind, Hold, LedgerEntry, LotSource, MemberRole, UsageEvent
from tests.support.backends import T0, Backend
from tests.support.snapshots import changed, snapshot

MINUTE = timedelta(minutes=1)


def key(name: str, **request: object) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:test", name, "adjust", request or {"k": name})


async def new_user(email: str = "ada@example.com", credits: int = 10 * MICRO) -> tuple[int, int]:
    user_id = await ledger.create_user(email, signup_bonus=0, bonus_lifetime=timedelta(days=30), now=T0)
    account = await CreditAccount.get(user_id=user_id)
    if credits:
        await grant(account.id, credits)
    return user_id, account.id


async def grant(account_id: int, credits: int) -> None:
    await ledger.grant(
        account_id,
        credits=credits,
        kind=CreditKind.PAID,
        source=LotSource.TOP_UP,
        expires_at=None,
        reason=None,
        idem=None,
        now=T0,
    )


async def place(
    user_id: int,
    credits: int,
    *,
    minutes: int = 5,
    quantity: int | None = None,
    organization_id: int | None = None,
    name: str = "hold",
    at: datetime = T0,
) -> int:
    placed = await ledger.hold(
        ("organization_id", organization_id) if organization_id is not None else ("user_id", user_id),
        user_id=user_id,
        organization_id=organization_id,
        agent_id="agent",
        activity="web_search",
        credits=credits,
        expires_at=at + minutes * MINUTE,
        idem=key(name),
        now=at,
        quantity=quantity,
    )
    return placed.hold_id


async def balance(account_id: int, at: datetime) -> Balance:
    return (await ledger.read_balances([account_id], at))[account_id]


async def ledger_rows(account_id: int) -> list[tuple[str, int, int, str | None]]:
    rows = await LedgerEntry.filter(account_id=account_id).order_by("version")
    return [(str(r.entry_type), r.amount, r.held_delta, r.reason) for r in rows]


# ------------------------------------------------------------------------------------------------ extend


async def test_an_extended_hold_outlives_its_old_timeout_and_ends_at_its_new_one(db: Backend) -> None:
    user_id, account_id = await new_user()
    hold_id = await place(user_id, 4 * MICRO, minutes=5)

    extended = await ledger.extend_hold(hold_id, lasting=10 * MINUTE, idem=key("extend"), now=T0 + 4 * MINUTE)

    assert extended.balance == Balance(0, 10 * MICRO, 4 * MICRO)
    assert (await Hold.get(id=hold_id)).expires_at == T0 + 14 * MINUTE
    assert extended.changes == (ledger.BalanceChange(account_id, 3, 0, "EXTEND", extended.balance, T0 + 4 * MINUTE),)
    assert await ledger_rows(account_id) == [
        ("GRANT", 10 * MICRO, 0, None),
        ("HOLD", 0, 4 * MICRO, None),
        ("HOLD", 0, 0, "EXTEND"),
    ]
    # Past the old timeout it still counts and the sweep leaves it; a capture then takes it.
    assert await balance(account_id, T0 + 5 * MINUTE) == Balance(0, 10 * MICRO, 4 * MICRO)
    assert (await ledger.sweep(T0 + 5 * MINUTE)).released_holds == 0
    assert await balance(account_id, T0 + 14 * MINUTE - timedelta(microseconds=1)) == Balance(0, 10 * MICRO, 4 * MICRO)
    # At the new timeout it stops counting, and it can no longer be extended.
    assert await balance(account_id, T0 + 14 * MINUTE) == Balance(0, 10 * MICRO, 0)
    before = await snapshot()
    with pytest.raises(ledger.HoldNotActiveError) as late:
        await ledger.extend_hold(hold_id, lasting=10 * MINUTE, idem=key("late"), now=T0 + 14 * MINUTE)
    assert late.value.status == "EXPIRED"
    assert changed(before, await snapshot()) == {"idempotency_records"}  # the refusal, stored under its key
    assert (await ledger.sweep(T0 + 14 * MINUTE)).released_holds == 1


async def test_an_extension_may_shorten_the_timeout(db: Backend) -> None:
    user_id, account_id = await new_user()
    hold_id = await place(user_id, 4 * MICRO, minutes=60)

    await ledger.extend_hold(hold_id, lasting=MINUTE, idem=key("extend"), now=T0)

    assert await balance(account_id, T0 + MINUTE) == Balance(0, 10 * MICRO, 0)


async def test_a_replayed_extension_answers_the_same_and_changes_nothing(db: Backend) -> None:
    user_id, _ = await new_user()
    hold_id = await place(user_id, 4 * MICRO, minutes=5)
    first = await ledger.extend_hold(hold_id, lasting=10 * MINUTE, idem=key("extend", t=10), now=T0)
    before = await snapshot()

    # Later, and after the hold was captured: the stored answer, not a new evaluation.
    await ledger.capture_hold(hold_id, credits=None, idem=key("capture"), now=T0 + MINUTE)
    after_capture = await snapshot()
    again = await ledger.extend_hold(hold_id, lasting=10 * MINUTE, idem=key("extend", t=10), now=T0 + 2 * MINUTE)

    assert (again.balance, again.replayed, again.changes) == (first.balance, True, ())
    assert changed(after_capture, await snapshot()) == set()
    assert "holds" in changed(before, after_capture)
    with pytest.raises(ledger.IdempotencyConflictError):
        await ledger.extend_hold(hold_id, lasting=20 * MINUTE, idem=key("extend", t=20), now=T0 + 2 * MINUTE)


@pytest.mark.parametrize("settled", ["CAPTURED", "RELEASED", "EXPIRED"])
async def test_extending_a_hold_that_is_not_active_is_refused_and_changes_nothing(db: Backend, settled: str) -> None:
    user_id, _ = await new_user()
    hold_id = await place(user_id, 4 * MICRO, minutes=5)
    at = T0 + MINUTE
    if settled == "CAPTURED":
        await ledger.capture_hold(hold_id, credits=MICRO, idem=key("capture"), now=at)
    elif settled == "RELEASED":
        await ledger.release_hold(hold_id, idem=key("release"), now=at)
    else:
        at = T0 + 5 * MINUTE  # its timeout instant, swept or not
    before = await snapshot()

    with pytest.raises(ledger.HoldNotActiveError) as refused:
        await ledger.extend_hold(hold_id, lasting=10 * MINUTE, idem=key("extend"), now=at)

    assert refused.value.status == settled
    assert changed(before, await snapshot()) == {"idempotency_records"}
    stored = await snapshot()
    with pytest.raises(ledger.HoldNotActiveError):  # replayed: refused the same way
        await ledger.extend_hold(hold_id, lasting=10 * MINUTE, idem=key("extend"), now=at)
    assert changed(stored, await snapshot()) == set()


async def test_a_hold_lasts_at_most_thirty_days_after_it_was_placed(db: Backend) -> None:
    user_id, _ = await new_user()
    hold_id = await place(user_id, 4 * MICRO, minutes=2 * 24 * 60)
    # Exactly 30 days after it was placed is the last instant it may be given.
    await ledger.extend_hold(hold_id, lasting=timedelta(days=29), idem=key("a"), now=T0 + timedelta(days=1))
    before = await snapshot()

    with pytest.raises(ledger.HoldLifeExceededError) as refused:
        await ledger.extend_hold(
            hold_id, lasting=timedelta(days=29, microseconds=1), idem=key("b"), now=T0 + timedelta(days=1)
        )

    assert refused.value.latest == T0 + ledger.MAX_HOLD_LIFE == T0 + timedelta(days=30)
    assert changed(before, await snapshot()) == set()  # bad input: nothing stored, not even the key
    assert (await Hold.get(id=hold_id)).expires_at == T0 + timedelta(days=30)


# ---------------------------------------------------------------------------------------------- increase


async def test_an_increase_sets_exactly_the_extra_aside_and_a_full_capture_spends_it_all(db: Backend) -> None:
    user_id, account_id = await new_user()
    hold_id = await place(user_id, 2 * MICRO)

    increased = await ledger.increase_hold(hold_id, credits=1_500_001, quantity=None, idem=key("more"), now=T0 + MINUTE)

    assert increased.balance == Balance(0, 10 * MICRO, 3_500_001)
    assert increased.changes == (ledger.BalanceChange(account_id, 3, 0, "INCREASE", increased.balance, T0 + MINUTE),)
    held = await Hold.get(id=hold_id)
    assert (held.amount, held.status, held.expires_at) == (3_500_001, "ACTIVE", T0 + 5 * MINUTE)
    assert await ledger_rows(account_id) == [
        ("GRANT", 10 * MICRO, 0, None),
        ("HOLD", 0, 2 * MICRO, None),
        ("HOLD", 0, 1_500_001, "INCREASE"),
    ]
    captured = await ledger.capture_hold(hold_id, credits=None, idem=key("capture"), now=T0 + 2 * MINUTE)
    assert captured.balance == Balance(0, 10 * MICRO - 3_500_001, 0)
    assert captured.usage_event_id is not None
    assert (await UsageEvent.get(id=captured.usage_event_id)).credits == 3_500_001


async def test_an_increase_past_the_available_credit_is_refused_and_changes_nothing(db: Backend) -> None:
    user_id, account_id = await new_user()
    hold_id = await place(user_id, 4 * MICRO)
    before = await snapshot()

    with pytest.raises(ledger.InsufficientCreditsError) as refused:
        await ledger.increase_hold(hold_id, credits=6 * MICRO + 1, quantity=None, idem=key("more"), now=T0)

    assert (refused.value.available, refused.value.required) == (6 * MICRO, 6 * MICRO + 1)
    assert changed(before, await snapshot()) == {"idempotency_records"}
    # Credit that arrives later does not turn the stored refusal into a success.
    await grant(account_id, 10 * MICRO)
    with pytest.raises(ledger.InsufficientCreditsError):
        await ledger.increase_hold(hold_id, credits=6 * MICRO + 1, quantity=None, idem=key("more"), now=T0)
    assert (await Hold.get(id=hold_id)).amount == 4 * MICRO
    # All of what is available may be added.
    whole = await ledger.increase_hold(hold_id, credits=16 * MICRO, quantity=None, idem=key("all"), now=T0)
    assert whole.balance == Balance(0, 20 * MICRO, 20 * MICRO)


async def test_an_increase_past_the_members_budget_is_refused_and_changes_nothing(db: Backend) -> None:
    owner, _ = await new_user("owner@example.com", credits=0)
    member, _ = await new_user("member@example.com", credits=0)
    org = await organizations.create("Acme", owner, T0)
    await organizations.add_member(org.id, member, [MemberRole.MEMBER], T0)
    pool = await organizations.enable_pool(org.id, T0)
    await grant(pool.id, 10 * MICRO)
    await organizations.set_budget(org.id, member, 3 * MICRO)
    hold_id = await place(member, 2 * MICRO, organization_id=org.id)
    before = await snapshot()

    # 2 held + 1.000001 > the budget of 3, though the pool has 8 more available.
    with pytest.raises(ledger.BudgetExceededError) as refused:
        await ledger.increase_hold(hold_id, credits=MICRO + 1, quantity=None, idem=key("over"), now=T0)

    exc = refused.value
    assert (exc.limit, exc.spent, exc.held, exc.required) == (3 * MICRO, 0, 2 * MICRO, MICRO + 1)
    # The refusal under its key, and the budget's first refusal this month: its budget.reached.
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "events",
        "spend_limits",
    }  # reached_period: told once
    exactly = await ledger.increase_hold(hold_id, credits=MICRO, quantity=None, idem=key("fits"), now=T0)
    assert exactly.balance == Balance(0, 10 * MICRO, 3 * MICRO)
    # The owner has no budget: the same pool, the same extra, granted.
    owners = await place(owner, MICRO, organization_id=org.id, name="owner-hold")
    assert (await ledger.increase_hold(owners, credits=MICRO, quantity=None, idem=key("o"), now=T0)).balance.held == (
        5 * MICRO
    )


@pytest.mark.parametrize("settled", ["CAPTURED", "RELEASED", "EXPIRED"])
async def test_increasing_a_hold_that_is_not_active_is_refused_and_changes_nothing(db: Backend, settled: str) -> None:
    user_id, _ = await new_user()
    hold_id = await place(user_id, 4 * MICRO, minutes=5)
    at = T0 + MINUTE
    if settled == "CAPTURED":
        await ledger.capture_hold(hold_id, credits=MICRO, idem=key("capture"), now=at)
    elif settled == "RELEASED":
        await ledger.release_hold(hold_id, idem=key("release"), now=at)
    else:
        at = T0 + 5 * MINUTE
    before = await snapshot()

    with pytest.raises(ledger.HoldNotActiveError) as refused:
        await ledger.increase_hold(hold_id, credits=MICRO, quantity=None, idem=key("more"), now=at)

    assert refused.value.status == settled
    assert changed(before, await snapshot()) == {"idempotency_records"}


async def test_a_replayed_increase_adds_once(db: Backend) -> None:
    user_id, account_id = await new_user()
    hold_id = await place(user_id, 2 * MICRO)

    first = await ledger.increase_hold(hold_id, credits=MICRO, quantity=None, idem=key("more", c=1), now=T0)
    replays = await asyncio.gather(
        *(
            ledger.increase_hold(hold_id, credits=MICRO, quantity=None, idem=key("more", c=1), now=T0 + MINUTE)
            for _ in range(10)
        )
    )

    assert {(r.balance, r.replayed) for r in replays} == {(first.balance, True)}
    assert (await Hold.get(id=hold_id)).amount == 3 * MICRO
    assert await balance(account_id, T0) == Balance(0, 10 * MICRO, 3 * MICRO)
    with pytest.raises(ledger.IdempotencyConflictError):
        await ledger.increase_hold(hold_id, credits=2 * MICRO, quantity=None, idem=key("more", c=2), now=T0)


async def test_concurrent_increases_never_over_commit(db: Backend) -> None:
    """50 increases of 0.5 at once on a hold of 1 with 9 more available: exactly 18 fit (the serial count)."""
    user_id, account_id = await new_user()
    hold_id = await place(user_id, MICRO)

    outcomes = await asyncio.gather(
        *(
            ledger.increase_hold(hold_id, credits=MICRO // 2, quantity=None, idem=key(f"more-{n}"), now=T0)
            for n in range(50)
        ),
        return_exceptions=True,
    )

    succeeded = [o for o in outcomes if isinstance(o, ledger.HoldResult)]
    refused = [o for o in outcomes if isinstance(o, ledger.InsufficientCreditsError)]
    assert (len(succeeded), len(refused)) == (18, 32)
    assert sorted(o.balance.held for o in succeeded) == [MICRO + n * MICRO // 2 for n in range(1, 19)]
    assert (await Hold.get(id=hold_id)).amount == 10 * MICRO
    assert await balance(account_id, T0) == Balance(0, 10 * MICRO, 10 * MICRO)
    versions = sorted(e.version for e in await LedgerEntry.filter(account_id=account_id))
    assert versions == list(range(1, 21))


async def test_concurrent_increases_and_spends_share_one_serial_order(db: Backend) -> None:
    user_id, account_id = await new_user()
    hold_id = await place(user_id, MICRO)

    async def spend(n: int) -> ledger.SpendResult:
        return await ledger.spend(
            ("user_id", user_id),
            user_id=user_id,
            organization_id=None,
            agent_id="agent",
            activity="answer",
            credits=MICRO // 2,
            quantity=None,
            idem=key(f"spend-{n}"),
            now=T0,
        )

    outcomes = await asyncio.gather(
        *(
            ledger.increase_hold(hold_id, credits=MICRO // 2, quantity=None, idem=key(f"i-{n}"), now=T0)
            for n in range(20)
        ),
        *(spend(n) for n in range(20)),
        return_exceptions=True,
    )

    assert sum(not isinstance(o, BaseException) for o in outcomes) == 18
    assert all(isinstance(o, ledger.InsufficientCreditsError) for o in outcomes if isinstance(o, BaseException))
    final = await balance(account_id, T0)
    assert final.available == 0
    assert final.held == (await Hold.get(id=hold_id)).amount


# ------------------------------------------------------------------------------------------ priced holds


async def test_a_priced_hold_keeps_its_quantity_while_all_of_it_is_priced(db: Backend) -> None:
    user_id, _ = await new_user()
    hold_id = await place(user_id, 30_000, quantity=3 * MICRO)

    await ledger.increase_hold(hold_id, credits=5_000, quantity=MICRO // 2, idem=key("units"), now=T0)
    assert (await Hold.get(id=hold_id)).quantity == 3_500_000
    await ledger.increase_hold(hold_id, credits=1, quantity=None, idem=key("credit"), now=T0)
    held = await Hold.get(id=hold_id)
    assert (held.amount, held.quantity) == (35_001, None)  # part of it is no longer a number of units


async def test_a_full_capture_carries_the_quantity_and_a_partial_one_does_not(db: Backend) -> None:
    user_id, _ = await new_user()
    whole = await place(user_id, 30_000, quantity=3 * MICRO, name="whole")
    part = await place(user_id, 30_000, quantity=3 * MICRO, name="part")

    full = await ledger.capture_hold(whole, credits=30_000, idem=key("full"), now=T0)
    partial = await ledger.capture_hold(part, credits=20_000, idem=key("partial"), now=T0)

    assert full.usage_event_id is not None
    assert partial.usage_event_id is not None
    assert (await UsageEvent.get(id=full.usage_event_id)).quantity == 3 * MICRO
    assert (await UsageEvent.get(id=partial.usage_event_id)).quantity is None
