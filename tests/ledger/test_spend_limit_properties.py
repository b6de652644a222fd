"""Property test: random interleavings of spends, holds, captures and releases against random sets of limits,
with the clock moving across window boundaries, are decided exactly as a serial model of the usage contract
decides them (docs/rules.md, "Spend limits"); no BLOCK limit is ever exceeded; the audit holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tortoise.transactions import in_transaction

from models import ledger, limits
from models.credits import MICRO
from models.ledger import limits as enforcing
from models.ledger.locking import lock_account
from models.limit_rules import LimitSpec, LimitView, period
from models.sql import Sql
from models.tables import CreditAccount, CreditKind, LimitAction, LimitScope, LimitWindow, LotSource
from tests.support.backends import T0, Backend, reset

START = T0.replace(hour=22, minute=30)  # the first day ends 90 minutes in, in UTC
AGENTS = ("a", "b")

# The limits an example picks from: (scope, agent, window, length, time zone).
CANDIDATES = [
    (LimitScope.ACCOUNT, None, LimitWindow.DAY, 1, "UTC"),
    (LimitScope.ACCOUNT, None, LimitWindow.ROLLING_HOURS, 2, "UTC"),
    (LimitScope.MEMBER, None, LimitWindow.WEEK, 1, "Asia/Tokyo"),
    (LimitScope.AGENT, "a", LimitWindow.DAY, 1, "America/New_York"),
    (LimitScope.AGENT, "a", LimitWindow.TOTAL, 1, "UTC"),
    (LimitScope.AGENT, "b", LimitWindow.ROLLING_HOURS, 1, "UTC"),
]

limit_sets = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=len(CANDIDATES) - 1),
        st.integers(min_value=1, max_value=12),  # amount, credits
        st.sampled_from([LimitAction.BLOCK, LimitAction.BLOCK, LimitAction.NOTIFY]),
        st.one_of(st.none(), st.integers(min_value=50, max_value=100)),  # warn percent
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda t: t[0],
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("spend"), st.sampled_from(AGENTS), st.integers(min_value=1, max_value=6)),
        st.tuples(st.just("hold"), st.sampled_from(AGENTS), st.integers(min_value=1, max_value=6)),
        st.tuples(st.just("capture"), st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=6)),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=5), st.just(0)),
        st.tuples(st.just("wait"), st.just(""), st.sampled_from([1, 20, 45, 61, 120, 600])),  # minutes
    ),
    min_size=1,
    max_size=14,
)


@dataclass
class ModelHold:
    hold_id: int
    agent: str
    amount: int
    expires: datetime
    active: bool = True

    def live(self, now: datetime) -> bool:
        return self.active and self.expires > now


@dataclass
class Model:
    """The usage contract, applied serially: spends are kept with their instant, holds with their timeout."""

    limits: list[LimitView]
    spends: list[tuple[datetime, str, int]] = field(default_factory=list)
    holds: list[ModelHold] = field(default_factory=list)

    def _applies(self, lim: LimitView, agent: str) -> bool:
        return lim.scope is not LimitScope.AGENT or lim.agent_id == agent

    def spent(self, lim: LimitView, now: datetime) -> int:
        p = period(lim.window, lim.window_length, lim.time_zone, now)
        return sum(
            amount
            for at, agent, amount in self.spends
            if self._applies(lim, agent)
            and p.since <= period(lim.window, lim.window_length, lim.time_zone, at).bucket <= p.bucket
        )

    def held(self, lim: LimitView, now: datetime) -> int:
        return sum(h.amount for h in self.holds if h.live(now) and self._applies(lim, h.agent))

    def refusal(self, agent: str, credits: int, now: datetime) -> tuple[int, int, int] | None:
        """The (limit id, spent, held) of the first BLOCK limit the operation would pass, in the ledger's order."""
        order = {LimitScope.ACCOUNT: 0, LimitScope.MEMBER: 1, LimitScope.AGENT: 2}
        for lim in sorted(self.limits, key=lambda v: (order[v.scope], v.id)):
            if lim.action is LimitAction.BLOCK and self._applies(lim, agent):
                spent, held = self.spent(lim, now), self.held(lim, now)
                if spent + held + credits > lim.amount:
                    return lim.id, spent, held
        return None


