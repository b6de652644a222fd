"""The event bus on its own: routing, bounded queues, and the Redis wire format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from creditline.events import BALANCE, QUEUE_LIMIT, USAGE, InProcessBus, SubscriberDropped, decode, encode
from models.balance import Balance
from models.ledger import BalanceChange, UsageRecorded

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def change(account_id: int, version: int) -> BalanceChange:
    return BalanceChange(account_id, version, -1, "SPEND", Balance(5, 2, 1), AT)


async def test_events_reach_only_the_subscribers_of_their_key_and_topic() -> None:
    bus = InProcessBus()
    mine = bus.subscribe(frozenset({1}), BALANCE)
    other = bus.subscribe(frozenset({2}), BALANCE)
    usage = bus.subscribe(frozenset({1}), USAGE)
    recorded = UsageRecorded(1, 10, 1, 7, "agent", "answer", 3, 2, 1, AT)

    bus.publish([change(1, 1), recorded, change(2, 1)])

    assert [await mine.get()] == [change(1, 1)]
    assert [await other.get()] == [change(2, 1)]
    assert [await usage.get()] == [recorded]
    assert mine.queue.empty()
    assert usage.queue.empty()
    for sub in (mine, other, usage):
        sub.close()
    assert bus.subscriber_count == 0


async def test_a_subscriber_that_falls_behind_is_dropped_not_grown() -> None:
    bus = InProcessBus()
    slow = bus.subscribe(frozenset({1}))
    bus.publish(change(1, n) for n in range(QUEUE_LIMIT + 1))

    assert slow.dropped
    assert bus.subscriber_count == 0
    assert slow.queue.qsize() == 1
    with pytest.raises(SubscriberDropped):
        await slow.get()


def test_wire_format_round_trips_both_kinds() -> None:
    recorded = UsageRecorded(3, 10, 1, 7, "agent", "web_search", 3_000_000, 2_000_000, 1_000_000, AT)
    for event in (change(4, 9), recorded):
        assert decode(encode(event)) == event
