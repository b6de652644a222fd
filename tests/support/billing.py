"""What the billing service tests (tests/billing/) share: a customer to bill, seen as she would see it, and a
processor that cannot be reached."""

from __future__ import annotations

from dataclasses import dataclass

from creditline.events import BusSubscription
from creditline.services import Services
from gateway.base import Charge, GatewayError
from models import ledger
from models.balance import Balance
from tests.support.helpers import ScriptedGateway


@dataclass
class Customer:
    """Ada, with 100 free credits, and what she would see of her account."""

    services: Services
    account_id: int
    gateway: ScriptedGateway
    published: BusSubscription

    async def balance(self) -> Balance:
        return (await ledger.read_balances([self.account_id], self.services.clock.now()))[self.account_id]

    def changes(self) -> list[object]:
        """The balance changes published since the last call."""
        seen: list[object] = []
        while not self.published.queue.empty():
            seen.append(self.published.queue.get_nowait())
        return seen


class UnreachableGateway(ScriptedGateway):
    """A processor that cannot be reached: the outcome of every charge is unknown."""

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        card: str,
        idempotency_key: str,
        description: str,
        customer: str | None = None,
        off_session: bool = False,
    ) -> Charge:
        self.calls.append(idempotency_key)
        raise GatewayError("The processor did not answer")
