"""The ASGI application: GraphQL at /graphql, the My Credit page at /my-credit/, liveness and readiness checks, and
the background sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from billing import auto_top_up
from creditline import db
from creditline.clock import Clock
from creditline.db_backends import SERVICE_UNAVAILABLE_MESSAGE, DatabaseUnavailable
from creditline.events import EventBus, InProcessBus, RedisBus
from creditline.exports import transactions_export, usage_export
from creditline.gateways import gateway_for
from creditline.graphql import GraphQLEndpoint, build_schema
from creditline.http_limits import BodyLimitMiddleware, WebSocketMessageLimit
from creditline.invoices import invoice_page
from creditline.jobs import run_sweeper
from creditline.jwt_keys import key_source
from creditline.logs import RequestLogMiddleware
from creditline.persisted import persisted_documents
from creditline.portal import portal_session
from creditline.rate_limit import RateLimiter, RateLimitMiddleware, limiter_for, refuse_websocket
from creditline.services import Services
from creditline.settings import Settings
from creditline.stripe_webhook_endpoint import stripe_webhook
from creditline.web_page import WebPage
from creditline.webhooks.worker import DeliveryWorker
from models.plans import PlanCatalog
from models.rate_card import RateCard
from resolvers.auth import Authenticator
from resolvers.jwt_sign_in import JwtSignIn
from resolvers.token_usage import TokenUsage

log = logging.getLogger(__name__)


WORKER_HEADER = "x-creditline-worker"
"""On ``/livez`` and ``/readyz``: the id of the process that answered."""


def build_services(settings: Settings, clock: Clock) -> Services:
    """What lives as long as the process, from settings; a malformed configuration file stops start-up."""
    bus: EventBus = RedisBus(settings.redis_url, settings.redis_channel) if settings.redis_url else InProcessBus()
    try:
        rate_card = RateCard.from_file(settings.rate_card) if settings.rate_card else RateCard()
    except ValueError as exc:
        raise SystemExit(f"CREDITLINE_RATE_CARD: {exc}") from exc
    try:
        plans = PlanCatalog.from_file(settings.plans) if settings.plans else PlanCatalog()
    except ValueError as exc:
        raise SystemExit(f"CREDITLINE_PLANS: {exc}") from exc
    services = Services(
        settings=settings,
        clock=clock,
        bus=bus,
        rate_card=rate_card,
        plans=plans,
        gateway=gateway_for(settings),
    )
    if settings.secret_key:
        services.link_key = settings.secret_key.encode()
    return services


class CreditlineApp(Starlette):
    """Starlette, except that a websocket on /graphql goes straight to the GraphQL endpoint.

    Neither the middleware stack nor the router has anything to do for it, but every open websocket would
    keep their frames alive for as long as it lasts: 4 KB of each idle subscriber. Its handshake is counted
    by the rate limiter here, and its messages are capped here unless the server does it (uvicorn).
    """

    def __init__(
        self,
        graphql: ASGIApp,
        *,
        limiter: RateLimiter | None = None,
        ws_max_message_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.graphql = graphql
        self.limiter = limiter
        self.ws_max_message_bytes = ws_max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _route_path(scope) == "/graphql":
            scope["app"] = self
            if self.limiter is not None and await refuse_websocket(self.limiter, scope, receive, send):
                return
            if self.ws_max_message_bytes is not None:
                receive = WebSocketMessageLimit(receive, send, self.ws_max_message_bytes)
            await self.graphql(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class Readiness:
    """What ``/readyz`` checks, each within ``readiness_timeout_seconds``: the database answers through the
    pool requests use (so an exhausted pool is not ready either), its migrations are applied, and Redis
    answers when it is configured."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._migrated = False  # once current, they stay so for this process's code

    async def checks(self) -> dict[str, str]:
        probes = {"database": self._database()}
        if self.settings.redis_url:
            probes["redis"] = self._ping_redis()
        tasks = {name: asyncio.ensure_future(probe) for name, probe in probes.items()}
        await asyncio.wait(tasks.values(), timeout=self.settings.readiness_timeout_seconds)
        checks = {name: self._result(task) for name, task in tasks.items()}
        for name, result in checks.items():
            if result != "ok":
                log.warning("not ready: %s: %s", name, result)
                if self.settings.production:
                    checks[name] = "unavailable"  # the reasons name internal hosts: they go to the log only
        return checks

    def _result(self, task: asyncio.Future[None]) -> str:
        if not task.done():
            # Not awaited: giving back a connection that stopped answering takes its own timeout.
            task.cancel()
            task.add_done_callback(_ignore_result)
            return f"no answer within {self.settings.readiness_timeout_seconds:g} s"
        exc = task.exception()
        if exc is not None:
            return str(exc) or type(exc).__name__
        return "ok"

    async def _database(self) -> None:
        await db.check_database(self.settings.readiness_timeout_seconds, migrations=not self._migrated)
        self._migrated = True

    async def _ping_redis(self) -> None:
        timeout = self.settings.readiness_timeout_seconds
        client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            await client.ping()
        finally:
            await client.aclose()


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """A request the database could not serve (an outage, a pool exhausted past its timeout): 503, in the
    shape of a GraphQL error so that GraphQL clients read it too; nothing was done, or at commit the outcome
    is unknown, so a retry must reuse its idempotency key."""
    return JSONResponse(
        {"errors": [{"message": SERVICE_UNAVAILABLE_MESSAGE, "extensions": {"code": "SERVICE_UNAVAILABLE"}}]},
        status_code=503,
        headers={"retry-after": "1"},
    )


