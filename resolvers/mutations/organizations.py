from __future__ import annotations

from collections.abc import Iterable

from strawberry.types import Info

from models import organizations
from models.tables import MemberRole
from models.tables import Membership as MembershipRow
from models.tables import Organization as OrganizationRow
from models.tables import User as UserRow
from resolvers.context import Context
from resolvers.ids import decode_id
from resolvers.permissions import BILLING_ROLES, principal, roles_in
from resolvers.validation import check_email, check_positive, check_text, first_error
from schema.errors import AlreadyMember, Forbidden, LastOwner, NotFound, ValidationError
from schema.mutations.organizations import (
    AddMemberInput,
    AddMemberResult,
    AddMemberSuccess,
    CreateOrganizationInput,
    CreateOrganizationResult,
    CreateOrganizationSuccess,
    EnableCreditPoolInput,
    EnableCreditPoolResult,
    EnableCreditPoolSuccess,
    LeaveOrganizationInput,
    LeaveOrganizationResult,
    LeaveOrganizationSuccess,
    RemoveMemberInput,
    RemoveMemberResult,
    RemoveMemberSuccess,
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


async def _organization(organization_id: str) -> OrganizationRow | NotFound:
    pk = decode_id(organization_id, "Organization")
    org = None if pk is None else await OrganizationRow.filter(id=pk).first()
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
    """Create an organization; the caller becomes its first OWNER."""
    who = principal(info)
    if who.user_id is None:
        return Forbidden(message="Creating an organization needs a user token")
    if invalid := check_text(input.name, "name", 200):
        return invalid
    org = await organizations.create(input.name.strip(), who.user_id, info.context.now())
    return CreateOrganizationSuccess(organization=Organization(id=org.id, name=org.name))


async def add_member(info: Info[Context, None], input: AddMemberInput) -> AddMemberResult:
    org = await _organization(input.organization_id)
    if isinstance(org, NotFound):
        return org
    if denied := await _require(info, org, frozenset({MemberRole.OWNER})):
        return denied
    if invalid := first_error(_check_roles(input.roles), check_email(input.email)):
        return invalid
    user = await UserRow.filter(email=input.email.strip().lower()).first()
    if user is None:
        return NotFound(message="No user with that email")
    try:
        membership = await organizations.add_member(org.id, user.id, input.roles, info.context.now())
    except organizations.AlreadyMemberError as exc:
        return AlreadyMember(message=str(exc))
    return AddMemberSuccess(membership=Membership.of(membership))


async def _member(organization: OrganizationRow, user_id: str) -> int | NotFound:
    pk = decode_id(user_id, "User")
    if pk is None or not await MembershipRow.exists(organization_id=organization.id, user_id=pk):
        return NotFound(message="That user is not a member of this organization")
    return pk


async def set_member_roles(info: Info[Context, None], input: SetMemberRolesInput) -> SetMemberRolesResult:
    org = await _organization(input.organization_id)
    if isinstance(org, NotFound):
        return org
    if denied := await _require(info, org, frozenset({MemberRole.OWNER})):
        return denied
    if invalid := _check_roles(input.roles):
        return invalid
    member = await _member(org, input.user_id)
    if isinstance(member, NotFound):
        return member
    try:
        membership = await organizations.set_roles(org.id, member, input.roles, principal(info).user_id)
    except organizations.NotOwnerError as exc:
        return Forbidden(message=str(exc))
    except organizations.LastOwnerError:
        return LastOwner(message=LAST_OWNER)
    except organizations.NotMemberError as exc:
        return NotFound(message=str(exc))
    return SetMemberRolesSuccess(membership=Membership.of(membership))


async def remove_member(info: Info[Context, None], input: RemoveMemberInput) -> RemoveMemberResult:
    org = await _organization(input.organization_id)
    if isinstance(org, NotFound):
        return org
    if denied := await _require(info, org, frozenset({MemberRole.OWNER})):
        return denied
    member = await _member(org, input.user_id)
    if isinstance(member, NotFound):
        return member
    try:
        await organizations.remove_member(org.id, member, principal(info).user_id)
    except organizations.NotOwnerError as exc:
        return Forbidden(message=str(exc))
    except organizations.LastOwnerError:
        return LastOwner(message=LAST_OWNER)
    except organizations.NotMemberError as exc:
        return NotFound(message=str(exc))
    return RemoveMemberSuccess(organization=Organization(id=org.id, name=org.name))


async def leave_organization(info: Info[Context, None], input: LeaveOrganizationInput) -> LeaveOrganizationResult:
    who = principal(info)
    if who.user_id is None:
        return Forbidden(message="Leaving an organization needs a user token")
    org = await _organization(input.organization_id)
    if isinstance(org, NotFound):
        return org
    try:
        await organizations.remove_member(org.id, who.user_id, None)
    except organizations.LastOwnerError:
        return LastOwner(message=LAST_OWNER)
    except organizations.NotMemberError:
        return NotFound(message="You are not a member of this organization")
    return LeaveOrganizationSuccess(organization_id=input.organization_id)


async def enable_credit_pool(info: Info[Context, None], input: EnableCreditPoolInput) -> EnableCreditPoolResult:
    org = await _organization(input.organization_id)
    if isinstance(org, NotFound):
        return org
    if denied := await _require(info, org, BILLING_ROLES):
        return denied
    pool = await organizations.enable_pool(org.id, info.context.now())
    return EnableCreditPoolSuccess(
        organization=Organization(id=org.id, name=org.name), credit_pool=CreditAccount(id=pool.id)
    )


async def set_member_budget(info: Info[Context, None], input: SetMemberBudgetInput) -> SetMemberBudgetResult:
    org = await _organization(input.organization_id)
    if isinstance(org, NotFound):
        return org
    if denied := await _require(info, org, BILLING_ROLES):
        return denied
    if invalid := check_positive(input.monthly_credits, "monthlyCredits"):
        return invalid
    member = await _member(org, input.user_id)
    if isinstance(member, NotFound):
        return member
    try:
        await organizations.set_budget(
            org.id, member, None if input.monthly_credits is None else int(input.monthly_credits)
        )
    except organizations.NotMemberError as exc:
        return NotFound(message=str(exc))
    membership = await MembershipRow.get(organization_id=org.id, user_id=member)
    return SetMemberBudgetSuccess(membership=Membership.of(membership))
