"""The rate card: what one unit of each activity costs, in micro-credits per unit.

A deployment names its own in a TOML file (``CREDITLINE_RATE_CARD``)::

    [answer]
    unit = "answer"
    price = "0.002"     # credits per unit
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from models.credits import MICRO, parse_credits


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

    @classmethod
    def from_file(cls, path: str | Path) -> RateCard:
        """Read a TOML rate card; a malformed one stops start-up with a message naming the problem."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read rate card {path}: {exc}") from exc
        rates = []
        for activity, entry in data.items():
            if not isinstance(entry, dict) or "price" not in entry:
                raise ValueError(f"rate card {path}: [{activity}] needs a price")
            price = parse_credits(entry["price"])
            if price <= 0:
                raise ValueError(f"rate card {path}: [{activity}] price must be positive")
            rates.append(Rate(activity, str(entry.get("unit", "unit")), price))
        return cls(tuple(rates))
