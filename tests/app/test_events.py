"""The event bus on its own: routing, bounded queues, and the Redis wire format."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis

from creditline.events import (
    BALANCE,
    OUTBOX,
    OUTBOX_WRITTEN,
    QUEUE_LIMIT,
    RESYNC,
    USAGE,
    InProcessBus,
    RedisBus,
    UnreadableMessage,
    decode,
    encode,
)
from models.balance import Balance
from models.ledger import BalanceChange, UsageRecorded
from models.outbox import note_written, take_written
from tests.support.live import reachable_redis

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


async def test_a_publish_wakes_for_what_its_own_task_wrote_not_for_another_tasks_uncommitted_events() -> None:
    """Request A writes an event; before A commits, request B publishes a spend that wrote none. B's publish
    must not take A's wake (the workers would look before A's commit and then wait for the next poll): the
    wake comes with A's own publish, after its commit."""
    bus = InProcessBus()
    woken: list[str] = []
    bus.subscribe(None, OUTBOX, lambda: woken.append("worker"))
    bus.subscribe(None, BALANCE, lambda: woken.append("balance"))
    a_wrote = asyncio.Event()
    b_published = asyncio.Event()

    async def request_a() -> None:
        note_written()
        a_wrote.set()
        await b_published.wait()
        bus.publish([])  # after A's commit

    async def request_b() -> None:
        await a_wrote.wait()
        bus.publish([change(1, 1)])
        woken.append("b published")
        b_published.set()

    await asyncio.gather(asyncio.create_task(request_a()), asyncio.create_task(request_b()))

    assert woken == ["balance", "b published", "worker"]


async def test_stopping_the_bus_sends_the_wake_of_events_written_and_not_published() -> None:
    """A CLI command (a sweep renewing subscriptions, settling auto top-ups) may end with events it published
    no change of: stopping the bus sends their wake (through Redis, to the servers' workers)."""
    bus = InProcessBus()
    workers = bus.subscribe(None, OUTBOX)
    take_written()
    note_written()

    await bus.stop()

    assert workers.queue.get_nowait() == OUTBOX_WRITTEN
    assert not take_written()


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
    assert decode('["o", "what a later version adds"]') == OUTBOX_WRITTEN


async def test_the_wakes_of_commits_published_together_go_to_redis_as_one_message_after_their_changes() -> None:
    url = await reachable_redis()
    channel = f"creditline-test:wakes:{uuid.uuid4().hex}"
    listener = redis.Redis.from_url(url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    bus = RedisBus(url, channel)
    await bus.start()
    try:
        take_written()
        for version in (1, 2, 3):  # three commits in one tick, each with events: one trip to Redis
            note_written()
            bus.publish([change(1, version)])
        messages: list[str] = []
        deadline = asyncio.get_running_loop().time() + 5
        while len(messages) < 4 and asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                messages.append(message["data"].decode())
        await asyncio.sleep(0.2)  # and nothing after them
        while (message := await pubsub.get_message(timeout=0.1)) is not None:
            messages.append(message["data"].decode())
        assert messages == [encode(change(1, 1)), encode(change(1, 2)), encode(change(1, 3)), '["o"]']
    finally:
        await bus.stop()
        await pubsub.aclose()
        await listener.aclose()
