"""The event bus: committed balance changes go out to whoever listens (GraphQL subscriptions).

Publishing happens only after a ledger transaction commits. The in-process bus is the embedded default;
with ``CREDITLINE_REDIS_URL`` set, changes fan out through Redis pub/sub to every server process. A
subscriber with a full queue is dropped rather than allowed to grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from models.balance import Balance
from models.ledger import BalanceChange

log = logging.getLogger("creditline.events")

QUEUE_LIMIT = 256
RESYNC = "RESYNC"
"""Reason of the marker a subscriber gets when events may have been lost: it should send a fresh snapshot."""


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

    @property
    def subscriber_count(self) -> int: ...

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

    def resync(self) -> None:
        """Tell every subscriber that events may have been missed (after a Redis reconnect)."""
        marker = BalanceChange(0, 0, 0, RESYNC, Balance(0, 0, 0), datetime.now(UTC))
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(marker)
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


def encode(change: BalanceChange) -> str:
    b = change.balance
    return json.dumps(
        [
            change.account_id,
            change.version,
            change.delta,
            change.reason,
            b.free,
            b.paid,
            b.held,
            change.occurred_at.isoformat(),
        ],
        separators=(",", ":"),
    )


def decode(data: str | bytes) -> BalanceChange:
    account_id, version, delta, reason, free, paid, held, at = json.loads(data)
    return BalanceChange(account_id, version, delta, reason, Balance(free, paid, held), datetime.fromisoformat(at))


class RedisBus:
    """Fans committed changes out through one Redis channel to every server process.

    Each process keeps one Redis subscription, delivered to its local subscribers. redis-py's asyncio
    pub/sub does not reconnect by itself and Redis delivers at most once, so the listener reconnects with
    back-off and then asks every local subscriber for a fresh snapshot: no final state is missed.
    """

    CHANNEL = "creditline:balance"
    OUTBOX_LIMIT = 10_000

    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.local = InProcessBus()
        self._outbox: asyncio.Queue[BalanceChange] = asyncio.Queue(self.OUTBOX_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: redis.Redis | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    def publish(self, changes: Iterable[BalanceChange]) -> None:
        for change in changes:
            try:
                self._outbox.put_nowait(change)
            except asyncio.QueueFull:
                log.error("event outbox full: dropping a balance event (subscribers resync on reconnect)")

    def subscribe(self, account_ids: frozenset[int] | None) -> Subscription:
        return self.local.subscribe(account_ids)

    @property
    def subscriber_count(self) -> int:
        return self.local.subscriber_count

    async def start(self) -> None:
        self._client = redis.Redis.from_url(self.url, socket_connect_timeout=2, health_check_interval=10)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._send())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
        await self.local.stop()

    async def _send(self) -> None:
        assert self._client is not None
        while True:
            change = await self._outbox.get()
            delay = 0.05
            while True:
                try:
                    await self._client.publish(self.channel, encode(change))
                    break
                except (RedisError, OSError) as exc:
                    log.warning("publishing to Redis failed (%s); retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

    async def _listen(self) -> None:
        assert self._client is not None
        delay = 0.05
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected.set()
                if not first:
                    self.reconnects += 1
                    self.local.resync()
                first = False
                delay = 0.05
                while True:
                    message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.local.deliver(decode(message["data"]))
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("Redis subscription lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
