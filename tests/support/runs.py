"""Usage with agent runs, made through the API: spends with and without a run, in and out of an organization,
and a hold of a run captured an hour later (the runs' tests in test_reports.py and test_usage_export.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from models.tables import Membership, Organization
from tests.support.backends import T0
from tests.support.helpers import Api, gid

SPEND = """mutation($input: SpendCreditsInput!) { spendCredits(input: $input) {
  __typename ... on SpendCreditsSuccess { usageEvent { credits agentRunId } } ... on Error { message } } }"""
HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename ... on HoldCreditsSuccess { hold { id agentRunId } } ... on Error { message } } }"""
CAPTURE = """mutation($input: CaptureHoldInput!) { captureHold(input: $input) {
  __typename ... on CaptureHoldSuccess { hold { agentRunId } usageEvent { credits agentRunId } }
  ... on Error { message } } }"""

# (minutes after T0 = 12:00 UTC, who, in Acme?, run, credits): Ada's and Bob's own accounts pay.
SPENDS = [
    (0, "ada", True, "run-1", "1"),
    (30, "ada", True, "run-1", "2"),
    (45, "bob", True, "run-1", "4"),  # the same run id from another account of the organization
    (70, "bob", True, "run-2", "0.5"),
    (80, "ada", True, None, "0.25"),
    (90, "ada", False, "run-1", "8"),  # Ada's own usage, outside Acme
]
HOLD_AT, CAPTURE_AT = 100, 125
"""Ada holds 3 credits for run-2 in Acme at 13:40 and captures 1.5 of them at 14:05."""


@dataclass(frozen=True)
class Runs:
    ada: str  # Ada's user token: she is a BILLING member of Acme
    bob: str
    org: str  # Acme's global ID


async def make_runs(api: Api) -> Runs:
    ada_id, ada = await api.user("ada@example.com", bonus=100)
    bob_id, bob = await api.user("bob@example.com", bonus=100)
    org = await Organization.create(name="Acme", created_at=T0)
    await Membership.create(organization_id=org.id, user_id=ada_id, roles="BILLING", created_at=T0)
    await Membership.create(organization_id=org.id, user_id=bob_id, roles="MEMBER", created_at=T0)
    service = await api.service()
    users = {"ada": gid("User", ada_id), "bob": gid("User", bob_id)}
    for n, (minutes, who, in_org, run, credits) in enumerate(SPENDS):
        api.clock.freeze(T0 + timedelta(minutes=minutes))
        spend = {"userId": users[who], "agentId": "bot", "activity": "answer", "credits": credits}
        spend |= {"organizationId": gid("Organization", org.id)} if in_org else {}
        spend |= {"agentRunId": run} if run is not None else {}
        data = await api.data(SPEND, {"input": {**spend, "idempotencyKey": f"k{n}"}}, service)
        assert data["spendCredits"] == {
            "__typename": "SpendCreditsSuccess",
            "usageEvent": {"credits": credits, "agentRunId": run},
        }
    api.clock.freeze(T0 + timedelta(minutes=HOLD_AT))
    hold = {"userId": users["ada"], "organizationId": gid("Organization", org.id), "agentId": "bot"}
    hold |= {"activity": "answer", "credits": "3", "agentRunId": "run-2", "idempotencyKey": "h1"}
    held = (await api.data(HOLD, {"input": hold}, service))["holdCredits"]
    assert held["hold"]["agentRunId"] == "run-2"
    api.clock.freeze(T0 + timedelta(minutes=CAPTURE_AT))
    captured = await api.data(
        CAPTURE, {"input": {"holdId": held["hold"]["id"], "credits": "1.5", "idempotencyKey": "c1"}}, service
    )
    assert captured["captureHold"] == {
        "__typename": "CaptureHoldSuccess",
        "hold": {"agentRunId": "run-2"},
        "usageEvent": {"credits": "1.5", "agentRunId": "run-2"},
    }
    return Runs(ada, bob, gid("Organization", org.id))
