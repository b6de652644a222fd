"""The event bus on its own: routing, bounded queues, and the Redis wire format."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from creditline.events import (
    BALANCE,
    OUTBOX,
    OUTBOX_WRITTEN,
    QUEUE_LIMIT,
    RESYNC,
    USAGE,
    InProcessBus,
    UnreadableMessage,
    decode,
    encode,
)
from models.balance import Balance
from models.ledger import BalanceChange, UsageRecorded
from models.outbox import note_written, take_written

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def change(account_id: int, version: int) -> BalanceChange:
    return BalanceChange(account_id, version, -1, "SPEND", Balance(5, 2, 1), AT)


async def test_events_reach_only_the_subscribers_of_their_key_and_topic() -> None:
    bus = InProcessBus()
    woken: list[str] = []
    mine = bus.subscribe(frozenset({1}), BALANCE, lambda: woken.append("mine"))
    other = bus.subscribe(frozenset({2}), BALANCE, lambda: woken.append("other"))
    usage = bus.subscribe(frozenset({1}), USAGE, lambda: woken.append("usage"))
    recorded = UsageRecorded(1, 10, 1, 7, "agent", "answer", 3, 2, 1, AT)

    bus.publish([change(1, 1), recorded, change(2, 1)])

    assert woken == ["mine", "usage", "other"]  # each told once per event it got, as it arrived
    assert [mine.queue.get_nowait()] == [change(1, 1)]
    assert [other.queue.get_nowait()] == [change(2, 1)]
    assert [usage.queue.get_nowait()] == [recorded]
    assert mine.queue.empty()
    assert usage.queue.empty()
    for sub in (mine, other, usage):
        sub.close()
    assert bus.subscriber_count == 0


async def test_a_subscriber_that_falls_behind_is_dropped_not_grown() -> None:
    bus = InProcessBus()
    woken: list[tuple[bool, int]] = []
    slow = bus.subscribe(frozenset({1}), BALANCE, lambda: woken.append((slow.dropped, slow.queue.qsize())))
    bus.publish(change(1, n) for n in range(QUEUE_LIMIT))
    assert not slow.dropped
    assert slow.queue.qsize() == QUEUE_LIMIT

    bus.publish([change(1, QUEUE_LIMIT)])

    assert slow.dropped
    assert bus.subscriber_count == 0
    assert slow.queue.empty()  # what it held is let go at once
    assert woken[-1] == (True, 0)  # and its owner is told, to close the connection
    bus.publish([change(1, QUEUE_LIMIT + 1)])
    assert slow.queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        slow.queue.get_nowait()


async def test_resync_marks_every_balance_subscriber_and_no_usage_one() -> None:
    bus = InProcessBus()
    keyed = bus.subscribe(frozenset({1}), BALANCE)
    everything = bus.subscribe(None, BALANCE)
    usage = bus.subscribe(frozenset({1}), USAGE)

    bus.resync()

    for sub in (keyed, everything):
        marker = sub.queue.get_nowait()
        assert isinstance(marker, BalanceChange)
        assert marker.reason == RESYNC
    assert usage.queue.empty()


def test_wire_format_round_trips_both_kinds() -> None:
    recorded = UsageRecorded(3, 10, 1, 7, "agent", "web_search", 3_000_000, 2_000_000, 1_000_000, AT)
    for event in (change(4, 9), recorded):
        assert decode(encode(event)) == event


def test_a_usage_events_run_crosses_the_wire_and_one_without_a_run_is_sent_as_before() -> None:
    with_run = UsageRecorded(3, 10, 1, 7, "agent", "answer", 3, 2, 1, AT, "run-1")
    without = UsageRecorded(3, 11, 1, 7, "agent", "answer", 3, 2, 1, AT)

    assert decode(encode(with_run)) == with_run
    assert decode(encode(without)) == without
    assert json.loads(encode(without)) == ["u", 3, 11, 1, 7, "agent", "answer", 3, 2, 1, AT.isoformat()]
    assert json.loads(encode(with_run))[-2:] == ["run-1", AT.isoformat()]


@pytest.mark.parametrize(
    "message",
    ["not json", "[]", "{}", "7", '["z", 1, "2026-01-15T12:00:00+00:00"]', '["b", 1]', '["m"]', '["u", "x"]'],
)
def test_a_message_this_version_cannot_read_is_one_typed_error(message: str) -> None:
    with pytest.raises(UnreadableMessage):
        decode(message)


def test_a_batchs_balance_event_carries_how_many_changes_it_covers_and_others_read_as_before() -> None:
    at = datetime(2026, 1, 15, 12, tzinfo=UTC)
    batch = BalanceChange(1, 12, -5_000_000, "SPEND", Balance(3, 4, 0), at, changes=5)
    single = BalanceChange(1, 13, -1, "SPEND", Balance(3, 3, 0), at)

    assert decode(encode(batch)) == batch
    assert decode(encode(single)) == single
    # One change: the message of before batches existed, which every process of a rolling deploy reads.
    assert json.loads(encode(single)) == ["b", 1, 13, -1, "SPEND", 3, 3, 0, at.isoformat()]
    assert json.loads(encode(batch)) == ["b", 1, 12, -5_000_000, "SPEND", 3, 4, 0, 0, 0, 5, at.isoformat()]


async def test_a_publish_after_events_were_written_wakes_the_outbox_subscribers_once() -> None:
    bus = InProcessBus()
    woken: list[str] = []
    workers = bus.subscribe(None, OUTBOX, lambda: woken.append("worker"))
    balances = bus.subscribe(None, BALANCE, lambda: woken.append("balance"))
    take_written()  # what an earlier test sharing this context may have left

    bus.publish([change(1, 1)])  # a spend that wrote no event
    assert woken == ["balance"]
    note_written()  # as every statement inserting an event does
    bus.publish([change(1, 2)])
    assert woken == ["balance", "balance", "worker"]  # after the balance it came with
    bus.publish([change(1, 3)])  # told once: the next commit wrote none
    note_written()
    bus.publish([])  # a commit that wrote events and moved no balance (a failed payment)
    assert woken == ["balance", "balance", "worker", "balance", "worker"]
    assert [workers.queue.get_nowait(), workers.queue.get_nowait()] == [OUTBOX_WRITTEN, OUTBOX_WRITTEN]
    assert workers.queue.empty()
    assert [balances.queue.get_nowait() for _ in range(3)] == [change(1, 1), change(1, 2), change(1, 3)]


async def test_events_written_by_another_task_do_not_wake_for_this_ones_publish() -> None:
    """The mark is the task's: a request whose transaction has not committed yet must not have its wake taken
    by another request's publish (its events would then wait for the next poll)."""

    async def writes() -> None:
        note_written()

    take_written()
    await asyncio.create_task(writes())
    assert not take_written()  # the other task's mark stayed in its own context
    note_written()
    assert take_written()
    assert not take_written()  # taken by the first publish


async def test_resync_wakes_the_outbox_subscribers_too() -> None:
    """After a Redis reconnect a commit's wake may have been lost: the workers look at the table."""
    bus = InProcessBus()
    workers = bus.subscribe(None, OUTBOX)

    bus.resync()

    assert workers.queue.get_nowait() == OUTBOX_WRITTEN
    assert workers.queue.empty()


def test_the_outbox_wake_crosses_the_wire_as_one_short_message() -> None:
    assert encode(OUTBOX_WRITTEN) == '["o"]'
    assert decode(encode(OUTBOX_WRITTEN)) == OUTBOX_WRITTEN
