"""Subscriptions: live balance changes. Events are published only after their transaction commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from strawberry.types import Info

from creditline.events import SubscriberDropped
from models import ledger
from models.balance import Balance
from models.tokens import principal_for
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.ids import decode_id
from resolvers.permissions import can_read_account, principal
from schema.scalars import Credits
from schema.types import BalanceEvent, CreditAccount, CreditBalance

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
    if account is None or not can_read_account(who, account.user_id):
        raise ForbiddenError("You may not watch this account")
    return int(account.id)


async def balance_changed(
    info: Info[Context, None], account_id: strawberry.ID | None = None
) -> AsyncGenerator[BalanceEvent, None]:
    """The account's balance now (reason SNAPSHOT), then every committed change to it, in order."""
    ctx = info.context
    watched = await _account_to_watch(info, account_id)
    recheck = ctx.services.settings.token_recheck_seconds
    subscription = ctx.services.bus.subscribe(frozenset({watched}))
    try:
        # Subscribed before the snapshot is read, so nothing between them is missed; older events are skipped.
        state = await ledger.account_state(watched, ctx.now())
        if state is None:
            raise ForbiddenError("You may not watch this account")
        balance, seen = state
        yield _event(watched, balance, 0, "SNAPSHOT", seen, ctx.now(), ctx)
        while True:
            try:
                change = await asyncio.wait_for(subscription.get(), timeout=recheck)
            except TimeoutError:
                if ctx.token is None or await principal_for(ctx.token) is None:
                    raise ForbiddenError("The token of this subscription was revoked") from None
                continue
            if change.reason == "RESYNC":
                state = await ledger.account_state(watched, ctx.now())
                if state is not None:
                    balance, seen = state
                    yield _event(watched, balance, 0, "SNAPSHOT", seen, ctx.now(), ctx)
                continue
            if change.version <= seen:
                continue
            seen = change.version
            yield _event(watched, change.balance, change.delta, change.reason, change.version, change.occurred_at, ctx)
    except SubscriberDropped:
        websocket = ctx.request
        if websocket is not None and hasattr(websocket, "close"):
            await websocket.close(code=SLOW_SUBSCRIBER_CLOSE_CODE, reason="Subscriber too slow: events dropped")
    finally:
        subscription.close()


def _event(
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
