"""The billing service tests run without GraphQL: the services, and a customer to bill."""

from __future__ import annotations

from datetime import timedelta

import pytest

from creditline.clock import Clock
from creditline.events import InProcessBus
from creditline.services import Services
from creditline.settings import Settings
from models import ledger
from models.credits import MICRO
from models.tables import CreditAccount
from tests.support.backends import Backend
from tests.support.billing import Customer
from tests.support.helpers import ScriptedGateway


@pytest.fixture
async def ada(db: Backend, clock: Clock, settings: Settings) -> Customer:
    gateway = ScriptedGateway()
    services = Services(settings=settings, clock=clock, bus=InProcessBus(), gateway=gateway)
    user_id = await ledger.create_user(
        "ada@example.com", signup_bonus=100 * MICRO, bonus_lifetime=timedelta(days=30), now=clock.now()
    )
    account = await CreditAccount.get(user_id=user_id)
    return Customer(services, account.id, gateway, services.bus.subscribe(None))
