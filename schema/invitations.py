"""Invitations to join an organization (issue 9, point 8): the invitee accepts or declines; they expire."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import tables
from models.ids import encode_id
from models.tables import InvitationStatus, MemberRole
from resolvers.context import Context

strawberry.enum(InvitationStatus, description="PENDING until accepted, declined, revoked or past expiresAt (EXPIRED)")


@strawberry.type(
    description="An invitation to join an organization, addressed to an email. The user with that email sees it"
    " (`me { invitations }`) and accepts or declines it; an OWNER may revoke it; it expires at expiresAt."
)
class Invitation(relay.Node):
    id: relay.NodeID[int]
    email: str
    roles: list[MemberRole] = strawberry.field(description="The roles the invitee gets on accepting")
    status: InvitationStatus
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None = strawberry.field(description="When it was accepted, declined or revoked")
    organization_pk: strawberry.Private[int]

    @strawberry.field(description="The organization's ID")
    def organization_id(self) -> strawberry.ID:
        return strawberry.ID(encode_id("Organization", self.organization_pk))

    @strawberry.field(description="The organization's name")
    async def organization_name(self, info: Info[Context, None]) -> str:
        org = await info.context.loaders.organization.load(self.organization_pk)
        assert org is not None, "an organization's invitations go with it"
        return org.name

    @classmethod
    def of(cls, row: tables.Invitation, now: datetime) -> Invitation:
        status = InvitationStatus(row.status)
        if status is InvitationStatus.PENDING and row.expires_at <= now:
            status = InvitationStatus.EXPIRED
        return cls(
            id=row.id,
            email=row.email,
            roles=sorted(row.role_set),
            status=status,
            created_at=row.created_at,
            expires_at=row.expires_at,
            closed_at=row.closed_at,
            organization_pk=row.organization_id,
        )
