"""Filtered usage lists and the streamed CSV export."""

from __future__ import annotations

from datetime import timedelta

import pytest

from creditline import exports
from models.tables import Membership, Organization
from tests.support.backends import T0
from tests.support.helpers import SPEND, Api, gid

USAGE = """query($filter: UsageFilter) { me { credit { usage(first: 50, filter: $filter) {
  edges { node { credits activity agentId } } } } } }"""


async def make_usage(api: Api) -> dict[str, str]:
    ada_id, ada = await api.user("ada@example.com", bonus=100)
    _, bob = await api.user("bob@example.com", bonus=100)
    org = await Organization.create(name="Acme", created_at=T0)
    await Membership.create(organization_id=org.id, user_id=ada_id, roles="BILLING", created_at=T0)
    service = await api.service()
    spends = [
        (0, "answer", "bot", "1", True),
        (1, "web_search", "bot", "2", False),
        (2, "answer", "=HYPERLINK()", "3", True),
        (3, "answer", "bot", "4", False),
    ]
    for n, (hours, activity, agent, credits, in_org) in enumerate(spends):
        api.clock.freeze(T0 + timedelta(hours=hours))
        data = await api.data(
            SPEND,
            {
                "input": {
                    "userId": gid("User", ada_id),
                    "organizationId": gid("Organization", org.id) if in_org else None,
                    "agentId": agent,
                    "activity": activity,
                    "credits": credits,
                    "idempotencyKey": f"k{n}",
                }
            },
            service,
        )
        assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    return {"ada": ada, "bob": bob, "org": gid("Organization", org.id)}


async def test_usage_list_filters(api: Api) -> None:
    made = await make_usage(api)

    async def credits(filter: dict[str, object]) -> list[str]:
        data = await api.data(USAGE, {"filter": filter}, made["ada"])
        return [edge["node"]["credits"] for edge in data["me"]["credit"]["usage"]["edges"]]

    assert await credits({}) == ["4", "3", "2", "1"]
    assert await credits({"activity": "answer"}) == ["4", "3", "1"]
    assert await credits({"agentId": "bot", "activity": "answer"}) == ["4", "1"]
    assert await credits({"from": "2026-01-15T13:00:00Z", "to": "2026-01-15T15:00:00Z"}) == ["3", "2"]
    assert await credits({"organizationId": made["org"]}) == ["3", "1"]
    bad = await api.post(USAGE, {"filter": {"from": "2026-01-16T00:00:00Z", "to": "2026-01-15T00:00:00Z"}}, made["ada"])
    assert [(e["message"], e["extensions"]["code"]) for e in bad["errors"]] == [("to must be after from", "BAD_FILTER")]


async def test_csv_export_streams_every_page_and_defuses_formulas(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    made = await make_usage(api)
    monkeypatch.setattr(exports, "PAGE", 2)  # exercise the paging with a handful of rows
    headers = {"authorization": f"Bearer {made['ada']}"}

    response = await api.client.get("/exports/usage.csv", params={"account": gid("CreditAccount", 1)}, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    lines = response.text.split("\r\n")
    assert (
        lines[0]
        == "id,occurred_at,account_id,user_id,organization_id,agent_id,activity,credits,free_credits,paid_credits"
    )
    user, account, org = gid("User", 1), gid("CreditAccount", 1), made["org"]
    assert lines[1:] == [
        f"{gid('UsageEvent', 4)},2026-01-15T15:00:00+00:00,{account},{user},,bot,answer,4,4,0",
        f"{gid('UsageEvent', 3)},2026-01-15T14:00:00+00:00,{account},{user},{org},'=HYPERLINK(),answer,3,3,0",
        f"{gid('UsageEvent', 2)},2026-01-15T13:00:00+00:00,{account},{user},,bot,web_search,2,2,0",
        f"{gid('UsageEvent', 1)},2026-01-15T12:00:00+00:00,{account},{user},{org},bot,answer,1,1,0",
        "",
    ]
    filtered = await api.client.get(
        "/exports/usage.csv", params={"organization": made["org"], "activity": "answer"}, headers=headers
    )
    assert len(filtered.text.split("\r\n")) == 4  # header, two rows, final newline


async def test_csv_export_refusals(api: Api) -> None:
    made = await make_usage(api)
    bob = {"authorization": f"Bearer {made['bob']}"}
    cases: list[tuple[dict[str, str], dict[str, str], int, str]] = [
        ({"account": gid("CreditAccount", 1)}, {}, 401, "Send a valid token as 'Authorization: Bearer <token>'"),
        ({"account": gid("CreditAccount", 1)}, bob, 403, "You may not export this account's usage"),
        ({"organization": made["org"]}, bob, 403, "Exporting organization usage needs the BILLING or OWNER role"),
        ({}, bob, 400, "Give exactly one of account or organization"),
        (
            {"account": gid("CreditAccount", 2), "from": "yesterday"},
            bob,
            400,
            "from must be an ISO 8601 date and time, e.g. 2026-01-31T00:00:00Z",
        ),
    ]
    for params, headers, status, text in cases:
        response = await api.client.get("/exports/usage.csv", params=params, headers=headers)
        assert (response.status_code, response.text) == (status, text), params
