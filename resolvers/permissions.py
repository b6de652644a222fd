"""Who may do what (docs/rules.md, Who may see what).

Root fields require a token; mutations check the token's kind here. A portal session (``TokenKind.PORTAL``)
is bound to one account (``Principal.account_id``): it reads that account and pays for it, nothing else
(docs/rules.md, Portal sessions). A delegated agent token (a SERVICE token bound to one account) has its scopes
for that account only: it reads it with ``balance:read`` and spends from it (resolvers/delegation.py), nothing
else (docs/rules.md, Delegated tokens)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from models.tables import CreditAccount, MemberRole, TokenKind
from models.tokens import BALANCE_READ, BILLING_READ, Principal
from resolvers.context import Context
from resolvers.errors import ForbiddenError, Unauthenticated
from schema.errors import Forbidden


class IsAuthenticated(BasePermission):
    message = "Send a valid token as 'Authorization: Bearer <token>'"
    error_class = Unauthenticated

    def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
        who = info.context.principal
        if who is not None and who.expires_at is not None and who.expires_at <= info.context.now():
            raise Unauthenticated("This token has expired")
        return who is not None


def principal(info: Info[Context, None]) -> Principal:
    assert info.context.principal is not None, "IsAuthenticated guards every root field"
    return info.context.principal


def require_scope(info: Info[Context, None], scope: str) -> Forbidden | None:
    """Services with ``scope`` and admins pass (a delegated token with ``scope`` too: the mutation then checks
    its binding, resolvers/delegation.py); anyone else gets a typed ``Forbidden``."""
    if principal(info).holds_scope(scope):
        return None
    return Forbidden(message=f"This needs a service token with the '{scope}' scope, or an admin token")


def portal_account(who: Principal) -> int | None:
    """The one account a portal session reads and pays for; ``None`` for every other kind of token."""
    return who.account_id if who.kind is TokenKind.PORTAL else None


PORTAL_MESSAGE = "A portal session reads and pays for its own account only"


def require_admin(info: Info[Context, None]) -> Forbidden | None:
    if principal(info).is_admin:
        return None
    return Forbidden(message="This needs an admin token")


ALL_ROLES = frozenset(MemberRole)
BILLING_ROLES = frozenset({MemberRole.BILLING, MemberRole.OWNER})


async def roles_in(info: Info[Context, None], organization_id: int) -> frozenset[MemberRole] | None:
    """The caller's roles in an organization: ``None`` if not a member; admins hold every role."""
    who = principal(info)
    if who.is_admin:
        return ALL_ROLES
    if who.user_id is None:
        return None
    for membership in await info.context.loaders.memberships_of_user.load(who.user_id):
        if membership.organization_id == organization_id:
            return membership.role_set
    return None


READ_SCOPES = (BALANCE_READ, BILLING_READ)
"""Either lets a service reach an account; each of the account's fields then needs its own (require_read_scope)."""


async def may_read_account(
    info: Info[Context, None], account: CreditAccount, scopes: tuple[str, ...] = READ_SCOPES
) -> bool:
    """A user's own account; an organization's pool for its BILLING and OWNER members; admins any; services
    with one of ``scopes`` any."""
    who = principal(info)
    if can_read_account(who, account.user_id, scopes, account_id=account.id):
        return True
    if account.organization_id is None or who.kind is TokenKind.PORTAL:
        return False
    return bool((await roles_in(info, account.organization_id) or frozenset()) & BILLING_ROLES)


def can_read_account(
    who: Principal, user_id: int | None, scopes: tuple[str, ...] = READ_SCOPES, *, account_id: int | None = None
) -> bool:
    """A user reads their own account (``user_id``: the account's user); a portal session the account it is
    bound to (when ``account_id`` is given), a delegated agent token that account with one of ``scopes``;
    admins, and unbound services with one of ``scopes``, read any."""
    if who.is_admin or any(who.has_scope(scope) for scope in scopes):
        return True
    if who.kind is TokenKind.PORTAL:
        return account_id is not None and account_id == who.account_id
    if who.delegated:
        return account_id is not None and account_id == who.account_id and any(s in who.scopes for s in scopes)
    return user_id is not None and who.user_id == user_id


def service_lacks(who: Principal, scope: str) -> bool:
    """A service token without ``scope``. Users and admins have no scopes: whose data it is decides for them."""
    return who.kind is TokenKind.SERVICE and scope not in who.scopes


def scope_message(scope: str) -> str:
    return f"This needs a service token with the '{scope}' scope"


def require_read_scope(info: Info[Context, None], scope: str) -> None:
    """For a field of an account a service reached: ``balance:read`` for balance and usage, ``billing:read``
    for payments, invoices, cards and subscriptions. Raises a ``FORBIDDEN`` error."""
    if service_lacks(principal(info), scope):
        raise ForbiddenError(scope_message(scope))
