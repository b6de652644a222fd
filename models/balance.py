"""Balances as the API shows them, computed from live lots at one instant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.sql import as_datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's credit in micro-credits. ``total`` counts only lots live at the instant of reading.

    ``owed`` is what overdraft spends borrowed and no grant has paid back yet; ``overdraft`` how far below
    zero ``available`` may go (see docs/rules.md, "Overdraft"). Both 0 for an account without overdraft."""

    free: int
    paid: int
    held: int
    owed: int = 0
    overdraft: int = 0

    @property
    def total(self) -> int:
        return self.free + self.paid

    @property
    def available(self) -> int:
        # Holds can outlive the free lots they were counted against (and an overdraft can be lowered below
        # what is owed): available never goes below -overdraft, which is 0 without an overdraft.
        return max(-self.overdraft, self.total - self.held - self.owed)

    @property
    def spendable(self) -> int:
        """The most a new spend or hold may take: down to -overdraft."""
        return self.available + self.overdraft

    def to_json(self) -> dict[str, int]:
        return {"free": self.free, "paid": self.paid, "held": self.held, "owed": self.owed, "overdraft": self.overdraft}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Balance:
        # Responses stored before overdrafts existed have neither key: they had none.
        return cls(
            free=int(data["free"]),
            paid=int(data["paid"]),
            held=int(data["held"]),
            owed=int(data.get("owed", 0)),
            overdraft=int(data.get("overdraft", 0)),
        )


def is_live(expires_at: datetime | None, now: datetime) -> bool:
    """A lot stops counting at its ``expiresAt`` instant, whether or not the sweep has recorded it."""
    return expires_at is None or expires_at > now


def balance_from_lots(
    lots: Iterable[Mapping[str, Any]], held: int, now: datetime, owed: int = 0, overdraft: int = 0
) -> Balance:
    free = paid = 0
    for lot in lots:
        if lot["remaining"] <= 0 or not is_live(as_datetime(lot["expires_at"]), now):
            continue
        if lot["kind"] == "FREE":
            free += lot["remaining"]
        else:
            paid += lot["remaining"]
    return Balance(free=free, paid=paid, held=held, owed=owed, overdraft=overdraft)


def account_balance(lots: Iterable[Mapping[str, Any]], held: int, account: Mapping[str, Any], now: datetime) -> Balance:
    """The balance of an account row that carries ``owed`` and ``overdraft`` (read with its lock)."""
    return balance_from_lots(lots, held, now, int(account["owed"]), int(account["overdraft"]))
