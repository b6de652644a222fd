"""JWT sign-in (issue 11, point 5): a token signed by the platform's identity provider authenticates as the user
whose ``externalId`` is its ``sub``.

A token is accepted only when all of this holds:

- its header's ``alg`` is one of ``CREDITLINE_JWT_ALGORITHMS`` (key-pair algorithms only: settings refuse
  ``none`` and HS*), and the key its ``kid`` names is of that algorithm's type (an RSA key for RS*/PS*, an EC
  key on the algorithm's curve for ES*, an Ed25519/Ed448 key for EdDSA; a JWK that names its own ``alg``
  only for that one): a key is never used with another algorithm than its own, so no HS/RS confusion;
- PyJWT verifies the signature with that key and only that algorithm (``algorithms=[alg]``), and ``iss``
  and ``aud``;
- ``exp`` and ``sub`` are present; ``exp``, ``nbf`` and ``iat`` are checked here against the application's
  clock (``creditline.clock``, the one every other expiry uses) with ``CREDITLINE_JWT_LEEWAY_SECONDS``;
- a user has ``sub`` as its ``externalId``, or, with ``CREDITLINE_JWT_CREATE_USERS``, one is created (with
  the signup bonus) from the email claim, once even when several first requests race.

Where the keys come from is the shell's business (``creditline/jwt_keys.py``: a JWKS fetched over HTTP, or
one PEM key): this module does no network, it asks its ``KeySource``.

The principal is a user's, with no token row behind it (``NO_TOKEN_ROW``): nothing to revoke, and it stops
being valid at ``expires_at``, the token's ``exp`` plus the leeway, on HTTP (the cache never outlives it)
and on websockets (creditline/live.py ends the subscriptions then).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from tortoise.exceptions import IntegrityError

from creditline.settings import Settings
from models import ledger
from models.tables import EXTERNAL_ID_MAX_LENGTH, TokenKind, User
from models.tokens import NO_TOKEN_ROW, Principal, digest
from resolvers import boundary

log = logging.getLogger("creditline.jwt")

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1", "ES256K": "secp256k1"}
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One of the identity provider's public keys."""

    key: PublicKey
    kid: str | None = None
    algorithm: str | None = None
    """The ``alg`` its JWK names, if it names one: then it verifies that algorithm only."""


class KeySource(Protocol):
    """The identity provider's keys (creditline/jwt_keys.py)."""

    async def signing_keys(self, kid: str | None) -> Sequence[SigningKey]:
        """The keys a token with this ``kid`` header may be signed with; empty when none is known."""
        ...


def key_fits(algorithm: str, signing: SigningKey) -> bool:
    """Whether ``signing`` may verify a signature made with ``algorithm``: the key's type must be that
    algorithm's, and a key that names its algorithm verifies that one only."""
    if signing.algorithm is not None and signing.algorithm != algorithm:
        return False
    key = signing.key
    if algorithm[:2] in ("RS", "PS"):
        return isinstance(key, RSAPublicKey)
    if algorithm in _CURVES:
        return isinstance(key, EllipticCurvePublicKey) and key.curve.name == _CURVES[algorithm]
    if algorithm == "EdDSA":
        return isinstance(key, Ed25519PublicKey | Ed448PublicKey)
    return False


