"""The GraphQL schema and its HTTP/websocket endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import strawberry
from cross_web import HTTPException
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLFormattedError,
    OperationDefinitionNode,
    OperationType,
    parse,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import MaskErrors, MaxTokensLimiter
from strawberry.extensions.base_extension import SchemaExtension
from strawberry.http import GraphQLRequestData
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    ErrorMessage,
    Message,
    SubscribeMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType
from strawberry.utils.aio import aclosing

from creditline import json_body
from creditline.db_backends import SERVICE_UNAVAILABLE_MESSAGE, DatabaseUnavailable
from creditline.document_cache import TextCache, text_bytes
from creditline.execution import PlainLeafExecutionContext
from creditline.live import (
    EXPIRED,
    NO_LONGER_VALID,
    SLOW_SUBSCRIBER_CLOSE_CODE,
    FeedWatchers,
    LiveOperation,
    SlowSubscriberClosed,
    TokenWatch,
)
from creditline.logs import LoggedSchema
from creditline.persisted import PersistedDocuments, PersistedDocumentsExtension, persisted_documents
from creditline.query_limits import QueryLimits, QueryLimitsExtension, too_long, validation_rules
from creditline.rate_limit import RateLimiter, rate_limited_error, secret_key
from creditline.services import Services
from creditline.settings import Settings
from resolvers.auth import Authenticator, bearer_secret
from resolvers.context import Context
from resolvers.errors import Unauthenticated
from resolvers.root import Mutation, Query, RootSubscription
from schema.scalars import SCALAR_MAP

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def should_mask(error: GraphQLError) -> bool:
    """Hide unexpected failures inside resolvers; keep input errors and our own typed client errors."""
    original = error.original_error
    return error.path is not None and original is not None and not isinstance(original, GraphQLError)


BAD_USER_INPUT = "BAD_USER_INPUT"


class VariableErrorCodes(SchemaExtension):
    """Variables that do not coerce are ``BAD_USER_INPUT`` (graphql-core gives them no code). Literals that
    do not are coded by validation (creditline/query_limits.py), values a scalar refuses by the scalar
    (schema/scalars.py); the limits have codes of their own (``QUERY_TOO_COMPLEX``...)."""

    def on_execute(self) -> Iterator[None]:
        yield
        # An error without a path while executing is a variable's: graphql-core coerces them first.
        result = self.execution_context.result
        for error in getattr(result, "errors", None) or []:
            if error.path is None and "code" not in (error.extensions or {}):
                error.extensions = {**(error.extensions or {}), "code": BAD_USER_INPUT}


def query_limits(settings: Settings) -> QueryLimits:
    return QueryLimits(
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_fragments=settings.max_fragments,
        max_fragment_spreads=settings.max_fragment_spreads,
        max_directives=settings.max_directives,
        max_cost=settings.max_query_cost,
        production=settings.production,
    )


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


PARSED: TextCache[DocumentNode] = TextCache(512)
"""Parsed documents by text and parse options (strawberry's ``ParserCache`` is bounded in entries only)."""


class BoundedParserCache(SchemaExtension):
    """The same text parses to the same document, from ``PARSED``: a long text is parsed on each request and
    not kept (creditline/document_cache.py). The identity matters: the checks of creditline/query_limits.py
    are cached by the document's."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query or ""
        options = context.parse_options
        key = (query, tuple(sorted(options.items())))
        try:
            context.graphql_document = PARSED.get(key, text_bytes(query), lambda: parse(query, **options))
        except GraphQLError:
            # Left to strawberry, which parses it again where its error is reported (raised from here, the
            # websocket transport ended the operation with a bare ``complete``).
            context.graphql_document = None
        yield

    def on_validate(self) -> Iterator[None]:
        yield
        if self.execution_context.pre_execution_errors:
            # A refused document is not kept: it would push out the ones that run.
            context = self.execution_context
            PARSED.discard((context.query or "", tuple(sorted(context.parse_options.items()))))


def build_schema(settings: Settings, documents: PersistedDocuments | None = None) -> strawberry.Schema:
    # Validation is ours (creditline/query_limits.py): strawberry's depth and alias limiters re-walk every
    # fragment spread, which is exponential in nested spreads. Its rules are built once, so that its
    # validation cache (keyed by the rule classes) hits.
    limits = query_limits(settings)
    rules = validation_rules(limits)
    persisted = documents or persisted_documents(settings.persisted_documents, settings.documents_file)
    extensions: list[Any] = [
        lambda: PersistedDocumentsExtension(persisted),
        BoundedParserCache,
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        lambda: QueryLimitsExtension(limits, rules),
        VariableErrorCodes,
        lambda: MaskUnexpectedErrors(should_mask_error=should_mask),
    ]
    factories: list[type[SchemaExtension]] = extensions
    return LoggedSchema(
        query=Query,
        mutation=Mutation,
        subscription=RootSubscription,
        extensions=factories,
        config=StrawberryConfig(disable_field_suggestions=settings.production, scalar_map=SCALAR_MAP),
        execution_context_class=PlainLeafExecutionContext,
    )


def schema_sdl() -> str:
    """The schema as checked in at ``schema.graphql`` (development settings: introspection on)."""
    return build_schema(Settings()).as_str() + "\n"


SUBSCRIPTIONS: TextCache[bool] = TextCache(256)
"""``_is_subscription``'s answers, by text (bounded in bytes as ``PARSED``)."""


def _is_subscription(query: str, operation_name: str | None, max_tokens: int) -> bool:
    return SUBSCRIPTIONS.get(
        (query, operation_name, max_tokens),
        text_bytes(query),
        lambda: _parses_to_subscription(query, operation_name, max_tokens),
    )


def _parses_to_subscription(query: str, operation_name: str | None, max_tokens: int) -> bool:
    try:
        document = parse(query, max_tokens=max_tokens)  # before the limits: no more than they allow
    except GraphQLError:
        return False  # validation reports the syntax error
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [op for op in operations if operation_name is None or (op.name and op.name.value == operation_name)]
    return any(op.operation is OperationType.SUBSCRIPTION for op in chosen[:1])


def with_document_id(data: Any) -> Any:
    """A request's top-level ``documentId`` (the GraphQL-over-HTTP persisted documents proposal), moved into its
    ``extensions``, where strawberry hands it to the persisted documents extension."""
    if isinstance(data, dict) and "documentId" in data:
        extensions = data.get("extensions")
        if extensions is None or isinstance(extensions, dict):
            data["extensions"] = {**(extensions or {}), "documentId": data.pop("documentId")}
    return data


_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)
"""The ioctl that reads a socket's send queue (Linux: SIOCOUTQ); elsewhere only the transport's buffer counts."""
CLOSE_GRACE_SECONDS = 1.0
"""How long a websocket being dropped has to take its close frame before the connection is cut."""
SEND_STALLED_REASON = "Subscriber too slow: not reading"


