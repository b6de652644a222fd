"""The run-out forecast of an account (models/forecast.py defines it)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models.forecast import Forecast
from schema.scalars import Credits


@strawberry.type(description="What a forecast was computed from")
class CreditForecastBasis:
    from_: datetime = strawberry.field(
        name="from",
        description="Start of the usage the rate is taken over: the first of the 168 hours (7 days) that end"
        " with the current one, or the first hour with usage in them if that is later",
    )
    to: datetime = strawberry.field(description="The instant of the forecast (now)")
    hours: int = strawberry.field(description="Whole hours from `from` to `to` (at least 1)")
    spent: Credits = strawberry.field(description="Credit spent from `from` to `to`, from the hourly usage rollups")
    available: Credits = strawberry.field(
        description="Available credit now: the credit of active holds (`held`) is already taken off it, since it"
        " will be spent; an overdraft is not counted"
    )
    held: Credits = strawberry.field(description="Credit in active holds now, counted against `available`")


@strawberry.type(
    description="How fast the account spends and when its available credit runs out at that rate: `burnPerDay`"
    " = `spent` / (`to` - `from`, at least an hour) per day; `runsOutAt` = `to` + `available` / that rate"
)
class CreditForecast:
    burn_per_day: Credits = strawberry.field(description="Credit spent per day at the rate of the last 7 days")
    runs_out_at: datetime | None = strawberry.field(
        description="When `available` reaches zero at that rate (now if it is not above zero); null if never"
        " before year 9999"
    )
    basis: CreditForecastBasis

    @classmethod
    def of(cls, forecast: Forecast) -> CreditForecast:
        return cls(
            burn_per_day=Credits(forecast.burn_per_day),
            runs_out_at=forecast.runs_out_at,
            basis=CreditForecastBasis(
                from_=forecast.since,
                to=forecast.until,
                hours=forecast.hours,
                spent=Credits(forecast.spent),
                available=Credits(forecast.available),
                held=Credits(forecast.held),
            ),
        )