async def _last_flush(usage: TokenUsage, task: asyncio.Task[None]) -> None:
    """Stop the periodic flush of token uses and write what is left, so a restart loses none."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        await usage.flush()
    except Exception:  # shutting down with the database gone: only lastUsedAt is lost
        log.exception("writing when tokens were last used failed at shutdown")


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def cors(origins: tuple[str, ...]) -> Middleware:
    """Browsers on these origins (``*``: any) may call the API. Callers send bearer tokens in the
    Authorization header, never cookies, so credentials are never allowed (with ``*`` they must not be)."""
    return Middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=False,
        max_age=600,
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    manage_database: bool = True,
    run_jobs: bool = True,
    ws_message_limit: bool = True,
) -> CreditlineApp:
    """Build the app. Tests pass ``manage_database=False`` when they have initialised Tortoise already;
    ``creditline serve`` passes ``ws_message_limit=False`` because uvicorn caps websocket messages itself.

    Unsafe production settings stop it here, whichever ASGI server imports it (``creditline serve`` checks
    them first, to say so without a traceback)."""
    refusal = settings.refusal()
    if refusal:
        raise SystemExit(refusal)
    services = build_services(settings, clock or Clock())
    readiness = Readiness(settings)
    limiter = limiter_for(settings)
    usage = TokenUsage(settings.token_cache_seconds)
    jwt_keys = key_source(settings)
    jwt = None if jwt_keys is None else JwtSignIn(settings, jwt_keys, services.clock.now)
    auth = (
        Authenticator(settings.token_cache_seconds, clock=services.clock, usage=usage, jwt=jwt)
        if limiter is None
        else limiter.authenticator(settings, clock=services.clock, usage=usage, jwt=jwt)
    )
    documents = persisted_documents(settings.persisted_documents, settings.documents_file)
    web_page = WebPage(settings)
    graphql = GraphQLEndpoint(
        build_schema(settings, documents), services, auth, limiter, documents, ide=web_page.graphiql
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_database:
            # Connections open on first use: a database that is down now makes /readyz answer 503 until it
            # is back (`creditline serve` refuses to start instead).
            await db.init_db(settings.database_url, settings)
        await services.bus.start()
        # Thousands of long-lived subscriptions make full collections slow (0.5 s seen with 1,000): keep
        # start-up objects out of the collector and collect the older generations less often. The young
        # generation is collected every 10,000 objects: one pass over 50,000 paused everything for 60-160 ms
        # every few seconds under a stream of spends, which was most of the subscription p99.
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        sweeper = asyncio.create_task(run_sweeper(services)) if run_jobs else None
        webhook_worker = asyncio.create_task(DeliveryWorker(services).run()) if run_jobs else None
        token_watch = asyncio.create_task(graphql.token_watch.run())
        usage_flush = asyncio.create_task(usage.run(settings.token_usage_flush_seconds))
        try:
            yield
        finally:
            token_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await token_watch
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            if webhook_worker is not None:  # sends under way finish (within their timeout) and are recorded
                webhook_worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await webhook_worker
            await auto_top_up.idle()  # let top-ups being charged finish and publish
            await services.bus.stop()
            await services.gateway.close()
            if limiter is not None:
                await limiter.close()
            await _last_flush(usage, usage_flush)
            if jwt_keys is not None:
                await jwt_keys.aclose()
            if manage_database:
                await db.close_db()

    # Each process answers its own probes (its own pool and bus): the header says which one answered, so that
    # an operator running `creditline serve --workers N` can tell the workers apart.
    worker = {WORKER_HEADER: str(os.getpid())}

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=worker)

    async def readyz(request: Request) -> Response:
        checks = await readiness.checks()
        failed = [name for name, result in checks.items() if result != "ok"]
        if failed:
            return JSONResponse(
                {"status": "unavailable", "failed": failed, "checks": checks}, status_code=503, headers=worker
            )
        return JSONResponse({"status": "ready", "checks": checks}, headers=worker)

    # Outermost first: the request's log line, CORS (a preflight is answered there, and refusals below carry
    # its headers, so that a page can read a 429), then the cheapest refusals (rate, then body) before any work.
    middleware = [Middleware(RequestLogMiddleware)] if settings.access_log else []
    if settings.cors_origins:
        middleware.append(cors(settings.cors_origins))
    if limiter is not None:
        middleware.append(Middleware(RateLimitMiddleware, limiter=limiter))
    middleware.append(
        Middleware(
            BodyLimitMiddleware,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_seconds=settings.body_timeout_seconds,
        )
    )
    app = CreditlineApp(
        graphql,
        limiter=limiter,
        ws_max_message_bytes=settings.ws_max_message_bytes if ws_message_limit else None,
        middleware=middleware,
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/livez", livez),
            Route("/readyz", readyz),
            Route("/healthz", readyz),  # the old health check: now it says whether requests can succeed
            Route("/exports/usage.csv", usage_export(auth)),
            Route("/exports/transactions.csv", transactions_export(auth)),
            Route("/invoices/{invoice_id}", invoice_page(auth, services)),
            Route("/webhooks/stripe", stripe_webhook(services), methods=["POST"]),
            Route("/portal/session", portal_session(services), methods=["POST"]),
            *web_page.routes(),
        ],
        lifespan=lifespan,
        exception_handlers={DatabaseUnavailable: database_unavailable},
    )
    app.state.services = services
    app.state.auth = auth
    app.state.token_usage = usage
    app.state.rate_limiter = limiter
    return app
