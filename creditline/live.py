"""Live subscriptions between events: an idle subscription is a few small objects, not a task.

Strawberry runs a graphql-transport-ws subscription as a task that keeps its whole execution alive (the
operation's extensions, graphql-core's executor, a chain of async generators) for as long as it lasts.
Here a subscription resolver runs that way only until it has sent what comes first (the balance SNAPSHOT)
and hands the rest over to its ``LiveOperation`` (see resolvers/subscriptions.py ``follow``). From then
on the operation holds its bus subscription and a ``Feed`` (what turns an event into a payload) and no
task: when events arrive, a short task renders each one by executing the operation with the payload as
its root value, sends it, and ends once none are left.

A token re-check is one application-wide task (``TokenWatch``), not a timer per subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from graphql import GraphQLError
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message
from strawberry.types.graphql import OperationType

from creditline.events import EventBus, Subscription
from models.ledger import Event
from models.tokens import digest, unrevoked
from resolvers.errors import ForbiddenError

if TYPE_CHECKING:
    from resolvers.context import Context

log = logging.getLogger("creditline.live")

T_co = TypeVar("T_co", covariant=True)

SLOW_SUBSCRIBER_CLOSE_CODE = 4413
"""Close code for a subscriber that fell so far behind that its queue filled up."""
SLOW_SUBSCRIBER_REASON = "Subscriber too slow: events dropped"
REVOKED = "The token of this subscription was revoked"


class Feed(Protocol[T_co]):
    """What a subscription follows on the bus, and what it sends for each event."""

    @property
    def topic(self) -> str: ...

    @property
    def keys(self) -> frozenset[int]: ...

    async def first(self, ctx: Context) -> T_co | None:
        """What is sent as soon as the subscription starts (``None``: nothing)."""

    async def payload(self, event: Event, ctx: Context) -> T_co | None:
        """The root value to send for ``event`` (``None``: skip it); a ``GraphQLError`` ends the subscription."""


class Connection(Protocol):
    """What a live operation needs from the websocket it belongs to (creditline/graphql.py)."""

    context: Context
    schema: BaseSchema

    @property
    def token_watch(self) -> TokenWatch: ...

    async def close(self, code: int, reason: str) -> None: ...

    def forget_live(self, operation_id: str) -> None: ...

    async def report(self, error: Exception) -> None: ...


class LiveOperation:
    """One websocket operation; once a subscription has handed over, it is delivered from here."""

    __slots__ = ("_draining", "connection", "failure", "feed", "handed_over", "operation", "parked", "subscription")

    def __init__(self, connection: Connection, operation: Operation[Context, None]) -> None:
        self.connection = connection
        self.operation = operation
        self.feed: Feed[Any] | None = None
        self.subscription: Subscription | None = None
        self.handed_over = False
        """Set by the resolver once its first payload went out: the rest is ours to deliver."""
        self.parked = False
        """Set by the connection once the resolver's stream has ended: from now on ``wake`` sends."""
        self.failure: GraphQLError | None = None
        self._draining: asyncio.Task[None] | None = None

    def follow(self, feed: Feed[Any], bus: EventBus) -> None:
        """Subscribe on the bus now; events wait in the queue until the operation is parked."""
        self.feed = feed
        self.subscription = bus.subscribe(feed.keys, feed.topic, self.wake)

    def park(self) -> None:
        self.parked = True
        self.wake()

    def wake(self) -> None:
        """Called by the bus for each event: send what waits, in a task of its own while there is any."""
        if not self.parked or self._draining is not None or self.subscription is None:
            return
        if self.failure is None and not self.subscription.dropped and self.subscription.queue.empty():
            return
        task = asyncio.create_task(self._drain())
        self._draining = task
        self.operation.task = task  # so that completing the operation or closing the websocket cancels it

    def fail(self, error: GraphQLError) -> None:
        """End the subscription with ``error`` (after what is being sent right now)."""
        self.failure = error
        self.wake()

    def close(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
        if self.parked:
            self.connection.token_watch.discard(self)
        self.parked = False

    @property
    def token_hash(self) -> str:
        token = self.connection.context.token
        assert token is not None  # a websocket gets an operation only after connection_init was accepted
        return digest(token)

    async def _drain(self) -> None:
        assert self.subscription is not None
        assert self.feed is not None
        connection, operation, subscription = self.connection, self.operation, self.subscription
        try:
            while True:
                if self.failure is not None:
                    await self._end(self.failure)
                    return
                if subscription.dropped:
                    await connection.close(SLOW_SUBSCRIBER_CLOSE_CODE, SLOW_SUBSCRIBER_REASON)
                    return
                if subscription.queue.empty():
                    return
                event = subscription.queue.get_nowait()
                context = connection.context.for_operation(None)  # fresh DataLoaders for every event
                try:
                    payload = await self.feed.payload(event, context)
                except GraphQLError as error:
                    await self._end(error)
                    return
                if payload is None:
                    continue
                result = await connection.schema.execute(
                    operation.query,
                    variable_values=operation.variables,
                    context_value=context,
                    root_value=payload,
                    operation_name=operation.operation_name,
                    allowed_operation_types=(OperationType.SUBSCRIPTION,),
                )
                await operation.send_next(result)
        except Exception as error:  # as strawberry does with an operation's task: log it, complete
            await connection.report(error)
            with contextlib.suppress(Exception):
                await self._end(None)
        finally:
            self._draining = None
            if operation.task is asyncio.current_task():
                operation.task = None

    async def _end(self, error: GraphQLError | None) -> None:
        """The last messages of the operation: ``error`` if any, then complete; it is forgotten first."""
        self.connection.forget_live(self.operation.id)
        self.close()
        messages: list[Message] = []
        if error is not None:
            messages.append(
                {"id": self.operation.id, "type": "next", "payload": {"data": None, "errors": [error.formatted]}}
            )
        messages.append({"id": self.operation.id, "type": "complete"})
        for message in messages:
            await self.operation.send_operation_message(message)


class TokenWatch:
    """Ends the live subscriptions of revoked tokens: every ``every_seconds``, one query checks the tokens
    of all of them at once."""

    def __init__(self, every_seconds: float) -> None:
        self.every_seconds = every_seconds
        self._by_token: dict[str, set[LiveOperation]] = {}

    def add(self, live: LiveOperation) -> None:
        self._by_token.setdefault(live.token_hash, set()).add(live)

    def discard(self, live: LiveOperation) -> None:
        key = live.token_hash
        group = self._by_token.get(key)
        if group is not None:
            group.discard(live)
            if not group:
                del self._by_token[key]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                await self.check_once()
            except Exception:  # a database hiccup must not stop the checks: the next round tries again
                log.exception("re-checking the tokens of live subscriptions failed")

    async def check_once(self) -> None:
        hashes = list(self._by_token)
        if not hashes:
            return
        valid = await unrevoked(hashes)
        for key in hashes:
            if key not in valid:
                for live in list(self._by_token.pop(key, ())):
                    live.fail(ForbiddenError(REVOKED))
