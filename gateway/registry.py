"""Choosing the gateway named by ``CREDITLINE_GATEWAY``."""

from __future__ import annotations

from gateway.base import Card, Charge, Gateway
from gateway.sandbox import SandboxGateway


class GatewayUnavailable(Exception):
    """The configured processor cannot take payments in this build."""


class NotYetConnected:
    """``stripe`` and ``legacy`` answer billingConfig (no processor call needed) but take no payment yet."""

    def __init__(self, name: str, card_on_file: bool) -> None:
        self.name = name
        self.card_on_file = card_on_file

    async def save_card(self, token: str) -> Card:
        raise GatewayUnavailable(f"The {self.name} gateway cannot take payments in this build yet")

    async def charge(self, *, amount: int, currency: str, card: str, idempotency_key: str, description: str) -> Charge:
        raise GatewayUnavailable(f"The {self.name} gateway cannot take payments in this build yet")

    async def refund(self, *, charge: str, amount: int, currency: str, idempotency_key: str) -> Charge:
        raise GatewayUnavailable(f"The {self.name} gateway cannot take payments in this build yet")


def gateway_for(name: str) -> Gateway:
    if name == "sandbox":
        return SandboxGateway()
    return NotYetConnected(name, card_on_file=name == "legacy")