def _key(n: int, what: str) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request("service:p", f"{what}-{n}", what, {"n": n})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=limit_sets, ops=operations)
async def test_interleavings_are_decided_as_the_serial_model_decides_them(
    db: Backend, chosen: list[tuple[int, int, LimitAction, int | None]], ops: list[tuple[str, object, int]]
) -> None:
    await reset(db)
    user_id = await ledger.create_user("p@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=START)
    account_id = int((await CreditAccount.get(user_id=user_id)).id)
    await ledger.grant(
        account_id,
        credits=1000 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=START,
    )
    views = []
    for index, amount, action, warn in chosen:
        scope, agent, window, length, zone = CANDIDATES[index]
        spec = LimitSpec(
            scope,
            amount * MICRO,
            window,
            length,
            zone,
            action=action,
            warn_percent=warn,
            user_id=user_id if scope is LimitScope.MEMBER else None,
            agent_id=agent,
        )
        views.append((await limits.set_limit(account_id, spec, START))[0])
    model = Model(views)
    now = START
    for n, (what, arg, size) in enumerate(ops):
        if what == "wait":
            now += timedelta(minutes=size)
            continue
        if what in ("spend", "hold"):
            agent, credits = str(arg), size * MICRO
            expected = model.refusal(agent, credits, now)
            refused: ledger.SpendLimitExceededError | None = None
            try:
                if what == "spend":
                    await ledger.spend(
                        ("id", account_id),
                        user_id=user_id,
                        organization_id=None,
                        agent_id=agent,
                        activity="x",
                        credits=credits,
                        quantity=None,
                        idem=_key(n, what),
                        now=now,
                    )
                    model.spends.append((now, agent, credits))
                else:
                    placed = await ledger.hold(
                        ("id", account_id),
                        user_id=user_id,
                        organization_id=None,
                        agent_id=agent,
                        activity="x",
                        credits=credits,
                        expires_at=now + timedelta(minutes=90),
                        idem=_key(n, what),
                        now=now,
                    )
                    model.holds.append(ModelHold(placed.hold_id, agent, credits, now + timedelta(minutes=90)))
            except ledger.SpendLimitExceededError as exc:
                refused = exc
            if refused is not None:
                assert expected is not None, f"refused, the model would not: {refused.limit}"
                assert (refused.limit.id, refused.spent, refused.held, refused.required) == (*expected, credits)
            else:
                assert expected is None, f"{what} of {credits} by {agent} at {now} passed a limit: {expected}"
        elif live := [h for h in model.holds if h.live(now)]:
            target = live[int(str(arg)) % len(live)]
            if what == "capture":
                amount = min(size * MICRO, target.amount)
                await ledger.capture_hold(target.hold_id, credits=amount, idem=_key(n, what), now=now)
                if amount:
                    model.spends.append((now, target.agent, amount))
            else:
                await ledger.release_hold(target.hold_id, idem=_key(n, what), now=now)
            target.active = False
        # No BLOCK limit is ever past its amount, whatever happened.
        for lim in views:
            if lim.action is LimitAction.BLOCK:
                assert model.spent(lim, now) + model.held(lim, now) <= lim.amount

    # What the ledger reads for each limit (one statement, with the lock) is what the model says.
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await lock_account(sql, account_id)
        standing = await enforcing.standing(sql, account, enforcing.Who(user_id, "a", None, None), now)
        standing_b = await enforcing.standing(sql, account, enforcing.Who(user_id, "b", None, None), now)
    read = {s.limit.id: (s.spent, s.held) for s in (*standing, *standing_b)}
    assert read == {lim.id: (model.spent(lim, now), model.held(lim, now)) for lim in views}
    assert await ledger.audit() == []
