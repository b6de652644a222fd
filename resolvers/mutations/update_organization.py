from __future__ import annotations

import strawberry
from strawberry.types import Info

from models import provisioning
from resolvers.context import Context
from resolvers.mutations._provisioning import already_exists, checked_metadata, forget
from resolvers.permissions import require_admin
from resolvers.references import check_external_id, organization_pk
from resolvers.validation import check_metadata, check_text, first_error
from schema.errors import ValidationError
from schema.mutations.update_organization import (
    UpdateOrganizationInput,
    UpdateOrganizationResult,
    UpdateOrganizationSuccess,
)
from schema.types import Organization

MAX_NAME = 200


async def update_organization(info: Info[Context, None], input: UpdateOrganizationInput) -> UpdateOrganizationResult:
    """Change an organization's name, metadata (whole) or externalId (once, while unset). Admin tokens only."""
    if denied := require_admin(info):
        return denied
    replace_metadata = input.metadata is not strawberry.UNSET
    if invalid := first_error(
        None if input.name is None else check_text(input.name, "name", MAX_NAME),
        None if input.external_id is None else check_external_id(input.external_id),
        check_metadata(input.metadata) if replace_metadata else None,
    ):
        return invalid
    pk = await organization_pk(input.organization_id, input.external_organization_id)
    if not isinstance(pk, int):
        return pk
    changes = provisioning.Changes(
        name=None if input.name is None else input.name.strip(),
        external_id=input.external_id,
        metadata=checked_metadata(input.metadata) if replace_metadata else None,
        replace_metadata=replace_metadata,
    )
    try:
        org = await provisioning.update_organization(pk, changes)
    except provisioning.ImmutableError as exc:
        return ValidationError(message=str(exc), field="externalId")
    except provisioning.AlreadyExistsError as exc:
        return already_exists(exc, "Organization")
    forget(info.context.loaders.organization, pk)
    return UpdateOrganizationSuccess(organization=Organization(id=org.id, name=org.name))
