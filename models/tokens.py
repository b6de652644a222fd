"""API tokens: random secrets shown once; only their SHA-256 digest is stored."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from models.sql import Sql
from models.tables import ApiToken, TokenKind

_PREFIX = {TokenKind.USER: "clu_", TokenKind.SERVICE: "cls_", TokenKind.ADMIN: "cla_", TokenKind.PORTAL: "clp_"}
PREFIX_LENGTH = 12
"""How much of a secret is kept in clear (``prefix``) so that a person can tell their tokens apart."""

USAGE_WRITE = "usage:write"
BALANCE_READ = "balance:read"
BILLING_READ = "billing:read"
PORTAL_WRITE = "portal:write"
LIMITS_WRITE = "limits:write"
SCOPES: dict[str, str] = {
    USAGE_WRITE: "spend, hold, capture and release credit for any user",
    BALANCE_READ: "read any account's balance, lots, ledger, holds, usage and usage reports, and watch its balance",
    BILLING_READ: "read any account's transactions and refunds, invoices and their signed links, saved cards,"
    " subscription and auto top-up",
    PORTAL_WRITE: "open portal sessions (createPortalSession: sign-in links to the My Credit page) for any user"
    " or organization, and end them (revokePortalSession)",
    LIMITS_WRITE: "set, remove and resume the spend limits of any account (setSpendLimit, removeSpendLimit,"
    " resumeAgent)",
}
"""What a service token may be given; user and admin tokens have no scopes (issue 9, point 9)."""


class UnknownScopeError(ValueError):
    def __init__(self, unknown: Iterable[str]) -> None:
        names = ", ".join(repr(scope) for scope in unknown)
        super().__init__(f"unknown scope {names}: the valid scopes are {', '.join(sorted(SCOPES))}")


NO_TOKEN_ROW = 0
"""The ``token_id`` of a principal that no ``ApiToken`` row stands for (a JWT of the platform's identity
provider, resolvers/jwt_sign_in.py): there is nothing to revoke; it ends at its ``expires_at``."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's kind, its user (for user tokens), its name and scopes; the one account it is
    bound to, if any (portal sessions), and when it stops being valid, if ever."""

    token_id: int
    kind: TokenKind
    name: str
    user_id: int | None
    scopes: frozenset[str]
    account_id: int | None = None
    expires_at: datetime | None = None

    @property
    def revocable(self) -> bool:
        """Whether an ``ApiToken`` row stands for it (which revoking ends); a JWT's principal has none."""
        return self.token_id != NO_TOKEN_ROW

    @property
    def is_admin(self) -> bool:
        return self.kind is TokenKind.ADMIN

    def has_scope(self, scope: str) -> bool:
        return self.kind is TokenKind.ADMIN or (self.kind is TokenKind.SERVICE and scope in self.scopes)

    @property
    def idempotency_scope(self) -> str:
        """Idempotency keys are scoped to the caller: a user, a named service, or a named admin."""
        if self.kind is TokenKind.USER:
            return f"user:{self.user_id}"
        return f"{self.kind.value.lower()}:{self.name}"


async def create_token(
    kind: TokenKind,
    *,
    name: str,
    now: datetime,
    user_id: int | None = None,
    scopes: tuple[str, ...] = (),
    account_id: int | None = None,
    expires_at: datetime | None = None,
    idle_timeout_seconds: int | None = None,
) -> str:
    """Create a token and return its secret. The secret is not stored and cannot be shown again."""
    if (kind is TokenKind.USER) != (user_id is not None):
        raise ValueError("user tokens, and only they, belong to a user")
    if kind is TokenKind.PORTAL and account_id is None:
        raise ValueError("a portal session is bound to one account")
    if unknown := sorted(set(scopes) - set(SCOPES)):
        raise UnknownScopeError(unknown)
    secret = _PREFIX[kind] + secrets.token_urlsafe(32)
    await ApiToken.create(
        kind=kind,
        name=name,
        user_id=user_id,
        scopes=" ".join(sorted(scopes)),
        token_hash=digest(secret),
        prefix=secret[:PREFIX_LENGTH],
        account_id=account_id,
        created_at=now,
        expires_at=expires_at,
        idle_timeout_seconds=idle_timeout_seconds,
    )
    return secret


@dataclass(frozen=True, slots=True)
class StoredToken:
    """What authenticating needs of a token row: its principal (``expires_at`` the fixed expiry, if any), its
    sliding expiry and when it was last used by the time it was read (its creation if never)."""

    principal: Principal
    idle_timeout: timedelta | None
    last_used_at: datetime

    def expiry(self, last_use: datetime | None = None) -> datetime | None:
        """When the token stops being valid if it was last used at ``last_use`` (or as read)."""
        latest = self.last_used_at if last_use is None else max(self.last_used_at, last_use)
        return expiry(self.principal.expires_at, self.idle_timeout, latest)


def expiry(expires_at: datetime | None, idle_timeout: timedelta | None, last_use: datetime) -> datetime | None:
    """When a token stops being valid: the sooner of its fixed expiry and, with an idle timeout, that long after
    its last use (its creation if never used); ``None``: never."""
    if idle_timeout is None:
        return expires_at
    idle = last_use + idle_timeout
    return idle if expires_at is None else min(expires_at, idle)


async def token_for(secret: str) -> StoredToken | None:
    """The unrevoked token of this secret, expired or not (the caller checks expiry against its clock)."""
    token = await ApiToken.filter(token_hash=digest(secret), revoked_at=None).first()
    if token is None:
        return None
    principal = Principal(
        token_id=token.id,
        kind=TokenKind(token.kind),
        name=token.name,
        user_id=token.user_id,
        scopes=frozenset(token.scopes.split()),
        account_id=token.account_id,
        expires_at=token.expires_at,
    )
    idle = None if token.idle_timeout_seconds is None else timedelta(seconds=token.idle_timeout_seconds)
    return StoredToken(principal, idle, token.last_used_at or token.created_at)


async def record_uses(uses: Mapping[int, datetime]) -> None:
    """Write when each of these tokens was last used: one statement for all of them, in id order (so that
    two processes flushing at once lock rows in the same order), and never moving a time backwards (another
    process may have written a later use already)."""
    if not uses:
        return
    async with in_transaction() as conn:
        sql = Sql(conn)
        await sql.execute_many(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            [(at, token_id) for token_id, at in sorted(uses.items())],
        )


async def revoke_token(token_id: int, now: datetime) -> bool:
    return await ApiToken.filter(id=token_id, revoked_at=None).update(revoked_at=now) > 0


async def unrevoked(token_hashes: Iterable[str]) -> set[str]:
    """Which of these token digests still belong to a token that was not revoked (one query per 500)."""
    wanted = list(token_hashes)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await ApiToken.filter(token_hash__in=chunk, revoked_at=None).values("token_hash")
        found.update(str(row["token_hash"]) for row in rows)
    return found
