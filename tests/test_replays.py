"""A replayed idempotency key answers what the first call answered: under concurrency, across a restart, and
for refusals too (a key is never evaluated again against newer state)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from creditline.app import create_app
from models.tables import CreditAccount, Hold, IdempotencyRecord, LedgerEntry, UsageEvent
from tests.helpers import SPEND, Api, gid

HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename ... on HoldCreditsSuccess { hold { id status amount } balance { total held available } }
  ... on InsufficientCredits { message available required } ... on Error { message } } }"""
CAPTURE = """mutation($input: CaptureHoldInput!) { captureHold(input: $input) {
  __typename
  ... on CaptureHoldSuccess { hold { id status captured } usageEvent { id credits } balance { total held available } }
  ... on HoldNotActive { message status }
  ... on InsufficientCredits { message available required }
  ... on ValidationError { message field }
  ... on Error { message } } }"""
RELEASE = """mutation($input: ReleaseHoldInput!) { releaseHold(input: $input) {
  __typename ... on ReleaseHoldSuccess { hold { id status } balance { total held available } }
  ... on HoldNotActive { message status } ... on Error { message } } }"""
GRANT = """mutation($input: GrantCreditsInput!) { grantCredits(input: $input) {
  __typename ... on GrantCreditsSuccess { lot { id amount } balance { total available } }
  ... on ValidationError { message field } ... on Error { message } } }"""
PAIRS = 20


async def place_holds(api: Api, user_id: int, service: str, count: int, credits: str = "1") -> list[str]:
    ids = []
    for n in range(count):
        placed = await api.data(
            HOLD,
            {
                "input": {
                    "userId": gid("User", user_id),
                    "agentId": "a",
                    "activity": "transcription",
                    "credits": credits,
                    "idempotencyKey": f"hold-{n}",
                }
            },
            service,
        )
        assert placed["holdCredits"]["__typename"] == "HoldCreditsSuccess", placed
        ids.append(placed["holdCredits"]["hold"]["id"])
    return ids


async def ledger_state(account_id: int) -> tuple[int, int, int, int, int]:
    account = await CreditAccount.get(id=account_id)
    return (
        account.balance,
        account.held,
        await LedgerEntry.filter(account_id=account_id).count(),
        await UsageEvent.filter(account_id=account_id).count(),
        await IdempotencyRecord.all().count(),
    )


async def test_concurrent_resends_of_capture_and_release_answer_what_the_first_answered(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=100)
    account = await CreditAccount.get(user_id=user_id)
    service = await api.service()
    holds = await place_holds(api, user_id, service, 2 * PAIRS)
    captures, releases = holds[:PAIRS], holds[PAIRS:]

    async def pair(query: str, hold_id: str, key: str, **extra: Any) -> list[Any]:
        request = {"input": {"holdId": hold_id, "idempotencyKey": key, **extra}}
        return list(await asyncio.gather(api.data(query, request, service), api.data(query, request, service)))

    captured = await asyncio.gather(*(pair(CAPTURE, h, f"capture-{n}", credits="0.5") for n, h in enumerate(captures)))
    released = await asyncio.gather(*(pair(RELEASE, h, f"release-{n}") for n, h in enumerate(releases)))

    for (first, resend), hold_id in zip(captured, captures, strict=True):
        assert first["captureHold"]["__typename"] == "CaptureHoldSuccess", first
        assert first["captureHold"]["hold"] == {"id": hold_id, "status": "CAPTURED", "captured": "0.5"}
        assert resend == first
    for (first, resend), hold_id in zip(released, releases, strict=True):
        assert first["releaseHold"]["__typename"] == "ReleaseHoldSuccess", first
        assert first["releaseHold"]["hold"] == {"id": hold_id, "status": "RELEASED"}
        assert resend == first
    # Each key moved credit once: 20 captures of 0.5, and nothing held any more.
    assert await ledger_state(account.id) == (90_000_000, 0, 1 + 2 * PAIRS + 2 * PAIRS, PAIRS, 4 * PAIRS)
    assert await Hold.filter(status="CAPTURED").count() == PAIRS
    assert await Hold.filter(status="RELEASED").count() == PAIRS


