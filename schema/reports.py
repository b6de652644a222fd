"""Usage report types: totals with the free/paid split, and rows per time bucket and key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from models.reports import Granularity, GroupBy, Totals
from schema.errors import Forbidden, ValidationError
from schema.scalars import Credits

strawberry.enum(Granularity, name="ReportGranularity")
strawberry.enum(GroupBy, name="ReportGroupBy")


@strawberry.input(description="A range of whole hours; buckets in timeZone (IANA name, default UTC).")
class UsageReportInput:
    from_: datetime = strawberry.field(name="from")
    to: datetime
    granularity: Granularity
    group_by: GroupBy = GroupBy.NONE
    time_zone: str = "UTC"


@strawberry.type
class UsageTotals:
    events: int
    credits: Credits
    free_credits: Credits
    paid_credits: Credits

    @classmethod
    def of(cls, totals: Totals) -> UsageTotals:
        return cls(
            events=totals.events,
            credits=Credits(totals.credits),
            free_credits=Credits(totals.free_credits),
            paid_credits=Credits(totals.paid_credits),
        )


@strawberry.type
class UsageReportRow:
    bucket_start: datetime
    key: str | None = strawberry.field(
        description="The activity, agent, member's user ID or agentRunId; null for NONE, and by RUN for the usage"
        " without a run"
    )
    totals: UsageTotals


@strawberry.type
class UsageReport:
    time_zone: str
    granularity: Granularity
    group_by: GroupBy
    totals: UsageTotals
    rows: list[UsageReportRow]


UsageReportResult = Annotated[UsageReport | ValidationError | Forbidden, strawberry.union("UsageReportResult")]
