from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import strawberry
from strawberry.types import Info

from creditline.events import MembershipChanged
from models import organizations, provisioning
from models.ids import decode_id, encode_id
from models.ledger import IdempotencyKey
from models.tables import Invitation as InvitationRow
from models.tables import MemberRole
from models.tables import Membership as MembershipRow
from models.tables import Organization as OrganizationRow
from models.tables import User as UserRow
from resolvers.context import Context
from resolvers.mutations._common import conflict
from resolvers.mutations._provisioning import already_exists, checked_metadata
from resolvers.permissions import BILLING_ROLES, principal, require_admin, roles_in
from resolvers.references import check_external_id, organization_pk, user_pk
from resolvers.validation import check_email, check_key, check_metadata, check_positive, check_text, first_error
from schema.errors import (
    AlreadyInvited,
    AlreadyMember,
    Forbidden,
    InvitationExpired,
    InvitationNotPending,
    LastOwner,
    NotFound,
    ValidationError,
)
from schema.invitations import Invitation
from schema.mutations.organizations import (
    AcceptInvitationInput,
    AcceptInvitationResult,
    AcceptInvitationSuccess,
    AddMemberInput,
    AddMemberResult,
    AddMemberSuccess,
    CreateOrganizationInput,
    CreateOrganizationResult,
    CreateOrganizationSuccess,
    DeclineInvitationInput,
    DeclineInvitationResult,
    DeclineInvitationSuccess,
    EnableCreditPoolInput,
    EnableCreditPoolResult,
    EnableCreditPoolSuccess,
    InviteMemberInput,
    InviteMemberResult,
    InviteMemberSuccess,
    LeaveOrganizationInput,
    LeaveOrganizationResult,
    LeaveOrganizationSuccess,
    RemoveMemberInput,
    RemoveMemberResult,
    RemoveMemberSuccess,
    RevokeInvitationInput,
    RevokeInvitationResult,
    RevokeInvitationSuccess,
    SetMemberBudgetInput,
    SetMemberBudgetResult,
    SetMemberBudgetSuccess,
    SetMemberRolesInput,
    SetMemberRolesResult,
    SetMemberRolesSuccess,
)
from schema.types import CreditAccount, Membership, Organization

ORG_NOT_FOUND = "Organization not found"
LAST_OWNER = "An organization must keep at least one owner"
ADMINS_ONLY_ADD = "Adding a member directly needs an admin token: owners invite with inviteMember"
INVITATION_NOT_FOUND = "Invitation not found"


async def _organization(organization_id: str) -> OrganizationRow | NotFound:
    pk = decode_id(organization_id, "Organization")
    org = None if pk is None else await OrganizationRow.filter(id=pk).first()
    return NotFound(message=ORG_NOT_FOUND) if org is None else org


async def _named_organization(
    info: Info[Context, None], organization_id: str | None, external_organization_id: str | None
) -> OrganizationRow | NotFound | ValidationError:
    """The organization named by exactly one of ``organizationId`` or ``externalOrganizationId``.

    Whether an externalId exists is told to admins only (the only callers who may act on any organization): for
    anyone else an unknown one is an organization they have no role in (no row: id 0), so it is refused exactly
    as another tenant's existing one is. An unknown global ID stays ``NotFound`` (our ids are not secrets)."""
    if organization_id is not None and external_organization_id is None:
        return await _organization(organization_id)
    pk = await organization_pk(organization_id, external_organization_id)
    if isinstance(pk, NotFound) and not principal(info).is_admin:
        return OrganizationRow(id=0, name="")
    if not isinstance(pk, int):
        return pk
    org = await OrganizationRow.filter(id=pk).first()
    return NotFound(message=ORG_NOT_FOUND) if org is None else org


async def _require(info: Info[Context, None], org: OrganizationRow, allowed: frozenset[MemberRole]) -> Forbidden | None:
    roles = await roles_in(info, org.id)
    if roles is None or not roles & allowed:
        names = " or ".join(sorted(role.value for role in allowed))
        return Forbidden(message=f"This needs the {names} role in the organization")
    return None


def _check_roles(roles: Iterable[MemberRole]) -> ValidationError | None:
    if not list(roles):
        return ValidationError(message="Give at least one role", field="roles")
    return None