async def test_a_refused_capture_is_stored_and_replayed_as_such(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    account = await CreditAccount.get(user_id=user_id)
    service = await api.service()
    [hold_id] = await place_holds(api, user_id, service, 1, credits="2")
    over = {"input": {"holdId": hold_id, "idempotencyKey": "too-much", "credits": "3"}}
    release = {"input": {"holdId": hold_id, "idempotencyKey": "release"}}
    late = {"input": {"holdId": hold_id, "idempotencyKey": "late"}}

    refused = await api.data(CAPTURE, over, service)
    assert refused["captureHold"] == {
        "__typename": "ValidationError",
        "message": "credits is more than the hold set aside",
        "field": "credits",
    }
    assert (await api.data(RELEASE, release, service))["releaseHold"]["__typename"] == "ReleaseHoldSuccess"
    not_active = await api.data(CAPTURE, late, service)
    assert not_active["captureHold"] == {
        "__typename": "HoldNotActive",
        "message": "The hold is released, not active",
        "status": "RELEASED",
    }
    before = await ledger_state(account.id)

    # Replays answer the first answer, not what the hold's state would give now (HoldNotActive).
    assert await api.data(CAPTURE, over, service) == refused
    assert await api.data(CAPTURE, late, service) == not_active
    assert await ledger_state(account.id) == before


async def test_a_refused_spend_replayed_after_credit_was_added_stays_refused(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=1)
    account = await CreditAccount.get(user_id=user_id)
    service, admin = await api.service(), await api.admin()
    spend = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "5",
            "idempotencyKey": "big-spend",
        }
    }
    refused = await api.data(SPEND, spend, service)
    assert refused["spendCredits"] == {
        "__typename": "InsufficientCredits",
        "message": "Not enough credit available",
        "available": "1",
        "required": "5",
    }
    grant = {
        "input": {"accountId": gid("CreditAccount", account.id), "credits": "10", "kind": "PAID", "idempotencyKey": "g"}
    }
    assert (await api.data(GRANT, grant, admin))["grantCredits"]["__typename"] == "GrantCreditsSuccess"
    before = await ledger_state(account.id)

    assert await api.data(SPEND, spend, service) == refused
    assert await ledger_state(account.id) == before


async def test_a_refused_grant_is_replayed_as_refused_after_the_balance_fell(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=0)
    account = await CreditAccount.get(user_id=user_id)
    service, admin = await api.service(), await api.admin()
    target = gid("CreditAccount", account.id)

    def grant(credits: str, key: str) -> dict[str, Any]:
        return {"input": {"accountId": target, "credits": credits, "kind": "PAID", "idempotencyKey": key}}

    assert (await api.data(GRANT, grant("999999999999", "most"), admin))["grantCredits"]["__typename"] == (
        "GrantCreditsSuccess"
    )
    refused = await api.data(GRANT, grant("2", "over"), admin)
    assert refused["grantCredits"] == {
        "__typename": "ValidationError",
        "message": "This grant would take the balance over the maximum an account may hold",
        "field": "credits",
    }
    spend = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "5",
            "idempotencyKey": "s",
        }
    }
    assert (await api.data(SPEND, spend, service))["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    before = await ledger_state(account.id)

    assert await api.data(GRANT, grant("2", "over"), admin) == refused  # it would fit now: still refused
    assert await ledger_state(account.id) == before


async def test_a_replay_after_a_restart_answers_the_same(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    account = await CreditAccount.get(user_id=user_id)
    service = await api.service()
    [hold_id] = await place_holds(api, user_id, service, 1, credits="2")
    capture = {"input": {"holdId": hold_id, "idempotencyKey": "capture", "credits": "1.5"}}
    spend = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "50",
            "idempotencyKey": "s",
        }
    }
    first_capture = await api.data(CAPTURE, capture, service)
    first_spend = await api.data(SPEND, spend, service)
    assert first_capture["captureHold"]["__typename"] == "CaptureHoldSuccess"
    assert first_spend["spendCredits"]["__typename"] == "InsufficientCredits"
    before = await ledger_state(account.id)

    # A new application instance (a restarted server) on the same database.
    restarted = create_app(api.settings, clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=restarted), base_url="http://test") as client:
        again = Api(client, restarted, api.clock, api.settings)
        assert await again.data(CAPTURE, capture, service) == first_capture
        assert await again.data(SPEND, spend, service) == first_spend
    assert await ledger_state(account.id) == before
