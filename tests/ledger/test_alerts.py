"""Balance alerts (models/ledger/alerts.py): balance.low, balance.depleted and balance.recovered fire once per
crossing of the recorded available credit, in the change's transaction, numbered with the account's events;
the alerts table keeps each one OPEN until it is resolved. On both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from models import ledger
from models.credits import MICRO
from models.ids import encode_id
from models.ledger import alerts
from models.ledger.alerts import AlertChanged
from models.tables import Alert, AlertStatus, CreditAccount, CreditKind, LotSource, OutboxEvent
from tests.support import readme_events
from tests.support.backends import T0, Backend, row_counts

HOUR = timedelta(hours=1)


def key(name: str, **request: object) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:test", name, "spend", request or {"k": name})


async def new_user(email: str = "ada@example.com", credits: int = 0) -> tuple[int, int]:
    user_id = await ledger.create_user(email, signup_bonus=0, bonus_lifetime=timedelta(days=30), now=T0)
    account_id = (await CreditAccount.get(user_id=user_id)).id
    if credits:
        await grant(account_id, credits)
    return user_id, account_id


async def grant(
    account_id: int, credits: int, expires_at: Any = None, at: Any = T0, kind: CreditKind = CreditKind.PAID
) -> ledger.GrantResult:
    return await ledger.grant(
        account_id,
        credits=credits * MICRO,
        kind=kind,
        source=LotSource.ADJUSTMENT,
        expires_at=expires_at,
        reason=None,
        idem=None,
        now=at,
    )


async def spend(user_id: int, credits: int, name: str, at: Any = T0) -> ledger.SpendResult:
    return await ledger.spend(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=credits * MICRO,
        quantity=None,
        idem=key(name, credits=credits),
        now=at,
    )


async def set_levels(account_id: int, *credits: int) -> None:
    await alerts.configure(account_id, tuple(c * MICRO for c in credits), T0)


async def fired(account_id: int) -> list[tuple[int | None, str, str, str, str]]:
    """(sequence, type, level, previous, available) of the account's balance events, in order (the other
    events a change may write, such as a sweep's credit.expired, are other rules')."""
    rows = await OutboxEvent.filter(account_id=account_id, type__startswith="balance.").order_by("sequence")
    out = []
    for row in rows:
        data = json.loads(row.data)
        assert readme_events.undocumented(row.type, data) == []  # as the README's example payload shows it
        out.append((row.sequence, row.type, data["level"], data["previous"], data["available"]))
    return out


async def alert_rows(account_id: int) -> list[tuple[str, int | None, str]]:
    return [(a.kind, a.level, a.status.value) for a in await Alert.filter(account_id=account_id).order_by("id")]


def alerts_of(changes: tuple[ledger.Event, ...] | list[ledger.Event]) -> list[tuple[str, int]]:
    return [(c.event_type, c.level) for c in changes if isinstance(c, AlertChanged)]


@pytest.fixture
def default_level() -> Iterator[None]:
    alerts.set_default_level(5 * MICRO)
    try:
        yield
    finally:
        alerts.set_default_level(0)


async def test_crossing_below_a_level_fires_once_and_recovering_resolves_it(db: Backend) -> None:
    user_id, account_id = await new_user(credits=20)
    await set_levels(account_id, 10)
    first = await spend(user_id, 5, "s1")  # 20 -> 15: above the level
    second = await spend(user_id, 6, "s2")  # 15 -> 9: crosses 10
    third = await spend(user_id, 4, "s3")  # 9 -> 5: below already, nothing more
    assert (alerts_of(first.changes), alerts_of(second.changes), alerts_of(third.changes)) == (
        [],
        [("balance.low", 10 * MICRO)],
        [],
    )
    assert await fired(account_id) == [(1, "balance.low", "10", "15", "9")]
    assert await alert_rows(account_id) == [("balance.low", 10 * MICRO, "OPEN")]

    top_up = await grant(account_id, 3)  # 5 -> 8: still below
    assert alerts_of(top_up.changes) == []
    back = await grant(account_id, 2)  # 8 -> 10: at the level again
    assert alerts_of(back.changes) == [("balance.recovered", 10 * MICRO)]
    low = await OutboxEvent.get(sequence=1, account_id=account_id)
    recovered = await OutboxEvent.get(sequence=2, account_id=account_id)
    alert = await Alert.get(account_id=account_id)
    assert json.loads(recovered.data) == {
        "account": {
            "id": encode_id("CreditAccount", account_id),
            "userId": encode_id("User", user_id),
            "organizationId": None,
        },
        "level": "10",
        "previous": "8",
        "available": "10",
        "alert": {"id": encode_id("Alert", alert.id), "kind": "balance.low", "raisedEventId": low.public_id},
    }
    assert (alert.status, alert.raised_event_id, alert.resolved_event_id, alert.resolved_at) == (
        AlertStatus.RESOLVED,
        low.id,
        recovered.id,
        T0,
    )


async def test_re_crossing_raises_a_new_alert_and_depletion_fires_its_own(db: Backend) -> None:
    user_id, account_id = await new_user(credits=20)
    await set_levels(account_id, 10, 4)
    await spend(user_id, 12, "s1")  # 20 -> 8: crosses 10
    await grant(account_id, 4)  # 8 -> 12: recovers 10
    crossing = await spend(user_id, 12, "s2")  # 12 -> 0: crosses 10 and 4, and depletes
    assert alerts_of(crossing.changes) == [
        ("balance.low", 10 * MICRO),
        ("balance.low", 4 * MICRO),
        ("balance.depleted", 0),
    ]
    rising = await grant(account_id, 20)  # 0 -> 20: recovers all three, the lowest first
    assert alerts_of(rising.changes) == [
        ("balance.recovered", 0),
        ("balance.recovered", 4 * MICRO),
        ("balance.recovered", 10 * MICRO),
    ]
    assert await fired(account_id) == [
        (1, "balance.low", "10", "20", "8"),
        (2, "balance.recovered", "10", "8", "12"),
        (3, "balance.low", "10", "12", "0"),
        (4, "balance.low", "4", "12", "0"),
        (5, "balance.depleted", "0", "12", "0"),
        (6, "balance.recovered", "0", "0", "20"),
        (7, "balance.recovered", "4", "0", "20"),
        (8, "balance.recovered", "10", "0", "20"),
    ]
    assert await alert_rows(account_id) == [
        ("balance.low", 10 * MICRO, "RESOLVED"),
        ("balance.low", 10 * MICRO, "RESOLVED"),
        ("balance.low", 4 * MICRO, "RESOLVED"),
        ("balance.depleted", 0, "RESOLVED"),
    ]


async def test_holds_lower_available_and_releasing_them_recovers(db: Backend) -> None:
    user_id, account_id = await new_user(credits=20)
    await set_levels(account_id, 10)
    held = await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=15 * MICRO,
        expires_at=T0 + HOUR,
        idem=key("h1"),
        now=T0,
    )
    assert alerts_of(held.changes) == [("balance.low", 10 * MICRO)]
    released = await ledger.release_hold(held.hold_id, idem=key("r1"), now=T0)
    assert alerts_of(released.changes) == [("balance.recovered", 10 * MICRO)]
    second = await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent",
        activity="answer",
        credits=15 * MICRO,
        expires_at=T0 + HOUR,
        idem=key("h2"),
        now=T0,
    )
    captured = await ledger.capture_hold(second.hold_id, credits=2 * MICRO, idem=key("c2"), now=T0)  # 5 -> 18
    assert alerts_of(captured.changes) == [("balance.recovered", 10 * MICRO)]
    assert [(seq, kind) for seq, kind, *_ in await fired(account_id)] == [
        (1, "balance.low"),
        (2, "balance.recovered"),
        (3, "balance.low"),
        (4, "balance.recovered"),
    ]


async def test_a_timed_out_hold_and_an_expired_lot_fire_when_the_sweep_records_them(db: Backend) -> None:
    user_id, account_id = await new_user(credits=4)
    await grant(account_id, 10, expires_at=T0 + HOUR)
    await set_levels(account_id, 8)
    report = await ledger.sweep(T0 + 2 * HOUR)  # 14 -> 4
    assert alerts_of(report.changes) == [("balance.low", 8 * MICRO)]
    # The lot's credit.expired is the account's first event (lot_events), in the same transaction.
    assert await fired(account_id) == [(2, "balance.low", "8", "14", "4")]
    assert [e.type for e in await OutboxEvent.filter(account_id=account_id, sequence=1)] == ["credit.expired"]
    assert alerts_of((await ledger.sweep(T0 + 3 * HOUR)).changes) == []


async def test_a_refused_spend_and_a_replayed_key_emit_nothing(db: Backend) -> None:
    user_id, account_id = await new_user(credits=20)
    await set_levels(account_id, 10)
    first = await spend(user_id, 12, "s1")
    assert alerts_of(first.changes) == [("balance.low", 10 * MICRO)]
    before = await row_counts()
    replay = await spend(user_id, 12, "s1")
    assert (replay.replayed, replay.changes) == (True, ())
    assert await row_counts() == before
    with pytest.raises(ledger.InsufficientCreditsError):
        await spend(user_id, 50, "s2")
    after = await row_counts()
    assert {table: n - before[table] for table, n in after.items() if n != before[table]} == {
        "idempotency_records": 1  # the refusal, stored under its key; no event, no alert
    }
    assert await fired(account_id) == [(1, "balance.low", "10", "20", "8")]


async def test_the_deployment_default_applies_until_the_account_sets_its_own(db: Backend, default_level: None) -> None:
    user_id, account_id = await new_user(credits=10)
    await spend(user_id, 6, "s1")  # 10 -> 4: crosses the default 5
    assert await alerts.configure(account_id, (), T0) == ()  # none: the open alert of 5 is resolved
    await grant(account_id, 10)  # 4 -> 14: nothing to recover
    await spend(user_id, 11, "s2")  # 14 -> 3: no levels
    assert await alerts.configure(account_id, None, T0) == (5 * MICRO,)  # back to the default
    await grant(account_id, 1)  # 3 -> 4
    await spend(user_id, 1, "s3")  # below already
    await grant(account_id, 10)  # 3 -> 13: no alert was open: nothing to recover
    await spend(user_id, 9, "s4")  # 13 -> 4: crosses 5 again
    assert [(kind, level) for _, kind, level, *_ in await fired(account_id)] == [
        ("balance.low", "5"),
        ("balance.low", "5"),
    ]
    assert await alert_rows(account_id) == [
        ("balance.low", 5 * MICRO, "RESOLVED"),
        ("balance.low", 5 * MICRO, "OPEN"),
    ]
    first = await Alert.filter(account_id=account_id).order_by("id").first()
    assert first is not None
    assert first.resolved_event_id is None  # removed, not recovered: no event


async def test_removing_a_level_resolves_only_its_alert(db: Backend) -> None:
    user_id, account_id = await new_user(credits=20)
    await set_levels(account_id, 15, 10)
    await spend(user_id, 12, "s1")  # 20 -> 8: crosses both
    await set_levels(account_id, 10)
    assert await alert_rows(account_id) == [
        ("balance.low", 15 * MICRO, "RESOLVED"),
        ("balance.low", 10 * MICRO, "OPEN"),
    ]
    back = await grant(account_id, 12)  # 8 -> 20: recovers 10 only (15 is no level now)
    assert alerts_of(back.changes) == [("balance.recovered", 10 * MICRO)]


async def test_concurrent_spends_fire_exactly_the_serial_events(db: Backend) -> None:
    user_id, account_id = await new_user(credits=50)
    await set_levels(account_id, 30, 15)
    await asyncio.gather(*(spend(user_id, 1, f"s{n}") for n in range(40)))  # 50 -> 10, in some order
    events = await fired(account_id)
    assert events == [
        (1, "balance.low", "30", "30", "29"),
        (2, "balance.low", "15", "15", "14"),
    ]
    assert await alert_rows(account_id) == [("balance.low", 30 * MICRO, "OPEN"), ("balance.low", 15 * MICRO, "OPEN")]
    await asyncio.gather(*(grant(account_id, 1) for _ in range(25)))  # 10 -> 35
    assert [(seq, kind, level) for seq, kind, level, *_ in await fired(account_id)] == [
        (1, "balance.low", "30"),
        (2, "balance.low", "15"),
        (3, "balance.recovered", "15"),
        (4, "balance.recovered", "30"),
    ]


async def test_an_overdraft_spend_depletes_once_and_a_grant_that_repays_recovers(db: Backend) -> None:
    user_id, account_id = await new_user(credits=5)
    await ledger.set_overdraft(account_id, 10 * MICRO, T0)
    await spend(user_id, 7, "s1")  # 5 -> -2
    await spend(user_id, 3, "s2")  # -2 -> -5
    await grant(account_id, 4)  # -5 -> -1: still at or below zero
    await grant(account_id, 2)  # -1 -> 1
    assert await fired(account_id) == [
        (1, "balance.depleted", "0", "5", "-2"),
        (2, "balance.recovered", "0", "-1", "1"),
    ]
