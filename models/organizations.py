"""Organizations, memberships and roles, and the shared credit pool (docs/rules.md, Roles and Shared pool).

Every change of membership locks the organization's row first (PostgreSQL; SQLite has one writer), so
two owners demoting each other at once cannot leave an organization without an owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.transactions import in_transaction

from models import ledger, limits
from models.limit_rules import LimitSpec
from models.sql import Sql
from models.tables import (
    CreditAccount,
    Invitation,
    InvitationStatus,
    LimitAction,
    LimitKind,
    LimitScope,
    LimitWindow,
    MemberRole,
    Membership,
    Organization,
    SpendLimit,
)


class OrganizationError(Exception):
    """A refusal the API reports as a typed error."""


class LastOwnerError(OrganizationError):
    def __init__(self) -> None:
        super().__init__("An organization must keep at least one owner")


class NotOwnerError(OrganizationError):
    def __init__(self) -> None:
        super().__init__("This needs the OWNER role in the organization")


class AlreadyMemberError(OrganizationError):
    def __init__(self) -> None:
        super().__init__("That user is a member already")


class NotMemberError(OrganizationError):
    def __init__(self) -> None:
        super().__init__("That user is not a member of this organization")


class AlreadyInvitedError(OrganizationError):
    def __init__(self) -> None:
        super().__init__("That email has a pending invitation to this organization: revoke it to invite again")


class NoPoolError(OrganizationError):
    def __init__(self) -> None:
        super().__init__("The organization has no credit pool: enable it first (a budget limits spending from it)")


class InvitationConflictError(OrganizationError):
    """The idempotency key was used before for a different invitation."""


class InvitationExpiredError(OrganizationError):
    def __init__(self, expires_at: datetime) -> None:
        super().__init__("This invitation has expired: ask for a new one")
        self.expires_at = expires_at


class InvitationNotPendingError(OrganizationError):
    def __init__(self, status: InvitationStatus) -> None:
        super().__init__(f"This invitation was {status.value.lower()} already")
        self.status = status


def roles_text(roles: Iterable[MemberRole]) -> str:
    return ",".join(sorted({MemberRole(role).value for role in roles}))


async def _lock(sql: Sql, organization_id: int) -> None:
    await sql.fetchrow(f"SELECT id FROM organizations WHERE id = $1{sql.for_update()}", organization_id)


async def _owners(sql: Sql, organization_id: int, actor_id: int | None) -> list[int]:
    """The owners, read under the organization's lock; the acting owner (``None``: an admin) must be one."""
    rows = await sql.fetch("SELECT user_id, roles FROM memberships WHERE organization_id = $1", organization_id)
    owners = [int(r["user_id"]) for r in rows if MemberRole.OWNER.value in str(r["roles"]).split(",")]
    if actor_id is not None and actor_id not in owners:
        raise NotOwnerError()
    return owners


async def create(
    name: str,
    owner_id: int,
    now: datetime,
    *,
    external_id: str | None = None,
    metadata: dict[str, object] | None = None,
) -> Organization:
    """A new organization with ``owner_id`` as its OWNER, in one transaction. A taken ``external_id`` raises
    Tortoise's ``IntegrityError`` and creates nothing."""
    async with in_transaction():
        org = await Organization.create(name=name, external_id=external_id, metadata=metadata, created_at=now)
        await Membership.create(organization_id=org.id, user_id=owner_id, roles=MemberRole.OWNER.value, created_at=now)
    return org


async def add_member(organization_id: int, user_id: int, roles: Iterable[MemberRole], now: datetime) -> Membership:
    async with in_transaction() as conn:
        await _lock(Sql(conn), organization_id)
        if await Membership.filter(organization_id=organization_id, user_id=user_id).exists():
            raise AlreadyMemberError()
        return await Membership.create(
            organization_id=organization_id, user_id=user_id, roles=roles_text(roles), created_at=now
        )


