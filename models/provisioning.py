"""Users and organizations created and changed by the platform, under its own ids (README, Provisioning;
docs/rules.md, Provisioned once).

Creating with an ``external_id`` is idempotent: the same id with the same details answers the existing row
(no second signup bonus), the same id with other details is refused. Two identical creates at once make one
row: the loser's insert breaks the unique index, rolls back whole (bonus included) and finds the winner's.
An external id, once set, never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import ledger, organizations
from models.sql import Sql
from models.tables import MemberRole, Membership, Organization, User

Metadata = dict[str, object]


class ProvisioningError(Exception):
    pass


class AlreadyExistsError(ProvisioningError):
    """``field`` (``email`` or ``externalId``) names another row already, ``existing_id``."""

    def __init__(self, field: str, existing_id: int, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.existing_id = existing_id


class ImmutableError(ProvisioningError):
    """The external id is set already, to another value."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What an update sets; ``None`` keeps a value, except metadata, replaced when ``replace_metadata``."""

    email: str | None = None
    name: str | None = None
    external_id: str | None = None
    metadata: Metadata | None = None
    replace_metadata: bool = False


def _external_id_taken(kind: str, external_id: str, existing_id: int, what: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        "externalId", existing_id, f"{kind} with externalId {external_id!r} exists already with {what}"
    )


def _email_taken(email: str, existing_id: int) -> AlreadyExistsError:
    return AlreadyExistsError("email", existing_id, f"Another user has the email {email} already")


# ------------------------------------------------------------------------------------------------- users


async def _existing_user(email: str, external_id: str | None, metadata: Metadata | None) -> int | None:
    """The user this create names already (an idempotent replay), or ``None``; raises if it conflicts. One
    query, so that a concurrent create cannot commit between a look by external id and a look by email."""
    if external_id is None:
        rows = await User.filter(email=email)
    else:
        rows = await User.filter(Q(external_id=external_id) | Q(email=email))
    for same in rows:
        if external_id is not None and same.external_id == external_id:
            if same.email == email and same.metadata == metadata:
                return int(same.id)
            raise _external_id_taken("A user", external_id, same.id, "another email or metadata")
    if rows:
        raise _email_taken(email, rows[0].id)
    return None


async def create_user(
    email: str,
    external_id: str | None,
    metadata: Metadata | None,
    *,
    signup_bonus: int,
    bonus_lifetime: timedelta,
    now: datetime,
) -> int:
    """A new user with the signup bonus, or the same user again for a replay with the same external id and
    details. ``email`` is normalized (boundary.email). Raises ``AlreadyExistsError``."""
    existing = await _existing_user(email, external_id, metadata)
    if existing is not None:
        return existing
    try:
        return await ledger.create_user(
            email,
            signup_bonus=signup_bonus,
            bonus_lifetime=bonus_lifetime,
            now=now,
            external_id=external_id,
            metadata=metadata,
        )
    except IntegrityError:
        # Created at the same moment by another request: it is committed now, so the look finds it.
        existing = await _existing_user(email, external_id, metadata)
        if existing is None:
            raise
        return existing


async def update_user(user_id: int, changes: Changes) -> User:
    """Change a user's email, metadata, or external id (only while it is unset). Raises ``ImmutableError``,
    ``AlreadyExistsError``."""
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            await sql.fetchrow(f"SELECT id FROM users WHERE id = $1{sql.for_update()}", user_id)
            user = await User.get(id=user_id)
            _check_external_id(user.external_id, changes.external_id)
            if changes.email is not None and changes.email != user.email:
                await _refuse_taken_email(user_id, changes.email)
                user.email = changes.email
            if changes.external_id is not None and user.external_id is None:
                taken = await User.filter(external_id=changes.external_id).only("id").first()
                if taken is not None:
                    raise _external_id_taken("A user", changes.external_id, taken.id, "another user")
                user.external_id = changes.external_id
            if changes.replace_metadata:
                user.metadata = changes.metadata
            await user.save(update_fields=["email", "external_id", "metadata"])
    except IntegrityError:
        # Another user took the email or the external id between the look and the write.
        if changes.email is not None:
            await _refuse_taken_email(user_id, changes.email)
        if changes.external_id is not None:
            taken = await User.filter(external_id=changes.external_id).exclude(id=user_id).only("id").first()
            if taken is not None:
                raise _external_id_taken("A user", changes.external_id, taken.id, "another user") from None
        raise
    return user


async def _refuse_taken_email(user_id: int, email: str) -> None:
    taken = await User.filter(email=email).exclude(id=user_id).only("id").first()
    if taken is not None:
        raise _email_taken(email, taken.id)


def _check_external_id(current: str | None, wanted: str | None) -> None:
    if wanted is not None and current is not None and wanted != current:
        raise ImmutableError(f"externalId is set already ({current!r}) and cannot change")


# ----------------------------------------------------------------------------------------- organizations


async def _existing_organization(
    name: str, owner_id: int, external_id: str | None, metadata: Metadata | None
) -> Organization | None:
    if external_id is None:
        return None
    same = await Organization.filter(external_id=external_id).first()
    if same is None:
        return None
    owners = [m.user_id for m in await Membership.filter(organization_id=same.id) if MemberRole.OWNER in m.role_set]
    if same.name == name and same.metadata == metadata and owner_id in owners:
        return same
    raise _external_id_taken("An organization", external_id, same.id, "another name, owner or metadata")


async def create_organization(
    name: str, owner_id: int, external_id: str | None, metadata: Metadata | None, now: datetime
) -> Organization:
    """A new organization with ``owner_id`` as its OWNER, or the same one again for a replay with the same
    external id and details. Raises ``AlreadyExistsError``."""
    existing = await _existing_organization(name, owner_id, external_id, metadata)
    if existing is not None:
        return existing
    try:
        org = await organizations.create(name, owner_id, now, external_id=external_id, metadata=metadata)
    except IntegrityError:
        existing = await _existing_organization(name, owner_id, external_id, metadata)
        if existing is None:
            raise
        return existing
    return org


async def update_organization(organization_id: int, changes: Changes) -> Organization:
    """Change an organization's name, metadata, or external id (only while it is unset). Raises
    ``ImmutableError``, ``AlreadyExistsError``."""
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            await sql.fetchrow(f"SELECT id FROM organizations WHERE id = $1{sql.for_update()}", organization_id)
            org = await Organization.get(id=organization_id)
            _check_external_id(org.external_id, changes.external_id)
            if changes.name is not None:
                org.name = changes.name
            if changes.external_id is not None and org.external_id is None:
                taken = await Organization.filter(external_id=changes.external_id).only("id").first()
                if taken is not None:
                    raise _external_id_taken("An organization", changes.external_id, taken.id, "another organization")
                org.external_id = changes.external_id
            if changes.replace_metadata:
                org.metadata = changes.metadata
            await org.save(update_fields=["name", "external_id", "metadata"])
    except IntegrityError:
        if changes.external_id is not None:
            taken = await Organization.filter(external_id=changes.external_id).exclude(id=organization_id).first()
            if taken is not None:
                raise _external_id_taken(
                    "An organization", changes.external_id, taken.id, "another organization"
                ) from None
        raise
    return org
