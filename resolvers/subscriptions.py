"""Subscriptions: live balance changes and usage. Events are published only after their transaction commits.

Each resolver checks who may watch what, subscribes on the bus, sends what comes first and then hands the
subscription over to its websocket operation (creditline/live.py), which sends each later event through
the resolver's ``Feed`` without holding a task or this generator while idle.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TypeVar

import strawberry
from strawberry.types import Info

from creditline.events import BALANCE, RESYNC, USAGE
from creditline.live import Feed
from models import ledger
from models.balance import Balance
from models.ledger import Event
from models.tables import MemberRole, Membership
from models.tokens import BALANCE_READ
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.ids import decode_id
from resolvers.permissions import may_read_account, principal
from schema.scalars import Credits
from schema.types import BalanceEvent, CreditAccount, CreditBalance, UsageEvent

T = TypeVar("T")


async def _account_to_watch(info: Info[Context, None], account_id: strawberry.ID | None) -> int:
    who = principal(info)
    loaders = info.context.loaders
    if account_id is None:
        if who.user_id is None:
            raise ClientError("Give accountId: this token belongs to a service or an admin", "BAD_REQUEST")
        account = await loaders.account_of_user.load(who.user_id)
    else:
        pk = decode_id(account_id, "CreditAccount")
        account = None if pk is None else await loaders.account.load(pk)
    # A service watches balances with balance:read (the events carry the balance).
    if account is None or not await may_read_account(info, account, (BALANCE_READ,)):
        raise ForbiddenError("You may not watch this account")
    return int(account.id)


async def _follow(ctx: Context, feed: Feed[T]) -> AsyncGenerator[T, None]:
    """Subscribe, send the feed's first payload (if it has one), then hand over to the live operation."""
    live = ctx.live
    if live is None:
        raise ClientError("Subscriptions need a websocket: connect with the graphql-transport-ws protocol")
    # Subscribed before the first payload is read, so nothing between them is missed.
    live.follow(feed, ctx.services.bus)
    first = await feed.first(ctx)
    if first is not None:
        yield first
    live.handed_over = True


class BalanceFeed:
    """An account's balance now (reason SNAPSHOT), then every committed change newer than what was sent.

    A RESYNC marker (events may have been lost while Redis was away) sends a fresh snapshot.
    """

    __slots__ = ("account_id", "seen")
    topic = BALANCE

    def __init__(self, account_id: int) -> None:
        self.account_id = account_id
        self.seen = -1
        """The version last sent: older events (read into the snapshot already) are skipped."""

    @property
    def keys(self) -> frozenset[int]:
        return frozenset({self.account_id})

    async def first(self, ctx: Context) -> BalanceEvent:
        state = await ledger.account_state(self.account_id, ctx.now())
        if state is None:
            raise ForbiddenError("You may not watch this account")
        balance, self.seen = state
        return _balance_event(self.account_id, balance, 0, "SNAPSHOT", self.seen, ctx.now())

    async def payload(self, event: Event, ctx: Context) -> BalanceEvent | None:
        assert isinstance(event, ledger.BalanceChange)
        if event.reason == RESYNC:
            return await self.first(ctx)
        if event.version <= self.seen:
            return None
        self.seen = event.version
        return _balance_event(
            self.account_id, event.balance, event.delta, event.reason, event.version, event.occurred_at
        )


def _balance_event(
    account_id: int, balance: Balance, delta: int, reason: str, version: int, at: datetime
) -> BalanceEvent:
    return BalanceEvent(
        account=CreditAccount(id=account_id),
        balance=CreditBalance.of(balance),
        delta=Credits(delta),
        reason=reason,
        version=version,
        occurred_at=at,
    )


class UsageFeed:
    """Each usage event inside an organization as it happens."""

    __slots__ = ("organization_id",)
    topic = USAGE

    def __init__(self, organization_id: int) -> None:
        self.organization_id = organization_id

    @property
    def keys(self) -> frozenset[int]:
        return frozenset({self.organization_id})

    async def first(self, ctx: Context) -> UsageEvent | None:
        return None

    async def payload(self, event: Event, ctx: Context) -> UsageEvent:
        assert isinstance(event, ledger.UsageRecorded)
        return UsageEvent.recorded(event)


async def balance_changed(
    info: Info[Context, None], account_id: strawberry.ID | None = None
) -> AsyncGenerator[BalanceEvent, None]:
    """The account's balance now (reason SNAPSHOT), then every committed change to it, in order."""
    watched = await _account_to_watch(info, account_id)
    async for event in _follow(info.context, BalanceFeed(watched)):
        yield event


async def usage_recorded(info: Info[Context, None], organization_id: strawberry.ID) -> AsyncGenerator[UsageEvent, None]:
    """Each usage event inside an organization as it happens. BILLING and OWNER members only."""
    who = principal(info)
    org_id = decode_id(organization_id, "Organization")
    allowed = who.is_admin
    if org_id is not None and who.user_id is not None and not allowed:
        membership = await Membership.filter(organization_id=org_id, user_id=who.user_id).first()
        allowed = membership is not None and bool(membership.role_set & {MemberRole.BILLING, MemberRole.OWNER})
    if org_id is None or not allowed:
        raise ForbiddenError("Watching usage needs the BILLING or OWNER role in that organization")
    async for event in _follow(info.context, UsageFeed(org_id)):
        yield event