async def create_organization(info: Info[Context, None], input: CreateOrganizationInput) -> CreateOrganizationResult:
    """Create an organization: a user token's caller becomes its first OWNER; an admin names the owner and may
    give the platform's externalId and metadata (idempotent by externalId)."""
    who = principal(info)
    admin_only = (input.owner_id, input.external_owner_id, input.external_id, input.metadata)
    if who.user_id is None and not who.is_admin:
        return Forbidden(message="Creating an organization needs a user token, or an admin token naming the owner")
    if who.user_id is not None and any(value is not None for value in admin_only):
        return Forbidden(message="ownerId, externalOwnerId, externalId and metadata need an admin token")
    if invalid := first_error(
        check_text(input.name, "name", 200),
        None if input.external_id is None else check_external_id(input.external_id),
        check_metadata(input.metadata),
    ):
        return invalid
    if who.user_id is not None:
        org = await organizations.create(input.name.strip(), who.user_id, info.context.now())
        return CreateOrganizationSuccess(organization=Organization(id=org.id, name=org.name))
    owner = await user_pk(
        input.owner_id, input.external_owner_id, own_field="ownerId", external_field="externalOwnerId"
    )
    if not isinstance(owner, int):
        return owner
    try:
        org = await provisioning.create_organization(
            input.name.strip(), owner, input.external_id, checked_metadata(input.metadata), info.context.now()
        )
    except provisioning.AlreadyExistsError as exc:
        return already_exists(exc, "Organization")
    return CreateOrganizationSuccess(organization=Organization(id=org.id, name=org.name))


async def _new_member(input: AddMemberInput) -> int | NotFound | ValidationError:
    """The user to add, named by exactly one of email, userId or externalUserId."""
    given = [value for value in (input.email, input.user_id, input.external_user_id) if value is not None]
    if len(given) != 1:
        return ValidationError(message="Give exactly one of email, userId or externalUserId", field="email")
    if input.email is None:
        return await user_pk(input.user_id, input.external_user_id)
    if invalid := check_email(input.email):
        return invalid
    user = await UserRow.filter(email=input.email.strip().lower()).only("id").first()
    return NotFound(message="No user with that email") if user is None else int(user.id)


async def add_member(info: Info[Context, None], input: AddMemberInput) -> AddMemberResult:
    """Add a user at once, without asking them: admins only (owners invite, and the invitee consents)."""
    if require_admin(info) is not None:
        return Forbidden(message=ADMINS_ONLY_ADD)
    org_pk = await organization_pk(input.organization_id, input.external_organization_id)
    if not isinstance(org_pk, int):
        return org_pk
    if invalid := _check_roles(input.roles):
        return invalid
    user = await _new_member(input)
    if not isinstance(user, int):
        return user
    try:
        membership = await organizations.add_member(org_pk, user, input.roles, info.context.now())
    except organizations.AlreadyMemberError as exc:
        return AlreadyMember(message=str(exc))
    return AddMemberSuccess(membership=Membership.of(membership))


async def _member(
    organization: OrganizationRow, user_id: str | None, external_user_id: str | None = None
) -> int | NotFound | ValidationError:
    """A member named by exactly one of ``userId`` or ``externalUserId``."""
    named = await user_pk(user_id, external_user_id)
    if isinstance(named, ValidationError):
        return named
    # No such user and a user who is not a member are one answer, by either form of id.
    if isinstance(named, NotFound) or not await MembershipRow.exists(organization_id=organization.id, user_id=named):
        return NotFound(message="That user is not a member of this organization")
    return named


async def set_member_roles(info: Info[Context, None], input: SetMemberRolesInput) -> SetMemberRolesResult:
    org = await _named_organization(info, input.organization_id, input.external_organization_id)
    if not isinstance(org, OrganizationRow):
        return org
    if denied := await _require(info, org, frozenset({MemberRole.OWNER})):
        return denied
    if invalid := _check_roles(input.roles):
        return invalid
    member = await _member(org, input.user_id, input.external_user_id)
    if not isinstance(member, int):
        return member
    try:
        membership = await organizations.set_roles(org.id, member, input.roles, principal(info).user_id)
    except organizations.NotOwnerError as exc:
        return Forbidden(message=str(exc))
    except organizations.LastOwnerError:
        return LastOwner(message=LAST_OWNER)
    except organizations.NotMemberError as exc:
        return NotFound(message=str(exc))
    info.context.services.bus.publish([MembershipChanged(org.id, member)])  # committed: live subscriptions re-check
    return SetMemberRolesSuccess(membership=Membership.of(membership))


