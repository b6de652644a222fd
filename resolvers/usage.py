"""Filtering usage events, shared by the GraphQL connections and the CSV export."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.queryset import QuerySet

from models.ids import decode_id
from models.tables import UsageEvent
from resolvers import boundary
from resolvers.errors import ClientError
from resolvers.references import check_external_id


@dataclass(frozen=True)
class UsageCriteria:
    start: datetime | None = None
    end: datetime | None = None
    agent_id: str | None = None
    agent_run_id: str | None = None
    activity: str | None = None
    member_id: str | None = None
    organization_id: str | None = None
    external_member_id: str | None = None
    external_organization_id: str | None = None


def filtered(query: QuerySet[UsageEvent], criteria: UsageCriteria) -> QuerySet[UsageEvent]:
    """Narrow ``query``; a malformed criterion is a ``ClientError`` naming it."""
    try:
        for value, name in ((criteria.start, "from"), (criteria.end, "to")):
            if value is not None:
                boundary.timestamp(value, name)
        if criteria.agent_id is not None:
            boundary.identifier(criteria.agent_id, "agentId", 200)
        if criteria.agent_run_id is not None:
            boundary.identifier(criteria.agent_run_id, "agentRunId", 200)
        if criteria.activity is not None:
            boundary.identifier(criteria.activity, "activity", 100)
    except boundary.InputError as exc:
        raise ClientError(exc.message, "BAD_FILTER") from None
    if criteria.start is not None and criteria.end is not None and criteria.end <= criteria.start:
        raise ClientError("to must be after from", "BAD_FILTER")
    if criteria.start is not None:
        query = query.filter(occurred_at__gte=criteria.start)
    if criteria.end is not None:
        query = query.filter(occurred_at__lt=criteria.end)
    if criteria.agent_id is not None:
        query = query.filter(agent_id=criteria.agent_id)
    if criteria.agent_run_id is not None:
        query = query.filter(run_id=criteria.agent_run_id)
    if criteria.activity is not None:
        query = query.filter(activity=criteria.activity)
    if criteria.member_id is not None:
        member = decode_id(criteria.member_id, "User")
        if member is None:
            raise ClientError("memberId is not a user ID", "BAD_FILTER")
        query = query.filter(user_id=member)
    if criteria.organization_id is not None:
        org = decode_id(criteria.organization_id, "Organization")
        if org is None:
            raise ClientError("organizationId is not an organization ID", "BAD_FILTER")
        query = query.filter(organization_id=org)
    # By the platform's id an unknown user or organization matches nothing, as an unknown global ID does.
    if criteria.external_member_id is not None:
        query = query.filter(user__external_id=_external(criteria.external_member_id, criteria.member_id, "Member"))
    if criteria.external_organization_id is not None:
        external = _external(criteria.external_organization_id, criteria.organization_id, "Organization")
        query = query.filter(organization__external_id=external)
    return query


def _external(value: str, own: str | None, name: str) -> str:
    field = f"external{name}Id"
    if own is not None:
        raise ClientError(f"Give at most one of {name[0].lower()}{name[1:]}Id or {field}", "BAD_FILTER")
    if invalid := check_external_id(value, field):
        raise ClientError(invalid.message, "BAD_FILTER")
    return value
