from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import AlreadyExists, Forbidden, NotFound, ValidationError
from schema.scalars import Metadata
from schema.types import User


@strawberry.input(
    description="Change a user, named by exactly one of userId or externalUserId. Admin tokens only. An omitted"
    " field keeps its value; metadata is replaced whole (null removes it); externalId may be set once, while the"
    " user has none."
)
class UpdateUserInput:
    user_id: strawberry.ID | None = None
    external_user_id: str | None = None
    email: str | None = None
    external_id: str | None = None
    metadata: Metadata | None = strawberry.UNSET


@strawberry.type
class UpdateUserSuccess:
    user: User


UpdateUserResult = Annotated[
    UpdateUserSuccess | AlreadyExists | ValidationError | Forbidden | NotFound, strawberry.union("UpdateUserResult")
]
