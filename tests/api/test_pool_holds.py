"""Holds on an organization's pool under the member's monthly budget (docs/rules.md, Budgets).

An active hold counts against the member's budget while it is active; its capture counts as spent (in the
month of the capture); a release or a timeout gives the rest back. A hold or a spend that would take
spent + held past the budget is refused with ``BudgetExceeded`` and changes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from models.tables import Hold, LedgerEntry
from tests.support.helpers import Api, gid
from tests.support.organizations import BUDGET, GRANT, POOL, setup_org, spend_input

HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename
  ... on HoldCreditsSuccess { hold { id status amount } balance { total held available } }
  ... on BudgetExceeded { message monthlyBudget spentThisMonth held required }
  ... on Error { message } } }"""
CAPTURE = """mutation($input: CaptureHoldInput!) { captureHold(input: $input) {
  __typename ... on CaptureHoldSuccess { hold { status captured } balance { total held available } }
  ... on Error { message } } }"""
RELEASE = """mutation($input: ReleaseHoldInput!) { releaseHold(input: $input) {
  __typename ... on ReleaseHoldSuccess { hold { status } } ... on Error { message } } }"""
SPEND_OVER = """mutation($input: SpendCreditsInput!) { spendCredits(input: $input) {
  __typename ... on SpendCreditsSuccess { usageEvent { credits } }
  ... on BudgetExceeded { message monthlyBudget spentThisMonth held required } ... on Error { message } } }"""
POOL_STATE = """query($org: ID!) { node(id: $org) { ... on Organization {
  creditPool { balance { total held available } }
  members { email monthlyBudget spentThisMonth } } } }"""


async def pool_with_budget(api: Api, budget: str) -> dict[str, Any]:
    """Acme's pool with 10 paid credits; the plain member may spend ``budget`` of them a month."""
    s = await setup_org(api)
    s["service"] = await api.service()
    s["pool"] = (await api.data(POOL, {"org": s["org"]}, s["owner"]))["enableCreditPool"]["creditPool"]["id"]
    await api.data(GRANT, {"account": s["pool"], "key": "fund"}, await api.admin())
    set_budget = await api.data(
        BUDGET, {"org": s["org"], "user": gid("User", s["member_id"]), "credits": budget}, s["owner"]
    )
    assert set_budget["setMemberBudget"]["__typename"] == "SetMemberBudgetSuccess"
    return s


def hold_input(s: dict[str, Any], credits: str, key: str, seconds: int | None = None) -> dict[str, Any]:
    return {
        "input": {
            "userId": gid("User", s["member_id"]),
            "organizationId": s["org"],
            "agentId": "a",
            "activity": "answer",
            "credits": credits,
            "timeoutSeconds": seconds,
            "idempotencyKey": key,
        }
    }


async def hold(api: Api, s: dict[str, Any], credits: str, key: str, seconds: int | None = None) -> dict[str, Any]:
    result: dict[str, Any] = (await api.data(HOLD, hold_input(s, credits, key, seconds), s["service"]))["holdCredits"]
    return result


async def spend(api: Api, s: dict[str, Any], credits: str, key: str) -> dict[str, Any]:
    result: dict[str, Any] = (await api.data(SPEND_OVER, spend_input(s, credits, key), s["service"]))["spendCredits"]
    return result


async def pool_state(api: Api, s: dict[str, Any]) -> dict[str, Any]:
    """The pool's balance, the member's budget line, and the pool's ledger rows and holds."""
    node = (await api.data(POOL_STATE, {"org": s["org"]}, s["owner"]))["node"]
    return {
        "balance": node["creditPool"]["balance"],
        "member": node["members"][2],
        "ledger": await LedgerEntry.all().order_by("id").values_list("entry_type", "amount", "held_delta"),
        "holds": await Hold.all().order_by("id").values_list("status", "amount", "captured"),
    }


def over(operation: str, spent: str, held: str, required: str, budget: str = "1") -> dict[str, Any]:
    return {
        "__typename": "BudgetExceeded",
        "message": f"This {operation} would exceed the member's monthly budget in this organization",
        "monthlyBudget": budget,
        "spentThisMonth": spent,
        "held": held,
        "required": required,
    }


