"""Filtered usage lists and the streamed CSV export."""

from __future__ import annotations

from datetime import timedelta

import pytest

from creditline import exports
from models.tables import Membership, Organization, User
from tests.support.backends import T0
from tests.support.helpers import SPEND, Api, gid
from tests.support.runs import make_runs

HEADER = (
    "id,occurred_at,account_id,user_id,organization_id,agent_id,activity,credits,free_credits,paid_credits,"
    "user_external_id,organization_external_id,agent_run_id"
)
"""The columns before issue 11 in their order, then the platform's ids of the user and the organization, then
the agent run (issue 12)."""
ONE_SELECTOR = "Give exactly one of account, organization, external_user_id or external_organization_id"
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
    assert lines[0] == HEADER
    user, account, org = gid("User", 1), gid("CreditAccount", 1), made["org"]
    assert lines[1:] == [
        f"{gid('UsageEvent', 4)},2026-01-15T15:00:00+00:00,{account},{user},,bot,answer,4,4,0,,,",
        f"{gid('UsageEvent', 3)},2026-01-15T14:00:00+00:00,{account},{user},{org},'=HYPERLINK(),answer,3,3,0,,,",
        f"{gid('UsageEvent', 2)},2026-01-15T13:00:00+00:00,{account},{user},,bot,web_search,2,2,0,,,",
        f"{gid('UsageEvent', 1)},2026-01-15T12:00:00+00:00,{account},{user},{org},bot,answer,1,1,0,,,",
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
        ({}, bob, 400, ONE_SELECTOR),
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


# ----------------------------------------------------------------- the platform's ids (issue 11, points 1, 8)


async def export(api: Api, path: str, params: dict[str, str], token: str) -> tuple[int, str]:
    response = await api.client.get(path, params=params, headers={"authorization": f"Bearer {token}"})
    return response.status_code, response.text


async def test_csv_rows_carry_the_platforms_ids_and_every_form_of_account_exports_the_same(api: Api) -> None:
    made = await make_usage(api)
    await User.filter(id=1).update(external_id="ada-1")
    await Organization.filter(id=1).update(external_id="=acme")  # a formula, defused like any other cell
    user, account, org = gid("User", 1), gid("CreditAccount", 1), made["org"]

    status, text = await export(api, "/exports/usage.csv", {"account": account}, made["ada"])

    assert status == 200
    assert text.split("\r\n") == [
        HEADER,
        f"{gid('UsageEvent', 4)},2026-01-15T15:00:00+00:00,{account},{user},,bot,answer,4,4,0,ada-1,,",
        f"{gid('UsageEvent', 3)},2026-01-15T14:00:00+00:00,{account},{user},{org},'=HYPERLINK(),answer,3,3,0,"
        "ada-1,'=acme,",
        f"{gid('UsageEvent', 2)},2026-01-15T13:00:00+00:00,{account},{user},,bot,web_search,2,2,0,ada-1,,",
        f"{gid('UsageEvent', 1)},2026-01-15T12:00:00+00:00,{account},{user},{org},bot,answer,1,1,0,ada-1,'=acme,",
        "",
    ]
    for params in ({"account": user}, {"external_user_id": "ada-1"}):
        assert await export(api, "/exports/usage.csv", params, made["ada"]) == (200, text), params
    by_org = await export(api, "/exports/usage.csv", {"organization": org, "activity": "answer"}, made["ada"])
    assert by_org[0] == 200
    assert len(by_org[1].split("\r\n")) == 4  # header, two rows, final newline
    by_external_org = {"external_organization_id": "=acme", "activity": "answer"}
    assert await export(api, "/exports/usage.csv", by_external_org, made["ada"]) == by_org
    by_member = await export(api, "/exports/usage.csv", {"account": account, "memberId": user}, made["ada"])
    assert by_member == (200, text)
    assert await export(api, "/exports/usage.csv", {"account": account, "externalMemberId": "ada-1"}, made["ada"]) == (
        200,
        text,
    )
    nobody = await export(api, "/exports/usage.csv", {"account": account, "externalMemberId": "nobody"}, made["ada"])
    assert nobody == (200, HEADER + "\r\n")


DISGUISED_FORMULAS = [" =1+1", "  +1+1", " -1+1", " @SUM(A1)", "\uff1d1+1", "\uff0b1", "\uff0d1", "\uff20SUM(A1)"]
"""Formulas a spreadsheet still reads as formulas: after leading spaces, or with full-width signs."""


async def test_formulas_behind_spaces_or_in_full_width_are_defused_in_agent_and_external_ids(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=100)
    service = await api.service()
    account = gid("CreditAccount", 1)
    for n, value in enumerate(DISGUISED_FORMULAS):
        await User.filter(id=user_id).update(external_id=value)
        api.clock.freeze(T0 + timedelta(hours=n))
        spend = {"userId": gid("User", user_id), "agentId": value, "activity": "answer", "credits": "1"}
        data = await api.data(SPEND, {"input": {**spend, "idempotencyKey": f"k{n}"}}, service)
        assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
        status, text = await export(api, "/exports/usage.csv", {"account": account}, token)
        assert status == 200
        assert text.split("\r\n")[1] == (
            f"{gid('UsageEvent', n + 1)},{(T0 + timedelta(hours=n)).isoformat()},{account},{gid('User', user_id)},,"
            f"'{value},answer,1,1,0,'{value},,"
        ), value


async def test_a_cell_led_by_a_tab_or_a_line_break_is_defused_and_plain_text_is_not(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=100)
    service = await api.service()
    spend = {"userId": gid("User", user_id), "agentId": "bot", "activity": "answer", "credits": "1"}
    data = await api.data(SPEND, {"input": {**spend, "idempotencyKey": "k"}}, service)
    assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    cells = {
        "\t=1+1": "'\t=1+1",
        "\r=1+1": '"\'\r=1+1"',
        "\n=1+1": '"\'\n=1+1"',
        "ada 1": "ada 1",
        "a=1": "a=1",
        "\u00a0ada": "\u00a0ada",
    }
    for stored, shown in cells.items():  # external ids set in the database: the API accepts no control characters
        await User.filter(id=user_id).update(external_id=stored)
        status, text = await export(api, "/exports/usage.csv", {"account": gid("CreditAccount", 1)}, token)
        assert status == 200
        assert text.removesuffix("\r\n").endswith(f",bot,answer,1,1,0,{shown},,"), repr(stored)


async def test_transactions_export_takes_every_form_of_account(api: Api) -> None:
    made = await make_usage(api)
    admin = await api.admin()
    await User.filter(id=1).update(external_id="ada-1")
    await Organization.filter(id=1).update(external_id="acme")
    path = "/exports/transactions.csv"
    status, text = await export(api, path, {"account": gid("CreditAccount", 1)}, made["ada"])
    assert (status, text.split("\r\n")[0]) == (
        200,
        "id,created_at,completed_at,type,status,credits,amount,currency,invoice,failure_reason",
    )

    for params in ({"account": gid("User", 1)}, {"external_user_id": "ada-1"}):
        assert await export(api, path, params, made["ada"]) == (200, text), params
        assert await export(api, path, params, made["bob"]) == (403, "You may not export this account's transactions")
    # Acme has no pool: its BILLING member is told so; others learn nothing of it.
    no_pool = (404, "This organization has no credit pool: enableCreditPool gives it one")
    for params in ({"account": made["org"]}, {"external_organization_id": "acme"}):
        assert await export(api, path, params, made["ada"]) == no_pool, params
        assert await export(api, path, params, admin) == no_pool, params
        assert await export(api, path, params, made["bob"]) == (403, "You may not export this account's transactions")
    assert await export(api, "/exports/usage.csv", {"account": made["org"]}, made["ada"]) == no_pool


async def test_csv_export_refusals_of_the_platforms_ids(api: Api) -> None:
    made = await make_usage(api)
    await User.filter(id=1).update(external_id="ada-1")
    await User.filter(id=2).update(external_id="bob-2")
    await Organization.filter(id=1).update(external_id="acme")
    bob, ada = made["bob"], made["ada"]
    usage_denied = (403, "You may not export this account's usage")
    org_denied = (403, "Exporting organization usage needs the BILLING or OWNER role")
    one_transaction_selector = (400, "Give exactly one of account, external_user_id or external_organization_id")
    cases: list[tuple[str, dict[str, str], str, tuple[int, str]]] = [
        # Another's account or organization by the platform's id is refused as by its global ID; unknown too.
        ("/exports/usage.csv", {"account": gid("User", 1)}, bob, usage_denied),
        ("/exports/usage.csv", {"external_user_id": "ada-1"}, bob, usage_denied),
        ("/exports/usage.csv", {"external_user_id": "nobody"}, bob, usage_denied),
        ("/exports/usage.csv", {"account": gid("User", 999)}, bob, usage_denied),
        ("/exports/usage.csv", {"account": gid("Organization", 1)}, bob, usage_denied),
        ("/exports/usage.csv", {"external_organization_id": "acme"}, bob, org_denied),
        ("/exports/usage.csv", {"external_organization_id": "nowhere"}, bob, org_denied),
        ("/exports/usage.csv", {"external_organization_id": "nowhere"}, ada, org_denied),
        (
            "/exports/transactions.csv",
            {"external_user_id": "nobody"},
            bob,
            (403, "You may not export this account's transactions"),
        ),
        # Two selectors, or a malformed id, is a 400 before anything is read.
        (
            "/exports/usage.csv",
            {"account": gid("CreditAccount", 1), "external_user_id": "ada-1"},
            ada,
            (400, ONE_SELECTOR),
        ),
        (
            "/exports/usage.csv",
            {"organization": made["org"], "external_organization_id": "acme"},
            ada,
            (400, ONE_SELECTOR),
        ),
        ("/exports/transactions.csv", {}, ada, one_transaction_selector),
        (
            "/exports/transactions.csv",
            {"external_user_id": "ada-1", "external_organization_id": "acme"},
            ada,
            one_transaction_selector,
        ),
        ("/exports/usage.csv", {"external_user_id": ""}, ada, (400, "external_user_id must be 1 to 255 characters")),
        (
            "/exports/usage.csv",
            {"external_organization_id": "a\x00"},
            ada,
            (400, "external_organization_id must not contain control characters"),
        ),
        (
            "/exports/transactions.csv",
            {"external_user_id": "x" * 256},
            ada,
            (400, "external_user_id must be 1 to 255 characters"),
        ),
        (
            "/exports/usage.csv",
            {"account": gid("CreditAccount", 1), "memberId": gid("User", 1), "externalMemberId": "ada-1"},
            ada,
            (400, "Give at most one of memberId or externalMemberId"),
        ),
        (
            "/exports/usage.csv",
            {"account": gid("CreditAccount", 1), "externalMemberId": "a\tb"},
            ada,
            (400, "externalMemberId must not contain control characters"),
        ),
    ]
    for path, params, token, expected in cases:
        assert await export(api, path, params, token) == expected, (path, params)


# -------------------------------------------------------------------------------------- agent runs (issue 12)

RUN_USAGE = """query($org: ID!, $filter: UsageFilter) {
  me { credit { usage(first: 50, filter: $filter) { edges { node { occurredAt credits agentRunId } } }
                holds(first: 5) { edges { node { status captured agentRunId } } } } }
  node(id: $org) { ... on Organization { usage(first: 50, filter: $filter) { edges { node { credits agentRunId } } } } }
}"""


MY_RUN_USAGE = """query($filter: UsageFilter) {
  me { credit { usage(first: 50, filter: $filter) { edges { node { credits agentRunId } } } } }
}"""
ORG_RUN_USAGE = """query($org: ID!, $filter: UsageFilter) {
  node(id: $org) { ... on Organization { usage(first: 50, filter: $filter) { edges { node { credits agentRunId } } } } }
}"""


async def test_usage_shows_each_events_run_and_filters_by_it(api: Api) -> None:
    made = await make_runs(api)

    async def usage(filter: dict[str, object]) -> dict[str, list[dict[str, object]]]:
        data = await api.data(RUN_USAGE, {"org": made.org, "filter": filter}, made.ada)
        return {
            "mine": [edge["node"] for edge in data["me"]["credit"]["usage"]["edges"]],
            "holds": [edge["node"] for edge in data["me"]["credit"]["holds"]["edges"]],
            "acme": [edge["node"] for edge in data["node"]["usage"]["edges"]],
        }

    everything = await usage({})
    assert everything["mine"] == [
        {"occurredAt": "2026-01-15T14:05:00+00:00", "credits": "1.5", "agentRunId": "run-2"},  # the capture
        {"occurredAt": "2026-01-15T13:30:00+00:00", "credits": "8", "agentRunId": "run-1"},
        {"occurredAt": "2026-01-15T13:20:00+00:00", "credits": "0.25", "agentRunId": None},
        {"occurredAt": "2026-01-15T12:30:00+00:00", "credits": "2", "agentRunId": "run-1"},
        {"occurredAt": "2026-01-15T12:00:00+00:00", "credits": "1", "agentRunId": "run-1"},
    ]
    assert everything["holds"] == [{"status": "CAPTURED", "captured": "1.5", "agentRunId": "run-2"}]
    by_run_1 = await usage({"agentRunId": "run-1"})
    assert [e["credits"] for e in by_run_1["mine"]] == ["8", "2", "1"]
    assert by_run_1["acme"] == [  # Bob's spend of run-1 in Acme too
        {"credits": "4", "agentRunId": "run-1"},
        {"credits": "2", "agentRunId": "run-1"},
        {"credits": "1", "agentRunId": "run-1"},
    ]
    by_run_2 = await usage({"agentRunId": "run-2", "from": "2026-01-15T14:00:00Z"})
    assert (by_run_2["mine"], by_run_2["acme"]) == (
        [{"occurredAt": "2026-01-15T14:05:00+00:00", "credits": "1.5", "agentRunId": "run-2"}],
        [{"credits": "1.5", "agentRunId": "run-2"}],
    )
    assert (await usage({"agentRunId": "run-3"}))["mine"] == []


async def test_a_malformed_run_filter_is_refused(api: Api) -> None:
    made = await make_runs(api)
    cases = [
        ("", "agentRunId must be 1 to 200 characters"),
        ("r" * 201, "agentRunId must be 1 to 200 characters"),
        ("run\x001", "agentRunId must not contain control characters"),
        (
            "run\u202e1",
            "agentRunId must contain only printable characters: U+202E is an invisible or bidirectional"
            " formatting character",
        ),
    ]
    for value, message in cases:
        # One field a request: an error that nulls the whole answer may end it before a second field reports.
        for document, variables in (
            (MY_RUN_USAGE, {}),
            (ORG_RUN_USAGE, {"org": made.org}),
        ):
            body = await api.post(document, {**variables, "filter": {"agentRunId": value}}, made.ada)
            assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [(message, "BAD_FILTER")], value
        status, text = await export(
            api, "/exports/usage.csv", {"account": gid("User", 1), "agentRunId": value}, made.ada
        )
        assert (status, text) == (400, message), value


async def test_the_csv_ends_each_row_with_its_run_and_filters_by_it(api: Api) -> None:
    made = await make_runs(api)
    user, account = gid("User", 1), gid("CreditAccount", 1)

    status, text = await export(api, "/exports/usage.csv", {"account": account}, made.ada)

    assert status == 200
    org = made.org
    assert text.split("\r\n") == [
        HEADER,
        f"{gid('UsageEvent', 7)},2026-01-15T14:05:00+00:00,{account},{user},{org},bot,answer,1.5,1.5,0,,,run-2",
        f"{gid('UsageEvent', 6)},2026-01-15T13:30:00+00:00,{account},{user},,bot,answer,8,8,0,,,run-1",
        f"{gid('UsageEvent', 5)},2026-01-15T13:20:00+00:00,{account},{user},{org},bot,answer,0.25,0.25,0,,,",
        f"{gid('UsageEvent', 2)},2026-01-15T12:30:00+00:00,{account},{user},{org},bot,answer,2,2,0,,,run-1",
        f"{gid('UsageEvent', 1)},2026-01-15T12:00:00+00:00,{account},{user},{org},bot,answer,1,1,0,,,run-1",
        "",
    ]
    by_run = await export(api, "/exports/usage.csv", {"organization": org, "agentRunId": "run-2"}, made.ada)
    bob, bobs_account = gid("User", 2), gid("CreditAccount", 2)
    assert by_run == (
        200,
        "\r\n".join(
            [
                HEADER,
                f"{gid('UsageEvent', 7)},2026-01-15T14:05:00+00:00,{account},{user},{org},bot,answer,1.5,1.5,0,,,run-2",
                f"{gid('UsageEvent', 4)},2026-01-15T13:10:00+00:00,{bobs_account},{bob},{org},bot,answer,0.5,0.5,0,,,"
                "run-2",
                "",
            ]
        ),
    )


async def test_a_run_id_read_as_a_formula_is_defused_in_the_csv(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=100)
    spend = {"userId": gid("User", user_id), "agentId": "bot", "activity": "answer", "credits": "1"}
    data = await api.data(
        SPEND, {"input": {**spend, "agentRunId": " =1+1", "idempotencyKey": "k"}}, await api.service()
    )
    assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"

    status, text = await export(api, "/exports/usage.csv", {"account": gid("CreditAccount", 1)}, token)

    assert status == 200
    assert text.removesuffix("\r\n").endswith(",bot,answer,1,1,0,,,' =1+1")
