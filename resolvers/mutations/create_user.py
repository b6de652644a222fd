from __future__ import annotations

from datetime import timedelta

from strawberry.types import Info

from models import provisioning
from resolvers.context import Context
from resolvers.mutations._provisioning import already_exists, checked_metadata, forget
from resolvers.permissions import require_admin
from resolvers.references import check_external_id
from resolvers.validation import check_email, check_metadata, first_error
from schema.mutations.create_user import CreateUserInput, CreateUserResult, CreateUserSuccess
from schema.types import User


async def create_user(info: Info[Context, None], input: CreateUserInput) -> CreateUserResult:
    """Create a user with the signup bonus, as ``creditline user create`` does; idempotent by externalId."""
    if denied := require_admin(info):
        return denied
    if invalid := first_error(
        check_email(input.email),
        None if input.external_id is None else check_external_id(input.external_id),
        check_metadata(input.metadata),
    ):
        return invalid
    email = input.email.strip().lower()
    settings = info.context.services.settings
    try:
        user_id = await provisioning.create_user(
            email,
            input.external_id,
            checked_metadata(input.metadata),
            signup_bonus=settings.signup_bonus,
            bonus_lifetime=timedelta(days=settings.signup_bonus_days),
            now=info.context.now(),
        )
    except provisioning.AlreadyExistsError as exc:
        return already_exists(exc, "User")
    forget(info.context.loaders.user, user_id)
    return CreateUserSuccess(user=User(id=user_id, email=email))
