"""Bearer-token authentication with a short in-process cache, so a request costs no extra round trip.

Revoking a token takes effect everywhere within ``CREDITLINE_TOKEN_CACHE_SECONDS``; an expired token (past its
``expires_at``, or idle past its ``idle_timeout_seconds``) stops at once: expiry is checked against the clock on
every request, cached or not. Each use is recorded in ``TokenUsage``, which writes ``last_used_at`` in batches.
"""

from __future__ import annotations

import dataclasses
import time

from creditline.clock import Clock
from models.tokens import Principal, StoredToken, digest, token_for
from resolvers.token_usage import TokenUsage

_CACHE_LIMIT = 10_000


def bearer_secret(header: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header, or ``None``."""
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


class Authenticator:
    def __init__(self, cache_seconds: float, *, clock: Clock | None = None, usage: TokenUsage | None = None) -> None:
        self.cache_seconds = cache_seconds
        self.clock = clock or Clock()
        self.usage = usage or TokenUsage(cache_seconds)
        self._cache: dict[str, tuple[float, StoredToken | None]] = {}

    async def authenticate(self, header: str | None) -> Principal | None:
        secret = bearer_secret(header)
        if secret is None:
            return None
        token = await self._stored(secret)
        return None if token is None else self._admit(token)

    async def _stored(self, secret: str) -> StoredToken | None:
        """The token of ``secret``, from the cache if it was read less than ``cache_seconds`` ago."""
        key = digest(secret)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        token = await token_for(secret)
        if self.cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, token)
        return token

    def _admit(self, token: StoredToken) -> Principal | None:
        """The token's principal if it has not expired by now, with ``expires_at`` when it will (this use
        slides an idle timeout); the use is recorded. ``None`` for an expired token."""
        now = self.clock.now()
        principal = token.principal
        expires_at = token.expiry(self.usage.last_use(principal.token_id))
        if expires_at is not None and now >= expires_at:
            return None
        self.usage.record(principal.token_id, now)
        if token.idle_timeout is None:
            return principal
        return dataclasses.replace(principal, expires_at=token.expiry(now))
