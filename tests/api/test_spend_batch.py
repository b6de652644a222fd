"""spendCreditsBatch through the real ASGI app: per-event results in input order, refusals, replays, bad input."""

from __future__ import annotations

from typing import Any

from models.tables import IdempotencyRecord, LedgerEntry, UsageEvent
from tests.support.backends import row_counts
from tests.support.helpers import BALANCE, SPEND, Api, gid

BATCH = """
mutation Batch($input: SpendCreditsBatchInput!) {
  spendCreditsBatch(input: $input) {
    __typename
    ... on SpendCreditsBatchSuccess {
      results {
        __typename
        ... on SpendCreditsSuccess {
          usageEvent { id credits freeCredits paidCredits activity agentId }
          balance { total free paid available }
        }
        ... on InsufficientCredits { message available required }
        ... on ValidationError { message field }
        ... on IdempotencyConflict { message idempotencyKey }
        ... on Error { message }
      }
    }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
"""


def event(user_id: int, credits: str, key: str, **extra: object) -> dict[str, object]:
    return {
        "userId": gid("User", user_id),
        "agentId": "agent-1",
        "activity": "answer",
        "credits": credits,
        "idempotencyKey": key,
        **extra,
    }


async def batch(api: Api, events: list[dict[str, object]], token: str) -> Any:
    return (await api.data(BATCH, {"input": {"events": events}}, token))["spendCreditsBatch"]


def ok(event_id: int, credits: str, free: str, paid: str, total: str) -> dict[str, Any]:
    return {
        "__typename": "SpendCreditsSuccess",
        "usageEvent": {
            "id": gid("UsageEvent", event_id),
            "credits": credits,
            "freeCredits": free,
            "paidCredits": paid,
            "activity": "answer",
            "agentId": "agent-1",
        },
        "balance": {"total": total, "free": total, "paid": "0", "available": total},
    }