async def set_roles(
    organization_id: int, user_id: int, roles: Iterable[MemberRole], actor_id: int | None
) -> Membership:
    new_roles = roles_text(roles)
    async with in_transaction() as conn:
        sql = Sql(conn)
        await _lock(sql, organization_id)
        owners = await _owners(sql, organization_id, actor_id)
        membership = await Membership.filter(organization_id=organization_id, user_id=user_id).first()
        if membership is None:
            raise NotMemberError()
        if MemberRole.OWNER.value not in new_roles.split(",") and owners == [user_id]:
            raise LastOwnerError()
        membership.roles = new_roles
        await membership.save(update_fields=["roles"])
    return membership


async def remove_member(organization_id: int, user_id: int, actor_id: int | None) -> None:
    """Remove a member; ``actor_id`` is the owner doing it, or ``None`` for an admin or the member leaving."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await _lock(sql, organization_id)
        owners = await _owners(sql, organization_id, actor_id)
        if not await Membership.filter(organization_id=organization_id, user_id=user_id).exists():
            raise NotMemberError()
        if owners == [user_id]:
            raise LastOwnerError()
        await Membership.filter(organization_id=organization_id, user_id=user_id).delete()
    await _remove_member_limits(organization_id, user_id)


async def enable_pool(organization_id: int, now: datetime) -> CreditAccount:
    """Give the organization its own credit account (idempotent: enabling twice returns the same pool)."""
    async with in_transaction() as conn:
        await _lock(Sql(conn), organization_id)
        pool = await CreditAccount.filter(organization_id=organization_id).first()
        if pool is None:
            pool = await CreditAccount.create(organization_id=organization_id, created_at=now)
    return pool


# Budgets (docs/rules.md, "Budgets"): a member's monthly budget is their spend limit on the pool (scope
# MEMBER, kind CAP, window MONTH in UTC, action BLOCK), enforced by the ledger like any limit and refused as
# ``BudgetExceeded``. What a member spent from the pool this month is read from the usage rollups, so it is
# shown for members without a budget too.


def budget_spec(user_id: int, monthly_limit: int) -> LimitSpec:
    return LimitSpec(LimitScope.MEMBER, monthly_limit, LimitWindow.MONTH, user_id=user_id)


def _month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def set_budget(
    organization_id: int, user_id: int, monthly_limit: int | None, now: datetime | None = None
) -> None:
    """Set (or, with ``None``, lift) a member's monthly budget on the pool. An organization without a pool
    has nothing to budget: ``NoPoolError`` (lifting is then a no-op)."""
    now = now or datetime.now(UTC)
    async with in_transaction() as conn:
        await _lock(Sql(conn), organization_id)
        if not await Membership.filter(organization_id=organization_id, user_id=user_id).exists():
            raise NotMemberError()
        pool = await CreditAccount.filter(organization_id=organization_id).first()
    if monthly_limit is None:
        if pool is not None:
            for found in await _budget_limits(pool.id, user_id):
                await limits.remove_limit(found)
        return
    if pool is None:
        raise NoPoolError()
    _, created = await limits.set_limit(pool.id, budget_spec(user_id, monthly_limit), now)
    if created:
        await _count_month_so_far(pool.id, organization_id, user_id, now)


# A member's budget is their BLOCK cap of the month in UTC without a per-run cap (what ``setMemberBudget``
# sets): a NOTIFY limit, or one in another zone or with a per-run cap, is some other limit on the member.
_BUDGET = {
    "kind": LimitKind.CAP,
    "window": LimitWindow.MONTH,
    "window_length": 1,
    "action": LimitAction.BLOCK,
    "time_zone": "UTC",
    "max_credits_per_run__isnull": True,
}


async def _budget_limits(pool_id: int, user_id: int) -> list[int]:
    found = await SpendLimit.filter(account_id=pool_id, subject=f"member:{user_id}", **_BUDGET).only("id")
    return [int(limit.id) for limit in found]


async def _count_month_so_far(pool_id: int, organization_id: int, user_id: int, now: datetime) -> None:
    """A new budget counts what the member spent from the pool since the month began, as budgets always did.

    Under the pool's lock, the counter is set to the month's rollups of the member: every spend since the
    limit was created is in both, every spend before it in the rollups only."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, pool_id)
        found = await _budget_limits(pool_id, user_id)
        if not found:  # lifted again meanwhile
            return
        limit_id = found[0]
        month = _month_start(now)
        await sql.execute(
            "INSERT INTO spend_limit_usage (limit_id, run_id, period, spent)"
            " SELECT $1, '', $2, COALESCE(SUM(credits), 0) FROM usage_rollups WHERE account_id = $3"
            " AND organization_key = $4 AND dimension = 'MEMBER' AND key = $5 AND bucket >= $6"
            " ON CONFLICT (limit_id, run_id, period) DO UPDATE SET spent = excluded.spent",
            limit_id,
            int(month.timestamp()),
            pool_id,
            organization_id,
            str(user_id),
            month,
        )
        await limits.recount(sql, pool_id)


