"""Usage reports for an account or an organization."""

from __future__ import annotations

from typing import Literal

from models import reports
from models.ids import encode_id
from resolvers import boundary
from schema.errors import ValidationError
from schema.reports import UsageReport, UsageReportInput, UsageReportResult, UsageReportRow, UsageTotals

MAX_ZONE_NAME = 64
"""IANA names are at most 32 characters ("America/Argentina/ComodRivadavia")."""


OWN_GROUPINGS = (reports.GroupBy.NONE, reports.GroupBy.MEMBER)
"""What a report of one member's own usage groups by: the member rollups know nothing finer of one member."""


async def usage_report(
    scope: tuple[Literal["account_id", "organization_key"], int],
    input: UsageReportInput,
    *,
    only_member: int | None = None,
) -> UsageReportResult:
    """``only_member``: the usage of that user alone (their rows of the MEMBER rollups), grouped by NONE or
    MEMBER (one key, theirs)."""
    try:
        boundary.identifier(input.time_zone, "timeZone", MAX_ZONE_NAME)
    except boundary.InputError as exc:
        return ValidationError(message=exc.message, field=exc.field)
    if only_member is not None and input.group_by not in OWN_GROUPINGS:
        return ValidationError(message="A report of your own usage groups by NONE or MEMBER", field="groupBy")
    try:
        zone = reports.zone_of(input.time_zone)
        report = await reports.usage_report(
            scope,
            start=input.from_,
            end=input.to,
            granularity=input.granularity,
            group_by=input.group_by if only_member is None else reports.GroupBy.MEMBER,
            zone=zone,
        )
    except reports.ReportInputError as exc:
        return ValidationError(message=str(exc), field=exc.field)
    if only_member is not None:
        report = _rows_of(report, only_member, keyed=input.group_by is reports.GroupBy.MEMBER)
    member = input.group_by is reports.GroupBy.MEMBER
    return UsageReport(
        time_zone=zone.key,
        granularity=input.granularity,
        group_by=input.group_by,
        totals=UsageTotals.of(report.totals),
        rows=[
            UsageReportRow(
                bucket_start=row.bucket_start,
                key=encode_id("User", int(row.key)) if member and row.key is not None else row.key,
                totals=UsageTotals.of(row.totals),
            )
            for row in report.rows
        ],
    )


def _rows_of(report: reports.Report, member: int, *, keyed: bool) -> reports.Report:
    """The rows of one member's key in a report by member, and their totals (key dropped unless ``keyed``)."""
    own = reports.Report()
    for row in report.rows:
        if row.key == str(member):
            sums = row.totals
            own.rows.append(reports.ReportRow(row.bucket_start, row.key if keyed else None, sums))
            own.totals.add(sums.events, sums.credits, sums.free_credits, sums.paid_credits)
    return own
