"""The event bus: committed balance changes go out to whoever listens (GraphQL subscriptions).

Publishing happens only after a ledger transaction commits. The in-process bus is the embedded default;
with ``CREDITLINE_REDIS_URL`` set, changes fan out through Redis pub/sub to every server process. A
subscriber with a full queue is dropped rather than allowed to grow memory.

Delivering never waits: the bus puts the event in the subscriber's queue and calls its ``wake`` callback,
so a subscriber needs no task of its own while nothing happens (see creditline/live.py).

Besides balance changes and usage, a change of membership goes out (``MembershipChanged``), so that every
process re-checks at once the rights of the live subscriptions it affects; and a publish after a transaction
that wrote events for the platform (models/outbox.py) adds ``OutboxWritten``, which wakes the webhook delivery
workers of every process (most spends write none, and a worker woken by each of them cost 0.3 ms a spend).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from models.balance import Balance
from models.ledger import BalanceChange, Event, UsageRecorded
from models.ledger.alerts import AlertChanged
from models.outbox import take_written

log = logging.getLogger("creditline.events")

QUEUE_LIMIT = 256
UNREADABLE_LOGGED = 5
"""How many unreadable messages on the Redis channel are logged one by one (then every thousandth)."""
BALANCE = "balance"
USAGE = "usage"
MEMBERSHIP = "membership"
ALERT = "alert"
OUTBOX = "outbox"
RESYNC = "RESYNC"
"""Reason of the marker a subscriber gets when events may have been lost: it should send a fresh snapshot."""


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """A member's roles in an organization changed, or they left it: published after the change commits."""

    organization_id: int
    user_id: int


@dataclass(frozen=True, slots=True)
class OutboxWritten:
    """A transaction that wrote events for the platform committed: delivery workers look at the table. It says
    nothing else (the events are read from the table, never from the bus)."""


OUTBOX_WRITTEN = OutboxWritten()

BusEvent = Event | MembershipChanged | OutboxWritten

EVERY_MEMBERSHIP = MembershipChanged(0, 0)
"""Any membership may have changed (after a Redis reconnect): re-check the rights of every subscription."""


def route(event: BusEvent) -> tuple[str, int]:
    """The topic and key an event is delivered under: balance changes by account, usage and membership by
    organization."""
    if isinstance(event, BalanceChange):
        return BALANCE, event.account_id
    if isinstance(event, MembershipChanged):
        return MEMBERSHIP, event.organization_id
    if isinstance(event, AlertChanged):
        return ALERT, event.account_id
    if isinstance(event, OutboxWritten):
        return OUTBOX, 0
    return USAGE, event.organization_id


