"""createApiToken and revokeApiToken: their inputs, successes, errors and results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from models.tables import TokenKind
from schema.errors import Forbidden, NotFound, ValidationError
from schema.types import ApiToken


@strawberry.input(
    description="Make a token. An admin makes any kind but PORTAL (portal sessions come from createPortalSession);"
    " a user token makes USER tokens for its own user, without scopes."
)
class CreateApiTokenInput:
    kind: TokenKind
    name: str = strawberry.field(description="To tell it apart: 1 to 200 characters")
    scopes: list[str] = strawberry.field(
        default_factory=list, description="SERVICE tokens: at least one of usage:write, balance:read, billing:read"
    )
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="USER tokens: whose (or externalUserId); a user token's default is its own user"
    )
    external_user_id: str | None = None
    expires_at: datetime | None = strawberry.field(default=None, description="When it stops working; null: never")
    idle_timeout_seconds: int | None = strawberry.field(
        default=None, description="It also stops working this long after its last use (60 s to 366 days)"
    )


@strawberry.type
class CreateApiTokenSuccess:
    secret: str = strawberry.field(description="The bearer secret: shown this once, never stored in clear")
    api_token: ApiToken


CreateApiTokenResult = Annotated[
    CreateApiTokenSuccess | ValidationError | Forbidden | NotFound, strawberry.union("CreateApiTokenResult")
]


@strawberry.input(
    description="Stop a token from working: at once for new lookups, within CREDITLINE_TOKEN_CACHE_SECONDS"
    " everywhere. An admin revokes any token, a user their own (and the agent tokens of their account and of pools"
    " where they are OWNER or BILLING), a service with usage:write agent tokens. Revoking a revoked token succeeds"
    " and changes nothing (revokedAt stays the first revocation)."
)
class RevokeApiTokenInput:
    token_id: strawberry.ID


@strawberry.type
class RevokeApiTokenSuccess:
    api_token: ApiToken


RevokeApiTokenResult = Annotated[RevokeApiTokenSuccess | Forbidden | NotFound, strawberry.union("RevokeApiTokenResult")]
