"""Money: exact integer amounts in a currency's minor units (cents for USD), never floats; and what credit costs."""

from __future__ import annotations

from dataclasses import dataclass

from models.credits import MICRO


@dataclass(frozen=True, slots=True)
class Price:
    """What credit costs: ``minor_per_100`` minor units of ``currency`` (an ISO 4217 code) buy 100 credits."""

    currency: str
    minor_per_100: int

    def of(self, credits: int) -> int:
        """The price of ``credits`` micro-credits in minor units, rounded up."""
        return -(-credits * self.minor_per_100 // (100 * MICRO))


def invoice_number(number: int) -> str:
    """An invoice's number as people read it: INV-000123."""
    return f"INV-{number:06d}"
