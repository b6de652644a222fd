"""Organizations, memberships and roles, and the shared credit pool (DESIGN 7).

Every change of membership locks the organization's row first (PostgreSQL; SQLite has one writer), so
two owners demoting each other at once cannot leave an organization without an owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from tortoise.transactions import in_transaction

from models.sql import Sql
from models.tables import CreditAccount, MemberBudget, MemberRole, Membership, Organization


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


async def create(name: str, owner_id: int, now: datetime) -> Organization:
    async with in_transaction():
        org = await Organization.create(name=name, created_at=now)
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
        await MemberBudget.filter(organization_id=organization_id, user_id=user_id).delete()


async def enable_pool(organization_id: int, now: datetime) -> CreditAccount:
    """Give the organization its own credit account (idempotent: enabling twice returns the same pool)."""
    async with in_transaction() as conn:
        await _lock(Sql(conn), organization_id)
        pool = await CreditAccount.filter(organization_id=organization_id).first()
        if pool is None:
            pool = await CreditAccount.create(organization_id=organization_id, created_at=now)
    return pool


async def set_budget(organization_id: int, user_id: int, monthly_limit: int | None) -> None:
    """Set (or, with ``None``, lift) a member's monthly budget on the pool."""
    async with in_transaction() as conn:
        await _lock(Sql(conn), organization_id)
        if not await Membership.filter(organization_id=organization_id, user_id=user_id).exists():
            raise NotMemberError()
        if monthly_limit is None:
            await MemberBudget.filter(organization_id=organization_id, user_id=user_id).delete()
            return
        updated = await MemberBudget.filter(organization_id=organization_id, user_id=user_id).update(
            monthly_limit=monthly_limit
        )
        if not updated:
            await MemberBudget.create(organization_id=organization_id, user_id=user_id, monthly_limit=monthly_limit)