async def test_a_pool_hold_past_the_member_budget_is_refused_and_changes_nothing(api: Api) -> None:
    s = await pool_with_budget(api, "1")
    assert (await spend(api, s, "0.3", "s1"))["__typename"] == "SpendCreditsSuccess"
    placed = await hold(api, s, "0.5", "h1")
    assert placed["__typename"] == "HoldCreditsSuccess"
    assert placed["balance"] == {"total": "9.7", "held": "0.5", "available": "9.2"}
    before = await pool_state(api, s)

    # 0.3 spent + 0.5 held + 0.3 > 1: refused, though the pool has plenty; a replay answers the same.
    assert await hold(api, s, "0.3", "h2") == over("hold", spent="0.3", held="0.5", required="0.3")
    assert await hold(api, s, "0.3", "h2") == over("hold", spent="0.3", held="0.5", required="0.3")
    # The hold's 0.5 is set aside for the member's task: a spend may not take it either.
    assert await spend(api, s, "0.3", "s2") == over("spend", spent="0.3", held="0.5", required="0.3")
    assert await pool_state(api, s) == before
    assert before["member"] == {"email": "member@example.com", "monthlyBudget": "1", "spentThisMonth": "0.3"}

    exactly = await hold(api, s, "0.2", "h3")  # 0.3 + 0.5 + 0.2 = the whole budget
    assert exactly["__typename"] == "HoldCreditsSuccess"
    assert exactly["balance"] == {"total": "9.7", "held": "0.7", "available": "9"}
    # Another member of the pool has no budget: the member's holds do not count against anyone else.
    other = await hold(api, {**s, "member_id": s["billing_id"]}, "2", "h4")
    assert other["__typename"] == "HoldCreditsSuccess"


async def test_a_capture_counts_as_spent_a_release_and_a_timeout_give_the_rest_back(api: Api) -> None:
    s = await pool_with_budget(api, "1")
    first = await hold(api, s, "0.6", "h1")
    captured = await api.data(
        CAPTURE, {"input": {"holdId": first["hold"]["id"], "credits": "0.4", "idempotencyKey": "c1"}}, s["service"]
    )
    assert captured["captureHold"] == {
        "__typename": "CaptureHoldSuccess",
        "hold": {"status": "CAPTURED", "captured": "0.4"},
        "balance": {"total": "9.6", "held": "0", "available": "9.6"},
    }
    state = await pool_state(api, s)
    assert state["member"]["spentThisMonth"] == "0.4"  # the capture, not the 0.6 set aside

    second = await hold(api, s, "0.6", "h2")  # 0.4 + 0.6 = 1
    assert second["__typename"] == "HoldCreditsSuccess"
    assert await hold(api, s, "0.01", "h3") == over("hold", spent="0.4", held="0.6", required="0.01")
    released = await api.data(
        RELEASE, {"input": {"holdId": second["hold"]["id"], "idempotencyKey": "r1"}}, s["service"]
    )
    assert released["releaseHold"] == {"__typename": "ReleaseHoldSuccess", "hold": {"status": "RELEASED"}}
    assert (await pool_state(api, s))["member"]["spentThisMonth"] == "0.4"  # a release spends nothing

    third = await hold(api, s, "0.6", "h4", seconds=60)  # room again after the release
    assert third["__typename"] == "HoldCreditsSuccess"
    assert await spend(api, s, "0.1", "s1") == over("spend", spent="0.4", held="0.6", required="0.1")
    api.clock.freeze(api.clock.now() + timedelta(seconds=61))  # timed out, not swept yet: it stops counting
    assert await spend(api, s, "0.6", "s2") == {"__typename": "SpendCreditsSuccess", "usageEvent": {"credits": "0.6"}}
    assert await spend(api, s, "0.01", "s3") == over("spend", spent="1", held="0", required="0.01")
    state = await pool_state(api, s)
    assert state["member"]["spentThisMonth"] == "1"
    assert state["balance"] == {"total": "9", "held": "0", "available": "9"}


async def test_concurrent_pool_holds_never_set_aside_more_than_the_budget(api: Api) -> None:
    s = await pool_with_budget(api, "1")

    outcomes = await asyncio.gather(*(hold(api, s, "0.15", f"h{n}") for n in range(12)))

    assert sorted(o["__typename"] for o in outcomes) == ["BudgetExceeded"] * 6 + ["HoldCreditsSuccess"] * 6
    refused = [o for o in outcomes if o["__typename"] == "BudgetExceeded"]
    assert all(o == over("hold", spent="0", held="0.9", required="0.15") for o in refused)
    state = await pool_state(api, s)
    assert state["balance"] == {"total": "10", "held": "0.9", "available": "9.1"}
    assert state["holds"] == [("ACTIVE", 150_000, 0)] * 6
    assert [entry for entry in state["ledger"] if entry[0] == "HOLD"] == [("HOLD", 0, 150_000)] * 6

    # Captures and spends racing against the held budget: every capture succeeds (its credit was set aside),
    # and the spends get only what the holds left: 0.1.
    holds = [o["hold"]["id"] for o in outcomes if o["__typename"] == "HoldCreditsSuccess"]
    results = await asyncio.gather(
        *(
            api.data(CAPTURE, {"input": {"holdId": hold_id, "idempotencyKey": f"c{n}"}}, s["service"])
            for n, hold_id in enumerate(holds)
        ),
        *(spend(api, s, "0.05", f"s{n}") for n in range(4)),
    )
    assert [r["captureHold"]["__typename"] for r in results[:6]] == ["CaptureHoldSuccess"] * 6
    assert sorted(r["__typename"] for r in results[6:]) == ["BudgetExceeded"] * 2 + ["SpendCreditsSuccess"] * 2
    state = await pool_state(api, s)
    assert state["member"]["spentThisMonth"] == "1"
    assert state["balance"] == {"total": "9", "held": "0", "available": "9"}
