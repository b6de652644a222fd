from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import AlreadyExists, Forbidden, NotFound, ValidationError
from schema.scalars import Metadata
from schema.types import Organization


@strawberry.input(
    description="Change an organization, named by exactly one of organizationId or externalOrganizationId. Admin"
    " tokens only. An omitted field keeps its value; metadata is replaced whole (null removes it); externalId may"
    " be set once, while the organization has none."
)
class UpdateOrganizationInput:
    organization_id: strawberry.ID | None = None
    external_organization_id: str | None = None
    name: str | None = None
    external_id: str | None = None
    metadata: Metadata | None = strawberry.UNSET


@strawberry.type
class UpdateOrganizationSuccess:
    organization: Organization


UpdateOrganizationResult = Annotated[
    UpdateOrganizationSuccess | AlreadyExists | ValidationError | Forbidden | NotFound,
    strawberry.union("UpdateOrganizationResult"),
]
