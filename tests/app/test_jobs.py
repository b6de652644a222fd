"""Background jobs publish what they committed; the API publishes each committed change once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from creditline.jobs import run_sweeper, sweep_once
from creditline.services import Services
from models.balance import Balance
from models.credits import MICRO
from models.ledger import BalanceChange
from models.tables import Alert, AlertStatus, LedgerEntry, OutboxEvent
from tests.support.helpers import SPEND, Api, gid


async def test_sweep_publishes_expiry_after_commit(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=3, bonus_days=1)
    services: Services = api.app.state.services
    subscription = services.bus.subscribe(None)
    try:
        api.clock.advance(timedelta(days=1))
        report = await sweep_once(services)

        assert (report.expired_lots, report.released_holds) == (1, 0)
        change = subscription.queue.get_nowait()
        assert isinstance(change, BalanceChange)
        assert (change.delta, change.reason, change.balance, change.version) == (
            -3 * MICRO,
            "EXPIRE",
            Balance(0, 0, 0),
            2,
        )
        assert subscription.queue.empty()
    finally:
        subscription.close()
    assert [e.entry_type for e in await LedgerEntry.all().order_by("id")] == ["GRANT", "EXPIRE"]


async def test_server_sweeper_runs_on_its_interval(api: Api) -> None:
    await api.user("ada@example.com", bonus=3, bonus_days=1)
    api.clock.advance(timedelta(days=2))
    services: Services = api.app.state.services
    task = asyncio.create_task(run_sweeper(services))
    try:
        for _ in range(100):
            if await LedgerEntry.filter(entry_type="EXPIRE").exists():
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert await LedgerEntry.filter(entry_type="EXPIRE").count() == 1


async def test_a_spend_publishes_one_change_and_its_replay_none(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    services: Services = api.app.state.services
    subscription = services.bus.subscribe(frozenset({1}))
    variables = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "2",
            "idempotencyKey": "once",
        }
    }
    try:
        await api.data(SPEND, variables, service)
        await api.data(SPEND, variables, service)
        change = subscription.queue.get_nowait()
        assert isinstance(change, BalanceChange)
        assert (change.account_id, change.delta, change.reason, change.version) == (1, -2 * MICRO, "SPEND", 2)
        assert change.balance == Balance(8 * MICRO, 0, 0)
        assert subscription.queue.empty()
    finally:
        subscription.close()


BATCH = """mutation($input: SpendCreditsBatchInput!) { spendCreditsBatch(input: $input) { __typename } }"""


async def test_a_batch_publishes_one_change_per_account_after_commit_and_its_replay_none(api: Api) -> None:
    ada, _ = await api.user("ada@example.com", bonus=10)
    bob, _ = await api.user("bob@example.com", bonus=10)
    service = await api.service()
    services: Services = api.app.state.services
    subscription = services.bus.subscribe(frozenset({1, 2}))

    def event(user_id: int, credits: str, key: str) -> dict[str, str]:
        return {"userId": gid("User", user_id), "agentId": "a", "activity": "answer", "credits": credits,
                "idempotencyKey": key}  # fmt: skip

    events = [event(ada, "1", "a1"), event(bob, "2", "b1"), event(ada, "20", "a2"), event(ada, "3", "a3")]
    try:
        await api.data(BATCH, {"input": {"events": events}}, service)
        await api.data(BATCH, {"input": {"events": events}}, service)
        published = []
        while not subscription.queue.empty():
            published.append(subscription.queue.get_nowait())
        # Ada's two spends (the refused one changes nothing) in one event: version 1 (the bonus) + 2.
        assert published == [
            BalanceChange(1, 3, -4 * MICRO, "SPEND", Balance(6 * MICRO, 0, 0), api.clock.now(), changes=2),
            BalanceChange(2, 2, -2 * MICRO, "SPEND", Balance(8 * MICRO, 0, 0), api.clock.now(), changes=1),
        ]
        assert [e.version for e in await LedgerEntry.filter(account_id=1).order_by("version")] == [1, 2, 3]
    finally:
        subscription.close()


async def test_the_sweep_raises_runs_out_soon_at_the_settings_days_once(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    services: Services = api.app.state.services
    assert services.settings.runs_out_soon_days == 3

    async def spend(credits: str, key: str) -> None:
        variables = {
            "input": {"userId": gid("User", user_id), "agentId": "a", "activity": "answer", "credits": credits}
        }
        variables["input"]["idempotencyKey"] = key
        assert (await api.data(SPEND, variables, service))["spendCredits"]["__typename"] == "SpendCreditsSuccess"

    await spend("1", "first")
    api.clock.advance(timedelta(days=1))
    await sweep_once(services)  # 1 a day, 9 left: 9 days
    assert await OutboxEvent.all().count() == 0
    await spend("5", "second")  # 6 a day, 4 left: 16 hours
    await sweep_once(services)
    await sweep_once(services)
    assert [(e.type, e.account_id, e.sequence) for e in await OutboxEvent.all()] == [("balance.runs_out_soon", 1, 1)]
    assert [(a.kind, a.status) for a in await Alert.all()] == [("balance.runs_out_soon", AlertStatus.OPEN)]
