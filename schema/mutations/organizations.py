from __future__ import annotations

from typing import Annotated

import strawberry

from models.tables import MemberRole
from schema import references
from schema.errors import (
    AlreadyExists,
    AlreadyInvited,
    AlreadyMember,
    Forbidden,
    IdempotencyConflict,
    InvitationExpired,
    InvitationNotPending,
    LastOwner,
    NotFound,
    ValidationError,
)
from schema.invitations import Invitation
from schema.scalars import Credits, Metadata
from schema.types import CreditAccount, Membership, Organization


@strawberry.input(
    description="With a user token you become the organization's first OWNER. An admin token names the owner"
    " (exactly one of ownerId or externalOwnerId) and may give externalId and metadata; with an externalId it is"
    " safe to retry: the same externalId with the same name, owner and metadata answers the same organization,"
    " with other details it is AlreadyExists (field externalId)."
)
class CreateOrganizationInput:
    name: str
    owner_id: strawberry.ID | None = strawberry.field(default=None, description="Admin tokens only")
    external_owner_id: str | None = strawberry.field(default=None, description="Admin tokens only")
    external_id: str | None = strawberry.field(
        default=None,
        description="Admin tokens only. Your own id for it: 1 to 255 printable characters, unique, immutable",
    )
    metadata: Metadata | None = strawberry.field(default=None, description="Admin tokens only")


@strawberry.type
class CreateOrganizationSuccess:
    organization: Organization


CreateOrganizationResult = Annotated[
    CreateOrganizationSuccess | AlreadyExists | ValidationError | Forbidden | NotFound,
    strawberry.union("CreateOrganizationResult"),
]


@strawberry.input(
    description="Add an existing user at once, named by exactly one of email, userId or externalUserId, to the"
    " organization named by exactly one of organizationId or externalOrganizationId. Admin tokens only: owners"
    " invite with inviteMember."
)
class AddMemberInput:
    organization_id: strawberry.ID | None = None
    external_organization_id: str | None = None
    email: str | None = None
    user_id: strawberry.ID | None = None
    external_user_id: str | None = None
    roles: list[MemberRole]


@strawberry.type
class AddMemberSuccess:
    membership: Membership


AddMemberResult = Annotated[
    AddMemberSuccess | AlreadyMember | ValidationError | Forbidden | NotFound, strawberry.union("AddMemberResult")
]


@strawberry.input(
    description="Invite an email to join with these roles. OWNER (or admin) only. The answer is the same whether"
    " or not someone has registered the email; the invitation waits for them until it expires."
)
class InviteMemberInput:
    organization_id: strawberry.ID | None = references.organization_id()
    external_organization_id: str | None = references.external_organization_id()
    email: str
    roles: list[MemberRole]
    idempotency_key: str | None = strawberry.field(
        default=None, description="Sending the same invitation again with the same key returns it unchanged"
    )


@strawberry.type
class InviteMemberSuccess:
    invitation: Invitation


InviteMemberResult = Annotated[
    InviteMemberSuccess | AlreadyMember | AlreadyInvited | IdempotencyConflict | ValidationError | Forbidden | NotFound,
    strawberry.union("InviteMemberResult"),
]


@strawberry.input(description="Join with the invited roles. The invitee's user token only.")
class AcceptInvitationInput:
    invitation_id: strawberry.ID


@strawberry.type
class AcceptInvitationSuccess:
    membership: Membership
    invitation: Invitation


AcceptInvitationResult = Annotated[
    AcceptInvitationSuccess | InvitationExpired | InvitationNotPending | AlreadyMember | Forbidden | NotFound,
    strawberry.union("AcceptInvitationResult"),
]


@strawberry.input(description="Say no to an invitation. The invitee's user token only.")
class DeclineInvitationInput:
    invitation_id: strawberry.ID


@strawberry.type
class DeclineInvitationSuccess:
    invitation: Invitation


DeclineInvitationResult = Annotated[
    DeclineInvitationSuccess | InvitationExpired | InvitationNotPending | Forbidden | NotFound,
    strawberry.union("DeclineInvitationResult"),
]


@strawberry.input(description="Withdraw a pending invitation. OWNER (or admin) only.")
class RevokeInvitationInput:
    invitation_id: strawberry.ID


@strawberry.type
class RevokeInvitationSuccess:
    invitation: Invitation


RevokeInvitationResult = Annotated[
    RevokeInvitationSuccess | InvitationExpired | InvitationNotPending | Forbidden | NotFound,
    strawberry.union("RevokeInvitationResult"),
]


@strawberry.input(description="Replace a member's roles. OWNER only; the last owner keeps OWNER.")
class SetMemberRolesInput:
    organization_id: strawberry.ID | None = references.organization_id()
    external_organization_id: str | None = references.external_organization_id()
    user_id: strawberry.ID | None = references.user_id()
    external_user_id: str | None = references.external_user_id()
    roles: list[MemberRole]


@strawberry.type
class SetMemberRolesSuccess:
    membership: Membership


SetMemberRolesResult = Annotated[
    SetMemberRolesSuccess | LastOwner | ValidationError | Forbidden | NotFound,
    strawberry.union("SetMemberRolesResult"),
]


@strawberry.input(description="Remove a member. OWNER only; the last owner cannot be removed.")
class RemoveMemberInput:
    organization_id: strawberry.ID | None = references.organization_id()
    external_organization_id: str | None = references.external_organization_id()
    user_id: strawberry.ID | None = references.user_id()
    external_user_id: str | None = references.external_user_id()


@strawberry.type
class RemoveMemberSuccess:
    organization: Organization


RemoveMemberResult = Annotated[
    RemoveMemberSuccess | LastOwner | ValidationError | Forbidden | NotFound, strawberry.union("RemoveMemberResult")
]


@strawberry.input(description="Leave an organization you belong to; the last owner cannot leave.")
class LeaveOrganizationInput:
    organization_id: strawberry.ID | None = references.organization_id()
    external_organization_id: str | None = references.external_organization_id()


@strawberry.type
class LeaveOrganizationSuccess:
    organization_id: strawberry.ID


LeaveOrganizationResult = Annotated[
    LeaveOrganizationSuccess | LastOwner | ValidationError | Forbidden | NotFound,
    strawberry.union("LeaveOrganizationResult"),
]


@strawberry.input(description="Give the organization a shared credit pool. BILLING or OWNER.")
class EnableCreditPoolInput:
    organization_id: strawberry.ID | None = references.organization_id()
    external_organization_id: str | None = references.external_organization_id()


@strawberry.type
class EnableCreditPoolSuccess:
    organization: Organization
    credit_pool: CreditAccount


EnableCreditPoolResult = Annotated[
    EnableCreditPoolSuccess | ValidationError | Forbidden | NotFound, strawberry.union("EnableCreditPoolResult")
]


@strawberry.input(description="A member's monthly limit on the pool; monthlyCredits null lifts it. BILLING or OWNER.")
class SetMemberBudgetInput:
    organization_id: strawberry.ID | None = references.organization_id()
    external_organization_id: str | None = references.external_organization_id()
    user_id: strawberry.ID | None = references.user_id()
    external_user_id: str | None = references.external_user_id()
    monthly_credits: Credits | None = None


@strawberry.type
class SetMemberBudgetSuccess:
    membership: Membership


SetMemberBudgetResult = Annotated[
    SetMemberBudgetSuccess | ValidationError | Forbidden | NotFound, strawberry.union("SetMemberBudgetResult")
]