async def _remove_member_limits(organization_id: int, user_id: int) -> None:
    """A member who leaves takes their limits on the pool with them (a budget, as always, and any other)."""
    pool = await CreditAccount.filter(organization_id=organization_id).first()
    if pool is None:
        return
    for limit in await SpendLimit.filter(account_id=pool.id, subject=f"member:{user_id}").only("id"):
        await limits.remove_limit(int(limit.id))


async def budgets(organization_ids: list[int]) -> dict[int, dict[int, int]]:
    """The members' monthly budgets (micro-credits) of each organization, by user id."""
    found: dict[int, dict[int, int]] = {k: {} for k in organization_ids}
    rows = await SpendLimit.filter(
        account__organization_id__in=organization_ids,
        scope=LimitScope.MEMBER,
        **_BUDGET,
    ).values_list("account__organization_id", "user_id", "amount")
    for organization_id, user_id, amount in rows:
        found[int(organization_id)][int(user_id)] = int(amount)
    return found


async def spent_this_month(organization_ids: list[int], now: datetime) -> dict[int, dict[int, int]]:
    """What each member spent from each organization's pool this calendar month (UTC), by user id."""
    found: dict[int, dict[int, int]] = {k: {} for k in organization_ids}
    if not organization_ids:
        return found
    placeholders = ", ".join(f"${n + 2}" for n in range(len(organization_ids)))
    rows = await Sql(connections.get("default")).fetch(
        "SELECT r.organization_key, r.key, CAST(SUM(r.credits) AS BIGINT) AS spent FROM usage_rollups r"
        " JOIN credit_accounts a ON a.id = r.account_id AND a.organization_id = r.organization_key"
        f" WHERE r.dimension = 'MEMBER' AND r.bucket >= $1 AND r.organization_key IN ({placeholders})"
        " GROUP BY r.organization_key, r.key",
        _month_start(now),
        *organization_ids,
    )
    for row in rows:
        found[int(row["organization_key"])][int(row["key"])] = int(row["spent"])
    return found


# Invitations (issue 9, point 8): joining an organization needs the invitee's consent. Each change locks the
# organization's row like any other membership change.


async def invite(
    organization_id: int,
    email: str,
    roles: Iterable[MemberRole],
    *,
    actor_id: int | None,
    scope: str,
    key: str | None,
    request_hash: str,
    now: datetime,
    lifetime: timedelta,
) -> Invitation:
    """Invite ``email``; ``actor_id`` is the inviting owner (``None``: an admin). A replayed key returns the
    invitation it made, or the refusal it got: a refusal is stored under the key (the transaction commits it,
    the refusal is raised afterwards), so that a replay is never evaluated against newer state.

    The statements are the same whether or not a user has this email (none of them reads ``users`` on its
    own), so neither the answer nor the work done tells the inviter who is registered.
    """
    idem = None if key is None else ledger.IdempotencyKey(scope, key, "inviteMember", request_hash)
    refusal: OrganizationError | None = None
    async with in_transaction() as conn:
        sql = Sql(conn)
        await _lock(sql, organization_id)
        if idem is not None:
            # Read after the lock, in statements of their own: a concurrent first call has committed by now.
            earlier = await Invitation.filter(idempotency_scope=scope, idempotency_key=key).first()
            if earlier is not None:
                if earlier.request_hash != request_hash:
                    raise InvitationConflictError()
                return earlier
            try:
                stored = await ledger.stored_refusal(sql, idem)
            except ledger.IdempotencyConflictError:
                raise InvitationConflictError() from None
            if stored is not None:
                raise _stored_invite_refusal(stored)
        try:
            await _owners(sql, organization_id, actor_id)
            # A member already is someone the owner sees in the member list: saying so reveals nothing new.
            if await Membership.filter(organization_id=organization_id, user__email=email).exists():
                raise AlreadyMemberError()
            pending = Invitation.filter(
                organization_id=organization_id, email=email, status=InvitationStatus.PENDING, expires_at__gt=now
            )
            if await pending.exists():
                raise AlreadyInvitedError()
        except (NotOwnerError, AlreadyMemberError, AlreadyInvitedError) as exc:
            if idem is None:
                raise
            await ledger.store_refusal(sql, idem, {"refused": _INVITE_REFUSALS[type(exc)]}, now)
            refusal = exc
        else:
            return await Invitation.create(
                organization_id=organization_id,
                email=email,
                roles=roles_text(roles),
                status=InvitationStatus.PENDING,
                invited_by_id=actor_id,
                idempotency_scope=scope,
                idempotency_key=key,
                request_hash=request_hash,
                created_at=now,
                expires_at=now + lifetime,
            )
    raise refusal


