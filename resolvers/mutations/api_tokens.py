"""createApiToken and revokeApiToken (README, Tokens): admins manage every token, a user their own USER tokens."""

from __future__ import annotations

from datetime import UTC

from strawberry.types import Info

from models.ids import decode_id
from models.instants import iso_z
from models.tables import ApiToken as ApiTokenRow
from models.tables import TokenKind
from models.tokens import SCOPES, USAGE_WRITE, Principal, UnknownScopeError, create_token, digest, revoke_token
from resolvers.context import Context
from resolvers.permissions import BILLING_ROLES, principal, roles_in
from resolvers.references import check_external_id, user_pk
from resolvers.validation import check_future, check_label, first_error
from schema.errors import Forbidden, NotFound, ValidationError
from schema.mutations.api_tokens import (
    CreateApiTokenInput,
    CreateApiTokenResult,
    CreateApiTokenSuccess,
    RevokeApiTokenInput,
    RevokeApiTokenResult,
    RevokeApiTokenSuccess,
)
from schema.types import ApiToken

MAX_NAME = 200
MIN_IDLE_SECONDS = 60
MAX_IDLE_SECONDS = 366 * 24 * 3600
_LONGEST_SCOPE = max(len(scope) for scope in SCOPES)

MANAGERS_ONLY = "Managing tokens needs an admin token, or a user token for its own tokens"
OWN_ONLY = "Other tokens need an admin token: a user token makes only USER tokens, without scopes, for its own user"


def _valid_scopes() -> str:
    return ", ".join(sorted(SCOPES))


def check_scopes(kind: TokenKind, scopes: list[str]) -> ValidationError | None:
    """Known names only (the message names the valid ones); at least one for a SERVICE token, none for others."""
    if len(scopes) > 4 * len(SCOPES) or any(len(scope) > 2 * _LONGEST_SCOPE for scope in scopes):
        return ValidationError(message=f"scopes are at most a few of: {_valid_scopes()}", field="scopes")
    if unknown := sorted(set(scopes) - set(SCOPES)):
        return ValidationError(message=str(UnknownScopeError(unknown)), field="scopes")
    if kind is TokenKind.SERVICE and not scopes:
        return ValidationError(message=f"A SERVICE token needs at least one scope: {_valid_scopes()}", field="scopes")
    if kind is not TokenKind.SERVICE and scopes:
        return ValidationError(message=f"{kind.value} tokens take no scopes: only SERVICE tokens do", field="scopes")
    return None


def check_idle(seconds: int | None) -> ValidationError | None:
    if seconds is not None and not MIN_IDLE_SECONDS <= seconds <= MAX_IDLE_SECONDS:
        return ValidationError(
            message=f"idleTimeoutSeconds must be between {MIN_IDLE_SECONDS} and {MAX_IDLE_SECONDS}",
            field="idleTimeoutSeconds",
        )
    return None


async def create_api_token(info: Info[Context, None], input: CreateApiTokenInput) -> CreateApiTokenResult:
    who = principal(info)
    if who.kind not in (TokenKind.ADMIN, TokenKind.USER):
        return Forbidden(message=MANAGERS_ONLY)
    kind = TokenKind(input.kind)
    if not who.is_admin and (kind is not TokenKind.USER or input.scopes):
        return Forbidden(message=OWN_ONLY)
    now = info.context.now()
    names_user = input.user_id is not None or input.external_user_id is not None
    if invalid := first_error(
        ValidationError(message="Portal sessions are opened with createPortalSession", field="kind")
        if kind is TokenKind.PORTAL
        else None,
        check_label(input.name, "name", MAX_NAME),
        check_scopes(kind, input.scopes),
        check_future(input.expires_at, "expiresAt", now),
        check_idle(input.idle_timeout_seconds),
        ValidationError(message="Only USER tokens belong to a user", field="userId")
        if kind is not TokenKind.USER and names_user
        else None,
    ):
        return invalid
    expires_at = None if input.expires_at is None else input.expires_at.astimezone(UTC)
    if not who.is_admin and who.expires_at is not None:
        # A JWT or an expiring user token makes no token that outlives it: none given is its own expiry.
        if expires_at is None:
            expires_at = who.expires_at
        elif expires_at > who.expires_at:
            return ValidationError(
                message="A token cannot outlive the token that makes it: expiresAt must be at or before"
                f" {iso_z(who.expires_at)}",
                field="expiresAt",
            )
    owner: int | None = None
    if kind is TokenKind.USER:
        found = await _owner(info, who, input)
        if not isinstance(found, int):
            return found
        owner = found
    secret = await create_token(
        kind,
        name=input.name,
        now=now,
        user_id=owner,
        scopes=tuple(sorted(set(input.scopes))),
        expires_at=expires_at,
        idle_timeout_seconds=input.idle_timeout_seconds,
    )
    row = await ApiTokenRow.get(token_hash=digest(secret))
    return CreateApiTokenSuccess(secret=secret, api_token=ApiToken.of(row, now))


