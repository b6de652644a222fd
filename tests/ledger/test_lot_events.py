"""The sweep's events about lots (models/ledger/lot_events.py, models/ledger/sweeping.py) on both databases:
credit.expiring once per lot within the window, credit.expired with the credit that expired, both in the
sweep's transaction; concurrent sweeps write each once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from models import ledger
from models.credits import MICRO
from models.ids import encode_id
from models.tables import CreditAccount, CreditKind, CreditLot, LotSource
from tests.support.backends import T0, Backend
from tests.support.events import account_data, emitted

WEEK = timedelta(days=7)


async def _account() -> tuple[int, int]:
    user_id = await ledger.create_user("ada@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    return user_id, int((await CreditAccount.get(user_id=user_id)).id)


async def _grant(account_id: int, credits: int, kind: CreditKind, expires_in: timedelta | None) -> int:
    granted = await ledger.grant(
        account_id,
        credits=credits,
        kind=kind,
        source=LotSource.PROMOTION if kind is CreditKind.FREE else LotSource.TOP_UP,
        expires_at=None if expires_in is None else T0 + expires_in,
        reason=None,
        idem=None,
        now=T0,
    )
    assert granted.lot_id is not None
    return granted.lot_id


async def test_a_lot_expiring_within_the_window_is_announced_once_then_its_expiry(db: Backend) -> None:
    user_id, account_id = await _account()
    soon = await _grant(account_id, 5 * MICRO, CreditKind.FREE, timedelta(days=3))
    await _grant(account_id, 7 * MICRO, CreditKind.PAID, timedelta(days=30))  # outside the window
    await _grant(account_id, 2 * MICRO, CreditKind.PAID, None)  # never expires
    me = account_data(account_id, user_id)
    lot = {"id": encode_id("CreditLot", soon), "kind": "FREE", "expiresAt": "2026-01-18T12:00:00Z"}

    await ledger.sweep(T0, WEEK)
    await ledger.sweep(T0 + timedelta(hours=1), WEEK)  # announced already: nothing
    assert await emitted() == [("credit.expiring", {"account": me, "lot": {**lot, "remaining": "5"}})]
    assert (await CreditLot.get(id=soon)).expiring_notified_at == T0

    await ledger.spend(
        ("id", account_id),
        user_id=user_id,
        organization_id=None,
        agent_id="bot",
        activity="answer",
        credits=int(1.5 * MICRO),
        quantity=None,
        idem=ledger.IdempotencyKey.for_request("service:t", "s1", "spendCredits", {}),
        now=T0,
    )
    report = await ledger.sweep(T0 + timedelta(days=3), WEEK)
    await ledger.sweep(T0 + timedelta(days=3, hours=1), WEEK)
    assert report.expired_lots == 1
    assert (await emitted())[1:] == [
        ("credit.expired", {"account": me, "lot": {**lot, "remaining": "0"}, "expiredCredits": "3.5"}),
    ]


async def test_without_a_window_the_sweep_announces_nothing_ahead(db: Backend) -> None:
    _, account_id = await _account()
    await _grant(account_id, 5 * MICRO, CreditKind.FREE, timedelta(days=3))
    await ledger.sweep(T0)
    assert await emitted() == []


async def test_concurrent_sweeps_announce_and_expire_each_lot_once(db: Backend) -> None:
    _, account_id = await _account()
    for n in range(4):
        await _grant(account_id, (n + 1) * MICRO, CreditKind.PAID, timedelta(days=2 + n))
    await asyncio.gather(*(ledger.sweep(T0, WEEK) for _ in range(4)))
    assert [kind for kind, _ in await emitted()] == ["credit.expiring"] * 4
    await asyncio.gather(*(ledger.sweep(T0 + timedelta(days=10), WEEK) for _ in range(4)))
    expired = [data["expiredCredits"] for kind, data in await emitted() if kind == "credit.expired"]
    assert sorted(expired) == ["1", "2", "3", "4"]