def _transport_of(websocket: object) -> asyncio.WriteTransport | None:
    """The socket's transport under uvicorn, whose ASGI ``send`` is a method of its websocket protocol (any
    of its implementations): what the peer has not taken yet waits in its write buffer."""
    send = getattr(getattr(websocket, "ws", None), "_send", None)
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    # Duck-typed: uvloop's transports are not subclasses of asyncio's.
    needed = ("get_write_buffer_size", "get_extra_info", "abort")
    return cast(asyncio.WriteTransport, transport) if all(hasattr(transport, n) for n in needed) else None


def _unsent_bytes(transport: asyncio.WriteTransport) -> int:
    """What waits for the peer: the transport's write buffer, and the kernel's send queue (``SIOCOUTQ``),
    which takes up to megabytes (``tcp_wmem``) before the transport's buffer starts to grow."""
    waiting = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError, ValueError):
            waiting += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
    return waiting


def _cut(transport: asyncio.WriteTransport) -> None:
    """Drop the connection and what waits for the peer, in our buffers and the kernel's: a plain close
    would leave the kernel delivering megabytes to a peer that never reads (SO_LINGER 0 resets instead)."""
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def expired_error(context: Context) -> GraphQLFormattedError | None:
    """The error of an operation sent on a websocket whose token has expired since it connected."""
    principal = context.principal
    if principal is None or principal.expires_at is None or principal.expires_at > context.now():
        return None
    return Unauthenticated(EXPIRED).formatted


