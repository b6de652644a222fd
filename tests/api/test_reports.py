"""Usage reports read hourly rollups; they must match a brute-force sum of the raw events."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import ledger, reports
from models.ids import decode_id
from models.reports import Granularity, GroupBy
from models.tables import CreditAccount, Membership, Organization, UsageEvent
from tests.support.backends import T0, Backend, reset
from tests.support.helpers import Api, gid
from tests.support.runs import make_runs
from tests.support.statements import StatementCounter, tables_read
from tests.support.statements import counter as counter

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"]
event_strategy = st.tuples(
    st.integers(min_value=0, max_value=40 * 24 * 60 - 1),  # minute after T0
    st.sampled_from(["answer", "web_search", "transcription"]),
    st.sampled_from(["bot-a", "bot-b"]),
    st.integers(min_value=1, max_value=900_000),
    st.sampled_from([None, "run-1", "run-2"]),  # the agent run, or none
)


def reference_bucket(at: datetime, granularity: Granularity, zone: ZoneInfo) -> datetime:
    local = at.astimezone(zone)
    if granularity is Granularity.HOUR:
        return datetime(local.year, local.month, local.day, local.hour, tzinfo=zone)
    start = local.date()
    if granularity is Granularity.WEEK:
        start = start - timedelta(days=start.weekday())
    if granularity is Granularity.MONTH:
        start = start.replace(day=1)
    return datetime(start.year, start.month, start.day, tzinfo=zone)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(event_strategy, min_size=1, max_size=25),
    granularity=st.sampled_from(list(Granularity)),
    group_by=st.sampled_from(list(GroupBy)),
    zone_name=st.sampled_from(ZONES),
    start_hour=st.integers(min_value=-30, max_value=500),
    hours=st.integers(min_value=1, max_value=40 * 24),
)
async def test_reports_match_the_raw_events(
    db: Backend,
    events: list[tuple[int, str, str, int, str | None]],
    granularity: Granularity,
    group_by: GroupBy,
    zone_name: str,
    start_hour: int,
    hours: int,
) -> None:
    await reset(db)
    users = [
        await ledger.create_user(email, signup_bonus=10**9, bonus_lifetime=timedelta(days=400), now=T0)
        for email in ("a@example.com", "b@example.com")
    ]
    account = await CreditAccount.get(user_id=users[0])
    for n, (minute, activity, agent, credits, run) in enumerate(events):
        await ledger.spend(
            ("id", account.id),
            user_id=users[n % 2],
            organization_id=None,
            agent_id=agent,
            activity=activity,
            credits=credits,
            quantity=None,
            idem=ledger.IdempotencyKey.for_request("service:r", f"e{n}", "spend", {}),
            now=T0 + timedelta(minutes=minute),
            run_id=run,
        )
    zone = ZoneInfo(zone_name)
    start = T0 + timedelta(hours=start_hour)
    end = start + timedelta(hours=hours)

    report = await reports.usage_report(
        ("account_id", account.id), start=start, end=end, granularity=granularity, group_by=group_by, zone=zone
    )

    expected: dict[tuple[datetime, str | None], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for event in await UsageEvent.filter(account_id=account.id):
        if not start <= event.occurred_at < end:
            continue
        key = {
            GroupBy.NONE: None,
            GroupBy.ACTIVITY: event.activity,
            GroupBy.AGENT: event.agent_id,
            GroupBy.MEMBER: str(event.user_id),
            GroupBy.RUN: event.run_id,  # None: the usage without a run
        }[group_by]
        sums = expected[(reference_bucket(event.occurred_at, granularity, zone), key)]
        for i, value in enumerate((1, event.credits, event.free_credits, event.paid_credits)):
            sums[i] += value
    got = {
        (row.bucket_start, row.key): [
            row.totals.events,
            row.totals.credits,
            row.totals.free_credits,
            row.totals.paid_credits,
        ]
        for row in report.rows
    }
    assert got == dict(expected)
    assert [report.totals.events, report.totals.credits] == [
        sum(v[0] for v in expected.values()),
        sum(v[1] for v in expected.values()),
    ]


REPORT = """query($input: UsageReportInput!) { me { credit { usageReport(input: $input) {
  __typename
  ... on UsageReport { timeZone totals { events credits freeCredits paidCredits }
                       rows { bucketStart key totals { events credits } } }
  ... on ValidationError { message field } } } } }"""


async def test_a_daily_report_by_activity_in_a_zone(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    for n, (hours, activity, credits) in enumerate(
        ((1, "answer", "0.5"), (13, "answer", "0.25"), (13, "web_search", "1"))
    ):
        api.clock.freeze(T0 + timedelta(hours=hours))  # T0 is 12:00 UTC: 13:00 and 01:00 next day, UTC
        await api.data(
            """mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename } }""",
            {
                "input": {
                    "userId": gid("User", user_id),
                    "agentId": "a",
                    "activity": activity,
                    "credits": credits,
                    "idempotencyKey": f"k{n}",
                }
            },
            service,
        )
    data = await api.data(
        REPORT,
        {
            "input": {
                "from": "2026-01-15T00:00:00Z",
                "to": "2026-01-17T00:00:00Z",
                "granularity": "DAY",
                "groupBy": "ACTIVITY",
                "timeZone": "America/New_York",
            }
        },
        token,
    )
    assert data["me"]["credit"]["usageReport"] == {
        "__typename": "UsageReport",
        "timeZone": "America/New_York",
        "totals": {"events": 3, "credits": "1.75", "freeCredits": "1.75", "paidCredits": "0"},
        "rows": [
            {"bucketStart": "2026-01-15T00:00:00-05:00", "key": "answer", "totals": {"events": 2, "credits": "0.75"}},
            {"bucketStart": "2026-01-15T00:00:00-05:00", "key": "web_search", "totals": {"events": 1, "credits": "1"}},
        ],
    }
    # In UTC the same events fall on two days.
    utc = await api.data(
        REPORT,
        {"input": {"from": "2026-01-15T00:00:00Z", "to": "2026-01-17T00:00:00Z", "granularity": "DAY"}},
        token,
    )
    assert [(r["bucketStart"], r["key"], r["totals"]) for r in utc["me"]["credit"]["usageReport"]["rows"]] == [
        ("2026-01-15T00:00:00+00:00", None, {"events": 1, "credits": "0.5"}),
        ("2026-01-16T00:00:00+00:00", None, {"events": 2, "credits": "1.25"}),
    ]


async def test_bad_report_inputs_get_typed_errors(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=10)
    base = {"from": "2026-01-15T00:00:00Z", "to": "2026-01-16T00:00:00Z", "granularity": "DAY"}
    cases = [
        ({"from": "2026-01-16T00:00:00Z", "to": "2026-01-15T00:00:00Z"}, "to must be after from", "to"),
        (
            {"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T01:00:00Z", "granularity": "HOUR"},
            "An hourly report covers at most 8784 hours (a year)",
            "granularity",
        ),
        (
            {"timeZone": "Mars/Olympus_Mons"},
            "Unknown time zone 'Mars/Olympus_Mons': use an IANA name such as Europe/Paris",
            "timeZone",
        ),
        (
            {"timeZone": "Asia/Kolkata"},
            "Time zone Asia/Kolkata is not a whole number of hours from UTC; reports use hourly rollups",
            "timeZone",
        ),
        ({"from": "2026-01-15T00:30:00Z"}, "from must fall on a whole hour", "from"),
    ]
    for change, message, field in cases:
        data = await api.data(REPORT, {"input": {**base, **change}}, token)
        assert data["me"]["credit"]["usageReport"] == {
            "__typename": "ValidationError",
            "message": message,
            "field": field,
        }, change


ORG_REPORT = """query($org: ID!, $input: UsageReportInput!) { node(id: $org) { ... on Organization {
  usageReport(input: $input) {
    __typename ... on UsageReport { totals { events credits } rows { key totals { credits } } }
    ... on Error { message } } } } }"""


async def test_billing_members_see_organization_usage_by_member_plain_members_do_not(api: Api) -> None:
    now = api.clock.now()
    worker_id, _ = await api.user("worker@example.com", bonus=10)
    billing_id, billing = await api.user("billing@example.com", bonus=0)
    member_id, member = await api.user("member@example.com", bonus=0)
    org = await Organization.create(name="Acme", created_at=now)
    for user_id, roles in ((worker_id, "MEMBER"), (billing_id, "BILLING"), (member_id, "MEMBER")):
        await Membership.create(organization_id=org.id, user_id=user_id, roles=roles, created_at=now)
    service = await api.service()
    for n, org_id in enumerate((org.id, org.id, None)):
        await api.data(
            """mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename } }""",
            {
                "input": {
                    "userId": gid("User", worker_id),
                    "organizationId": None if org_id is None else gid("Organization", org_id),
                    "agentId": "a",
                    "activity": "answer",
                    "credits": "1.5",
                    "idempotencyKey": f"k{n}",
                }
            },
            service,
        )
    variables = {
        "org": gid("Organization", org.id),
        "input": {
            "from": "2026-01-15T00:00:00Z",
            "to": "2026-01-16T00:00:00Z",
            "granularity": "DAY",
            "groupBy": "MEMBER",
        },
    }
    seen = await api.data(ORG_REPORT, variables, billing)
    assert seen["node"]["usageReport"] == {
        "__typename": "UsageReport",
        "totals": {"events": 2, "credits": "3"},
        "rows": [{"key": gid("User", worker_id), "totals": {"credits": "3"}}],
    }
    refused = await api.data(ORG_REPORT, variables, member)
    assert refused["node"]["usageReport"] == {
        "__typename": "Forbidden",
        "message": "Usage reports need the BILLING or OWNER role",
    }


# ------------------------------------------------------------------------------------- by agent run (issue 12)

RUN_REPORT = """query($org: ID!, $input: UsageReportInput!) {
  me { credit { usageReport(input: $input) { ...report } } }
  node(id: $org) { ... on Organization { usageReport(input: $input) { ...report } } } }
