"""Usage reports, read from the hourly rollups that every spend keeps up to date (DESIGN 6).

A report's cost depends on the number of hours and keys in its range, never on the number of raw usage
events. Buckets are hours, days, ISO weeks (from Monday) or months in the report's time zone; since the
rollups are whole UTC hours, zones whose offset is not a whole number of hours are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tortoise import connections

from models.sql import Sql, as_datetime

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


_COLUMN = {GroupBy.NONE: None, GroupBy.ACTIVITY: "activity", GroupBy.AGENT: "agent_id", GroupBy.MEMBER: "user_id"}


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
    column = _COLUMN[group_by]
    rows = await Sql(connections.get("default")).fetch(
        f"SELECT bucket, {column or 'NULL'} AS key, SUM(events) AS events, SUM(credits) AS credits,"
        " SUM(free_credits) AS free, SUM(paid_credits) AS paid FROM usage_rollups"
        f" WHERE {scope[0]} = $1 AND bucket >= $2 AND bucket < $3 GROUP BY bucket{', ' + column if column else ''}",
        scope[1],
        start.astimezone(UTC),
        end.astimezone(UTC),
    )
    buckets: dict[tuple[datetime, str | None], Totals] = {}
    report = Report()
    starts: dict[object, datetime] = {}  # one conversion per distinct hour, not per row
    for row in rows:
        start_at = starts.get(row["bucket"])
        if start_at is None:
            hour = as_datetime(row["bucket"])
            assert hour is not None
            start_at = starts[row["bucket"]] = bucket_start(hour, granularity, zone)
        key = None if group_by is GroupBy.NONE else str(row["key"])
        values = (int(row["events"]), int(row["credits"]), int(row["free"]), int(row["paid"]))
        buckets.setdefault((start_at, key), Totals()).add(*values)
        report.totals.add(*values)
    report.rows = [
        ReportRow(start_at, key, totals)
        for (start_at, key), totals in sorted(buckets.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]
    return report
