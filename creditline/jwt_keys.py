"""The identity provider's public keys for JWT sign-in (issue 11, point 5; the checks are in
resolvers/jwt_sign_in.py): one PEM key (``CREDITLINE_JWT_PUBLIC_KEY``), or a JWKS fetched from
``CREDITLINE_JWT_JWKS_URL`` with httpx.

The JWKS is fetched on the first token, and again when a token names a ``kid`` it does not have (the
provider rotated its keys; the token waits for it) or when the keys are older than
``CREDITLINE_JWT_JWKS_MAX_AGE_SECONDS`` (in the background: a key the provider removed stops working once it
is done). Never more than one fetch per ``CREDITLINE_JWT_JWKS_REFRESH_SECONDS``, whatever
arrives: a flood of tokens with made-up kids costs the provider one request per interval, and requests
that arrive during a fetch wait for that one. A fetch that fails (unreachable, an error status, not a
JWKS) keeps the keys there were, and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from creditline.settings import JWT_ALGORITHMS, Settings
from resolvers.jwt_sign_in import PublicKey, SigningKey, key_fits

log = logging.getLogger("creditline.jwt")

FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1 << 20


class StaticKey:
    """One PEM public key signs every token, whatever its ``kid``."""

    def __init__(self, pem: str, algorithms: Sequence[str]) -> None:
        # An environment variable often carries the PEM's line breaks as "\n".
        text = pem.replace("\\n", "\n").strip()
        try:
            key = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise SystemExit(f"CREDITLINE_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from exc
        if not isinstance(key, PublicKey):
            raise SystemExit(f"CREDITLINE_JWT_PUBLIC_KEY is a {type(key).__name__}: an RSA, EC or Ed25519/Ed448 key")
        self.key = SigningKey(key)
        if not any(key_fits(algorithm, self.key) for algorithm in algorithms):
            raise SystemExit(
                f"CREDITLINE_JWT_PUBLIC_KEY cannot verify any of CREDITLINE_JWT_ALGORITHMS ({', '.join(algorithms)})"
            )

    async def signing_keys(self, kid: str | None) -> Sequence[SigningKey]:
        return (self.key,)

    async def aclose(self) -> None:
        return None


def signing_key(jwk: Any) -> SigningKey | None:
    """The public key of one JWK of a set, or ``None`` for one that may not verify signatures here (not a
    dict, ``use`` other than ``sig``, a symmetric ``oct`` key, an ``alg`` not allowed, malformed)."""
    if not isinstance(jwk, dict):
        return None
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    if (
        (kid is not None and not isinstance(kid, str))
        or jwk.get("use", "sig") != "sig"
        or (alg is not None and alg not in JWT_ALGORITHMS)
    ):
        return None
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            key: Any = RSAAlgorithm.from_jwk(jwk)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(jwk)
        elif kty == "OKP":
            key = OKPAlgorithm.from_jwk(jwk)
        else:
            return None  # "oct" (a shared secret) above all: never a verification key here
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(key, PublicKey):
        # A JWK with its private part: only the public one is kept. X25519/X448 keys do not sign.
        public = getattr(key, "public_key", None)
        key = public() if callable(public) else None
        if not isinstance(key, PublicKey):
            return None
    return SigningKey(key, kid, alg)


def parse_jwks(document: Any) -> list[SigningKey]:
    """The usable keys of a JWKS document; ``ValueError`` if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS: no "keys" list')
    return [key for key in map(signing_key, document["keys"]) if key is not None]


class JwksKeys:
    """The keys of a JWKS URL, cached; refreshed on an unknown ``kid`` or when old, at most once per
    ``refresh_seconds``."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float,
        max_age_seconds: float,
        client: httpx.AsyncClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self._client = client
        self.monotonic = monotonic
        self.keys: list[SigningKey] = []
        self.fetches = 0
        """Fetches tried (for the tests and the log)."""
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()
        self.refreshing: asyncio.Task[None] | None = None
        """The refresh of keys that were only old, running in the background."""

    async def signing_keys(self, kid: str | None) -> Sequence[SigningKey]:
        found = self._find(kid)
        now = self.monotonic()
        if not self._may_fetch(now):
            return found
        if not found:
            # Shielded: a client that gives up must not cancel the fetch others wait for.
            await asyncio.shield(self.refresh())
            return self._find(kid)
        if (self._fetched_at is None or now - self._fetched_at >= self.max_age_seconds) and self.refreshing is None:
            # Known, only old: this token goes on with the key it names while the keys are fetched again.
            self.refreshing = asyncio.create_task(self.refresh())
            self.refreshing.add_done_callback(self._refreshed)
        return found

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self.refreshing = None

    def _find(self, kid: str | None) -> list[SigningKey]:
        if kid is None:
            # A token without kid: the keys without one, or the only key there is.
            unnamed = [key for key in self.keys if key.kid is None]
            return unnamed or (self.keys[:1] if len(self.keys) == 1 else [])
        return [key for key in self.keys if key.kid == kid]

    def _may_fetch(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self.refresh_seconds

    async def refresh(self) -> None:
        """Fetch the keys, unless another request did within ``refresh_seconds`` (or is doing it now)."""
        async with self._lock:
            now = self.monotonic()
            if not self._may_fetch(now):
                return
            self._tried_at = now
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning(
                    "JWT sign-in: fetching the keys at %s failed (%s); keeping the %d known",
                    self.url,
                    exc,
                    len(self.keys),
                )
                return
            self.keys = keys
            self._fetched_at = now
            log.info("JWT sign-in: %d keys from %s", len(keys), self.url)

    @property
    def client(self) -> httpx.AsyncClient:
        """Made on the first fetch, so that an application that never sees a JWT opens nothing."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
        return self._client

    async def _fetch(self) -> list[SigningKey]:
        response = await self.client.get(self.url, headers={"accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
        keys = parse_jwks(response.json())
        if not keys:
            raise ValueError("the JWKS has no key usable for signatures")
        return keys

    async def aclose(self) -> None:
        if self.refreshing is not None:
            self.refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refreshing
        if self._client is not None:
            await self._client.aclose()


def key_source(settings: Settings) -> StaticKey | JwksKeys | None:
    """The key source the settings ask for; ``None`` when JWT sign-in is off."""
    if settings.jwt_public_key:
        return StaticKey(settings.jwt_public_key, settings.jwt_algorithms)
    if settings.jwt_jwks_url:
        return JwksKeys(
            settings.jwt_jwks_url,
            refresh_seconds=settings.jwt_jwks_refresh_seconds,
            max_age_seconds=settings.jwt_jwks_max_age_seconds,
        )
    return None
