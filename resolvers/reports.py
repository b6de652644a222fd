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


async def usage_report(
    scope: tuple[Literal["account_id", "organization_key"], int], input: UsageReportInput
) -> UsageReportResult:
    try:
        boundary.identifier(input.time_zone, "timeZone", MAX_ZONE_NAME)
    except boundary.InputError as exc:
        return ValidationError(message=exc.message, field=exc.field)
    try:
        zone = reports.zone_of(input.time_zone)
        report = await reports.usage_report(
            scope,
            start=input.from_,
            end=input.to,
            granularity=input.granularity,
            group_by=input.group_by,
            zone=zone,
        )
    except reports.ReportInputError as exc:
        return ValidationError(message=str(exc), field=exc.field)
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
