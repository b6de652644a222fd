"""The GraphQL schema and its HTTP/websocket endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import strawberry
from cross_web import HTTPException
from graphql import (
    ASTValidationRule,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OperationType,
    parse,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
    max_aliases,
    query_depth_limiter,
)
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.http import GraphQLRequestData
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType
from strawberry.utils.aio import aclosing

from creditline.db_backends import SERVICE_UNAVAILABLE_MESSAGE, DatabaseUnavailable
from creditline.live import LiveOperation, TokenWatch
from creditline.settings import Settings
from resolvers.auth import Authenticator, bearer_secret
from resolvers.context import Context, Services
from resolvers.root import Mutation, Query, RootSubscription
from schema.scalars import SCALAR_MAP

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def should_mask(error: GraphQLError) -> bool:
    """Hide unexpected failures inside resolvers; keep input errors and our own typed client errors."""
    original = error.original_error
    return error.path is not None and original is not None and not isinstance(original, GraphQLError)


class MaskUnexpectedErrors(MaskErrors):
    """Strawberry's masking, except that a database outage is said as such (``SERVICE_UNAVAILABLE``, so a
    client knows to retry) rather than as an unexpected error."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if isinstance(error.original_error, DatabaseUnavailable):
            return GraphQLError(
                SERVICE_UNAVAILABLE_MESSAGE,
                nodes=error.nodes,
                path=error.path,
                extensions={"code": "SERVICE_UNAVAILABLE"},
            )
        return super().anonymise_error(error)


def build_schema(settings: Settings) -> strawberry.Schema:
    # The validation rules are built once: the validation cache is keyed by rule classes, and a rule class
    # made per request (as QueryDepthLimiter/MaxAliasesLimiter do) would never hit it.
    rules: list[type[ASTValidationRule]] = [
        query_depth_limiter.create_validator(settings.max_query_depth, None, None),
        max_aliases.create_validator(settings.max_aliases),
    ]
    if settings.production:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions: list[Any] = [
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        lambda: AddValidationRules(rules),
        lambda: MaskUnexpectedErrors(should_mask_error=should_mask),
    ]
    factories: list[type[SchemaExtension]] = extensions
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=RootSubscription,
        extensions=factories,
        config=StrawberryConfig(disable_field_suggestions=settings.production, scalar_map=SCALAR_MAP),
    )


def schema_sdl() -> str:
    """The schema as checked in at ``schema.graphql`` (development settings: introspection on)."""
    return build_schema(Settings()).as_str() + "\n"


@lru_cache(maxsize=256)
def _is_subscription(query: str, operation_name: str | None) -> bool:
    try:
        document = parse(query)
    except GraphQLError:
        return False  # validation reports the syntax error
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [op for op in operations if operation_name is None or (op.name and op.name.value == operation_name)]
    return any(op.operation is OperationType.SUBSCRIPTION for op in chosen[:1])


class LiveTransportHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws where a subscription, once its resolver has handed over, is a ``LiveOperation``:
    still one of the connection's operations (the cap counts it, ``complete`` ends it) but with no task,
    generator or execution state between events (creditline/live.py)."""

    view: GraphQLEndpoint

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live: dict[str, LiveOperation] = {}

    @property
    def token_watch(self) -> TokenWatch:
        return self.view.token_watch

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code=code, reason=reason)

    def forget_live(self, operation_id: str) -> None:
        self.live.pop(operation_id, None)

    async def report(self, error: Exception) -> None:
        await self.handle_task_exception(error)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except DatabaseUnavailable:
            # The token could not be looked up: 1013 "try again later", not an init left unanswered.
            await self.websocket.close(code=1013, reason="The database is unavailable; try again shortly")
            return
        # Done with: the timer (cancelled) and the payload (read by on_ws_connect) would live as long as the
        # connection.
        self.connection_init_timeout_task = None
        self.context.connection_params = None

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Strawberry's (0.341), with a context of its own per operation, and no ``complete`` for a
        subscription whose resolver handed over: it lives on as a parked ``LiveOperation``."""
        live = LiveOperation(self, operation)
        try:
            result_source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=self.context.for_operation(live),
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            async with aclosing(result_source):
                await self._send_result_stream(operation, result_source)
            if live.handed_over and self.operations.get(operation.id) is operation:
                self.live[operation.id] = live
                self.token_watch.add(live)
                operation.task = None  # this task ends here: let it go (a drain task takes its place while one runs)
                live.park()
                return
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except _OperationStreamClosed:
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise
        finally:
            if not live.parked:
                live.close()

    async def cleanup_operation(self, operation_id: str) -> None:
        """Strawberry's, for an operation that may have no task (a parked subscription between events)."""
        live = self.live.pop(operation_id, None)
        if live is not None:
            live.close()
        operation = self.operations.pop(operation_id, None)
        if operation is not None and operation.task is not None:
            operation.task.cancel()  # not awaited, lest it block the websocket's own task


class GraphQLEndpoint(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context: the caller from the bearer token, fresh DataLoaders."""

    graphql_transport_ws_handler_class = LiveTransportHandler

    def __init__(self, schema: strawberry.Schema, services: Services, auth: Authenticator) -> None:
        super().__init__(
            schema,
            graphql_ide=None if services.settings.production else "graphiql",
            allow_queries_via_get=True,  # queries only: strawberry refuses mutations over GET
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            multipart_uploads_enabled=False,
            connection_init_wait_timeout=timedelta(seconds=services.settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=services.settings.max_subscriptions_per_connection,
        )
        self.services = services
        self.auth = auth
        self.token_watch = TokenWatch(services.settings.token_recheck_seconds)
        """Started with the application (creditline/app.py): ends the live subscriptions of revoked tokens."""

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Strawberry would run a subscription sent over HTTP as a query and fail inside; refuse it plainly.
        query = request_data.query or ""
        if "subscription" in query and _is_subscription(query, request_data.operation_name):
            raise HTTPException(400, "Subscriptions need a websocket: connect with the graphql-transport-ws protocol")
        return await super().execute_single(request, request_adapter, sub_response, context, root_value, request_data)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        if isinstance(request, WebSocket):
            # Websockets authenticate in connection_init (on_ws_connect), not with headers.
            return Context.build(self.services, None, request)
        header = request.headers.get("authorization")
        principal = await self.auth.authenticate(header)
        return Context.build(self.services, principal, request, bearer_secret(header))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Check the token in the connection_init payload: ``{"authorization": "Bearer <token>"}``."""
        params = context.connection_params or {}
        header = params.get("authorization")
        # Shielded: a client that gives up meanwhile must not cancel the lookup halfway through its query,
        # which would leave the pooled database connection busy ("another operation is in progress").
        principal = await asyncio.shield(self.auth.authenticate(header if isinstance(header, str) else None))
        if principal is None:
            raise ConnectionRejectionError({"message": "Send a valid token in connection_init"})
        context.principal = principal
        context.token = bearer_secret(header if isinstance(header, str) else None)
        acknowledge: UnsetType = UNSET
        return acknowledge
