"""Users and organizations under the platform's ids (models/provisioning.py), directly on both databases:
one transaction per create, a replay answers the same row, an external id never changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from tortoise.exceptions import IntegrityError

from models import ledger, provisioning
from models.credits import MICRO
from models.tables import CreditAccount, CreditLot, LedgerEntry, Membership, Organization, User
from tests.support.backends import T0, Backend
from tests.support.snapshots import changed, snapshot

BONUS: dict[str, Any] = {"signup_bonus": 5 * MICRO, "bonus_lifetime": timedelta(days=30), "now": T0}


async def test_create_user_stores_the_external_id_and_metadata_with_the_bonus(db: Backend) -> None:
    user_id = await ledger.create_user("ada@example.com", external_id="cus_ada", metadata={"plan": "pro"}, **BONUS)
    user = await User.get(id=user_id)
    assert (user.email, user.external_id, user.metadata) == ("ada@example.com", "cus_ada", {"plan": "pro"})
    account = await CreditAccount.get(user_id=user_id)
    assert account.balance == 5 * MICRO
    assert await ledger.audit() == []


async def test_a_taken_external_id_creates_nothing_not_even_the_bonus(db: Backend) -> None:
    await ledger.create_user("ada@example.com", external_id="cus_ada", **BONUS)
    before = await snapshot()
    with pytest.raises(IntegrityError):
        await ledger.create_user("bob@example.com", external_id="cus_ada", **BONUS)
    assert changed(before, await snapshot()) == set()


async def test_concurrent_provisioning_of_one_user_makes_one_user_and_one_bonus(db: Backend) -> None:
    made = await asyncio.gather(
        *(provisioning.create_user("ada@example.com", "cus_ada", {"n": 1}, **BONUS) for _ in range(5))
    )
    assert len(set(made)) == 1
    assert (await User.all().count(), await CreditLot.all().count(), await LedgerEntry.all().count()) == (1, 1, 1)


async def test_the_external_id_is_set_once(db: Backend) -> None:
    user_id = await provisioning.create_user("ada@example.com", None, None, **BONUS)
    user = await provisioning.update_user(user_id, provisioning.Changes(external_id="cus_ada"))
    assert user.external_id == "cus_ada"
    before = await snapshot()
    with pytest.raises(provisioning.ImmutableError):
        await provisioning.update_user(user_id, provisioning.Changes(external_id="cus_other", email="x@example.com"))
    assert changed(before, await snapshot()) == set()


async def test_concurrent_provisioning_of_one_organization_makes_one(db: Backend) -> None:
    owner = await provisioning.create_user("ada@example.com", "cus_ada", None, **BONUS)
    made = await asyncio.gather(
        *(provisioning.create_organization("Acme", owner, "org_acme", None, T0) for _ in range(3))
    )
    assert len({org.id for org in made}) == 1
    assert (await Organization.all().count(), await Membership.all().count()) == (1, 1)
