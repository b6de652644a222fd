"""The run-out forecast: how fast an account spends and when its available credit runs out at that rate
(docs/rules.md, "Run-out forecast"; README, "Run-out forecast").

Definition, in exact integers (micro-credits, microseconds), at an instant ``now``:

- The window is the 168 hourly rollups (``usage_rollups``, ACTIVITY rows: each usage event once) whose hour
  starts from ``hour(now) - 167h`` to ``hour(now)``: the last 7 days, the current hour included.
- ``spent`` is the credit they sum; ``since`` the start of the window or, when the first hour with usage in it
  is later (a young or newly active account), that hour. No usage in the window: no forecast.
- ``covered`` is ``now - since``, at least one hour (a first spend seconds ago is not a rate of millions a day).
- ``burn_per_day = spent * 1 day // covered``.
- ``available`` is the balance's available credit now: the credit of active holds is already counted against
  it (held credit will be spent); an overdraft is not (the forecast says when the credit runs out, not when
  spends are refused).
- ``runs_out_at`` is ``now`` when ``available <= 0``; otherwise ``now + available * covered // spent``
  (microseconds, from the exact rate, not the rounded ``burn_per_day``), or None past year 9999.
- The account runs out soon (``balance.runs_out_soon``) when ``runs_out_at < now + days``, compared exactly:
  ``available * covered < days * spent * 1 day``.

The GraphQL field (``CreditAccount.forecast``, through a DataLoader) and the sweep (``sweep_runs_out_soon``) both
compute it with ``forecast_of``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise import connections
from tortoise.transactions import in_transaction

from models.balance import Balance
from models.credits import format_credits
from models.event_data import account_ref
from models.instants import iso_z
from models.ledger import balance_locked, lock_account
from models.outbox import EmittedEvent, EventType, emit
from models.sql import Sql, as_datetime

WINDOW_HOURS = 7 * 24
HOUR = timedelta(hours=1)
DAY_MICROSECONDS = 86_400_000_000
_HOUR_MICROSECONDS = 3_600_000_000
RUNS_OUT_SOON = EventType.BALANCE_RUNS_OUT_SOON.value


@dataclass(frozen=True, slots=True)
class Burn:
    """What an account spent in the window: ``spent`` micro-credits since ``first_hour`` (an hour with usage)."""

    spent: int
    first_hour: datetime


@dataclass(frozen=True, slots=True)
class Forecast:
    burn_per_day: int
    runs_out_at: datetime | None
    since: datetime
    until: datetime
    spent: int
    available: int
    held: int
    covered_microseconds: int

    @property
    def hours(self) -> int:
        """Whole hours of usage data the rate is taken over (at least 1)."""
        return max(1, self.covered_microseconds // _HOUR_MICROSECONDS)

    def runs_out_within(self, days: int) -> bool:
        """Whether ``runs_out_at < until + days``, exactly (no rounding of the rate)."""
        if self.available <= 0:
            return True
        return self.available * self.covered_microseconds < days * self.spent * DAY_MICROSECONDS

    def whole_days_left(self) -> int:
        if self.available <= 0:
            return 0
        return self.available * self.covered_microseconds // (self.spent * DAY_MICROSECONDS)


def window_start(now: datetime) -> datetime:
    """The first hour of the window that ends with ``now``'s hour."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - (WINDOW_HOURS - 1) * HOUR


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def forecast_of(burn: Burn | None, balance: Balance, now: datetime) -> Forecast | None:
    """The forecast from an account's burn in the window and its balance at ``now`` (None: no usage)."""
    if burn is None or burn.spent <= 0:
        return None
    now = now.astimezone(UTC)
    since = max(window_start(now), burn.first_hour.astimezone(UTC))
    covered = max(_HOUR_MICROSECONDS, _microseconds(now - since))
    available = balance.available
    runs_out_at: datetime | None = now
    if available > 0:
        try:
            runs_out_at = now + timedelta(microseconds=available * covered // burn.spent)
        except OverflowError:  # past year 9999: as good as never at this rate
            runs_out_at = None
    return Forecast(
        burn_per_day=burn.spent * DAY_MICROSECONDS // covered,
        runs_out_at=runs_out_at,
        since=since,
        until=now,
        spent=burn.spent,
        available=available,
        held=balance.held,
        covered_microseconds=covered,
    )


_BURN = (
    # PostgreSQL sums bigints as numeric: cast back, as the reports do.
    "SELECT account_id, CAST(SUM(credits) AS BIGINT) AS spent, MIN(bucket) AS first_hour FROM usage_rollups"
    " WHERE dimension = 'ACTIVITY' AND bucket >= $1 AND bucket <= $2"
)


def _burns_of(rows: Sequence[Sequence[object]]) -> dict[int, Burn]:
    found: dict[int, Burn] = {}
    for account_id, spent, first_hour in rows:
        hour = as_datetime(first_hour)
        assert hour is not None
        found[int(str(account_id))] = Burn(int(str(spent)), hour)
    return found


async def burns(sql: Sql, account_ids: Sequence[int], now: datetime) -> dict[int, Burn]:
    """The burn in the window of each of ``account_ids`` that has usage in it: one statement."""
    if not account_ids:
        return {}
    marks = ", ".join(f"${n + 3}" for n in range(len(account_ids)))
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    rows = await sql.fetch_values(
        f"{_BURN} AND account_id IN ({marks}) GROUP BY account_id", window_start(now), hour, *account_ids
    )
    return _burns_of(rows)


async def forecasts(account_ids: Sequence[int], balances: dict[int, Balance], now: datetime) -> dict[int, Forecast]:
    """The forecasts of the accounts that have usage in the window (the others have none), given their
    balances at ``now``: one statement."""
    found = await burns(Sql(connections.get("default")), account_ids, now)
    result: dict[int, Forecast] = {}
    for account_id, burn in found.items():
        forecast = forecast_of(burn, balances[account_id], now)
        if forecast is not None:
            result[account_id] = forecast
    return result


# The sweep's one statement: every account with usage in the window or an open runs-out-soon alert, with its
# burn, its cached balance columns and whether the alert is open. The cached ``balance`` can still count a lot
# past its expiry or a hold past its timeout when the sweep has not recorded them: it only picks candidates,
# and each candidate is decided again from its live balance under its lock.
_CANDIDATES = (
    "SELECT a.id, a.balance, a.held, a.owed, a.overdraft, u.spent, u.first_hour, o.id AS alert_id"
    " FROM credit_accounts a"
    f" LEFT JOIN ({_BURN} GROUP BY account_id) u ON u.account_id = a.id"
    " LEFT JOIN alerts o ON o.account_id = a.id AND o.kind = $3 AND o.status = 'OPEN'"
    " WHERE u.account_id IS NOT NULL OR o.id IS NOT NULL"
)


def _event_data(row: dict[str, object], forecast: Forecast, days: int) -> dict[str, object]:
    return {
        "account": account_ref(row),
        "burnPerDay": format_credits(forecast.burn_per_day),
        "available": format_credits(forecast.available),
        "runsOutAt": None if forecast.runs_out_at is None else iso_z(forecast.runs_out_at),
        "days": forecast.whole_days_left(),
        "thresholdDays": days,
    }


async def _settle_account(account_id: int, now: datetime, days: int) -> EmittedEvent | None:
    """Open or resolve the account's runs-out-soon alert, decided again under its lock from its live balance
    and burn; emit ``balance.runs_out_soon`` with the alert it opens. Returns the event emitted, if any."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        row = await lock_account(sql, account_id)
        burn = (await burns(sql, [account_id], now)).get(account_id)
        forecast = forecast_of(burn, await balance_locked(sql, row, now), now)
        soon = forecast is not None and forecast.runs_out_within(days)
        open_alert = await sql.fetchrow(
            "SELECT id FROM alerts WHERE account_id = $1 AND kind = $2 AND status = 'OPEN'", account_id, RUNS_OUT_SOON
        )
        if soon and open_alert is None:
            assert forecast is not None
            event = await emit(
                sql,
                EventType.BALANCE_RUNS_OUT_SOON,
                _event_data(row, forecast, days),
                now,
                account_id=account_id,
                organization_id=row["organization_id"],
            )
            await sql.execute(
                "INSERT INTO alerts (account_id, kind, level, status, raised_event_id, opened_at)"
                " VALUES ($1, $2, NULL, 'OPEN', $3, $4)",
                account_id,
                RUNS_OUT_SOON,
                event.id,
                now,
            )
            return event
        if not soon and open_alert is not None:
            # Back above the threshold (or no usage in the window any more): resolved without an event.
            await sql.execute(
                "UPDATE alerts SET status = 'RESOLVED', resolved_at = $2 WHERE id = $1", open_alert["id"], now
            )
        return None


async def sweep_runs_out_soon(now: datetime, days: int) -> list[EmittedEvent]:
    """Raise and resolve ``balance.runs_out_soon`` alerts (docs/rules.md, "Runs out soon once per crossing"):
    one statement finds the candidates with their burn, and only an account whose state looks changed is
    locked and decided again."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    sql = Sql(connections.get("default"))
    emitted: list[EmittedEvent] = []
    for row in await sql.fetch(_CANDIDATES, window_start(now), hour, RUNS_OUT_SOON):
        burn = None
        if row["spent"] is not None:
            first_hour = as_datetime(row["first_hour"])
            assert first_hour is not None
            burn = Burn(int(row["spent"]), first_hour)
        cached = Balance(
            free=0,
            paid=int(row["balance"]),
            held=int(row["held"]),
            owed=int(row["owed"]),
            overdraft=int(row["overdraft"]),
        )
        forecast = forecast_of(burn, cached, now)
        soon = forecast is not None and forecast.runs_out_within(days)
        if soon == (row["alert_id"] is not None):
            continue
        event = await _settle_account(int(row["id"]), now, days)
        if event is not None:
            emitted.append(event)
    return emitted
