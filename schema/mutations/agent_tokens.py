"""createAgentToken: a delegated agent token's input, its cap, its success, errors and result."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from models.tables import LimitWindow
from schema import references
from schema.errors import Forbidden, NotFound, ValidationError
from schema.scalars import Credits
from schema.types import ApiToken


@strawberry.input(description="The token's own cap: a BLOCK limit of scope TOKEN, set with the token")
class AgentTokenLimitInput:
    amount: Credits = strawberry.field(description="At most this many credits per window (positive)")
    window: LimitWindow = strawberry.field(description="DAY, WEEK, MONTH, ROLLING_HOURS or TOTAL")
    window_length: int = strawberry.field(default=1, description="Hours, for ROLLING_HOURS (1 to 744); else 1")
    time_zone: str = strawberry.field(default="UTC", description="The IANA time zone of DAY, WEEK and MONTH")
    warn_at_percent: int | None = strawberry.field(
        default=None, description="Spends and holds report a warning from this share of amount on (1 to 100)"
    )
    max_credits_per_run: Credits | None = strawberry.field(
        default=None, description="Also at most this many credits per agentRunId (positive)"
    )


@strawberry.input(
    description="Mint a SERVICE token bound to one account that spends only there: optionally only as one agent,"
    " on some activities, under its own cap. The account's user mints for their account; an organization's OWNER"
    " or BILLING member, or a MEMBER who has a monthly budget there, for its pool (a user's token spends as that"
    " user: spends name them, and their budget applies); admins and services with usage:write for any account."
)
class CreateAgentTokenInput:
    name: str = strawberry.field(description="To tell it apart: 1 to 200 characters")
    account_id: strawberry.ID | None = references.account_id(
        f"{references.ACCOUNT_ID} At most one of accountId, externalUserId, externalOrganizationId. Default: a"
        " user's own account (admins and services must name one)"
    )
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    agent_id: str | None = strawberry.field(
        default=None, description="The one agentId it spends and holds as; null: any agent"
    )
    activities: list[str] | None = strawberry.field(
        default=None, description="The activities it may spend on (1 to 50, without spaces); null: any"
    )
    spend_limit: AgentTokenLimitInput | None = strawberry.field(
        default=None, description="Its cap; null: none of its own (the account's other limits still apply)"
    )
    expires_at: datetime | None = strawberry.field(
        default=None, description="When it stops working; never later than the token that mints it (its default)"
    )
    idle_timeout_seconds: int | None = strawberry.field(
        default=None, description="It also stops working this long after its last use (60 s to 366 days)"
    )


@strawberry.type
class CreateAgentTokenSuccess:
    secret: str = strawberry.field(description="The bearer secret: shown this once, never stored in clear")
    api_token: ApiToken


CreateAgentTokenResult = Annotated[
    CreateAgentTokenSuccess | ValidationError | Forbidden | NotFound, strawberry.union("CreateAgentTokenResult")
]
