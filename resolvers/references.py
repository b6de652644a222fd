"""Naming a user or an organization in an input: by our global ID or by the platform's own id (externalId).

Every input that names one accepts exactly one of the two forms (``userId`` / ``externalUserId``,
``organizationId`` / ``externalOrganizationId``). An unknown id of either form is ``NotFound`` here; a caller who
may not see every user or organization maps an unknown externalId to its refusal of another tenant's (README).
"""

from __future__ import annotations

from models.ids import decode_id
from models.tables import EXTERNAL_ID_MAX_LENGTH, Organization, User
from resolvers import boundary
from schema.errors import NotFound, ValidationError


def check_external_id(value: str, field: str = "externalId") -> ValidationError | None:
    """1 to 255 printable characters (the platform's own id)."""
    try:
        boundary.identifier(value, field, EXTERNAL_ID_MAX_LENGTH)
    except boundary.InputError as exc:
        return ValidationError(message=exc.message, field=exc.field)
    return None


def _one_of(own: str | None, external: str | None, own_field: str, external_field: str) -> ValidationError | None:
    if (own is None) == (external is None):
        return ValidationError(message=f"Give exactly one of {own_field} or {external_field}", field=own_field)
    if external is not None:
        return check_external_id(external, external_field)
    return None


async def user_pk(
    user_id: str | None,
    external_user_id: str | None,
    *,
    own_field: str = "userId",
    external_field: str = "externalUserId",
) -> int | NotFound | ValidationError:
    """The user named by exactly one of its global ID or its externalId."""
    if invalid := _one_of(user_id, external_user_id, own_field, external_field):
        return invalid
    if user_id is not None:
        pk = decode_id(user_id, "User")
        if pk is not None and await User.exists(id=pk):
            return pk
        return NotFound(message="User not found")
    user = await User.filter(external_id=external_user_id).only("id").first()
    if user is None:
        return NotFound(message=f"No user has externalId {external_user_id!r}")
    return int(user.id)


async def organization_pk(
    organization_id: str | None,
    external_organization_id: str | None,
    *,
    own_field: str = "organizationId",
    external_field: str = "externalOrganizationId",
) -> int | NotFound | ValidationError:
    """The organization named by exactly one of its global ID or its externalId."""
    if invalid := _one_of(organization_id, external_organization_id, own_field, external_field):
        return invalid
    if organization_id is not None:
        pk = decode_id(organization_id, "Organization")
        if pk is not None and await Organization.exists(id=pk):
            return pk
        return NotFound(message="Organization not found")
    organization = await Organization.filter(external_id=external_organization_id).only("id").first()
    if organization is None:
        return NotFound(message=f"No organization has externalId {external_organization_id!r}")
    return int(organization.id)
