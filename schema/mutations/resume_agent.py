"""resumeAgent: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound, ValidationError
from schema.limits import SpendLimit


@strawberry.input(
    description="End the pause of tripped velocity limits: the one limitId, or every velocity limit on agentId in"
    " the account (accountId, externalUserId or externalOrganizationId; a user token's default is its own"
    " account). The breaker then counts afresh; trippedAt stays as the last trip. Resuming what is not paused"
    " changes nothing. Who may set the limits may resume them."
)
class ResumeAgentInput:
    limit_id: strawberry.ID | None = strawberry.field(default=None, description="A VELOCITY limit; or give agentId")
    agent_id: str | None = None
    account_id: strawberry.ID | None = None
    external_user_id: str | None = None
    external_organization_id: str | None = None


@strawberry.type
class ResumeAgentSuccess:
    limits: list[SpendLimit] = strawberry.field(description="The velocity limits resumed, as they are now")


ResumeAgentResult = Annotated[
    ResumeAgentSuccess | ValidationError | Forbidden | NotFound, strawberry.union("ResumeAgentResult")
]
