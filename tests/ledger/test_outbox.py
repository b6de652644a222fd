"""The outbox (models/outbox.py): an event is written in its change's transaction, an account's events are
numbered 1, 2, 3... under its lock, a rolled-back change leaves no event, and pruning keeps each account's
newest so the numbering never starts again. On both databases."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from tortoise.transactions import in_transaction

from models import ledger
from models.ledger.locking import lock_account
from models.outbox import EventType, emit, prune
from models.sql import Sql
from models.tables import CreditAccount, OutboxEvent
from tests.support.backends import T0, Backend


async def new_account(email: str) -> int:
    user_id = await ledger.create_user(email, signup_bonus=0, bonus_lifetime=timedelta(days=30), now=T0)
    return int((await CreditAccount.get(user_id=user_id)).id)


async def events(**where: object) -> list[OutboxEvent]:
    return await OutboxEvent.filter(**where).order_by("id")


async def emit_locked(account_id: int, n: int, when: timedelta = timedelta(0)) -> None:
    async with in_transaction() as conn:
        sql = Sql(conn)
        await lock_account(sql, account_id)
        await emit(sql, EventType.BALANCE_LOW, {"n": n}, T0 + when, account_id=account_id)


async def test_an_accounts_events_are_numbered_from_one_in_the_order_they_commit(db: Backend) -> None:
    first, second = await new_account("a@example.com"), await new_account("b@example.com")
    await asyncio.gather(*(emit_locked(first, n) for n in range(12)), *(emit_locked(second, n) for n in range(5)))
    rows = await events(account_id=first)
    assert [row.sequence for row in rows] == list(range(1, 13))
    assert {row.type for row in rows} == {"balance.low"}
    assert sorted(json.loads(row.data)["n"] for row in rows) == list(range(12))
    assert [row.sequence for row in await events(account_id=second)] == [1, 2, 3, 4, 5]
    ids = [row.public_id for row in await events()]
    assert len(set(ids)) == 17
    assert all(len(public_id) == 36 and public_id.startswith("evt_") for public_id in ids)


async def test_a_rolled_back_change_leaves_no_event_and_takes_no_number(db: Backend) -> None:
    account_id = await new_account("a@example.com")

    async def fails_after_emitting() -> None:
        async with in_transaction() as conn:
            sql = Sql(conn)
            await lock_account(sql, account_id)
            await emit(sql, EventType.BALANCE_LOW, {}, T0, account_id=account_id)
            raise RuntimeError("the change fails after the event was written")

    with pytest.raises(RuntimeError):
        await fails_after_emitting()
    assert await OutboxEvent.all().count() == 0
    await emit_locked(account_id, 1)
    assert [row.sequence for row in await events()] == [1]


async def test_a_deployment_event_has_no_account_and_no_number(db: Backend) -> None:
    async with in_transaction() as conn:
        event = await emit(Sql(conn), EventType.WEBHOOK_ENDPOINT_DISABLED, {"endpoint": "x"}, T0, account_id=None)
    assert (event.account_id, event.sequence, event.type) == (None, None, EventType.WEBHOOK_ENDPOINT_DISABLED)
    row = await OutboxEvent.get(id=event.id)
    assert (row.public_id, row.account_id, row.sequence, json.loads(row.data)) == (
        event.public_id,
        None,
        None,
        {"endpoint": "x"},
    )


async def test_pruning_keeps_each_accounts_newest_event_so_numbering_goes_on(db: Backend) -> None:
    account_id = await new_account("a@example.com")
    for n in range(3):
        await emit_locked(account_id, n)
    async with in_transaction() as conn:
        await emit(Sql(conn), EventType.WEBHOOK_ENDPOINT_DISABLED, {}, T0, account_id=None)
    async with in_transaction() as conn:
        deleted = await prune(Sql(conn), T0 + timedelta(days=1))
    assert deleted == 3  # two of the account's three, and the deployment's one
    assert [row.sequence for row in await events()] == [3]
    await emit_locked(account_id, 3, timedelta(days=2))
    assert [row.sequence for row in await events()] == [3, 4]
