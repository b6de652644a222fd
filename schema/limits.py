"""Spend limits as the API shows them (see docs/rules.md, "Spend limits")."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.types import Info

from models import tables
from models.ids import encode_id
from models.limit_rules import LimitView, Period, period
from models.limits import LimitRow
from resolvers.context import Context
from schema.scalars import Credits

strawberry.enum(
    tables.LimitScope, description="Whose spending a limit counts: the whole account, a member, an agent or a token"
)
strawberry.enum(
    tables.LimitKind, description="CAP: at most amount per window. VELOCITY: a breaker that pauses spending"
)
strawberry.enum(
    tables.LimitWindow,
    description="DAY, WEEK (from Monday) and MONTH are calendar periods in the limit's time zone; ROLLING_HOURS"
    " and ROLLING_MINUTES (velocity breakers) count 60 buckets of windowLength minutes or seconds, the current"
    " one and the 59 before it; TOTAL never resets",
)
strawberry.enum(tables.LimitAction, description="BLOCK refuses what would pass the amount; NOTIFY only reports it")


@strawberry.type(
    description="A limit on spending from one account. Amounts in credits. Its usage fields (spent, held, remaining,"
    " resetsAt, windowStartsAt, paused, trippedAt, pausedUntil) are as of this request, wherever the limit is shown"
    " (a refusal's own numbers are the refusal's fields)"
)
class SpendLimit:
    id: strawberry.ID
    scope: tables.LimitScope
    kind: tables.LimitKind
    window: tables.LimitWindow
    window_length: int = strawberry.field(description="Hours (ROLLING_HOURS) or minutes (ROLLING_MINUTES); else 1")
    time_zone: str = strawberry.field(description="The IANA time zone of DAY, WEEK and MONTH")
    amount: Credits
    action: tables.LimitAction
    warn_at_percent: int | None
    max_credits_per_run: Credits | None
    cooldown_seconds: int | None = strawberry.field(
        description="Velocity: how long a trip pauses spending; null: until a person resumes it"
    )
    agent_id: str | None
    member_id: strawberry.ID | None = strawberry.field(description="The member's user ID (scope MEMBER)")
    token_id: strawberry.ID | None = strawberry.field(description="The API token's ID (scope TOKEN)")
    account_id: strawberry.ID
    view: strawberry.Private[LimitView]

    @classmethod
    def of(cls, view: LimitView) -> SpendLimit:
        return cls(
            id=strawberry.ID(encode_id("SpendLimit", view.id)),
            scope=view.scope,
            kind=view.kind,
            window=view.window,
            window_length=view.window_length,
            time_zone=view.time_zone,
            amount=Credits(view.amount),
            action=view.action,
            warn_at_percent=view.warn_percent,
            max_credits_per_run=None if view.max_credits_per_run is None else Credits(view.max_credits_per_run),
            cooldown_seconds=view.cooldown_seconds,
            agent_id=view.agent_id,
            member_id=None if view.user_id is None else strawberry.ID(encode_id("User", view.user_id)),
            token_id=None if view.token_id is None else strawberry.ID(encode_id("ApiToken", view.token_id)),
            account_id=strawberry.ID(encode_id("CreditAccount", view.account_id)),
            view=view,
        )

    @strawberry.field(description="Spent in the current window (TOTAL: ever) and counted against the limit")
    async def spent(self, info: Info[Context, None]) -> Credits:
        return Credits((await info.context.loaders.limit_usage.load(self.view)).spent)

    @strawberry.field(
        description="Set aside now by the subject's active holds: it counts until captured or released. Always 0"
        " for a VELOCITY limit, which counts a hold as spent when it is placed"
    )
    async def held(self, info: Info[Context, None]) -> Credits:
        return Credits((await info.context.loaders.limit_usage.load(self.view)).held)

    @strawberry.field(description="amount - spent - held, never below 0: what the subject may still spend now")
    async def remaining(self, info: Info[Context, None]) -> Credits:
        used = await info.context.loaders.limit_usage.load(self.view)
        return Credits(max(0, self.view.amount - used.spent - used.held))

    @strawberry.field(
        description="When usage next drops: the end of the calendar period, or of the current bucket of a"
        " rolling window (when its oldest one stops counting); null for TOTAL"
    )
    def resets_at(self, info: Info[Context, None]) -> datetime | None:
        return self._period(info).resets_at

    @strawberry.field(
        description="The start of what counts now: the calendar period's start in the limit's time zone, or the"
        " oldest bucket of a rolling window; null for TOTAL"
    )
    def window_starts_at(self, info: Info[Context, None]) -> datetime | None:
        if self.view.window is tables.LimitWindow.TOTAL:
            return None
        return datetime.fromtimestamp(self._period(info).since, UTC)

    @strawberry.field(description="Velocity: whether it has tripped and pauses its subject's spending now")
    async def paused(self, info: Info[Context, None]) -> bool:
        row = await self._row(info)
        return row is not None and row.paused_at(info.context.now())

    @strawberry.field(description="Velocity: when it last tripped (kept after a resume); null: never")
    async def tripped_at(self, info: Info[Context, None]) -> datetime | None:
        row = await self._row(info)
        return None if row is None else row.tripped_at

    @strawberry.field(
        description="Velocity: when the current pause ends by itself; null while paused: only resumeAgent ends it"
    )
    async def paused_until(self, info: Info[Context, None]) -> datetime | None:
        row = await self._row(info)
        return None if row is None or not row.paused_at(info.context.now()) else row.paused_until

    def _period(self, info: Info[Context, None]) -> Period:
        view = self.view
        return period(view.window, view.window_length, view.time_zone, info.context.now())

    async def _row(self, info: Info[Context, None]) -> LimitRow | None:
        return await info.context.loaders.limit_row.load(self.view.id)


@strawberry.type(
    description="A limit at or past its warning threshold, or a NOTIFY limit past its amount, after this operation"
)
class SpendLimitWarning:
    limit: SpendLimit
    spent: Credits
    held: Credits
    resets_at: datetime | None
