"""``createPortalSession`` and ``revokePortalSession``: sign-in links to the My Credit page and their sessions
(models/portal.py; the exchange is ``POST /portal/session``, creditline/portal.py). Not the Stripe customer
portal: that is ``createCustomerPortalSession``."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import strawberry
from strawberry.types import Info

from creditline.settings import Settings
from models import portal
from models.ids import decode_id, encode_id
from models.tables import CreditAccount, TokenKind
from models.tokens import PORTAL_WRITE
from resolvers import boundary
from resolvers.context import Context
from resolvers.permissions import principal, require_scope
from resolvers.references import organization_pk, user_pk
from schema.errors import Forbidden, NotFound, ValidationError
from schema.mutations.portal_sessions import (
    CreatePortalSessionInput,
    CreatePortalSessionResult,
    CreatePortalSessionSuccess,
    RevokePortalSessionInput,
    RevokePortalSessionResult,
    RevokePortalSessionSuccess,
)

RETURN_URL_MAX_LENGTH = 2000
WHOSE = "accountId, userId, externalUserId, organizationId or externalOrganizationId"


async def _account(input: CreatePortalSessionInput) -> int | ValidationError | NotFound:
    """The credit account named by exactly one of the input's five ways of naming it."""
    given = [
        value
        for value in (
            input.account_id,
            input.user_id,
            input.external_user_id,
            input.organization_id,
            input.external_organization_id,
        )
        if value is not None
    ]
    if len(given) != 1:
        return ValidationError(message=f"Give exactly one of {WHOSE}", field="accountId")
    if input.account_id is not None:
        pk = decode_id(input.account_id, "CreditAccount")
        if pk is None or not await CreditAccount.exists(id=pk):
            return NotFound(message="Credit account not found")
        return pk
    if input.user_id is not None or input.external_user_id is not None:
        user = await user_pk(input.user_id, input.external_user_id)
        if not isinstance(user, int):
            return user
        return int((await CreditAccount.get(user_id=user)).id)
    organization = await organization_pk(input.organization_id, input.external_organization_id)
    if not isinstance(organization, int):
        return organization
    pool = await CreditAccount.filter(organization_id=organization).first()
    if pool is None:
        return NotFound(message="The organization has no credit pool (enableCreditPool)")
    return int(pool.id)


def _check_return_url(value: str | None) -> ValidationError | None:
    if value is None:
        return None
    try:
        boundary.identifier(value, "returnUrl", RETURN_URL_MAX_LENGTH)
    except boundary.InputError as exc:
        return ValidationError(message=exc.message, field=exc.field)
    not_absolute = ValidationError(message="returnUrl must be an absolute http or https URL", field="returnUrl")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        # "http://[::1" (an unclosed IPv6 literal) or "https://x:99999999/"
        return not_absolute
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        return not_absolute
    if "@" in parts.netloc:
        # https://user:pass@evil.com reads as "user:pass" to a person and goes to evil.com
        return ValidationError(message="returnUrl must not contain a user name or password", field="returnUrl")
    return None


def _base_url(info: Info[Context, None]) -> str:
    """CREDITLINE_PUBLIC_URL when it is set; else the address this request came to."""
    settings = info.context.services.settings
    request = info.context.request
    if settings.public_url != Settings.public_url or request is None:
        return settings.public_url
    return str(request.base_url).rstrip("/")


async def create_portal_session(
    info: Info[Context, None], input: CreatePortalSessionInput
) -> CreatePortalSessionResult:
    """A sign-in link to the My Credit page of one account. Admins, and services with ``portal:write``."""
    if denied := require_scope(info, PORTAL_WRITE):
        return denied
    account_id = await _account(input)
    if not isinstance(account_id, int):
        return account_id
    if invalid := _check_return_url(input.return_url):
        return invalid
    settings = info.context.services.settings
    code, row = await portal.mint_code(
        account_id,
        created_by=principal(info).idempotency_scope,
        now=info.context.now(),
        lifetime=timedelta(seconds=settings.portal_code_seconds),
        return_url=input.return_url,
    )
    return CreatePortalSessionSuccess(
        url=portal.portal_link(_base_url(info), code),
        code=code,
        expires_at=row.expires_at,
        account_id=strawberry.ID(encode_id("CreditAccount", account_id)),
    )


async def revoke_portal_session(
    info: Info[Context, None], input: RevokePortalSessionInput
) -> RevokePortalSessionResult:
    """End a portal session: the session itself (signing out), an admin, or a service with ``portal:write``."""
    who = principal(info)
    if input.session_id is None:
        if who.kind is not TokenKind.PORTAL:
            return ValidationError(message="Give sessionId: this token is not a portal session", field="sessionId")
        token_id: int | None = who.token_id
    else:
        token_id = decode_id(input.session_id, "ApiToken")
        if who.kind is TokenKind.PORTAL:
            if token_id != who.token_id:
                return Forbidden(
                    message="A portal session may end itself only: ending another needs an admin token"
                    f" or a service token with the '{PORTAL_WRITE}' scope"
                )
        elif denied := require_scope(info, PORTAL_WRITE):
            return denied
    ended = None if token_id is None else await portal.revoke_session(token_id, info.context.now())
    if ended is None or ended.revoked_at is None:
        return NotFound(message="No portal session has this id")
    return RevokePortalSessionSuccess(
        session_id=strawberry.ID(encode_id("ApiToken", int(ended.id))), revoked_at=ended.revoked_at
    )
