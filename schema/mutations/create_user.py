from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import AlreadyExists, Forbidden, ValidationError
from schema.scalars import Metadata
from schema.types import User


@strawberry.input(
    description="Create a user with a credit account and the signup bonus. Admin tokens only. With an externalId"
    " it is safe to retry: the same externalId with the same email and metadata answers the same user (no second"
    " bonus); with other details it is AlreadyExists (field externalId)."
)
class CreateUserInput:
    email: str
    external_id: str | None = strawberry.field(
        default=None, description="Your own id for the user: 1 to 255 printable characters, unique, immutable"
    )
    metadata: Metadata | None = None


@strawberry.type
class CreateUserSuccess:
    user: User


CreateUserResult = Annotated[
    CreateUserSuccess | AlreadyExists | ValidationError | Forbidden, strawberry.union("CreateUserResult")
]
