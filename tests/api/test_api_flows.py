"""Whole flows through the GraphQL API as clients see them: grants, holds, the account's connections."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.support.backends import T0
from tests.support.helpers import BALANCE, SPEND, Api, gid

GRANT = """
mutation Grant($input: GrantCreditsInput!) {
  grantCredits(input: $input) {
    __typename
    ... on GrantCreditsSuccess {
      lot { id kind amount remaining expiresAt status source reason }
      balance { total free paid held available }
    }
    ... on Error { message }
  }
}
"""

HOLD = """
mutation Hold($input: HoldCreditsInput!) {
  holdCredits(input: $input) {
    __typename
    ... on HoldCreditsSuccess { hold { id status amount captured expiresAt } balance { total held available } }
    ... on Error { message }
  }
}
"""

CAPTURE = """
mutation Capture($input: CaptureHoldInput!) {
  captureHold(input: $input) {
    __typename
    ... on CaptureHoldSuccess {
      hold { id status amount captured }
      usageEvent { credits freeCredits paidCredits activity }
      balance { total held available }
    }
    ... on Error { message }
  }
}
"""

RELEASE = """
mutation Release($input: ReleaseHoldInput!) {
  releaseHold(input: $input) {
    __typename
    ... on ReleaseHoldSuccess { hold { status } balance { total held available } }
    ... on Error { message }
  }
}
"""

PAGE = """
query Page($first: Int, $after: String) {
  me { credit { ledger(first: $first, after: $after) {
    edges { cursor node { type delta balanceAfter version } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  } } }
}
"""


async def test_admin_grants_paid_credit_and_the_user_sees_it(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    admin = await api.admin()
    account = (await api.data("{ me { credit { id } } }", token=user_token))["me"]["credit"]["id"]
    expires = (T0 + timedelta(days=7)).isoformat()

    data = await api.data(
        GRANT,
        {
            "input": {
                "accountId": account,
                "credits": "25.5",
                "kind": "FREE",
                "expiresAt": expires,
                "reason": "Launch promotion",
                "idempotencyKey": "promo-1",
            }
        },
        admin,
    )

    assert data["grantCredits"] == {
        "__typename": "GrantCreditsSuccess",
        "lot": {
            "id": gid("CreditLot", 2),
            "kind": "FREE",
            "amount": "25.5",
            "remaining": "25.5",
            "expiresAt": expires,
            "status": "ACTIVE",
            "source": "PROMOTION",
            "reason": "Launch promotion",
        },
        "balance": {"total": "35.5", "free": "35.5", "paid": "0", "held": "0", "available": "35.5"},
    }
    replay = await api.data(
        GRANT,
        {
            "input": {
                "accountId": account,
                "credits": "25.5",
                "kind": "FREE",
                "expiresAt": expires,
                "reason": "Launch promotion",
                "idempotencyKey": "promo-1",
            }
        },
        admin,
    )
    assert replay == data
    me = await api.data(BALANCE, token=user_token)
    assert me["me"]["credit"]["balance"]["total"] == "35.5"


async def test_hold_capture_and_release_through_the_api(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    hold_input: dict[str, Any] = {
        "userId": gid("User", user_id),
        "agentId": "transcriber",
        "activity": "transcription",
        "credits": "4",
        "timeoutSeconds": 600,
        "idempotencyKey": "h1",
    }

    held = await api.data(HOLD, {"input": hold_input}, service)
    assert held["holdCredits"] == {
        "__typename": "HoldCreditsSuccess",
        "hold": {
            "id": gid("Hold", 1),
            "status": "ACTIVE",
            "amount": "4",
            "captured": "0",
            "expiresAt": (T0 + timedelta(seconds=600)).isoformat(),
        },
        "balance": {"total": "10", "held": "4", "available": "6"},
    }

    captured = await api.data(
        CAPTURE, {"input": {"holdId": gid("Hold", 1), "credits": "1.25", "idempotencyKey": "c1"}}, service
    )
    assert captured["captureHold"] == {
        "__typename": "CaptureHoldSuccess",
        "hold": {"id": gid("Hold", 1), "status": "CAPTURED", "amount": "4", "captured": "1.25"},
        "usageEvent": {"credits": "1.25", "freeCredits": "1.25", "paidCredits": "0", "activity": "transcription"},
        "balance": {"total": "8.75", "held": "0", "available": "8.75"},
    }

    second = await api.data(HOLD, {"input": {**hold_input, "idempotencyKey": "h2"}}, service)
    assert second["holdCredits"]["balance"] == {"total": "8.75", "held": "4", "available": "4.75"}
    released = await api.data(RELEASE, {"input": {"holdId": gid("Hold", 2), "idempotencyKey": "r1"}}, service)
    assert released["releaseHold"] == {
        "__typename": "ReleaseHoldSuccess",
        "hold": {"status": "RELEASED"},
        "balance": {"total": "8.75", "held": "0", "available": "8.75"},
    }
    again = await api.data(RELEASE, {"input": {"holdId": gid("Hold", 2), "idempotencyKey": "r2"}}, service)
    assert again["releaseHold"] == {"__typename": "HoldNotActive", "message": "The hold is released, not active"}


async def test_ledger_pages_newest_first_with_cursors(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    for n in range(4):
        await api.data(
            SPEND,
            {
                "input": {
                    "userId": gid("User", user_id),
                    "agentId": "a",
                    "activity": "answer",
                    "credits": "1",
                    "idempotencyKey": f"k{n}",
                }
            },
            service,
        )

    first = (await api.data(PAGE, {"first": 3}, user_token))["me"]["credit"]["ledger"]
    assert [e["node"] for e in first["edges"]] == [
        {"type": "SPEND", "delta": "-1", "balanceAfter": "6", "version": 5},
        {"type": "SPEND", "delta": "-1", "balanceAfter": "7", "version": 4},
        {"type": "SPEND", "delta": "-1", "balanceAfter": "8", "version": 3},
    ]
    assert first["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "endCursor": first["edges"][-1]["cursor"],
    }
    rest = (await api.data(PAGE, {"first": 3, "after": first["pageInfo"]["endCursor"]}, user_token))["me"]["credit"][
        "ledger"
    ]
    assert [e["node"] for e in rest["edges"]] == [
        {"type": "SPEND", "delta": "-1", "balanceAfter": "9", "version": 2},
        {"type": "GRANT", "delta": "10", "balanceAfter": "10", "version": 1},
    ]
    assert rest["pageInfo"]["hasNextPage"] is False

    too_many = await api.post(PAGE, {"first": 101}, user_token)
    assert too_many["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in too_many["errors"]] == [
        ("first must be between 1 and 100, got 101", "BAD_PAGINATION")
    ]
    bad_cursor = await api.post(PAGE, {"first": 1, "after": "nope"}, user_token)
    assert bad_cursor["errors"][0]["message"] == "after is not a cursor from this connection"


async def test_my_credit_page_shows_lots_usage_and_balance(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=2)
    service = await api.service()
    await api.data(
        SPEND,
        {
            "input": {
                "userId": gid("User", user_id),
                "agentId": "searcher",
                "activity": "web_search",
                "quantity": "3",
                "idempotencyKey": "q1",
            }
        },
        service,
    )

    data = await api.data(
        """{ me { email credit {
              balance { total free paid held available }
              lots { edges { node { kind amount remaining status } } }
              usage { edges { node { credits activity agentId } } }
           } } }""",
        token=user_token,
    )

    assert data == {
        "me": {
            "email": "ada@example.com",
            "credit": {
                "balance": {"total": "1.97", "free": "1.97", "paid": "0", "held": "0", "available": "1.97"},
                "lots": {"edges": [{"node": {"kind": "FREE", "amount": "2", "remaining": "1.97", "status": "ACTIVE"}}]},
                "usage": {"edges": [{"node": {"credits": "0.03", "activity": "web_search", "agentId": "searcher"}}]},
            },
        }
    }


async def test_concurrent_spends_over_the_api_stop_exactly_at_the_balance(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=1)
    service = await api.service()

    async def one(n: int) -> str:
        data = await api.data(
            SPEND,
            {
                "input": {
                    "userId": gid("User", user_id),
                    "agentId": "a",
                    "activity": "answer",
                    "credits": "0.3",
                    "idempotencyKey": f"c{n}",
                }
            },
            service,
        )
        typename: str = data["spendCredits"]["__typename"]
        return typename

    outcomes = await asyncio.gather(*(one(n) for n in range(10)))

    assert sorted(outcomes) == ["InsufficientCredits"] * 7 + ["SpendCreditsSuccess"] * 3
    me = await api.data(BALANCE, token=user_token)
    assert me["me"]["credit"]["balance"] == {
        "total": "0.1",
        "free": "0.1",
        "paid": "0",
        "held": "0",
        "available": "0.1",
    }
