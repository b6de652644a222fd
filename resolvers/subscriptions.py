"""Subscriptions: live balance changes and usage. Events are published only after their transaction commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from strawberry.types import Info

from creditline.events import BALANCE, RESYNC, USAGE, SubscriberDropped, Subscription
from models import ledger
from models.balance import Balance
from models.tables import MemberRole, Membership
from models.tokens import principal_for
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.ids import decode_id
from resolvers.permissions import may_read_account, principal
from schema.scalars import Credits
from schema.types import BalanceEvent, CreditAccount, CreditBalance, UsageEvent

SLOW_SUBSCRIBER_CLOSE_CODE = 4413
"""Close code for a subscriber that fell so far behind that its queue filled up."""


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
    if account is None or not await may_read_account(info, account):
        raise ForbiddenError("You may not watch this account")
    return int(account.id)


async def _next(ctx: Context, subscription: Subscription) -> ledger.Event:
    """The next event; meanwhile re-check now and then that the subscription's token was not revoked."""
    while True:
        try:
            return await asyncio.wait_for(subscription.get(), timeout=ctx.services.settings.token_recheck_seconds)
        except TimeoutError:
            if ctx.token is None or await principal_for(ctx.token) is None:
                raise ForbiddenError("The token of this subscription was revoked") from None


async def _close_slow(ctx: Context) -> None:
    websocket = ctx.request
    if websocket is not None and hasattr(websocket, "close"):
        await websocket.close(code=SLOW_SUBSCRIBER_CLOSE_CODE, reason="Subscriber too slow: events dropped")


async def balance_changed(
    info: Info[Context, None], account_id: strawberry.ID | None = None
) -> AsyncGenerator[BalanceEvent, None]:
    """The account's balance now (reason SNAPSHOT), then every committed change to it, in order."""
    ctx = info.context
    watched = await _account_to_watch(info, account_id)
    subscription = ctx.services.bus.subscribe(frozenset({watched}), BALANCE)
    try:
        # Subscribed before the snapshot is read, so nothing between them is missed; older events are skipped.
        seen = -1
        resync = True
        while True:
            if resync:
                state = await ledger.account_state(watched, ctx.now())
                if state is None:
                    raise ForbiddenError("You may not watch this account")
                balance, seen = state
                yield _balance_event(watched, balance, 0, "SNAPSHOT", seen, ctx.now(), ctx)
            change = await _next(ctx, subscription)
            assert isinstance(change, ledger.BalanceChange)
            resync = change.reason == RESYNC
            if resync or change.version <= seen:
                continue
            seen = change.version
            yield _balance_event(
                watched, change.balance, change.delta, change.reason, change.version, change.occurred_at, ctx
            )
    except SubscriberDropped:
        await _close_slow(ctx)
    finally:
        subscription.close()


def _balance_event(
    account_id: int, balance: Balance, delta: int, reason: str, version: int, at: datetime, ctx: Context
) -> BalanceEvent:
    ctx.fresh_loaders()
    return BalanceEvent(
        account=CreditAccount(id=account_id),
        balance=CreditBalance.of(balance),
        delta=Credits(delta),
        reason=reason,
        version=version,
        occurred_at=at,
    )


async def usage_recorded(info: Info[Context, None], organization_id: strawberry.ID) -> AsyncGenerator[UsageEvent, None]:
    """Each usage event inside an organization as it happens. BILLING and OWNER members only."""
    ctx = info.context
    who = principal(info)
    org_id = decode_id(organization_id, "Organization")
    allowed = who.is_admin
    if org_id is not None and who.user_id is not None and not allowed:
        membership = await Membership.filter(organization_id=org_id, user_id=who.user_id).first()
        allowed = membership is not None and bool(membership.role_set & {MemberRole.BILLING, MemberRole.OWNER})
    if org_id is None or not allowed:
        raise ForbiddenError("Watching usage needs the BILLING or OWNER role in that organization")
    subscription = ctx.services.bus.subscribe(frozenset({org_id}), USAGE)
    try:
        while True:
            event = await _next(ctx, subscription)
            assert isinstance(event, ledger.UsageRecorded)
            ctx.fresh_loaders()
            yield UsageEvent.recorded(event)
    except SubscriberDropped:
        await _close_slow(ctx)
    finally:
        subscription.close()
