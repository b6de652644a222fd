"""Subscription plans on offer, from configuration (``CREDITLINE_PLANS``, a TOML file)::

[pro-monthly]
name = "Pro"
price = 5000                 # minor units of CREDITLINE_CURRENCY per interval
interval = "MONTH"           # or "YEAR"
credits = "6000"             # credits granted each paid period
credits_expire_at_period_end = false
stripe_price = "price_..."   # the Stripe Price billed on the stripe gateway (optional elsewhere)
"""

from __future__ import annotations

import calendar
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from models.credits import MICRO, parse_credits

INTERVALS = ("MONTH", "YEAR")


@dataclass(frozen=True, slots=True)
class PlanSpec:
    id: str
    name: str
    price: int
    """Minor units of the configured currency per interval."""
    interval: str
    credits: int
    """Micro-credits granted each paid period."""
    credits_expire_at_period_end: bool
    stripe_price: str | None = None

    def period_end(self, start: datetime, anchor: datetime) -> datetime:
        """The end of the period that starts at ``start`` of a subscription that began at ``anchor``: the
        anchor's day and time a whole number of intervals later, on the last day of a shorter month
        (Jan 31 -> Feb 28 -> Mar 31), the first such instant after ``start``."""
        step = 1 if self.interval == "MONTH" else 12
        months = (start.year - anchor.year) * 12 + start.month - anchor.month
        months -= months % step
        while True:
            months += step
            end = _add_months(anchor, months)
            if end > start:
                return end


def _add_months(anchor: datetime, months: int) -> datetime:
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    return anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1]))


DEFAULT_PLANS = (
    PlanSpec("starter-monthly", "Starter", 1_000, "MONTH", 1_100 * MICRO, False),
    PlanSpec("pro-monthly", "Pro", 5_000, "MONTH", 6_000 * MICRO, False),
    PlanSpec("pro-yearly", "Pro (yearly)", 50_000, "YEAR", 75_000 * MICRO, True),
)


class PlanCatalog:
    def __init__(self, plans: tuple[PlanSpec, ...] = DEFAULT_PLANS) -> None:
        self.plans = {plan.id: plan for plan in plans}

    def get(self, plan_id: str) -> PlanSpec | None:
        return self.plans.get(plan_id)

    @classmethod
    def from_file(cls, path: str | Path) -> PlanCatalog:
        """Read a TOML plan file; a malformed one stops start-up with a message naming the problem."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read plans {path}: {exc}") from exc
        plans = []
        for plan_id, entry in data.items():
            if not isinstance(entry, dict):
                raise ValueError(f"plans {path}: [{plan_id}] must be a table")
            missing = {"price", "interval", "credits"} - entry.keys()
            if missing:
                raise ValueError(f"plans {path}: [{plan_id}] needs {', '.join(sorted(missing))}")
            price, interval = entry["price"], str(entry["interval"]).upper()
            if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
                raise ValueError(f"plans {path}: [{plan_id}] price must be a positive whole number of minor units")
            if interval not in INTERVALS:
                raise ValueError(f"plans {path}: [{plan_id}] interval must be MONTH or YEAR")
            credits = parse_credits(entry["credits"])
            if credits <= 0:
                raise ValueError(f"plans {path}: [{plan_id}] credits must be positive")
            stripe_price = entry.get("stripe_price")
            plans.append(
                PlanSpec(
                    plan_id,
                    str(entry.get("name", plan_id)),
                    price,
                    interval,
                    credits,
                    bool(entry.get("credits_expire_at_period_end", False)),
                    None if stripe_price is None else str(stripe_price),
                )
            )
        if not plans:
            raise ValueError(f"plans {path}: no plans")
        return cls(tuple(plans))
