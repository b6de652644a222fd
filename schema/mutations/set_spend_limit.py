"""setSpendLimit: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from models.tables import LimitAction, LimitKind, LimitScope, LimitWindow
from schema.errors import Forbidden, NotFound, ValidationError
from schema.limits import SpendLimit
from schema.scalars import Credits


@strawberry.input(
    description="Set a spend limit on an account: create it, or replace the one its subject has of the same kind,"
    " window and windowLength (what was counted against it stays). Setting the same limit again changes nothing"
    " but updatedAt and answers created: false, so a retry is safe without an idempotency key. The account's"
    " owner, an organization's BILLING or OWNER member for its pool, an admin, or a service token with"
    " limits:write."
)
class SetSpendLimitInput:
    scope: LimitScope = strawberry.field(
        description="ACCOUNT: all spending from the account; MEMBER: one member's spending from an organization's"
        " pool (memberId or externalMemberId); AGENT: one agentId's (agentId); TOKEN: what one API token spends"
        " there (tokenId)"
    )
    window: LimitWindow
    amount: Credits = strawberry.field(
        description="CAP: the most the subject may spend (and hold) per window. VELOCITY: spending more than this"
        " within the window trips the breaker. Positive"
    )
    account_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A CreditAccount, User (their own account) or Organization (its pool) ID; or give"
        " externalUserId or externalOrganizationId. A user token's default is its own account",
    )
    external_user_id: str | None = None
    external_organization_id: str | None = None
    member_id: strawberry.ID | None = strawberry.field(
        default=None, description="Scope MEMBER: the member's user ID (or externalMemberId)"
    )
    external_member_id: str | None = None
    agent_id: str | None = strawberry.field(default=None, description="Scope AGENT: the agentId spends name")
    token_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Scope TOKEN: an ApiToken that may spend from this account: one bound to it, or (admins and"
        " limits:write services) a service token with usage:write or an admin token",
    )
    kind: LimitKind = LimitKind.CAP
    window_length: int | None = strawberry.field(
        default=None,
        description="ROLLING_HOURS: 1 to 744 hours; ROLLING_MINUTES: 1 to 1440 minutes; other windows: none (or 1)",
    )
    time_zone: str | None = strawberry.field(
        default=None, description="DAY, WEEK and MONTH only: an IANA time zone such as Europe/Paris; default UTC"
    )
    action: LimitAction = LimitAction.BLOCK
    warn_at_percent: int | None = strawberry.field(
        default=None, description="1 to 100: spends and holds report a warning once usage reaches this share"
    )
    max_credits_per_run: Credits | None = strawberry.field(
        default=None, description="CAP only: the most one agentRunId may spend (and hold) under this limit"
    )
    cooldown_seconds: int | None = strawberry.field(
        default=None,
        description="VELOCITY only: a trip pauses spending this long (1 s to 31 days); null: until resumeAgent",
    )


@strawberry.type
class SetSpendLimitSuccess:
    limit: SpendLimit
    created: bool = strawberry.field(description="false: an existing limit was replaced (or set the same again)")


SetSpendLimitResult = Annotated[
    SetSpendLimitSuccess | ValidationError | Forbidden | NotFound, strawberry.union("SetSpendLimitResult")
]
