"""What the API says of API tokens besides the ``ApiToken`` type (schema/types.py): their kinds, their status
and the filter of their lists. Never a secret or its digest."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import strawberry

from models.tables import TokenKind
from models.tokens import expiry

strawberry.enum(TokenKind, description="USER: one user's; SERVICE: scoped, any user's; ADMIN: all; PORTAL: a session")


@strawberry.enum(description="Whether a token authenticates now")
class ApiTokenStatus(Enum):
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


def status_of(row: Any, now: datetime) -> ApiTokenStatus:
    """Of a row of ``api_tokens``: expiry is judged by the ``last_used_at`` written so far."""
    if row.revoked_at is not None:
        return ApiTokenStatus.REVOKED
    idle = None if row.idle_timeout_seconds is None else timedelta(seconds=row.idle_timeout_seconds)
    ends = expiry(row.expires_at, idle, row.last_used_at or row.created_at)
    return ApiTokenStatus.EXPIRED if ends is not None and ends <= now else ApiTokenStatus.ACTIVE


@strawberry.input(description="Narrow the list of tokens; every criterion given must hold")
class ApiTokenFilter:
    kind: TokenKind | None = None
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only this user's tokens: their USER tokens and the agent tokens they minted"
    )
    revoked: bool | None = strawberry.field(
        default=None, description="true: only revoked tokens; false: only tokens not revoked; null: both"
    )
