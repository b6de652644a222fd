"""Property tests: any set of lots and any sequence of spends allocate exactly as the spend order says
(docs/rules.md, Spend order)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import ledger
from models.tables import CreditAccount, CreditKind, LotSource, UsageAllocation
from tests.support.backends import T0, Backend, reset

HOUR = timedelta(hours=1)

lot_strategy = st.tuples(
    st.sampled_from([CreditKind.FREE, CreditKind.PAID]),
    st.integers(min_value=1, max_value=5_000_000),
    st.one_of(st.none(), st.integers(min_value=-48, max_value=240)),  # expiry, hours from the spend time
    st.integers(min_value=-100, max_value=0),  # granted, hours from the spend time
)


@dataclass
class ModelLot:
    """The test's own model of a lot, to predict allocations independently of the ledger code."""

    id: int
    kind: CreditKind
    left: int
    expires: datetime | None
    granted: datetime

    def live(self) -> bool:
        return self.expires is None or self.expires > T0

    def order(self) -> tuple[bool, bool, datetime, datetime, int]:
        return (self.kind != CreditKind.FREE, self.expires is None, self.expires or T0, self.granted, self.id)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lots=st.lists(lot_strategy, min_size=1, max_size=8),
    spends=st.lists(st.integers(min_value=1, max_value=8_000_000), min_size=1, max_size=6),
)
async def test_spends_follow_the_order_and_keep_the_invariant(
    db: Backend, lots: list[tuple[CreditKind, int, int | None, int]], spends: list[int]
) -> None:
    await reset(db)
    user_id = await ledger.create_user("p@example.com", signup_bonus=0, bonus_lifetime=HOUR, now=T0)
    account_id = (await CreditAccount.get(user_id=user_id)).id
    model: list[ModelLot] = []
    for kind, amount, expires_h, granted_h in lots:
        granted = T0 + granted_h * HOUR
        expires = None if expires_h is None else T0 + expires_h * HOUR
        result = await ledger.grant(
            account_id,
            credits=amount,
            kind=kind,
            source=LotSource.ADJUSTMENT,
            expires_at=expires,
            reason=None,
            idem=None,
            now=granted,
        )
        model.append(ModelLot(result.lot_id, kind, amount, expires, granted))

    for n, amount in enumerate(spends):
        live = sorted((lot for lot in model if lot.live()), key=ModelLot.order)
        available = sum(lot.left for lot in live)
        idem = ledger.IdempotencyKey.for_request("service:p", f"s{n}", "spend", {"n": n})
        if amount > available:
            with pytest.raises(ledger.InsufficientCreditsError) as refused:
                await ledger.spend(
                    ("id", account_id),
                    user_id=user_id,
                    organization_id=None,
                    agent_id="a",
                    activity="x",
                    credits=amount,
                    quantity=None,
                    idem=idem,
                    now=T0,
                )
            assert (refused.value.available, refused.value.required) == (available, amount)
            continue
        expected = []
        left = amount
        for lot in live:
            take = min(left, lot.left)
            if take:
                expected.append((lot.id, str(lot.kind), take))
                lot.left -= take
                left -= take
        spent = await ledger.spend(
            ("id", account_id),
            user_id=user_id,
            organization_id=None,
            agent_id="a",
            activity="x",
            credits=amount,
            quantity=None,
            idem=idem,
            now=T0,
        )
        rows = await UsageAllocation.filter(usage_event_id=spent.usage_event_id).order_by("id")
        assert [(r.lot_id, str(r.kind), r.amount) for r in rows] == expected
        assert spent.free_credits + spent.paid_credits == amount

    balance = (await ledger.read_balances([account_id], T0))[account_id]
    assert balance.free == sum(lot.left for lot in model if lot.live() and lot.kind == CreditKind.FREE)
    assert balance.paid == sum(lot.left for lot in model if lot.live() and lot.kind == CreditKind.PAID)
    assert await ledger.audit() == []