fragment report on UsageReportResult {
  __typename
  ... on UsageReport { groupBy totals { events credits freeCredits paidCredits }
                       rows { bucketStart key totals { events credits } } }
  ... on Error { message } }"""


def run_row(hour: int, key: str | None, events: int, credits: str) -> dict[str, object]:
    totals = {"events": events, "credits": credits}
    return {"bucketStart": f"2026-01-15T{hour}:00:00+00:00", "key": key, "totals": totals}


async def test_a_report_by_run_sums_each_run_across_hours_accounts_and_a_captured_hold(api: Api) -> None:
    made = await make_runs(api)
    hourly = {"from": "2026-01-15T12:00:00Z", "to": "2026-01-15T15:00:00Z", "granularity": "HOUR", "groupBy": "RUN"}

    data = await api.data(RUN_REPORT, {"org": made.org, "input": hourly}, made.ada)

    # Ada's account: her spends in and out of Acme, and the capture of her run-2 hold at 14:05; key null is
    # the usage without a run.
    assert data["me"]["credit"]["usageReport"] == {
        "__typename": "UsageReport",
        "groupBy": "RUN",
        "totals": {"events": 5, "credits": "12.75", "freeCredits": "12.75", "paidCredits": "0"},
        "rows": [
            run_row(12, "run-1", 2, "3"),
            run_row(13, None, 1, "0.25"),
            run_row(13, "run-1", 1, "8"),
            run_row(14, "run-2", 1, "1.5"),
        ],
    }
    # Acme: Ada's and Bob's usage inside it, whichever account paid; run-1 is one key across both accounts.
    assert data["node"]["usageReport"] == {
        "__typename": "UsageReport",
        "groupBy": "RUN",
        "totals": {"events": 6, "credits": "9.25", "freeCredits": "9.25", "paidCredits": "0"},
        "rows": [
            run_row(12, "run-1", 3, "7"),
            run_row(13, None, 1, "0.25"),
            run_row(13, "run-2", 1, "0.5"),
            run_row(14, "run-2", 1, "1.5"),
        ],
    }
    daily = await api.data(RUN_REPORT, {"org": made.org, "input": {**hourly, "granularity": "DAY"}}, made.ada)
    day = "2026-01-15T00:00:00+00:00"
    assert daily["node"]["usageReport"]["rows"] == [
        {"bucketStart": day, "key": None, "totals": {"events": 1, "credits": "0.25"}},
        {"bucketStart": day, "key": "run-1", "totals": {"events": 3, "credits": "7"}},
        {"bucketStart": day, "key": "run-2", "totals": {"events": 2, "credits": "2"}},
    ]
    # The same totals as any other grouping: every event once.
    by_activity = await api.data(RUN_REPORT, {"org": made.org, "input": {**hourly, "groupBy": "ACTIVITY"}}, made.ada)
    assert by_activity["node"]["usageReport"]["totals"] == daily["node"]["usageReport"]["totals"]
    assert by_activity["me"]["credit"]["usageReport"]["totals"] == data["me"]["credit"]["usageReport"]["totals"]


async def test_a_bucket_whose_usage_all_had_a_run_has_no_row_without_one(api: Api) -> None:
    made = await make_runs(api)
    only_runs = {"from": "2026-01-15T12:00:00Z", "to": "2026-01-15T13:00:00Z", "granularity": "HOUR", "groupBy": "RUN"}

    data = await api.data(RUN_REPORT, {"org": made.org, "input": only_runs}, made.bob)

    assert data["me"]["credit"]["usageReport"]["rows"] == [run_row(12, "run-1", 1, "4")]
    assert data["node"]["usageReport"] == {
        "__typename": "Forbidden",
        "message": "Usage reports need the BILLING or OWNER role",
    }


async def test_a_report_by_run_reads_rollups_in_one_statement(api: Api, counter: StatementCounter) -> None:
    made = await make_runs(api)
    org_id = decode_id(made.org, "Organization")
    assert org_id is not None

    report = await counter.during(
        reports.usage_report(
            ("organization_key", org_id),
            start=T0,
            end=T0 + timedelta(hours=3),
            granularity=Granularity.HOUR,
            group_by=GroupBy.RUN,
            zone=ZoneInfo("UTC"),
        )
    )

    assert tables_read(counter.statements) == ["usage_rollups"]
    assert "usage_events" not in counter.statements[0]
    assert (report.totals.events, report.totals.credits) == (6, 9_250_000)
