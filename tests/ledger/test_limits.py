"""Setting and removing spend limits (models/limits.py) on both databases: one limit per subject, kind and
window; the account's count of limits, read by spends with the lock, follows every change."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from models import ledger, limits
from models.credits import MICRO
from models.limit_rules import LimitSpec
from models.tables import CreditAccount, LimitAction, LimitScope, LimitWindow, SpendLimit
from tests.support.backends import T0, Backend


async def _account() -> int:
    user_id = await ledger.create_user(
        "ada@example.com", signup_bonus=5 * MICRO, bonus_lifetime=timedelta(days=30), now=T0
    )
    account = await CreditAccount.get(user_id=user_id)
    return int(account.id)


async def test_setting_a_limit_again_replaces_it_and_the_count_follows(db: Backend) -> None:
    account_id = await _account()
    daily = LimitSpec(LimitScope.AGENT, 20 * MICRO, LimitWindow.DAY, agent_id="bot", warn_percent=80)
    first, created = await limits.set_limit(account_id, daily, T0)
    assert created
    assert (first.subject, first.amount, first.warn_percent) == ("agent:bot", 20 * MICRO, 80)
    again, created = await limits.set_limit(
        account_id,
        LimitSpec(LimitScope.AGENT, 30 * MICRO, LimitWindow.DAY, agent_id="bot"),
        T0 + timedelta(hours=1),
    )
    assert not created
    assert again.id == first.id
    assert (again.amount, again.action, again.warn_percent) == (30 * MICRO, LimitAction.BLOCK, None)
    hourly, created = await limits.set_limit(
        account_id, LimitSpec(LimitScope.AGENT, MICRO, LimitWindow.ROLLING_HOURS, 3, agent_id="bot"), T0
    )
    assert created
    assert hourly.id != first.id
    assert (await CreditAccount.get(id=account_id)).spend_limits == 2
    assert await limits.remove_limit(first.id) == again
    assert await limits.remove_limit(first.id) is None
    assert (await CreditAccount.get(id=account_id)).spend_limits == 1
    assert await SpendLimit.filter(account_id=account_id).count() == 1


async def test_concurrent_sets_of_one_limit_make_one(db: Backend) -> None:
    account_id = await _account()
    spec = LimitSpec(LimitScope.ACCOUNT, 5 * MICRO, LimitWindow.MONTH, time_zone="Europe/Paris")
    made = await asyncio.gather(*(limits.set_limit(account_id, spec, T0) for _ in range(6)))
    assert len({view.id for view, _ in made}) == 1
    assert [created for _, created in made].count(True) == 1
    assert (await CreditAccount.get(id=account_id)).spend_limits == 1
