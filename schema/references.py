"""The input fields that name a user, an organization or a credit account by the platform's own id
(``User.externalId`` / ``Organization.externalId``) as an alternative to our global ID. Each call makes a new
field, so one input's field is never another's (resolvers/references.py and resolvers/accounts.py resolve them)."""

from __future__ import annotations

from typing import Any

import strawberry

ACCOUNT_ID = "A CreditAccount ID, or a User ID (their account) or an Organization ID (its credit pool)."
OWN_ACCOUNT = (
    f"{ACCOUNT_ID} At most one of accountId, externalUserId, externalOrganizationId. Default: your own account"
)


def account_id(description: str = OWN_ACCOUNT) -> Any:
    return strawberry.field(default=None, description=description)


def account_of_external_user() -> Any:
    return strawberry.field(default=None, description="Or the account of the user with this externalId")


def pool_of_external_organization() -> Any:
    return strawberry.field(default=None, description="Or the credit pool of the organization with this externalId")


def user_id() -> Any:
    return strawberry.field(default=None, description="Exactly one of userId or externalUserId")


def external_user_id() -> Any:
    return strawberry.field(default=None, description="The user by your platform's id (User.externalId)")


def organization_id(description: str = "Exactly one of organizationId or externalOrganizationId") -> Any:
    return strawberry.field(default=None, description=description)


def external_organization_id() -> Any:
    return strawberry.field(
        default=None, description="The organization by your platform's id (Organization.externalId)"
    )