def looks_like_jwt(secret: str) -> bool:
    """A compact JWS has three dot-separated parts; our own tokens (``clu_``, ``cls_``, ``cla_``, ``clp_`` and
    URL-safe base64) have no dot."""
    return secret.count(".") == 2


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who, and until when it is accepted (``exp`` plus the leeway)."""

    sub: str
    valid_until: datetime
    email: object
    email_verified: object


def _verified(claim: object) -> bool:
    """An ``email_verified`` claim that lets a user be created: absent (the provider does not say; the
    email is then trusted as the provider's), ``true``, or the string "true" in any case. Anything else,
    ``false``, "False", 0, 1, "yes", a list, is not verified."""
    return claim is None or claim is True or (isinstance(claim, str) and claim.lower() == "true")


class JwtSignIn:
    """Verifies the platform's JWTs and finds (or creates) their user; verified principals are cached for
    ``cache_seconds`` (by the token's digest), never past the token's expiry."""

    def __init__(
        self,
        settings: Settings,
        keys: KeySource,
        clock: Callable[[], datetime],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.monotonic = monotonic
        self.cache_seconds = settings.token_cache_seconds
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.leeway = settings.jwt_leeway_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        key = digest(token)
        now = self.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            principal = cached[1]
            if principal is None or self._still_valid(principal):
                return principal
        principal = await self._principal(token)
        if self.cache_seconds > 0:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, principal)
        return principal

    def _still_valid(self, principal: Principal) -> bool:
        return principal.expires_at is None or principal.expires_at > self.clock()

    async def _principal(self, token: str) -> Principal | None:
        claims = await self.verify(token)
        if claims is None:
            return None
        user_id = await self.user_for(claims)
        if user_id is None:
            return None
        return Principal(
            token_id=NO_TOKEN_ROW,
            kind=TokenKind.USER,
            name=f"jwt:{claims.sub}"[:200],
            user_id=user_id,
            scopes=frozenset(),
            expires_at=claims.valid_until,
        )

    async def verify(self, token: str) -> Claims | None:
        """The claims of a token that passes every check, else ``None`` (the reason goes to the debug log)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            return _refused("malformed", exc)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            return _refused(f"algorithm {algorithm!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return _refused("kid is not a string")
        candidates = [signing for signing in await self.keys.signing_keys(kid) if key_fits(algorithm, signing)]
        if not candidates:
            return _refused(f"no {algorithm} key with kid {kid!r}")
        payload: dict[str, Any] | None = None
        failure: jwt.PyJWTError | None = None
        for signing in candidates:
            try:
                payload = jwt.decode(
                    token,
                    signing.key,
                    algorithms=[algorithm],
                    audience=list(self.settings.jwt_audience),
                    issuer=self.settings.jwt_issuer,
                    # Times are checked below against the application's clock; PyJWT reads the system's.
                    options={
                        "require": ["exp", "sub", "iss", "aud"],
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
                break
            except jwt.InvalidSignatureError as exc:
                failure = exc  # another key with this kid may have signed it
            except jwt.PyJWTError as exc:
                return _refused("claims", exc)
        if payload is None:
            return _refused("signature", failure)
        return self._timely(payload)

    def _timely(self, payload: dict[str, Any]) -> Claims | None:
        now = self.clock().timestamp()
        exp = _number(payload.get("exp"))
        if exp is None:
            return _refused("exp is not a number")
        if exp + self.leeway <= now:
            return _refused("expired")
        if "nbf" in payload:
            nbf = _number(payload["nbf"])
            if nbf is None or nbf > now + self.leeway:
                return _refused("not yet valid (nbf)")
        if "iat" in payload:
            iat = _number(payload["iat"])
            if iat is None or iat > now + self.leeway:
                return _refused("issued in the future (iat)")
        sub = payload.get("sub")
        try:
            boundary.identifier(sub, "sub", EXTERNAL_ID_MAX_LENGTH)
        except boundary.InputError as exc:
            return _refused(exc.message)
        assert isinstance(sub, str)
        try:
            valid_until = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=self.leeway)
        except (OverflowError, OSError, ValueError):
            valid_until = datetime.max.replace(tzinfo=UTC)  # beyond any clock: a token of the far future
        claim = self.settings.jwt_email_claim
        return Claims(sub, valid_until, payload.get(claim) if claim else None, payload.get("email_verified"))

    async def user_for(self, claims: Claims) -> int | None:
        """The user whose externalId is ``sub``; created on first sight if the settings say so."""
        found = await _user_with_external_id(claims.sub)
        if found is not None or not self.settings.jwt_create_users:
            return found
        if not _verified(claims.email_verified):
            log.info("JWT sign-in: not creating a user for sub %r: its email is not verified", claims.sub)
            return None
        try:
            email = boundary.email(claims.email, self.settings.jwt_email_claim)
        except boundary.InputError as exc:
            log.info("JWT sign-in: not creating a user for sub %r: %s", claims.sub, exc.message)
            return None
        return await self._create(claims.sub, email)

    async def _create(self, sub: str, email: str) -> int | None:
        """Create the user with its signup bonus and ``sub`` as its externalId, in one transaction: of two
        first requests at once, one creates it and the other, refused by the unique email (or externalId),
        finds it. An email another user has already is never taken over: that sign-in is refused."""
        try:
            user_id = await ledger.create_user(
                email,
                signup_bonus=self.settings.signup_bonus,
                bonus_lifetime=timedelta(days=self.settings.signup_bonus_days),
                now=self.clock(),
                external_id=sub,
            )
        except IntegrityError:
            found = await _user_with_external_id(sub)
            if found is None:
                log.warning("JWT sign-in: not creating a user for sub %r: another user has the email %s", sub, email)
            return found
        log.info("JWT sign-in: created user %s for sub %r", user_id, sub)
        return user_id


def _refused(reason: str, exc: Exception | None = None) -> Claims | None:
    """No claims: the token was refused, for this reason (in the debug log only: the client is told nothing more
    than UNAUTHENTICATED)."""
    log.debug("JWT refused: %s%s", reason, f": {exc}" if exc else "")
    return None


async def _user_with_external_id(sub: str) -> int | None:
    user = await User.filter(external_id=sub).only("id").first()
    return None if user is None else user.id
