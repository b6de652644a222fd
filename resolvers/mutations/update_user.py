from __future__ import annotations

import strawberry
from strawberry.types import Info

from models import provisioning
from resolvers.context import Context
from resolvers.mutations._provisioning import already_exists, checked_metadata, forget
from resolvers.permissions import require_admin
from resolvers.references import check_external_id, user_pk
from resolvers.validation import check_email, check_metadata, first_error
from schema.errors import ValidationError
from schema.mutations.update_user import UpdateUserInput, UpdateUserResult, UpdateUserSuccess
from schema.types import User


async def update_user(info: Info[Context, None], input: UpdateUserInput) -> UpdateUserResult:
    """Change a user's email, metadata (whole) or externalId (once, while unset). Admin tokens only."""
    if denied := require_admin(info):
        return denied
    replace_metadata = input.metadata is not strawberry.UNSET
    if invalid := first_error(
        None if input.email is None else check_email(input.email),
        None if input.external_id is None else check_external_id(input.external_id),
        check_metadata(input.metadata) if replace_metadata else None,
    ):
        return invalid
    pk = await user_pk(input.user_id, input.external_user_id)
    if not isinstance(pk, int):
        return pk
    changes = provisioning.Changes(
        email=None if input.email is None else input.email.strip().lower(),
        external_id=input.external_id,
        metadata=checked_metadata(input.metadata) if replace_metadata else None,
        replace_metadata=replace_metadata,
    )
    try:
        user = await provisioning.update_user(pk, changes)
    except provisioning.ImmutableError as exc:
        return ValidationError(message=str(exc), field="externalId")
    except provisioning.AlreadyExistsError as exc:
        return already_exists(exc, "User")
    forget(info.context.loaders.user, pk)
    return UpdateUserSuccess(user=User(id=user.id, email=user.email))