class EventQueue:
    """A subscriber's bounded FIFO of events: a list and nothing else, so an idle subscriber costs bytes
    (``asyncio.Queue`` holds four deques, its waiters come from whoever takes the events)."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: list[BusEvent] = []

    def put_nowait(self, event: BusEvent) -> None:
        if len(self._events) >= QUEUE_LIMIT:
            raise asyncio.QueueFull()
        self._events.append(event)

    def get_nowait(self) -> BusEvent:
        if not self._events:
            raise asyncio.QueueEmpty()
        return self._events.pop(0)  # at most QUEUE_LIMIT long: cheaper than a deque kept per subscriber

    def empty(self) -> bool:
        return not self._events

    def qsize(self) -> int:
        return len(self._events)

    def clear(self) -> None:
        self._events.clear()


class BusSubscription:
    """One subscriber's place on the bus: its events wait in ``queue``; ``wake`` is called after each one
    arrives and when the subscriber is dropped for falling behind."""

    __slots__ = ("_bus", "dropped", "keys", "queue", "topic", "wake")

    def __init__(
        self, bus: InProcessBus, topic: str, keys: frozenset[int] | None, wake: Callable[[], None] | None
    ) -> None:
        self._bus = bus
        self.topic = topic
        self.keys = keys
        self.queue = EventQueue()
        self.dropped = False
        self.wake = wake

    def put(self, event: BusEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self._bus._drop(self)
            return
        if self.wake is not None:
            self.wake()

    def close(self) -> None:
        self._bus._remove(self)


class EventBus(Protocol):
    def publish(self, events: Iterable[BusEvent]) -> None: ...

    def subscribe(
        self, keys: frozenset[int] | None, topic: str = ..., wake: Callable[[], None] | None = ...
    ) -> BusSubscription: ...

    @property
    def subscriber_count(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessBus:
    """Delivers to local subscribers, indexed by topic and key so an event reaches only its own."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], set[BusSubscription]] = {}
        self._all: dict[str, set[BusSubscription]] = {
            BALANCE: set(),
            USAGE: set(),
            MEMBERSHIP: set(),
            ALERT: set(),
            OUTBOX: set(),
        }

    def publish(self, events: Iterable[BusEvent]) -> None:
        for event in events:
            self.deliver(event)
        if take_written():
            self.deliver(OUTBOX_WRITTEN)

    def deliver(self, event: BusEvent) -> None:
        topic, key = route(event)
        for sub in (*self._by_key.get((topic, key), ()), *self._all[topic]):
            sub.put(event)

    def resync(self) -> None:
        """Tell every subscriber that events may have been missed (after a Redis reconnect)."""
        marker = BalanceChange(0, 0, 0, RESYNC, Balance(0, 0, 0), datetime.now(UTC))
        for sub in self._subscribers(BALANCE):
            sub.put(marker)
        for sub in self._subscribers(MEMBERSHIP):  # a change of membership may have been lost too
            sub.put(EVERY_MEMBERSHIP)
        alert_marker = AlertChanged(0, 0, RESYNC, "", 0, 0, 0, 0, marker.occurred_at)
        for sub in self._subscribers(ALERT):  # and alerts raised or resolved: alertRaised reads them back
            sub.put(alert_marker)
        for sub in self._subscribers(OUTBOX):  # and a wake of the delivery workers
            sub.put(OUTBOX_WRITTEN)

    def _subscribers(self, topic: str) -> list[BusSubscription]:
        subs = [sub for (t, _), group in self._by_key.items() if t == topic for sub in group]
        return subs + list(self._all[topic])

    def _remove(self, sub: BusSubscription) -> None:
        if sub.keys is None:
            self._all[sub.topic].discard(sub)
            return
        for key in sub.keys:
            group = self._by_key.get((sub.topic, key))
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._by_key[(sub.topic, key)]

    def _drop(self, sub: BusSubscription) -> None:
        sub.dropped = True
        self._remove(sub)
        sub.queue.clear()
        if sub.wake is not None:
            sub.wake()

    def subscribe(
        self, keys: frozenset[int] | None, topic: str = BALANCE, wake: Callable[[], None] | None = None
    ) -> BusSubscription:
        """Events of ``topic`` under any of ``keys`` (every key: ``None``) from now on; ``wake`` is called
        whenever one arrives."""
        sub = BusSubscription(self, topic, keys, wake)
        if keys is None:
            self._all[topic].add(sub)
        else:
            for key in keys:
                self._by_key.setdefault((topic, key), set()).add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len({sub for group in self._by_key.values() for sub in group}) + sum(map(len, self._all.values()))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.publish(())  # a wake for what this task wrote and published no change of
        self._by_key.clear()
        for subs in self._all.values():
            subs.clear()


def encode(event: BusEvent) -> str:
    if isinstance(event, OutboxWritten):
        return '["o"]'
    if isinstance(event, MembershipChanged):
        return json.dumps(["m", event.organization_id, event.user_id], separators=(",", ":"))
    if isinstance(event, AlertChanged):
        return json.dumps(["a", *_alert_fields(event), event.occurred_at.isoformat()], separators=(",", ":"))
    if isinstance(event, BalanceChange):
        b = event.balance
        body: list[Any] = ["b", event.account_id, event.version, event.delta, event.reason, b.free, b.paid, b.held]
        if b.owed or b.overdraft or event.changes != 1:  # without these, what other processes already read
            body += [b.owed, b.overdraft]
        if event.changes != 1:  # a batch's (read since batches exist)
            body.append(event.changes)
    else:
        body = [
            "u",
            event.organization_id,
            event.usage_event_id,
            event.account_id,
            event.user_id,
            event.agent_id,
            event.activity,
            event.credits,
            event.free_credits,
            event.paid_credits,
            # Only with a run: a usage event without one is sent as before, which every process reads.
            *(() if event.run_id is None else (event.run_id,)),
        ]
    return json.dumps([*body, event.occurred_at.isoformat()], separators=(",", ":"))


class UnreadableMessage(ValueError):
    """A message on the channel this version cannot read: another version's kind (a rolling deploy), or not ours."""


def decode(data: str | bytes) -> BusEvent:
    """One message of the channel; ``UnreadableMessage`` for one this version cannot read."""
    try:
        return _decode(data)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise UnreadableMessage(f"{exc.__class__.__name__}: {exc}") from None


