"""The interface every payment processor implements. Amounts are integer minor units of a currency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Card:
    """A saved card as the gateway describes it: its reference, never its number."""

    reference: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True, slots=True)
class Charge:
    succeeded: bool
    reference: str | None
    failure_reason: str | None = None


class InvalidPaymentToken(Exception):
    """The token names no card this gateway knows."""


class Gateway(Protocol):
    name: str
    card_on_file: bool
    """Cards are saved and charged in-app (sandbox, legacy); otherwise the processor hosts checkout."""

    async def save_card(self, token: str) -> Card: ...

    async def charge(
        self, *, amount: int, currency: str, card: str, idempotency_key: str, description: str
    ) -> Charge: ...

    async def refund(self, *, charge: str, amount: int, currency: str, idempotency_key: str) -> Charge:
        """Return ``amount`` of a charge (its gateway reference) to the card it came from."""
        ...
