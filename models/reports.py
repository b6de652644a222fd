"""Usage reports, read from the hourly rollups that every spend keeps up to date (docs/rules.md, Report cost).

A report reads the rollup rows of the one dimension it groups by (activity, agent, member or run): at most the
hours in its range times that dimension's keys, whatever the number of raw usage events. Usage without a run
has no RUN rollup (a spend without one writes none), so a report by run also reads the hour's ACTIVITY rows:
what they total beyond the hour's runs is the usage without a run (key None), and the report's totals are
every event once, as with any other grouping. Buckets are hours,
days, ISO weeks (from Monday) or months in the report's time zone; since the rollups are whole UTC hours,
zones whose offset is not a whole number of hours are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tortoise import connections

from models.sql import Sql, as_datetime
from models.tables import RollupDimension

MAX_HOURLY_BUCKETS = 366 * 24
MAX_RANGE = timedelta(days=3660)


class Granularity(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


class GroupBy(StrEnum):
    NONE = "NONE"
    ACTIVITY = "ACTIVITY"
    AGENT = "AGENT"
    MEMBER = "MEMBER"
    RUN = "RUN"


# The rollup rows a report reads; with no grouping, any one dimension has every event once.
_DIMENSION = {
    GroupBy.NONE: RollupDimension.ACTIVITY,
    GroupBy.ACTIVITY: RollupDimension.ACTIVITY,
    GroupBy.AGENT: RollupDimension.AGENT,
    GroupBy.MEMBER: RollupDimension.MEMBER,
    GroupBy.RUN: RollupDimension.RUN,
}
_SUMS = (
    # PostgreSQL sums bigints as numeric, which the driver decodes slowly into Decimal: cast back.
    "CAST(SUM(events) AS BIGINT) AS events, CAST(SUM(credits) AS BIGINT) AS credits,"
    " CAST(SUM(free_credits) AS BIGINT) AS free, CAST(SUM(paid_credits) AS BIGINT) AS paid FROM usage_rollups"
)


class ReportInputError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Totals:
    events: int = 0
    credits: int = 0
    free_credits: int = 0
    paid_credits: int = 0

    def add(self, events: int, credits: int, free: int, paid: int) -> None:
        self.events += events
        self.credits += credits
        self.free_credits += free
        self.paid_credits += paid


@dataclass
class ReportRow:
    bucket_start: datetime
    key: str | None
    totals: Totals


@dataclass
class Report:
    rows: list[ReportRow] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportInputError(
            f"Unknown time zone {name!r}: use an IANA name such as Europe/Paris", "timeZone"
        ) from None


def check_range(start: datetime, end: datetime, granularity: Granularity, zone: ZoneInfo) -> None:
    for value, name in ((start, "from"), (end, "to")):
        if value.tzinfo is None:
            raise ReportInputError(f"{name} must include a time zone, e.g. 2026-01-31T00:00:00Z", name)
        if value.astimezone(UTC).minute or value.second or value.microsecond:
            raise ReportInputError(f"{name} must fall on a whole hour", name)
        offset = value.astimezone(zone).utcoffset()
        if offset is not None and offset.total_seconds() % 3600:
            raise ReportInputError(
                f"Time zone {zone.key} is not a whole number of hours from UTC; reports use hourly rollups",
                "timeZone",
            )
    if end <= start:
        raise ReportInputError("to must be after from", "to")
    if granularity is Granularity.HOUR and end - start > timedelta(hours=MAX_HOURLY_BUCKETS):
        raise ReportInputError(f"An hourly report covers at most {MAX_HOURLY_BUCKETS} hours (a year)", "granularity")
    if end - start > MAX_RANGE:
        raise ReportInputError("A report covers at most ten years", "to")


def bucket_start(hour: datetime, granularity: Granularity, zone: ZoneInfo) -> datetime:
    local = hour.astimezone(zone)
    if granularity is Granularity.HOUR:
        return local
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity is Granularity.WEEK:
        day -= timedelta(days=day.weekday())
    elif granularity is Granularity.MONTH:
        day = day.replace(day=1)
    # Re-attach the zone at local midnight: the offset there may differ from the hour's (daylight saving).
    return day.replace(tzinfo=None).replace(tzinfo=zone)


async def usage_report(
    scope: tuple[Literal["account_id", "organization_key"], int],
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    group_by: GroupBy,
    zone: ZoneInfo,
) -> Report:
    check_range(start, end, granularity, zone)
    keyed, by_run = group_by is not GroupBy.NONE, group_by is GroupBy.RUN
    where = f"WHERE {scope[0]} = $1 AND dimension = $2 AND bucket >= $3 AND bucket < $4"
    group = "GROUP BY bucket, key" if keyed else "GROUP BY bucket"
    text = f"SELECT bucket, {'key' if keyed else 'NULL'} AS key, {_SUMS} {where} {group}"
    args: list[object] = [scope[1], _DIMENSION[group_by].value, start.astimezone(UTC), end.astimezone(UTC)]
    if by_run:
        # And each hour's total, from its ACTIVITY rows (key NULL): the runs' rows are taken out of it below.
        total_where = where.replace("$2", "$5")
        text = f"{text} UNION ALL SELECT bucket, NULL AS key, {_SUMS} {total_where} GROUP BY bucket"
        args.append(RollupDimension.ACTIVITY.value)
    rows = await Sql(connections.get("default")).fetch_values(text, *args)
    # The rows are hours x keys: keep the work per row to a few dictionary look-ups and additions.
    buckets: dict[tuple[datetime, str | None], list[int]] = {}
    starts: dict[object, datetime] = {}  # one conversion per distinct hour, not per row
    with_run: dict[datetime, list[int]] = {}
    for hour_value, key, events, credits, free, paid in rows:
        start_at = starts.get(hour_value)
        if start_at is None:
            hour = as_datetime(hour_value)
            assert hour is not None
            start_at = starts[hour_value] = bucket_start(hour, granularity, zone)
        slot = (start_at, None if key is None else str(key))
        sums = buckets.get(slot)
        if sums is None:
            buckets[slot] = [int(events), int(credits), int(free), int(paid)]
        else:
            sums[0] += int(events)
            sums[1] += int(credits)
            sums[2] += int(free)
            sums[3] += int(paid)
        if by_run and key is not None:
            ran = with_run.setdefault(start_at, [0, 0, 0, 0])
            ran[0] += int(events)
            ran[1] += int(credits)
            ran[2] += int(free)
            ran[3] += int(paid)
    for start_at, ran in with_run.items():  # by run: what the bucket's runs spent is not usage without a run
        rest = buckets.setdefault((start_at, None), [0, 0, 0, 0])
        for i, value in enumerate(ran):
            rest[i] -= value
    report = Report()
    for (start_at, key), sums in sorted(buckets.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        if by_run and key is None and not any(sums):  # every event of the bucket had a run
            continue
        report.rows.append(ReportRow(start_at, key, Totals(*sums)))
        report.totals.add(*sums)
    return report
