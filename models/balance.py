"""Balances as the API shows them, computed from live lots at one instant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.sql import as_datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's credit in micro-credits. ``total`` counts only lots live at the instant of reading."""

    free: int
    paid: int
    held: int

    @property
    def total(self) -> int:
        return self.free + self.paid

    @property
    def available(self) -> int:
        # Holds can outlive the free lots they were counted against; available never goes below zero.
        return max(0, self.total - self.held)

    def to_json(self) -> dict[str, int]:
        return {"free": self.free, "paid": self.paid, "held": self.held}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Balance:
        return cls(free=int(data["free"]), paid=int(data["paid"]), held=int(data["held"]))


def is_live(expires_at: datetime | None, now: datetime) -> bool:
    """A lot stops counting at its ``expiresAt`` instant, whether or not the sweep has recorded it."""
    return expires_at is None or expires_at > now


def balance_from_lots(lots: Iterable[Mapping[str, Any]], held: int, now: datetime) -> Balance:
    free = paid = 0
    for lot in lots:
        if lot["remaining"] <= 0 or not is_live(as_datetime(lot["expires_at"]), now):
            continue
        if lot["kind"] == "FREE":
            free += lot["remaining"]
        else:
            paid += lot["remaining"]
    return Balance(free=free, paid=paid, held=held)
