"""Bearer-token authentication with a short in-process cache, so a request costs no extra round trip.

Revoking a token takes effect everywhere within ``CREDITLINE_TOKEN_CACHE_SECONDS``. With JWT sign-in on, a
bearer that is a JWT goes to ``JwtSignIn`` instead (resolvers/jwt_sign_in.py), which has its own cache.
"""

from __future__ import annotations

import time

from models.tokens import Principal, digest, principal_for
from resolvers.jwt_sign_in import JwtSignIn, looks_like_jwt

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
    def __init__(self, cache_seconds: float, *, jwt: JwtSignIn | None = None) -> None:
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self.jwt = jwt
        """JWT sign-in, when it is on (``CREDITLINE_JWT_JWKS_URL`` or ``CREDITLINE_JWT_PUBLIC_KEY``)."""

    async def authenticate(self, header: str | None) -> Principal | None:
        secret = bearer_secret(header)
        if secret is None:
            return None
        if self.jwt is not None and looks_like_jwt(secret):
            return await self.jwt.authenticate(secret)
        key = digest(secret)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = await principal_for(secret)
        if self.cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, principal)
        return principal