_OPTIONAL_OBJECT = (dict, type(None))
_OPTIONAL_TEXT = (str, type(None))


def well_formed(message: object) -> bool:
    """Whether a graphql-transport-ws message has the fields its type needs, of the types they must have."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return False
    kind = message["type"]
    if kind in ("connection_init", "ping", "pong"):
        return isinstance(message.get("payload"), _OPTIONAL_OBJECT)
    if kind == "complete":
        return isinstance(message.get("id"), str)
    if kind == "subscribe":
        payload = message.get("payload")
        return (
            isinstance(message.get("id"), str)
            and isinstance(payload, dict)
            and isinstance(payload.get("query"), _OPTIONAL_TEXT)
            and isinstance(payload.get("operationName"), _OPTIONAL_TEXT)
            and isinstance(payload.get("variables"), _OPTIONAL_OBJECT)
            and isinstance(payload.get("extensions"), _OPTIONAL_OBJECT)
        )
    return True  # an unknown type: strawberry closes it with 4400 "Unknown message type"


class LiveTransportHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws where a subscription, once its resolver has handed over, is a ``LiveOperation``:
    still one of the connection's operations (the cap counts it, ``complete`` ends it) but with no task,
    generator or execution state between events (creditline/live.py).

    What a socket may buffer is bounded: a send that does not complete within
    ``CREDITLINE_WS_SEND_TIMEOUT_SECONDS`` (uvicorn waits while its write buffer is over the high-water mark),
    or more than ``CREDITLINE_WS_MAX_BUFFERED_BYTES`` left unsent, closes the websocket with 4413 and drops
    the connection: a close that waited for a peer that never reads would never finish."""

    view: GraphQLEndpoint

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live: dict[str, LiveOperation] = {}
        self.dropping = False
        self.revoked = False
        """Set by the token watch once it found this connection's token revoked: every later operation is
        refused, whatever the authenticator's cache still says."""

    def mark_revoked(self) -> None:
        self.revoked = True

    @property
    def token_watch(self) -> TokenWatch:
        return self.view.token_watch

    @property
    def feed_watchers(self) -> FeedWatchers:
        return self.view.feed_watchers

    async def close(self, code: int, reason: str) -> None:
        await self.drop(code, reason)

    def forget_live(self, operation_id: str) -> None:
        self.live.pop(operation_id, None)

    async def report(self, error: Exception) -> None:
        await self.handle_task_exception(error)

    async def send_message(self, message: Message) -> None:
        if self.dropping:
            raise SlowSubscriberClosed()
        settings = self.view.services.settings
        transport = _transport_of(self.websocket)
        if transport is not None and not transport.get_write_buffer_size():
            await super().send_message(message)  # the kernel takes it: nothing to wait for, no timer to set
        else:
            try:
                async with asyncio.timeout(settings.ws_send_timeout_seconds):
                    await super().send_message(message)
            except TimeoutError:
                await self.drop(SLOW_SUBSCRIBER_CLOSE_CODE, SEND_STALLED_REASON)
                raise SlowSubscriberClosed() from None
        if transport is not None and _unsent_bytes(transport) > settings.ws_max_buffered_bytes:
            await self.drop(SLOW_SUBSCRIBER_CLOSE_CODE, SEND_STALLED_REASON)
            raise SlowSubscriberClosed()

    async def drop(self, code: int, reason: str) -> None:
        """Close with ``code``, and cut the connection: at once if even the close frame cannot be sent,
        else after a moment for the peer to read it."""
        if self.dropping:
            return
        self.dropping = True
        transport = _transport_of(self.websocket)
        closed = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                await self.websocket.close(code=code, reason=reason)
                closed = True
        if transport is not None:
            if closed:
                asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, _cut, transport)
            else:
                _cut(transport)

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

    async def reauthenticated(self) -> GraphQLFormattedError | None:
        """Check the connection's token again, as an HTTP request would (the same ``Authenticator``: a revoked
        token stops within its cache window, an expired or idle one at once, and the use is recorded): the
        error to refuse an operation with, or ``None`` (then ``context.principal`` is the fresh one, whose
        idle expiry this use has slid). A JWT has no row to revoke: its expiry alone is checked.

        The token's own answer comes first: the expiry the socket was given may be stale, an idle timeout
        having been slid since by the token's uses elsewhere (HTTP, other sockets)."""
        principal = self.context.principal
        if principal is None:
            return None
        if not principal.revocable:
            return expired_error(self.context)
        if self.revoked or self.context.token is None:
            return Unauthenticated(NO_LONGER_VALID).formatted
        # Shielded, as in on_ws_connect: a client leaving meanwhile must not cut the lookup's query short.
        fresh = await asyncio.shield(self.view.auth.authenticate(f"Bearer {self.context.token}"))
        if fresh is None or fresh.token_id != principal.token_id:
            return expired_error(self.context) or Unauthenticated(NO_LONGER_VALID).formatted
        self.context.principal = fresh
        return None

    async def handle_message(self, message: Message) -> None:
        """Strawberry's, for a message of the protocol's shape; any other is closed with 4400 ("Failed to parse
        message"), as strawberry closes a message without a type: it reads the fields without checking them, so
        ``null``, a string, ``"payload": null`` or ``"query": 1`` raised in its handler (a traceback in the log, the
        connection dropped without a close frame, or a bare ``complete`` for a document that was not one)."""
        if not well_formed(message):
            await self.handle_invalid_message("Failed to parse message")
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """Strawberry's, once the connection's token has been checked again (``reauthenticated``: a revoked,
        expired or idle token answers an ``error`` for its id, UNAUTHENTICATED) and the operation has taken
        one from its token's bucket: an empty bucket answers an ``error`` for its id (RATE_LIMITED,
        retryAfter) and the connection stays open for a retry."""
        if message["id"] not in self.operations:
            try:
                refused = await self.reauthenticated()
            except DatabaseUnavailable:
                unavailable = {"message": SERVICE_UNAVAILABLE_MESSAGE, "extensions": {"code": "SERVICE_UNAVAILABLE"}}
                await self.send_message(
                    ErrorMessage(id=message["id"], type="error", payload=[cast(GraphQLFormattedError, unavailable)])
                )
                return
            if refused is not None:
                await self.send_message(ErrorMessage(id=message["id"], type="error", payload=[refused]))
                return
        payload_sent = cast(dict[str, Any], message.get("payload"))
        too_large = too_long(payload_sent.get("query"), self.view.services.settings.max_query_bytes)
        if too_large is not None and message["id"] not in self.operations:
            await self.send_message(ErrorMessage(id=message["id"], type="error", payload=[too_large.formatted]))
            return
        limiter = self.view.limiter
        token = self.context.token  # set once the connection authenticated
        if limiter is not None and token is not None and message["id"] not in self.operations:
            # The key is derived here, not kept: an idle subscriber holds nothing more for it.
            wait = await limiter.take(secret_key(token), limiter.quotas.token)
            if wait > 0:
                error = cast(GraphQLFormattedError, rate_limited_error(wait))
                await self.send_message(ErrorMessage(id=message["id"], type="error", payload=[error]))
                return
        documents = self.view.documents
        if documents.mode != "off":
            payload: dict[str, Any] = with_document_id(cast(dict[str, Any], message.get("payload")))
            if isinstance(payload, dict):
                try:
                    text = documents.resolve(payload.get("query"), payload.get("extensions"))
                except GraphQLError as error:
                    await self.send_message(ErrorMessage(id=message["id"], type="error", payload=[error.formatted]))
                    return
                if text is not None:
                    payload["query"] = text
        await super().handle_subscribe(message)

    async def _handle_pre_execution_error(self, operation: Operation[Context, None], result: Any) -> None:
        """An ``error`` for the operation's id with the errors HTTP answers, whatever they are: strawberry's
        closes the whole connection (4400) on a syntax error or the token limit, and under uvicorn that close
        failed and the operation ended with a bare ``complete``, so a client could not tell a broken document
        from an empty result. The connection stays open, as for a validation error."""
        await operation.send_initial_errors(result.errors)

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
        except (_OperationStreamClosed, SlowSubscriberClosed):
            return
        except Exception as error:
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise
        finally:
            self.context.services.bus.publish(())  # as GraphQLEndpoint.execute_single does for HTTP
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

    def __init__(
        self,
        schema: strawberry.Schema,
        services: Services,
        auth: Authenticator,
        limiter: RateLimiter | None = None,
        documents: PersistedDocuments | None = None,
        ide: Callable[[Request], Response | None] | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=None if services.settings.production else "graphiql",
            # Queries only: strawberry refuses mutations over GET. In production GET is off unless
            # CREDITLINE_ALLOW_GET_QUERIES=1: a GET is a "simple" cross-site request, so any page could make a
            # signed-in browser run queries.
            allow_queries_via_get=services.settings.get_queries,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            multipart_uploads_enabled=False,
            connection_init_wait_timeout=timedelta(seconds=services.settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=services.settings.max_subscriptions_per_connection,
        )
        self.services = services
        self.auth = auth
        self.limiter = limiter
        """Counts the operations sent on websockets (their handshakes are counted in creditline/app.py)."""
        self.documents = documents or PersistedDocuments()
        """The persisted documents the schema's extension resolves (creditline/persisted.py)."""
        self.ide = ide
        """The offline GraphiQL of the web build (creditline/web_page.py), when there is one."""
        self.token_watch = TokenWatch(services.settings.token_recheck_seconds, services.clock.now)
        self.feed_watchers = FeedWatchers(services.settings.max_subscriptions_per_feed)
        """Live subscriptions per viewer and feed in this process (``CREDITLINE_MAX_SUBSCRIPTIONS_PER_FEED``)."""
        """Started with the application (creditline/app.py): ends the live subscriptions of revoked and expired
        tokens."""

    async def render_graphql_ide(self, request: Request) -> Response:
        """The GraphiQL built into web/dist (no request leaves the machine); strawberry's loads from a CDN."""
        page = self.ide(request) if self.ide is not None else None
        return page if page is not None else await super().render_graphql_ide(request)

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        too_large = too_long(request_data.query, self.services.settings.max_query_bytes)
        if too_large is not None:  # before anything reads the text (a registered document's is ours)
            return ExecutionResult(data=None, errors=[too_large])
        # Strawberry would run a subscription sent over HTTP as a query and fail inside; refuse it plainly.
        query = request_data.query
        if query is None and self.documents.mode != "off":
            query = self.documents.peek(None, request_data.extensions)  # a document sent by its id
        query = query or ""
        max_tokens = self.services.settings.max_query_tokens
        if "subscription" in query and _is_subscription(query, request_data.operation_name, max_tokens):
            raise HTTPException(400, "Subscriptions need a websocket: connect with the graphql-transport-ws protocol")
        try:
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        finally:
            # After the operation's commits: wakes the delivery workers for the events it wrote and published
            # no balance change of (a refusal's spend_limit.reached, a canceled subscription, a redelivery).
            self.services.bus.publish(())

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A GET naming a persisted document by its id has no ``query`` either: it is a request, not the IDE.
        params = request.query_params
        named = params.get("documentId") is not None or params.get("extensions") is not None
        return not named and super().should_render_graphql_ide(request)

    def decode_json(self, data: str | bytes) -> object:
        """Request bodies and websocket messages: too deep a nesting is malformed JSON too."""
        return json_body.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        return with_document_id(super().parse_json(data))

    def parse_query_params(self, params: Any) -> dict[str, Any]:
        parsed: dict[str, Any] = with_document_id(super().parse_query_params(params))
        return parsed

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
