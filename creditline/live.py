"""Live subscriptions between events: an idle subscription is a few small objects, not a task.

Strawberry runs a graphql-transport-ws subscription as a task that keeps its whole execution alive (the
operation's extensions, graphql-core's executor, a chain of async generators) for as long as it lasts.
Here a subscription resolver runs that way only until it has sent what comes first (the balance SNAPSHOT)
and hands the rest over to its ``LiveOperation`` (see resolvers/live.py ``_follow``). From then
on the operation holds its bus subscription and a ``Feed`` (what turns an event into a payload) and no
task: when events arrive, a short task renders each one by executing the operation with the payload as
its root value, sends it, and ends once none are left.

Rights are re-checked by one application-wide watch (``TokenWatch``), not a timer per subscription: it
ends the subscriptions of revoked tokens, and those of members whose role in an organization changed (at
once when the change arrives on the bus, and every ``CREDITLINE_TOKEN_RECHECK_SECONDS`` in case its
message was lost), and those of tokens that expire (a JWT, or a token with ``Principal.expires_at``) when
they do, with one timer for the earliest of them all. A subscription caches whether its viewer's rights
hold; a change clears it, and nothing more is rendered before they were read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from graphql import GraphQLError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message
from strawberry.types.graphql import OperationType

from creditline.events import (
    EVERY_MEMBERSHIP,
    MEMBERSHIP,
    BusSubscription,
    EventBus,
    MembershipChanged,
    OutboxWritten,
)
from models.tables import MemberRole, Membership
from models.tokens import Principal, digest, unrevoked
from resolvers.errors import ClientError, ForbiddenError, Unauthenticated
from resolvers.feeds import Feed

if TYPE_CHECKING:
    from resolvers.context import Context

log = logging.getLogger("creditline.live")

T_co = TypeVar("T_co", covariant=True)

SLOW_SUBSCRIBER_CLOSE_CODE = 4413
"""Close code for a subscriber that fell so far behind that its queue filled up."""
SLOW_SUBSCRIBER_REASON = "Subscriber too slow: events dropped"
REVOKED = "The token of this subscription was revoked"
EXPIRED = "The token of this connection expired: connect again with a valid one"
NO_LONGER_VALID = "The token of this connection was revoked or has expired: connect again with a valid one"
ACCESS_LOST = "You may no longer watch this: your role in the organization changed"
BILLING_ROLES = frozenset({MemberRole.BILLING, MemberRole.OWNER})


class SlowSubscriberClosed(WebSocketDisconnected):
    """Raised by a send on a websocket being dropped because it stopped taking what is sent to it (a
    disconnection to strawberry, which then ends the connection's operations)."""


async def billing_members(pairs: Collection[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which ``(organization_id, user_id)`` pairs are members with the BILLING or OWNER role, in one query."""
    if not pairs:
        return set()
    rows = await Membership.filter(
        organization_id__in={org for org, _ in pairs}, user_id__in={user for _, user in pairs}
    ).values_list("organization_id", "user_id", "roles")
    found = set()
    for org, user, roles in rows:
        pair = (int(org), int(user))
        if pair in pairs and {MemberRole(role) for role in str(roles).split(",") if role} & BILLING_ROLES:
            found.add(pair)
    return found


WatchKey = tuple[str, str, frozenset[int] | None]
"""A viewer, a feed's topic and its keys: what ``FeedWatchers`` counts."""


class FeedWatchers:
    """How many live subscriptions each viewer holds on each feed in this process, over all its websockets
    and tokens, capped. A viewer is a user (whatever token or sign-in it uses: a user may make tokens of its
    own), else the token (a service's, an admin's). Every subscription renders each event of its feed for
    itself (about 0.3 ms of the event loop): a client holding 200 on its own account made each spend of that
    account cost 68 ms of the server's CPU, and spends of others waiting behind it ran past the statement
    timeout."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[WatchKey, int] = {}

    def take(self, viewer: str, feed: Feed[Any]) -> WatchKey:
        """Count one more subscription of ``viewer`` on ``feed``; ``ClientError`` past the limit."""
        key = (viewer, feed.topic, feed.keys)
        held = self._held.get(key, 0)
        if held >= self.limit:
            raise ClientError(
                f"You hold {held} live subscriptions to the same feed already (the most a server process"
                " allows): end one, or watch once and share the events",
                TOO_MANY_SUBSCRIPTIONS,
            )
        self._held[key] = held + 1
        return key

    def give_back(self, key: WatchKey) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def __len__(self) -> int:
        return sum(self._held.values())


TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"


class Connection(Protocol):
    """What a live operation needs from the websocket it belongs to (creditline/graphql.py)."""

    context: Context
    schema: BaseSchema

    @property
    def token_watch(self) -> TokenWatch: ...

    @property
    def feed_watchers(self) -> FeedWatchers: ...

    async def close(self, code: int, reason: str) -> None: ...

    def forget_live(self, operation_id: str) -> None: ...

    def mark_revoked(self) -> None:
        """Refuse every later operation of the connection: its token was revoked."""

    async def report(self, error: Exception) -> None: ...


class LiveOperation:
    """One websocket operation; once a subscription has handed over, it is delivered from here."""

    __slots__ = (
        "_draining",
        "_gap_due",
        "_gap_timer",
        "_watching",
        "access_known",
        "connection",
        "failure",
        "feed",
        "handed_over",
        "operation",
        "parked",
        "subscription",
    )

    def __init__(self, connection: Connection, operation: Operation[Context, None]) -> None:
        self.connection = connection
        self.operation = operation
        self.feed: Feed[Any] | None = None
        self.subscription: BusSubscription | None = None
        self.handed_over = False
        """Set by the resolver once its first payload went out: the rest is ours to deliver."""
        self.parked = False
        """Set by the connection once the resolver's stream has ended: from now on ``wake`` sends."""
        self.failure: GraphQLError | None = None
        self.access_known = True
        """The viewer's rights (``feed.access``) are known to hold: cleared by a change of membership, so the
        next event is rendered only after they were read again."""
        self._draining: asyncio.Task[None] | None = None
        self._gap_timer: asyncio.TimerHandle | None = None
        self._gap_due = False
        self._watching: WatchKey | None = None
        """The operation's count in ``FeedWatchers``, given back by ``close``."""

    @property
    def access(self) -> tuple[int, int] | None:
        return None if self.feed is None else self.feed.access

    def follow(self, feed: Feed[Any], bus: EventBus) -> None:
        """Subscribe on the bus now; events wait in the queue until the operation is parked. ``ClientError``
        when the viewer holds as many subscriptions to the feed as a process allows (``FeedWatchers``)."""
        who = self.principal
        viewer = f"user:{who.user_id}" if who.user_id is not None else f"token:{self.token_hash}"
        self._watching = self.connection.feed_watchers.take(viewer, feed)
        self.feed = feed
        self.subscription = bus.subscribe(feed.keys, feed.topic, self.wake)

    def park(self) -> None:
        self.parked = True
        # A change of membership between the resolver's check and the watch taking this operation on would
        # be missed: read the rights once more before the first event.
        if self.access is not None:
            self.access_known = False
        self.wake()

    def wake(self) -> None:
        """Called by the bus for each event: send what waits, in a task of its own while there is any."""
        if not self.parked or self._draining is not None or self.subscription is None:
            return
        if (
            self.failure is None
            and not self.subscription.dropped
            and self.subscription.queue.empty()
            and self.access_known
            and not self._gap_due
        ):
            return
        task = asyncio.create_task(self._drain())
        self._draining = task
        self.operation.task = task  # so that completing the operation or closing the websocket cancels it

    def fail(self, error: GraphQLError) -> None:
        """End the subscription with ``error`` (after what is being sent right now)."""
        self.failure = error
        self.wake()

    def recheck_access(self) -> None:
        """The viewer's membership changed: read their rights again before anything more is sent."""
        if self.access is not None:
            self.access_known = False
            self.wake()

    def close(self) -> None:
        if self._watching is not None:
            self.connection.feed_watchers.give_back(self._watching)
            self._watching = None
        if self.subscription is not None:
            self.subscription.close()
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if self.parked:
            self.connection.token_watch.discard(self)
        self.parked = False

    @property
    def principal(self) -> Principal:
        principal = self.connection.context.principal
        assert principal is not None  # a websocket gets an operation only after connection_init was accepted
        return principal

    @property
    def token_hash(self) -> str:
        token = self.connection.context.token
        assert token is not None  # a websocket gets an operation only after connection_init was accepted
        return digest(token)

    async def _allowed(self) -> bool:
        """Whether the viewer may still see the feed: cached until a change of membership clears it."""
        access = self.access
        if access is None or self.access_known:
            return True
        self.access_known = True  # a change arriving during the read clears it again: read once more then
        return access in await billing_members({access})

    def _gap_window_passed(self) -> None:
        self._gap_timer = None
        self._gap_due = True
        self.wake()

    def _watch_gap(self, feed: Feed[Any]) -> None:
        """Give events missing before held-back ones a short window to arrive; then ``fill`` reads them."""
        if feed.waiting and self._gap_timer is None and not self._gap_due:
            window = self.connection.context.services.settings.live_reorder_ms / 1000
            self._gap_timer = asyncio.get_running_loop().call_later(window, self._gap_window_passed)
        elif not feed.waiting and self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    async def _drain(self) -> None:
        assert self.subscription is not None
        assert self.feed is not None
        connection, operation, subscription, feed = self.connection, self.operation, self.subscription, self.feed
        try:
            while True:
                if self.failure is not None:
                    await self._end(self.failure)
                    return
                if subscription.dropped:
                    await connection.close(SLOW_SUBSCRIBER_CLOSE_CODE, SLOW_SUBSCRIBER_REASON)
                    return
                if not await self._allowed():
                    await self._end(ForbiddenError(ACCESS_LOST))
                    return
                context = connection.context.for_operation(None)  # fresh DataLoaders for every event
                try:
                    if self._gap_due:
                        self._gap_due = False
                        payloads = await feed.fill(context)
                    elif subscription.queue.empty():
                        return
                    else:
                        event = subscription.queue.get_nowait()
                        assert not isinstance(event, MembershipChanged | OutboxWritten)  # other topics
                        payloads = await feed.payloads(event, context)
                except GraphQLError as error:
                    await self._end(error)
                    return
                self._watch_gap(feed)
                for payload in payloads:
                    if not await self._allowed():
                        await self._end(ForbiddenError(ACCESS_LOST))
                        return
                    result = await connection.schema.execute(
                        operation.query,
                        variable_values=operation.variables,
                        context_value=context,
                        root_value=payload,
                        operation_name=operation.operation_name,
                        allowed_operation_types=(OperationType.SUBSCRIPTION,),
                    )
                    await operation.send_next(result)
        except SlowSubscriberClosed:
            return  # the connection is being dropped; closing it ends this operation
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
    """Ends live subscriptions whose viewer lost the right to them.

    - A revoked token: every ``every_seconds``, one query checks the tokens of all of them at once; the
      connections of a revoked one are marked, so that they run nothing more (each operation sent on a socket
      also checks its token again, through the authenticator: creditline/graphql.py).
    - A change of membership (``MembershipChanged`` on the bus, from any process): the subscriptions that
      depend on that member's role read it again before they send anything more, at once; and every
      ``every_seconds`` one query re-reads the roles of all of them, in case a message was lost (Redis
      delivers at most once).
    """

    def __init__(self, every_seconds: float, clock: Callable[[], datetime] | None = None) -> None:
        self.every_seconds = every_seconds
        self._by_token: dict[str, set[LiveOperation]] = {}
        self._by_access: dict[tuple[int, int], set[LiveOperation]] = {}
        self._memberships: BusSubscription | None = None
        self.expiries = Expiries(clock or _utc_now)

    def add(self, live: LiveOperation) -> None:
        principal = live.principal
        if principal.revocable:  # a JWT has no row to revoke
            self._by_token.setdefault(live.token_hash, set()).add(live)
        if principal.expires_at is not None:
            self.expiries.add(live, principal.expires_at)
        access = live.access
        if access is not None:
            self._by_access.setdefault(access, set()).add(live)
            if self._memberships is None:  # the bus is the connection's: the watch is made before the app starts
                bus = live.connection.context.services.bus
                self._memberships = bus.subscribe(None, MEMBERSHIP, self._membership_changed)

    def discard(self, live: LiveOperation) -> None:
        self.expiries.discard(live)
        key = live.token_hash
        group = self._by_token.get(key)
        if group is not None:
            group.discard(live)
            if not group:
                del self._by_token[key]
        access = live.access
        if access is not None and (watching := self._by_access.get(access)) is not None:
            watching.discard(live)
            if not watching:
                del self._by_access[access]

    def _membership_changed(self) -> None:
        """Called by the bus as each change arrives: taken at once, so the queue never fills."""
        assert self._memberships is not None
        queue = self._memberships.queue
        while not queue.empty():
            change = queue.get_nowait()
            assert isinstance(change, MembershipChanged)
            if change == EVERY_MEMBERSHIP:
                affected = [live for group in self._by_access.values() for live in group]
            else:
                affected = list(self._by_access.get((change.organization_id, change.user_id), ()))
            for live in affected:
                live.recheck_access()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.every_seconds)
                try:
                    await self.check_once()
                except Exception:  # a database hiccup must not stop the checks: the next round tries again
                    log.exception("re-checking the rights of live subscriptions failed")
        finally:
            self.expiries.stop()

    async def check_once(self) -> None:
        self.expiries.end_due()  # the timer does it; this too, should the clock have been moved meanwhile
        hashes = list(self._by_token)
        if hashes:
            valid = await unrevoked(hashes)
            for key in hashes:
                if key not in valid:
                    for live in list(self._by_token.pop(key, ())):
                        live.connection.mark_revoked()
                        live.fail(ForbiddenError(REVOKED))
        pairs = list(self._by_access)
        if pairs:
            allowed = await billing_members(set(pairs))
            for pair in pairs:
                if pair not in allowed:
                    for live in list(self._by_access.pop(pair, ())):
                        live.fail(ForbiddenError(ACCESS_LOST))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Expiries:
    """Ends live subscriptions when their token expires (``Principal.expires_at``: a JWT's ``exp``, a token
    made with an expiry) with ``UNAUTHENTICATED``: one timer, for the earliest deadline of all of them."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._deadlines: dict[LiveOperation, datetime] = {}
        self._heap: list[tuple[datetime, int, LiveOperation]] = []
        self._order = itertools.count()  # ties in the heap never compare operations
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: datetime | None = None

    def __len__(self) -> int:
        return len(self._deadlines)

    def add(self, live: LiveOperation, expires_at: datetime) -> None:
        self._deadlines[live] = expires_at
        heapq.heappush(self._heap, (expires_at, next(self._order), live))
        self._arm()

    def discard(self, live: LiveOperation) -> None:
        if self._deadlines.pop(live, None) is not None and len(self._heap) > 2 * len(self._deadlines) + 64:
            # Deadlines of operations that ended are dropped lazily; rebuild once they are most of the heap.
            self._heap = [entry for entry in self._heap if self._deadlines.get(entry[2]) == entry[0]]
            heapq.heapify(self._heap)

    def end_due(self) -> None:
        """End the subscriptions whose token has expired by now, and set the timer for the next."""
        self._timer = None
        self._timer_at = None
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            expires_at, _, live = heapq.heappop(self._heap)
            if self._deadlines.get(live) == expires_at:
                del self._deadlines[live]
                live.fail(Unauthenticated(EXPIRED))
        self._arm()

    def _arm(self) -> None:
        while self._heap and self._deadlines.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if not self._heap:
            self.stop()
            return
        at = self._heap[0][0]
        if self._timer is not None and self._timer_at == at:
            return
        self.stop()
        delay = max(0.0, (at - self.clock()).total_seconds())
        self._timer = asyncio.get_running_loop().call_later(delay, self.end_due)
        self._timer_at = at

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None
