"""The rate card: what one unit of each activity costs, in micro-credits per unit."""

from __future__ import annotations

from dataclasses import dataclass

from models.credits import MICRO


@dataclass(frozen=True, slots=True)
class Rate:
    activity: str
    unit: str
    price: int
    """Micro-credits per unit."""


DEFAULT_RATES = (
    Rate("answer", "answer", 2_000),
    Rate("web_search", "search", 10_000),
    Rate("transcription", "minute", 6_000),
)


class RateCard:
    def __init__(self, rates: tuple[Rate, ...] = DEFAULT_RATES) -> None:
        self.rates = {rate.activity: rate for rate in rates}

    def price(self, activity: str, quantity: int) -> int | None:
        """Micro-credits for ``quantity`` (in millionths of a unit), rounded up; ``None`` if unpriced."""
        rate = self.rates.get(activity)
        if rate is None:
            return None
        return -(-quantity * rate.price // MICRO)