async def remove_member(info: Info[Context, None], input: RemoveMemberInput) -> RemoveMemberResult:
    org = await _named_organization(info, input.organization_id, input.external_organization_id)
    if not isinstance(org, OrganizationRow):
        return org
    if denied := await _require(info, org, frozenset({MemberRole.OWNER})):
        return denied
    member = await _member(org, input.user_id, input.external_user_id)
    if not isinstance(member, int):
        return member
    try:
        await organizations.remove_member(org.id, member, principal(info).user_id)
    except organizations.NotOwnerError as exc:
        return Forbidden(message=str(exc))
    except organizations.LastOwnerError:
        return LastOwner(message=LAST_OWNER)
    except organizations.NotMemberError as exc:
        return NotFound(message=str(exc))
    info.context.services.bus.publish([MembershipChanged(org.id, member)])  # committed: live subscriptions re-check
    return RemoveMemberSuccess(organization=Organization(id=org.id, name=org.name))


async def leave_organization(info: Info[Context, None], input: LeaveOrganizationInput) -> LeaveOrganizationResult:
    who = principal(info)
    if who.user_id is None:
        return Forbidden(message="Leaving an organization needs a user token")
    org = await _named_organization(info, input.organization_id, input.external_organization_id)
    if not isinstance(org, OrganizationRow):
        return org
    try:
        await organizations.remove_member(org.id, who.user_id, None)
    except organizations.LastOwnerError:
        return LastOwner(message=LAST_OWNER)
    except organizations.NotMemberError:
        return NotFound(message="You are not a member of this organization")
    info.context.services.bus.publish([MembershipChanged(org.id, who.user_id)])  # committed: subscriptions re-check
    return LeaveOrganizationSuccess(organization_id=strawberry.ID(encode_id("Organization", org.id)))


async def enable_credit_pool(info: Info[Context, None], input: EnableCreditPoolInput) -> EnableCreditPoolResult:
    org = await _named_organization(info, input.organization_id, input.external_organization_id)
    if not isinstance(org, OrganizationRow):
        return org
    if denied := await _require(info, org, BILLING_ROLES):
        return denied
    pool = await organizations.enable_pool(org.id, info.context.now())
    return EnableCreditPoolSuccess(
        organization=Organization(id=org.id, name=org.name), credit_pool=CreditAccount(id=pool.id)
    )


async def set_member_budget(info: Info[Context, None], input: SetMemberBudgetInput) -> SetMemberBudgetResult:
    org = await _named_organization(info, input.organization_id, input.external_organization_id)
    if not isinstance(org, OrganizationRow):
        return org
    if denied := await _require(info, org, BILLING_ROLES):
        return denied
    if invalid := check_positive(input.monthly_credits, "monthlyCredits"):
        return invalid
    member = await _member(org, input.user_id, input.external_user_id)
    if not isinstance(member, int):
        return member
    try:
        await organizations.set_budget(
            org.id, member, None if input.monthly_credits is None else int(input.monthly_credits), info.context.now()
        )
    except organizations.NotMemberError as exc:
        return NotFound(message=str(exc))
    except organizations.NoPoolError as exc:
        return ValidationError(message=str(exc), field="organizationId")
    membership = await MembershipRow.get(organization_id=org.id, user_id=member)
    return SetMemberBudgetSuccess(membership=Membership.of(membership))


# Invitations (issue 9, point 8).


def _normalized_email(email: str) -> str | ValidationError:
    """The email as users' emails are stored (trimmed, lower case), or why it is not one."""
    if invalid := check_email(email):
        return invalid
    return email.strip().lower()


async def invite_member(info: Info[Context, None], input: InviteMemberInput) -> InviteMemberResult:
    org = await _named_organization(info, input.organization_id, input.external_organization_id)
    if not isinstance(org, OrganizationRow):
        return org
    email = _normalized_email(input.email)
    if isinstance(email, ValidationError):
        return email
    key = input.idempotency_key
    if invalid := first_error(_check_roles(input.roles), None if key is None else check_key(key)):
        return invalid
    who = principal(info)
    request = {"organization": org.id, "email": email, "roles": organizations.roles_text(input.roles)}
    fingerprint = IdempotencyKey.for_request(who.idempotency_scope, key or "", "inviteMember", request).fingerprint
    now = info.context.now()
    # Rights are checked on every call; a refusal for want of them is stored under the key like any other
    # (a replay after the caller is an owner again is refused as the first call was).
    if denied := await _require(info, org, frozenset({MemberRole.OWNER})):
        if key is not None:
            await organizations.refuse_invite(who.idempotency_scope, key, fingerprint, now)
        return denied
    try:
        invitation = await organizations.invite(
            org.id,
            email,
            input.roles,
            actor_id=who.user_id,
            scope=who.idempotency_scope,
            key=key,
            request_hash=fingerprint,
            now=now,
            lifetime=timedelta(days=info.context.services.settings.invitation_days),
        )
    except organizations.NotOwnerError as exc:
        return Forbidden(message=str(exc))
    except organizations.AlreadyMemberError as exc:
        return AlreadyMember(message=str(exc))
    except organizations.AlreadyInvitedError as exc:
        return AlreadyInvited(message=str(exc))
    except organizations.InvitationConflictError:
        assert key is not None
        return conflict(key)
    return InviteMemberSuccess(invitation=Invitation.of(invitation, now))