async def _owner(
    info: Info[Context, None], who: Principal, input: CreateApiTokenInput
) -> int | Forbidden | NotFound | ValidationError:
    """Whose USER token this is. A user token names its own user or no one (itself, then); which other users
    exist it never learns: naming anyone else is ``Forbidden`` whether they exist or not."""
    if who.is_admin:
        if input.user_id is None and input.external_user_id is None:
            return ValidationError(message="A USER token needs userId or externalUserId", field="userId")
        return await user_pk(input.user_id, input.external_user_id)
    assert who.user_id is not None
    if input.user_id is not None and input.external_user_id is not None:
        return ValidationError(message="Give exactly one of userId or externalUserId", field="userId")
    if input.user_id is not None and decode_id(input.user_id, "User") != who.user_id:
        return Forbidden(message=OWN_ONLY)
    if input.external_user_id is not None:
        if invalid := check_external_id(input.external_user_id, "externalUserId"):
            return invalid
        me = await info.context.loaders.user.load(who.user_id)
        if me is None or me.external_id != input.external_user_id:
            return Forbidden(message=OWN_ONLY)
    return who.user_id


async def revoke_api_token(info: Info[Context, None], input: RevokeApiTokenInput) -> RevokeApiTokenResult:
    who = principal(info)
    # A service that may mint agent tokens (usage:write, unbound) may also end them.
    if who.kind not in (TokenKind.ADMIN, TokenKind.USER) and not who.has_scope(USAGE_WRITE):
        return Forbidden(message=MANAGERS_ONLY)
    pk = decode_id(input.token_id, "ApiToken")
    row = None if pk is None else await ApiTokenRow.filter(id=pk).first()
    if who.kind is TokenKind.SERVICE and (row is None or not _is_agent_token(row)):
        return Forbidden(message=MANAGERS_ONLY)  # a service ends agent tokens, nothing else
    if row is None or not await _may_revoke(info, who, row):
        return NotFound(message="Token not found")
    now = info.context.now()
    if row.revoked_at is None:
        if await revoke_token(row.id, now):
            row.revoked_at = now
        else:  # revoked meanwhile by another request: show that revocation
            row = await ApiTokenRow.get(id=row.id)
    return RevokeApiTokenSuccess(api_token=ApiToken.of(row, now))


async def _may_revoke(info: Info[Context, None], who: Principal, row: ApiTokenRow) -> bool:
    """Admins any token; a user their own (USER tokens, and agent tokens they minted) and the agent tokens of
    their own account and of pools where they are OWNER or BILLING; a service with usage:write agent tokens."""
    if who.is_admin or (who.kind is TokenKind.USER and row.user_id is not None and row.user_id == who.user_id):
        return True
    if not _is_agent_token(row) or row.account_id is None:
        return False
    if who.kind is TokenKind.SERVICE:
        return True
    account = await info.context.loaders.account.load(row.account_id)
    if account is None or who.user_id is None:
        return False
    if account.user_id is not None:
        return bool(account.user_id == who.user_id)
    return account.organization_id is not None and bool(
        (await roles_in(info, account.organization_id) or frozenset()) & BILLING_ROLES
    )


def _is_agent_token(row: ApiTokenRow) -> bool:
    return row.kind == TokenKind.SERVICE and row.account_id is not None
