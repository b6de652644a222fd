"""A balance feed and a batch's event (resolvers/live.py ``BalanceFeed``): one event covering several versions
follows on from the version before its first, and holds back what comes after it until it arrives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from models.balance import Balance
from models.ledger import BalanceChange
from resolvers.live import BalanceFeed

AT = datetime(2026, 1, 15, 12, tzinfo=UTC)


def _change(version: int, changes: int = 1) -> BalanceChange:
    return BalanceChange(7, version, -changes, "SPEND", Balance(100 - version, 0, 0), AT, changes=changes)


async def _sent(feed: BalanceFeed, change: BalanceChange) -> list[tuple[int, int]]:
    ctx: Any = None  # neither a resync nor a fill: no context needed
    return [(event.version, event.changes) for event in await feed.payloads(change, ctx)]


async def test_a_batchs_event_follows_on_from_the_version_before_its_first() -> None:
    feed = BalanceFeed(7)
    feed.seen = 5

    assert await _sent(feed, _change(8, changes=3)) == [(8, 3)]
    assert await _sent(feed, _change(10)) == []  # version 9 is missing: held back
    assert await _sent(feed, _change(9)) == [(9, 1), (10, 1)]
    assert await _sent(feed, _change(10)) == []  # sent already


async def test_a_batchs_event_that_comes_early_waits_for_the_versions_before_it() -> None:
    feed = BalanceFeed(7)
    feed.seen = 8

    assert await _sent(feed, _change(12, changes=2)) == []  # covers 11 and 12: 9 and 10 are missing
    assert feed.waiting
    assert await _sent(feed, _change(10, changes=2)) == [(10, 2), (12, 2)]
    assert not feed.waiting
