"""Rate limits per bearer token, per client address without one, and per address for websocket handshakes
(issue 9, point 11). Each operation sent on an open websocket counts against the bucket of the token its
connection authenticated with, as an HTTP request of that token would.

A token counts against its address too until it has authenticated once (in this process, in the last five
minutes): made-up tokens do not get a fresh bucket each.

Token buckets: a bucket holds up to ``burst`` requests and refills at ``per_second``; a request takes one, and
an empty bucket answers 429 with ``Retry-After`` (whole seconds until one request's worth has refilled).
The key of a token's bucket is a hash of the bearer string itself, so no token lookup (and no database
round trip) is needed to refuse a request. Buckets live in this process, or in Redis when
``CREDITLINE_REDIS_URL`` is set (one Lua script per request, atomic, shared by every process). When Redis
does not answer, the process counts in its own buckets for a while, says so once in the log, and never fails
a request for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from creditline.logs import handshake_refused
from creditline.settings import Settings
from models.tokens import Principal
from resolvers.auth import Authenticator, bearer_secret

log = logging.getLogger("creditline.rate_limit")

EXEMPT_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
"""Probes: a load balancer asks often, from one address, and must not be told 429."""

_MAX_LOCAL_KEYS = 100_000
_VERIFIED_SECONDS = 300.0
"""How long a token that authenticated keeps its own bucket without counting against its address."""
_REDIS_RETRY_SECONDS = 5.0
_REDIS_TIMEOUT_SECONDS = 0.25

# KEYS[1] the bucket; ARGV rate per second, burst, now (seconds). Returns {allowed, retry_after_seconds}.
# The retry is a string: Redis would truncate a Lua number to an integer.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""


@dataclass(frozen=True)
class Quota:
    per_second: float
    burst: int


@dataclass(frozen=True)
class Quotas:
    token: Quota
    anonymous: Quota
    websocket: Quota


class LocalBuckets:
    """Token buckets in this process: ``key -> [tokens, at]``."""

    def __init__(self) -> None:
        self.buckets: dict[str, list[float]] = {}

    def take(self, key: str, quota: Quota, now: float) -> float:
        """0 if a request may go now, else the seconds until it may."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= _MAX_LOCAL_KEYS:
                self._prune(now)
            self.buckets[key] = [quota.burst - 1.0, now]
            return 0.0
        tokens = min(float(quota.burst), bucket[0] + max(0.0, now - bucket[1]) * quota.per_second)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / quota.per_second

    def refund(self, key: str, quota: Quota) -> None:
        """Give back the request just taken (the shared bucket refused it)."""
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket[0] = min(float(quota.burst), bucket[0] + 1.0)

    def _prune(self, now: float) -> None:
        """Forget the buckets idle long enough to have refilled (a new one starts full); if that is not
        enough, all of them."""
        for key, (_tokens, at) in list(self.buckets.items()):
            if now - at > 300:
                del self.buckets[key]
        if len(self.buckets) >= _MAX_LOCAL_KEYS * 0.9:
            self.buckets.clear()