async def test_a_batch_applies_its_events_in_input_order_over_accounts(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    bob, bob_token = await api.user("bob@example.com", bonus=5)
    service = await api.service()

    data = await batch(
        api,
        [event(bob, "1", "b1"), event(ada, "2", "a1"), event(bob, "3", "b2"), event(ada, "2.5", "a2")],
        service,
    )

    # Usage events are numbered account by account (lock order: ada's account first), each in input order.
    assert data == {
        "__typename": "SpendCreditsBatchSuccess",
        "results": [
            ok(3, "1", "1", "0", "4"),
            ok(1, "2", "2", "0", "8"),
            ok(4, "3", "3", "0", "1"),
            ok(2, "2.5", "2.5", "0", "5.5"),
        ],
    }
    assert (await api.data(BALANCE, token=ada_token))["me"]["credit"]["balance"]["total"] == "5.5"
    assert (await api.data(BALANCE, token=bob_token))["me"]["credit"]["balance"]["total"] == "1"


async def test_a_refused_event_leaves_the_others_to_the_balance_it_leaves(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    data = await batch(
        api,
        [event(ada, "6", "k1"), event(ada, "5", "k2"), event(ada, "4", "k3"), event(ada, "0.5", "k4")],
        service,
    )

    assert [r["__typename"] for r in data["results"]] == [
        "SpendCreditsSuccess",
        "InsufficientCredits",
        "SpendCreditsSuccess",
        "InsufficientCredits",
    ]
    assert data["results"][1] == {
        "__typename": "InsufficientCredits",
        "message": "Not enough credit available",
        "available": "4",
        "required": "5",
    }
    assert data["results"][3]["available"] == "0"
    assert (await api.data(BALANCE, token=ada_token))["me"]["credit"]["balance"]["total"] == "0"
    # The refusals are stored under their keys: sent alone, k2 is refused the same way, with nothing moved.
    again = await batch(api, [event(ada, "5", "k2")], service)
    assert again["results"] == [data["results"][1]]


async def test_a_batch_sent_again_returns_the_first_results_and_moves_nothing(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    events = [event(ada, "1", "k1"), event(ada, "20", "k2"), event(ada, "2", "k3")]
    first = await batch(api, events, service)
    counts = await row_counts()

    second = await batch(api, events, service)

    assert second == first
    assert await row_counts() == counts
    assert (await api.data(BALANCE, token=ada_token))["me"]["credit"]["balance"]["total"] == "7"


async def test_a_batch_mixing_new_and_replayed_keys_applies_only_the_new(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    first = await batch(api, [event(ada, "1", "k1"), event(ada, "2", "k2")], service)

    mixed = await batch(api, [event(ada, "2", "k2"), event(ada, "3", "k3"), event(ada, "1", "k1")], service)

    # The replays answer with what they answered then (the balance after them then), the new key with now.
    assert mixed["results"] == [first["results"][1], ok(3, "3", "3", "0", "4"), first["results"][0]]
    assert await UsageEvent.all().count() == 3
    assert (await api.data(BALANCE, token=ada_token))["me"]["credit"]["balance"]["total"] == "4"


async def test_a_key_twice_in_one_batch_is_spent_once(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    data = await batch(api, [event(ada, "1", "k"), event(ada, "1", "k"), event(ada, "2", "k")], service)

    assert data["results"] == [
        ok(1, "1", "1", "0", "9"),
        ok(1, "1", "1", "0", "9"),
        {
            "__typename": "IdempotencyConflict",
            "message": "This idempotencyKey was already used with a different request",
            "idempotencyKey": "k",
        },
    ]
    assert (await api.data(BALANCE, token=ada_token))["me"]["credit"]["balance"]["total"] == "9"


async def test_a_batch_event_and_a_single_spend_share_their_keys(api: Api) -> None:
    ada, _ = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    single = (await api.data(SPEND, {"input": event(ada, "1", "k")}, service))["spendCredits"]

    data = await batch(api, [event(ada, "1", "k")], service)

    assert data["results"][0]["usageEvent"] == single["usageEvent"]
    assert await UsageEvent.all().count() == 1


async def test_bad_events_are_refused_with_their_index_and_the_rest_applied(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    data = await batch(
        api,
        [
            event(ada, "1", "k1"),
            event(ada, "-1", "k2"),
            {**event(ada, "1", "k3"), "quantity": "1"},
            event(ada, "1", ""),
            {**event(ada, "1", "k5"), "credits": None, "quantity": "2", "activity": "unpriced"},
            event(ada, "1", "k6"),
        ],
        service,
    )

    assert data["results"][1:5] == [
        {"__typename": "ValidationError", "message": "credits must be positive", "field": "events.1.credits"},
        {"__typename": "ValidationError", "message": "Give exactly one of quantity or credits", "field": "events.2"},
        {"__typename": "ValidationError", "message": data["results"][3]["message"], "field": "events.3.idempotencyKey"},
        {
            "__typename": "ValidationError",
            "message": "Activity 'unpriced' is not on the rate card: give credits instead",
            "field": "events.4.activity",
        },
    ]
    assert [r["__typename"] for r in (data["results"][0], data["results"][5])] == ["SpendCreditsSuccess"] * 2
    assert (await api.data(BALANCE, token=ada_token))["me"]["credit"]["balance"]["total"] == "8"


async def test_an_empty_batch_and_one_too_many_are_refused_whole(api: Api) -> None:
    ada, _ = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    counts = await row_counts()
    most = api.settings.batch_max_events

    empty = await batch(api, [], service)
    over = await batch(api, [event(ada, "0.000001", f"k{n}") for n in range(most + 1)], service)

    assert empty == {"__typename": "ValidationError", "message": "Give at least one event", "field": "events"}
    assert over == {
        "__typename": "ValidationError",
        "message": f"At most {most:,} events per batch, not {most + 1:,}: send the rest in another",
        "field": "events",
    }
    assert await row_counts() == counts


async def test_an_unknown_user_is_refused_as_not_found_and_others_go_on(api: Api) -> None:
    ada, _ = await api.user("ada@example.com", bonus=10)
    service = await api.service()

    data = await batch(api, [event(999, "1", "k1"), event(ada, "1", "k2")], service)

    assert data["results"][0] == {"__typename": "NotFound", "message": "User not found"}
    assert data["results"][1]["__typename"] == "SpendCreditsSuccess"
    assert await IdempotencyRecord.all().count() == 1


async def test_a_user_token_may_not_spend_in_batches(api: Api) -> None:
    ada, ada_token = await api.user("ada@example.com", bonus=10)
    counts = await row_counts()

    data = await batch(api, [event(ada, "1", "k1")], ada_token)

    assert data == {
        "__typename": "Forbidden",
        "message": "This needs a service token with the 'usage:write' scope, or an admin token",
    }
    assert await row_counts() == counts
    assert await LedgerEntry.filter(entry_type="SPEND").count() == 0
