"""Filters for lists of usage events."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.input(description="Every given field must match; from is inclusive, to exclusive.")
class UsageFilter:
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None
    agent_id: str | None = None
    agent_run_id: str | None = strawberry.field(default=None, description="Usage of this agent run only")
    activity: str | None = None
    member_id: strawberry.ID | None = strawberry.field(default=None, description="A user ID")
    organization_id: strawberry.ID | None = None
    external_member_id: str | None = strawberry.field(
        default=None, description="Or the member by your platform's id (User.externalId); not with memberId"
    )
    external_organization_id: str | None = strawberry.field(
        default=None, description="Or the organization by your platform's id; not with organizationId"
    )
