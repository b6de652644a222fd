"""What the billing service tests share: the services without any GraphQL, and a customer to bill."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from creditline.clock import Clock
from creditline.events import InProcessBus, Subscription
from creditline.services import Services
from creditline.settings import Settings
from models import ledger
from models.balance import Balance
from models.credits import MICRO
from models.tables import CreditAccount
from tests.conftest import Backend
from tests.helpers import ScriptedGateway


@dataclass
class Customer:
    """Ada, with 100 free credits, and what she would see of her account."""

    services: Services
    account_id: int
    gateway: ScriptedGateway
    published: Subscription

    async def balance(self) -> Balance:
        return (await ledger.read_balances([self.account_id], self.services.clock.now()))[self.account_id]

    def changes(self) -> list[object]:
        """The balance changes published since the last call."""
        seen: list[object] = []
        while not self.published.queue.empty():
            seen.append(self.published.queue.get_nowait())
        return seen


@pytest.fixture
async def ada(db: Backend, clock: Clock, settings: Settings) -> Customer:
    services = Services(settings=settings, clock=clock, bus=InProcessBus(), gateway=ScriptedGateway())
    user_id = await ledger.create_user(
        "ada@example.com", signup_bonus=100 * MICRO, bonus_lifetime=timedelta(days=30), now=clock.now()
    )
    account = await CreditAccount.get(user_id=user_id)
    assert isinstance(services.gateway, ScriptedGateway)
    return Customer(services, account.id, services.gateway, services.bus.subscribe(None))
