"""The event bus: committed balance changes go out to whoever listens (GraphQL subscriptions).

Publishing happens only after a ledger transaction commits. The in-process bus is the embedded default;
a subscriber with a full queue is dropped rather than allowed to grow memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from models.ledger import BalanceChange

QUEUE_LIMIT = 256


class SubscriberDropped(Exception):
    """The subscriber fell too far behind and was cut off."""


class Subscription:
    def __init__(self, bus: InProcessBus, account_ids: frozenset[int] | None) -> None:
        self._bus = bus
        self.account_ids = account_ids
        self.queue: asyncio.Queue[BalanceChange | None] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = False

    async def get(self) -> BalanceChange:
        change = await self.queue.get()
        if change is None:
            raise SubscriberDropped()
        return change

    def close(self) -> None:
        self._bus._subscribers.discard(self)


class EventBus(Protocol):
    def publish(self, changes: Iterable[BalanceChange]) -> None: ...

    def subscribe(self, account_ids: frozenset[int] | None) -> Subscription: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, changes: Iterable[BalanceChange]) -> None:
        for change in changes:
            self.deliver(change)

    def deliver(self, change: BalanceChange) -> None:
        for sub in list(self._subscribers):
            if sub.account_ids is not None and change.account_id not in sub.account_ids:
                continue
            try:
                sub.queue.put_nowait(change)
            except asyncio.QueueFull:
                self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        sub.dropped = True
        self._subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    def subscribe(self, account_ids: frozenset[int] | None) -> Subscription:
        sub = Subscription(self, account_ids)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._subscribers.clear()
