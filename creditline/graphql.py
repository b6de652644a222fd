"""The GraphQL schema and its HTTP/websocket endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from creditline.settings import Settings
from resolvers.auth import Authenticator
from resolvers.context import Context, Services
from resolvers.root import Mutation, Query
from schema.scalars import SCALAR_MAP

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def should_mask(error: GraphQLError) -> bool:
    """Hide unexpected failures inside resolvers; keep input errors and our own typed client errors."""
    original = error.original_error
    return error.path is not None and original is not None and not isinstance(original, GraphQLError)


def build_schema(settings: Settings) -> strawberry.Schema:
    extensions: list[Any] = [
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
        lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
        lambda: MaskErrors(should_mask_error=should_mask),
    ]
    if settings.production:
        extensions.append(DisableIntrospection)
    factories: list[type[SchemaExtension]] = extensions
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        extensions=factories,
        config=StrawberryConfig(disable_field_suggestions=settings.production, scalar_map=SCALAR_MAP),
    )


def schema_sdl() -> str:
    """The schema as checked in at ``schema.graphql`` (development settings: introspection on)."""
    return build_schema(Settings()).as_str() + "\n"


class GraphQLEndpoint(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context: the caller from the bearer token, fresh DataLoaders."""

    def __init__(self, schema: strawberry.Schema, services: Services, auth: Authenticator) -> None:
        super().__init__(
            schema,
            graphql_ide=None if services.settings.production else "graphiql",
            allow_queries_via_get=True,  # queries only: strawberry refuses mutations over GET
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            multipart_uploads_enabled=False,
        )
        self.services = services
        self.auth = auth

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        return Context.build(self.services, principal, request)
