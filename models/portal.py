"""Portal sessions: a sign-in link to the My Credit page for one account, and its exchange for a session.

``createPortalSession`` mints a random code (only its SHA-256 digest is stored) that works once, for a few
minutes; ``POST /portal/session`` exchanges it for a PORTAL token bound to the account: it reads that account
and pays for it, nothing else (``resolvers/permissions.py``). Not the Stripe customer portal
(``createCustomerPortalSession``), where a processor manages cards.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from tortoise.transactions import in_transaction

from models.tables import ApiToken, PortalCode, TokenKind
from models.tokens import create_token, digest

PORTAL_PATH = "/my-credit/"
"""Where the My Credit page lives; it reads the code from its ``code`` query parameter."""
CODE_MAX_LENGTH = 100
"""Longer than any code we mint: a longer one is refused before any lookup."""


def portal_link(base_url: str, code: str) -> str:
    return f"{base_url.rstrip('/')}{PORTAL_PATH}?{urlencode({'code': code})}"


def session_name(account_id: int) -> str:
    """The name of every portal session of an account; its idempotency keys are the account's payer's."""
    return f"portal session of account {account_id}"


async def mint_code(
    account_id: int, *, created_by: str, now: datetime, lifetime: timedelta, return_url: str | None = None
) -> tuple[str, PortalCode]:
    """A new single-use code for ``account_id``, valid for ``lifetime``; the code itself is not stored."""
    code = secrets.token_urlsafe(32)
    row = await PortalCode.create(
        account_id=account_id,
        code_hash=digest(code),
        created_by=created_by[:100],
        return_url=return_url,
        created_at=now,
        expires_at=now + lifetime,
    )
    return code, row


@dataclass(frozen=True, slots=True)
class PortalSession:
    token: str
    """The session's bearer secret, shown once."""
    token_id: int
    account_id: int
    expires_at: datetime
    idle_timeout_seconds: int
    return_url: str | None


async def exchange(code: str, *, now: datetime, idle: timedelta, lifetime: timedelta) -> PortalSession | None:
    """Open a session with a code that was minted, is unexpired and was never used; ``None`` otherwise.

    The code is spent by one conditional UPDATE (``used_at IS NULL AND expires_at > now``) in the session's
    own transaction: of two exchanges at once one wins, the other changes nothing and gets ``None``."""
    hashed = digest(code)
    async with in_transaction():
        spent = await PortalCode.filter(code_hash=hashed, used_at=None, expires_at__gt=now).update(used_at=now)
        if spent != 1:
            return None
        row = await PortalCode.get(code_hash=hashed)
        expires_at = now + lifetime
        idle_seconds = int(idle.total_seconds())
        secret = await create_token(
            TokenKind.PORTAL,
            name=session_name(row.account_id),
            now=now,
            account_id=row.account_id,
            expires_at=expires_at,
            idle_timeout_seconds=idle_seconds,
        )
        token = await ApiToken.get(token_hash=digest(secret))
    return PortalSession(secret, int(token.id), row.account_id, expires_at, idle_seconds, row.return_url)


async def revoke_session(token_id: int, now: datetime) -> ApiToken | None:
    """End a portal session (idempotent: one ended already keeps its time). ``None``: no such session."""
    async with in_transaction():
        await ApiToken.filter(id=token_id, kind=TokenKind.PORTAL, revoked_at=None).update(revoked_at=now)
        return await ApiToken.filter(id=token_id, kind=TokenKind.PORTAL).first()