def _decode(data: str | bytes) -> BusEvent:
    message = json.loads(data)
    if not isinstance(message, list) or not message:
        raise ValueError("not a list")
    if message[0] == "o":  # whatever a later version adds after the kind
        return OUTBOX_WRITTEN
    if message[0] == "m":
        return MembershipChanged(int(message[1]), int(message[2]))
    if message[0] == "a":
        _, account_id, alert_id, event_type, event_id, sequence, level, available, previous, resolved, at = message
        return AlertChanged(
            account_id,
            alert_id,
            event_type,
            event_id,
            sequence,
            level,
            available,
            previous,
            datetime.fromisoformat(at),
            resolved,
        )
    kind, *fields, at = message
    if kind not in ("b", "u"):
        raise ValueError(f"unknown kind {kind!r}")
    occurred_at = datetime.fromisoformat(at)
    if kind == "b":
        account_id, version, delta, reason, *balance = fields
        changes = balance.pop() if len(balance) == 6 else 1
        return BalanceChange(account_id, version, delta, reason, Balance(*balance), occurred_at, changes)
    organization_id, usage_event_id, account_id, user_id, agent_id, activity, credits, free, paid, *run = fields
    return UsageRecorded(
        organization_id,
        usage_event_id,
        account_id,
        user_id,
        agent_id,
        activity,
        credits,
        free,
        paid,
        occurred_at,
        run[0] if run else None,
    )


def _alert_fields(event: AlertChanged) -> list[Any]:
    """An alert on the wire, in ``AlertChanged``'s field order (``occurred_at`` last, as the others send it)."""
    return [
        event.account_id,
        event.alert_id,
        event.event_type,
        event.event_id,
        event.sequence,
        event.level,
        event.available,
        event.previous,
        event.resolved_kind,
    ]


class RedisBus:
    """Fans committed changes out through one Redis channel to every server process.

    Each process keeps one Redis subscription, delivered to its local subscribers. redis-py's asyncio
    pub/sub does not reconnect by itself and Redis delivers at most once, so the listener reconnects with
    back-off and then asks every local subscriber for a fresh snapshot: no final state is missed.
    """

    CHANNEL = "creditline:balance"
    UNSENT_LIMIT = 10_000

    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.local = InProcessBus()
        self._unsent: asyncio.Queue[BusEvent] = asyncio.Queue(self.UNSENT_LIMIT)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: redis.Redis | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.unreadable = 0
        """Messages skipped as unreadable (another version's kind during a rolling deploy, or not ours)."""

    def publish(self, events: Iterable[BusEvent]) -> None:
        for event in (*events, OUTBOX_WRITTEN) if take_written() else events:
            try:
                self._unsent.put_nowait(event)
            except asyncio.QueueFull:
                log.error("queue to Redis full: dropping a message (subscribers resync on reconnect)")

    def subscribe(
        self, keys: frozenset[int] | None, topic: str = BALANCE, wake: Callable[[], None] | None = None
    ) -> BusSubscription:
        return self.local.subscribe(keys, topic, wake)

    @property
    def subscriber_count(self) -> int:
        return self.local.subscriber_count

    async def start(self) -> None:
        self._client = redis.Redis.from_url(self.url, socket_connect_timeout=2, health_check_interval=10)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._send())]

    async def stop(self) -> None:
        self.publish(())  # a wake for what this task wrote and published no change of (a CLI command's)
        if self._tasks:  # give what is queued a moment to reach Redis (a CLI sweep publishes, then exits)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unsent.join(), 2.0)
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
            batch = [await self._unsent.get()]
            while not self._unsent.empty() and len(batch) < 500:  # whatever queued meanwhile goes in one trip
                batch.append(self._unsent.get_nowait())
            last_wake = max((n for n, event in enumerate(batch) if event is OUTBOX_WRITTEN), default=-1)
            messages = [event for n, event in enumerate(batch) if event is not OUTBOX_WRITTEN or n == last_wake]
            delay = 0.05
            while True:
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for event in messages:  # one wake for the batch, after its last change
                            pipe.publish(self.channel, encode(event))
                        await pipe.execute()
                    for _ in batch:
                        self._unsent.task_done()
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
                        try:
                            event = decode(message["data"])
                        except UnreadableMessage as exc:
                            # Skipped, never fatal: a listener that died here would end fan-out for good. Said
                            # for the first few and then every thousandth: a newer version beside this one
                            # (a rolling deploy) may send one with every commit.
                            self.unreadable += 1
                            if self.unreadable <= UNREADABLE_LOGGED or self.unreadable % 1000 == 0:
                                log.warning(
                                    "ignoring a message on %s this version cannot read (%s; %d so far)",
                                    self.channel,
                                    exc,
                                    self.unreadable,
                                )
                            continue
                        self.local.deliver(event)
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("Redis subscription lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
