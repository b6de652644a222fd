"""Spend limits as the API shows them (see docs/rules.md, "Spend limits")."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models import tables
from models.ids import encode_id
from models.limit_rules import LimitView
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
    " counts the current UTC hour and the windowLength - 1 before it; TOTAL never resets; ROLLING_MINUTES"
    " (velocity breakers) counts the current minute and the windowLength - 1 before it",
)
strawberry.enum(tables.LimitAction, description="BLOCK refuses what would pass the amount; NOTIFY only reports it")


@strawberry.type(description="A limit on spending from one account. Amounts in credits.")
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
        )


@strawberry.type(
    description="A limit at or past its warning threshold, or a NOTIFY limit past its amount, after this operation"
)
class SpendLimitWarning:
    limit: SpendLimit
    spent: Credits
    held: Credits
    resets_at: datetime | None
