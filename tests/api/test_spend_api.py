"""spendCredits through the real ASGI app: results, replays and refusals as a client sees them."""

from __future__ import annotations

from tests.support.helpers import BALANCE, SPEND, Api, gid


def spend_input(user_id: int, credits: str, key: str, **extra: object) -> dict[str, object]:
    return {
        "userId": gid("User", user_id),
        "agentId": "agent-1",
        "activity": "answer",
        "credits": credits,
        "idempotencyKey": key,
        **extra,
    }


async def test_spend_takes_free_credit_first_and_reports_the_balance(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    data = await api.data(SPEND, {"input": spend_input(user_id, "2.5", "k1")}, service)

    assert data["spendCredits"] == {
        "__typename": "SpendCreditsSuccess",
        "usageEvent": {
            "id": gid("UsageEvent", 1),
            "credits": "2.5",
            "freeCredits": "2.5",
            "paidCredits": "0",
            "activity": "answer",
            "agentId": "agent-1",
        },
        "balance": {"total": "7.5", "free": "7.5", "paid": "0", "held": "0", "available": "7.5"},
    }
    me = await api.data(BALANCE, token=user_token)
    assert me["me"]["credit"]["balance"] == {
        "total": "7.5",
        "free": "7.5",
        "paid": "0",
        "held": "0",
        "available": "7.5",
    }


async def test_replayed_key_returns_the_first_result_and_moves_nothing(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    first = await api.data(SPEND, {"input": spend_input(user_id, "1", "same")}, service)
    second = await api.data(SPEND, {"input": spend_input(user_id, "1", "same")}, service)

    assert second == first
    me = await api.data(BALANCE, token=user_token)
    assert me["me"]["credit"]["balance"]["total"] == "9"


async def test_same_key_with_other_input_is_a_conflict(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    await api.data(SPEND, {"input": spend_input(user_id, "1", "k")}, service)

    data = await api.data(SPEND, {"input": spend_input(user_id, "2", "k")}, service)

    assert data["spendCredits"] == {
        "__typename": "IdempotencyConflict",
        "message": "This idempotencyKey was already used with a different request",
    }
    me = await api.data(BALANCE, token=user_token)
    assert me["me"]["credit"]["balance"]["total"] == "9"


async def test_overspend_is_refused_whole_and_its_replay_is_refused_the_same_way(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    refused = await api.data(SPEND, {"input": spend_input(user_id, "10.000001", "big")}, service)
    assert refused["spendCredits"] == {
        "__typename": "InsufficientCredits",
        "message": "Not enough credit available",
        "available": "10",
        "required": "10.000001",
    }
    # Even once credit would suffice, the replay answers as the first request did.
    await api.data(SPEND, {"input": spend_input(user_id, "5", "small")}, service)
    again = await api.data(SPEND, {"input": spend_input(user_id, "10.000001", "big")}, service)
    assert again == refused
    me = await api.data(BALANCE, token=user_token)
    assert me["me"]["credit"]["balance"]["total"] == "5"
