"""``apiTokens``: every token, for admins (a user lists their own through ``me { apiTokens }``)."""

from __future__ import annotations

from strawberry import relay
from strawberry.types import Info

from models.ids import decode_id
from models.tables import ApiToken as ApiTokenRow
from models.tables import TokenKind
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.permissions import principal
from schema.tokens import ApiTokenFilter
from schema.types import ApiToken, token_page


async def api_tokens(
    info: Info[Context, None],
    first: int | None = None,
    after: str | None = None,
    filter: ApiTokenFilter | None = None,
) -> relay.Connection[ApiToken]:
    if not principal(info).is_admin:
        raise ForbiddenError("Listing every token needs an admin token; a user lists their own with me { apiTokens }")
    query = ApiTokenRow.all()
    if filter is not None:
        if filter.kind is not None:
            query = query.filter(kind=TokenKind(filter.kind))
        if filter.user_id is not None:
            user = decode_id(filter.user_id, "User")
            if user is None:
                raise ClientError("userId is not a user ID", "BAD_FILTER")
            query = query.filter(user_id=user)
        if filter.revoked is not None:
            query = query.filter(revoked_at__isnull=not filter.revoked)
    return await token_page(info, query, first, after)