async def _my_invitation(
    info: Info[Context, None], invitation_id: str, action: str
) -> InvitationRow | Forbidden | NotFound:
    """An invitation addressed to the caller's email (matched now: it may predate their account)."""
    who = principal(info)
    if who.user_id is None:
        return Forbidden(message=f"{action} an invitation needs the invitee's user token")
    pk = decode_id(invitation_id, "Invitation")
    user = await info.context.loaders.user.load(who.user_id)
    assert user is not None
    invitation = None if pk is None else await InvitationRow.filter(id=pk, email=user.email.lower()).first()
    return NotFound(message=INVITATION_NOT_FOUND) if invitation is None else invitation


def _refusal(exc: organizations.OrganizationError) -> InvitationExpired | InvitationNotPending:
    if isinstance(exc, organizations.InvitationExpiredError):
        return InvitationExpired(message=str(exc), expires_at=exc.expires_at)
    assert isinstance(exc, organizations.InvitationNotPendingError)
    return InvitationNotPending(message=str(exc), status=exc.status.value)


async def accept_invitation(info: Info[Context, None], input: AcceptInvitationInput) -> AcceptInvitationResult:
    invitation = await _my_invitation(info, input.invitation_id, "Accepting")
    if not isinstance(invitation, InvitationRow):
        return invitation
    user_id = principal(info).user_id
    assert user_id is not None
    now = info.context.now()
    try:
        membership, accepted = await organizations.accept_invitation(invitation, user_id, now)
    except (organizations.InvitationExpiredError, organizations.InvitationNotPendingError) as exc:
        return _refusal(exc)
    except organizations.AlreadyMemberError:
        return AlreadyMember(message="You are a member of this organization already")
    return AcceptInvitationSuccess(membership=Membership.of(membership), invitation=Invitation.of(accepted, now))


async def decline_invitation(info: Info[Context, None], input: DeclineInvitationInput) -> DeclineInvitationResult:
    invitation = await _my_invitation(info, input.invitation_id, "Declining")
    if not isinstance(invitation, InvitationRow):
        return invitation
    user_id = principal(info).user_id
    assert user_id is not None
    now = info.context.now()
    try:
        declined = await organizations.decline_invitation(invitation, user_id, now)
    except (organizations.InvitationExpiredError, organizations.InvitationNotPendingError) as exc:
        return _refusal(exc)
    return DeclineInvitationSuccess(invitation=Invitation.of(declined, now))


async def revoke_invitation(info: Info[Context, None], input: RevokeInvitationInput) -> RevokeInvitationResult:
    who = principal(info)
    if who.user_id is None and not who.is_admin:
        return Forbidden(message="Revoking an invitation needs an OWNER's user token or an admin token")
    pk = decode_id(input.invitation_id, "Invitation")
    invitation = None if pk is None else await InvitationRow.filter(id=pk).first()
    roles = None if invitation is None else await roles_in(info, invitation.organization_id)
    # Another organization's invitation is as unknown as a missing one.
    if invitation is None or roles is None:
        return NotFound(message=INVITATION_NOT_FOUND)
    if MemberRole.OWNER not in roles:
        return Forbidden(message="This needs the OWNER role in the organization")
    now = info.context.now()
    try:
        revoked = await organizations.revoke_invitation(invitation, who.user_id, now)
    except organizations.NotOwnerError as exc:
        return Forbidden(message=str(exc))
    except (organizations.InvitationExpiredError, organizations.InvitationNotPendingError) as exc:
        return _refusal(exc)
    return RevokeInvitationSuccess(invitation=Invitation.of(revoked, now))