class RateLimiter:
    def __init__(
        self,
        quotas: Quotas,
        *,
        redis_url: str = "",
        prefix: str = "creditline:ratelimit",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.quotas = quotas
        self.prefix = prefix
        self.clock = clock
        """Wall-clock seconds: processes sharing Redis share its buckets, so they need the same time."""
        self.local = LocalBuckets()
        self.verified: dict[str, float] = {}
        """Bucket keys of tokens that authenticated lately -> until when (monotonic seconds)."""
        self.redis: aioredis.Redis | None = None
        self._script: AsyncScript | None = None
        self._redis_down_until = 0.0
        self._redis_down = False
        if redis_url:
            self.redis = aioredis.from_url(
                redis_url, socket_timeout=_REDIS_TIMEOUT_SECONDS, socket_connect_timeout=_REDIS_TIMEOUT_SECONDS
            )
            self._script = self.redis.register_script(_TAKE)

    async def take(self, key: str, quota: Quota) -> float:
        """0 if a request may go now, else the seconds until it may.

        With Redis the process's own bucket answers first: it counts only this process's requests that the
        shared bucket let through too, so it is never emptier than the shared one, and a refusal from it needs
        no round trip (a flood costs Redis nothing).
        """
        now = self.clock()
        wait = self.local.take(key, quota, now)
        if self.redis is None or wait > 0:
            return wait
        mono = time.monotonic()
        if mono < self._redis_down_until:
            return 0.0
        try:
            assert self._script is not None
            allowed, retry = await self._script(
                keys=[f"{self.prefix}:{key}"], args=[quota.per_second, quota.burst, repr(now)]
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_down_until = mono + _REDIS_RETRY_SECONDS
            if not self._redis_down:
                self._redis_down = True
                log.warning("rate limits: Redis does not answer (%s); counting in this process meanwhile", exc)
            return 0.0
        if self._redis_down:
            self._redis_down = False
            log.info("rate limits: Redis answers again; buckets shared again")
        if int(allowed) == 1:
            return 0.0
        self.local.refund(key, quota)
        return float(retry)

    def authenticator(self, settings: Settings, **options: Any) -> Authenticator:
        return RateLimitedAuthenticator(settings.token_cache_seconds, self, **options)

    def verify(self, authorization: str) -> None:
        """The token of this header authenticated: from now on it counts against its own bucket only."""
        if len(self.verified) >= _MAX_LOCAL_KEYS:
            self.verified.clear()
        self.verified[token_key(authorization)] = time.monotonic() + _VERIFIED_SECONDS

    def is_verified(self, key: str) -> bool:
        until = self.verified.get(key)
        return until is not None and until > time.monotonic()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


class RateLimitedAuthenticator(Authenticator):
    """Tells the limiter which tokens are real, so that made-up ones count against their address."""

    def __init__(self, cache_seconds: float, limiter: RateLimiter, **options: Any) -> None:
        super().__init__(cache_seconds, **options)
        self.limiter = limiter

    async def authenticate(self, header: str | None) -> Principal | None:
        principal = await super().authenticate(header)
        if principal is not None and header is not None:
            self.limiter.verify(header)
        return principal


def limiter_for(settings: Settings) -> RateLimiter | None:
    """The limiter the settings ask for; ``None`` with ``CREDITLINE_RATE_LIMIT=0``."""
    if not settings.rate_limit:
        return None
    quotas = Quotas(
        token=Quota(settings.rate_limit_token_per_second, settings.rate_limit_token_burst),
        anonymous=Quota(settings.rate_limit_anonymous_per_second, settings.rate_limit_anonymous_burst),
        websocket=Quota(settings.rate_limit_websocket_per_second, settings.rate_limit_websocket_burst),
    )
    return RateLimiter(quotas, redis_url=settings.redis_url, prefix=settings.rate_limit_prefix)


def token_key(authorization: str) -> str:
    """The bucket of a bearer token: a hash of the secret the header carries (never the token, never a
    lookup). Spelled ``bearer`` or with more spaces, a header that authenticates as the same token (see
    ``bearer_secret``) gets no bucket of its own."""
    secret = bearer_secret(authorization)
    return secret_key(secret if secret is not None else authorization.strip())


def secret_key(secret: str) -> str:
    """The bucket of a bearer secret: that of its HTTP requests, and of the operations its websockets send."""
    return "t:" + hashlib.blake2b(secret.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def address_key(scope: Scope, kind: str) -> str:
    client = scope.get("client")
    return f"{kind}:{client[0] if client else 'unknown'}"


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def rate_limited_error(seconds: float) -> dict[str, object]:
    """The GraphQL error of a refusal: in a 429's body, and for an operation refused on a websocket."""
    wait = retry_after(seconds)
    return {
        "message": f"Too many requests: retry in {wait} s",
        "extensions": {"code": "RATE_LIMITED", "retryAfter": wait},
    }


def too_many(seconds: float) -> tuple[Message, Message]:
    wait = retry_after(seconds)
    body = json.dumps({"data": None, "errors": [rate_limited_error(seconds)]}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(wait).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class RateLimitMiddleware:
    """Refuses an HTTP request whose bucket is empty, before anything reads it."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        for name, value in scope["headers"]:
            if name == b"authorization":
                key = token_key(value.decode("latin-1"))
                wait = await limiter.take(key, limiter.quotas.token)
                # A token not seen to authenticate (made up, perhaps, to dodge the limit on requests without
                # one) counts against its address too.
                if wait <= 0 and not limiter.is_verified(key):
                    wait = await limiter.take(address_key(scope, "a"), limiter.quotas.anonymous)
                break
        else:
            wait = await limiter.take(address_key(scope, "a"), limiter.quotas.anonymous)
        if wait > 0:
            start, body = too_many(wait)
            await send(start)
            await send(body)
            return
        await self.app(scope, receive, send)


async def refuse_websocket(limiter: RateLimiter, scope: Scope, receive: Receive, send: Send) -> bool:
    """Count a websocket handshake against its address; refuse it (429 where the server can say so) when
    the bucket is empty. True if refused."""
    wait = await limiter.take(address_key(scope, "w"), limiter.quotas.websocket)
    if wait <= 0:
        return False
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        handshake_refused.set(True)
        start, body = too_many(wait)
        await send({**start, "type": "websocket.http.response.start"})
        await send({**body, "type": "websocket.http.response.body"})
    else:
        await send({"type": "websocket.close", "code": 1013, "reason": "Too many connection attempts"})
    return True
