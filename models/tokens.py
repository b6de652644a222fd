"""API tokens: random secrets shown once; only their SHA-256 digest is stored."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise import connections
from tortoise.transactions import in_transaction

from models.ledger.locking import lock_account
from models.limit_rules import VIEW_COLUMNS_SQL, LimitSpec, LimitView
from models.limits import set_limit_in
from models.sql import Sql
from models.tables import ApiToken, CreditAccount, LimitScope, TokenKind

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


AccountOwner = tuple[str, int]
"""Whose account it is, as the ledger selects it: ``("user_id", user)`` or ``("organization_id", organization)``."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's kind, its user (for user tokens), its name and scopes; the one account it is
    bound to, if any (portal sessions, delegated agent tokens), and when it stops being valid, if ever.

    A delegated agent token (a SERVICE token with ``account_id``, docs/rules.md "Delegated tokens") also
    carries whose account that is (``account_owner``), the user its spends must name when a user minted it
    (``spends_as``), its one agent (``agent_id``) and the activities it may spend on (``activities``; None:
    any). Its scopes hold for that account only: ``has_scope`` (any account's) is false for it."""

    token_id: int
    kind: TokenKind
    name: str
    user_id: int | None
    scopes: frozenset[str]
    account_id: int | None = None
    expires_at: datetime | None = None
    account_owner: AccountOwner | None = None
    spends_as: int | None = None
    agent_id: str | None = None
    activities: frozenset[str] | None = None

    @property
    def revocable(self) -> bool:
        """Whether an ``ApiToken`` row stands for it (which revoking ends); a JWT's principal has none."""
        return self.token_id != NO_TOKEN_ROW

    @property
    def is_admin(self) -> bool:
        return self.kind is TokenKind.ADMIN

    @property
    def delegated(self) -> bool:
        """A SERVICE token bound to one account: an agent's token (see ``create_agent_token``)."""
        return self.kind is TokenKind.SERVICE and self.account_id is not None

    def has_scope(self, scope: str) -> bool:
        """Whether it may do what ``scope`` allows for any account: admins, and unbound services with it."""
        return self.kind is TokenKind.ADMIN or (
            self.kind is TokenKind.SERVICE and scope in self.scopes and self.account_id is None
        )

    def holds_scope(self, scope: str) -> bool:
        """``has_scope``, or a delegated token that has ``scope`` for its own account."""
        return self.has_scope(scope) or (self.delegated and scope in self.scopes)

    @property
    def idempotency_scope(self) -> str:
        """Idempotency keys are scoped to the caller: a user, a named service, or a named admin; an agent token
        to itself (its name is its minter's choice: sharing a service's would let it pre-empt that service's keys)."""
        if self.kind is TokenKind.USER:
            return f"user:{self.user_id}"
        if self.delegated:
            return f"agent-token:{self.token_id}"
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
        raise ValueError("user tokens, and only they, belong to a user (agent tokens: create_agent_token)")
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


MAX_ACTIVITIES = 50
ACTIVITIES_LENGTH = 2000
"""What ``api_tokens.activities`` holds: the allowed activities, space-separated."""


@dataclass(frozen=True, slots=True)
class AgentToken:
    """A new delegated agent token: its secret (shown once), its row's id, and its cap if one was set."""

    secret: str
    token_id: int
    limit: LimitView | None


async def create_agent_token(
    *,
    name: str,
    account_id: int,
    now: datetime,
    scopes: tuple[str, ...],
    spends_as: int | None = None,
    agent_id: str | None = None,
    activities: tuple[str, ...] | None = None,
    expires_at: datetime | None = None,
    idle_timeout_seconds: int | None = None,
    limit: LimitSpec | None = None,
) -> AgentToken:
    """A SERVICE token bound to ``account_id`` (and, when given, to the user its spends name, one agent and
    some activities) and its TOKEN-scope limit, in one transaction: the account row is locked first (the limit
    is set under that lock), so a token never exists without the cap it was minted with."""
    if unknown := sorted(set(scopes) - set(SCOPES)):
        raise UnknownScopeError(unknown)
    listed = None if activities is None else " ".join(sorted(set(activities)))
    if listed is not None and (any(not a or " " in a for a in activities or ()) or len(listed) > ACTIVITIES_LENGTH):
        raise ValueError("activities are stored space-separated: none may be empty or hold a space")
    secret = _PREFIX[TokenKind.SERVICE] + secrets.token_urlsafe(32)
    async with in_transaction() as conn:
        sql = Sql(conn)
        await lock_account(sql, account_id)
        row = await ApiToken.create(
            kind=TokenKind.SERVICE,
            name=name,
            user_id=spends_as,
            scopes=" ".join(sorted(set(scopes))),
            token_hash=digest(secret),
            prefix=secret[:PREFIX_LENGTH],
            account_id=account_id,
            created_at=now,
            expires_at=expires_at,
            idle_timeout_seconds=idle_timeout_seconds,
            agent_id=agent_id,
            activities=listed,
            using_db=conn,
        )
        view = None
        if limit is not None:
            spec = dataclasses.replace(limit, scope=LimitScope.TOKEN, token_id=row.id, user_id=None, agent_id=None)
            view, _ = await set_limit_in(sql, account_id, spec, now)
    return AgentToken(secret, int(row.id), view)


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
    kind = TokenKind(token.kind)
    delegated = kind is TokenKind.SERVICE and token.account_id is not None
    owner: AccountOwner | None = None
    if delegated:
        # An account's owner never changes, so the cached principal stays right for the token's life.
        account = await CreditAccount.filter(id=token.account_id).only("id", "user_id", "organization_id").first()
        if account is None:
            return None
        if account.user_id is not None:
            owner = ("user_id", int(account.user_id))
        else:
            assert account.organization_id is not None
            owner = ("organization_id", int(account.organization_id))
    principal = Principal(
        token_id=token.id,
        kind=kind,
        name=token.name,
        # A delegated token's row names the user its spends must name, not a user it acts as everywhere.
        user_id=None if delegated else token.user_id,
        scopes=frozenset(token.scopes.split()),
        account_id=token.account_id,
        expires_at=token.expires_at,
        account_owner=owner,
        spends_as=token.user_id if delegated else None,
        agent_id=token.agent_id if delegated else None,
        activities=frozenset(token.activities.split()) if delegated and token.activities is not None else None,
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


async def token_limits(token_id: int) -> list[LimitView]:
    """The limits of scope TOKEN on this token (its cap, and any set later with setSpendLimit), oldest first."""
    rows = await Sql(connections.get("default")).fetch(
        f"SELECT {VIEW_COLUMNS_SQL} FROM spend_limits l WHERE l.token_id = $1 AND l.scope = $2 ORDER BY l.id",
        token_id,
        LimitScope.TOKEN.value,
    )
    return [LimitView.of(row) for row in rows]