async def refuse_invite(scope: str, key: str, request_hash: str, now: datetime) -> None:
    """Store the refusal of a caller without the OWNER role under its key (checked before ``invite``): once
    the caller is an owner again, a replay is still refused, as the first call was."""
    async with in_transaction() as conn:
        idem = ledger.IdempotencyKey(scope, key, "inviteMember", request_hash)
        await ledger.store_refusal(Sql(conn), idem, {"refused": _INVITE_REFUSALS[NotOwnerError]}, now)


_INVITE_REFUSALS: dict[type[OrganizationError], str] = {
    NotOwnerError: "not_owner",
    AlreadyMemberError: "already_member",
    AlreadyInvitedError: "already_invited",
}


def _stored_invite_refusal(stored: dict[str, object]) -> OrganizationError:
    refused = {name: kind for kind, name in _INVITE_REFUSALS.items()}.get(str(stored.get("refused")))
    if refused is None:
        raise ValueError(f"unknown stored refusal {stored!r}")
    return refused()


def _still_pending(invitation: Invitation, now: datetime) -> None:
    if invitation.status != InvitationStatus.PENDING:
        raise InvitationNotPendingError(InvitationStatus(invitation.status))
    if invitation.expires_at <= now:
        raise InvitationExpiredError(invitation.expires_at)


async def _close(invitation: Invitation, status: InvitationStatus, closed_by: int | None, now: datetime) -> None:
    invitation.status = status
    invitation.closed_by_id = closed_by
    invitation.closed_at = now
    await invitation.save(update_fields=["status", "closed_by_id", "closed_at"])


async def accept_invitation(invitation: Invitation, user_id: int, now: datetime) -> tuple[Membership, Invitation]:
    """The invitee (the resolver matched their email) joins with the invited roles."""
    async with in_transaction() as conn:
        await _lock(Sql(conn), invitation.organization_id)
        current = await Invitation.get(id=invitation.id)
        _still_pending(current, now)
        if await Membership.filter(organization_id=current.organization_id, user_id=user_id).exists():
            raise AlreadyMemberError()
        membership = await Membership.create(
            organization_id=current.organization_id, user_id=user_id, roles=current.roles, created_at=now
        )
        await _close(current, InvitationStatus.ACCEPTED, user_id, now)
    return membership, current


async def decline_invitation(invitation: Invitation, user_id: int, now: datetime) -> Invitation:
    async with in_transaction() as conn:
        await _lock(Sql(conn), invitation.organization_id)
        current = await Invitation.get(id=invitation.id)
        _still_pending(current, now)
        await _close(current, InvitationStatus.DECLINED, user_id, now)
    return current


async def revoke_invitation(invitation: Invitation, actor_id: int | None, now: datetime) -> Invitation:
    """``actor_id`` is the revoking owner, re-checked under the lock (``None``: an admin)."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await _lock(sql, invitation.organization_id)
        await _owners(sql, invitation.organization_id, actor_id)
        current = await Invitation.get(id=invitation.id)
        _still_pending(current, now)
        await _close(current, InvitationStatus.REVOKED, actor_id, now)
    return current
