"""Holds priced by the rate card and adjusted while their task runs (issue 12, point 7), as a client sees them:
``holdCredits`` with a ``quantity``, ``extendHold`` and ``increaseHold``. Their bad input is in
test_mutation_inputs, who may call them in test_access_matrix and test_portal_access."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from billing import auto_top_up as billing_auto_top_up
from models import ledger
from models.credits import MICRO
from models.tables import CreditAccount, Hold, IdempotencyRecord, LedgerEntry, Transaction, UsageEvent
from resolvers.live import _reason_of
from tests.support.helpers import Api, gid
from tests.support.organizations import BUDGET, GRANT, POOL, setup_org
from tests.support.snapshots import changed, snapshot

HOLD_FIELDS = "id status amount captured activity quantity expiresAt"
COMMON = """
  ... on ValidationError { field }
  ... on IdempotencyConflict { idempotencyKey }
  ... on Error { message }"""
CREDIT = (
    "... on InsufficientCredits { available required }"
    " ... on BudgetExceeded { monthlyBudget spentThisMonth held required }"
)
NOT_ACTIVE = "... on HoldNotActive { status }"
HOLD = f"""mutation($input: HoldCreditsInput!) {{ holdCredits(input: $input) {{ __typename
  ... on HoldCreditsSuccess {{ hold {{ {HOLD_FIELDS} }} balance {{ total held available }} }} {CREDIT} {COMMON} }} }}"""
EXTEND = f"""mutation($input: ExtendHoldInput!) {{ extendHold(input: $input) {{ __typename
  ... on ExtendHoldSuccess {{ hold {{ {HOLD_FIELDS} }} balance {{ total held available }} }}
  {NOT_ACTIVE} {COMMON} }} }}"""
INCREASE = f"""mutation($input: IncreaseHoldInput!) {{ increaseHold(input: $input) {{ __typename
  ... on IncreaseHoldSuccess {{ hold {{ {HOLD_FIELDS} }} balance {{ total held available }} limitWarnings {{ spent }} }}
  {CREDIT} {NOT_ACTIVE} {COMMON} }} }}"""
CAPTURE = """mutation($input: CaptureHoldInput!) { captureHold(input: $input) { __typename
  ... on CaptureHoldSuccess { usageEvent { credits } balance { total held available } } ... on Error { message } } }"""
BALANCE = "{ me { credit { balance { total held available } } } }"


class Caller:
    def __init__(self, api: Api, service: str) -> None:
        self.api = api
        self.service = service

    async def run(self, document: str, name: str, **input: Any) -> Any:
        return (await self.api.data(document, {"input": input}, self.service))[name]

    async def hold(self, **input: Any) -> Any:
        return await self.run(HOLD, "holdCredits", agentId="agent-1", **input)

    async def extend(self, hold_id: str, seconds: int, key: str) -> Any:
        return await self.run(EXTEND, "extendHold", holdId=hold_id, timeoutSeconds=seconds, idempotencyKey=key)

    async def increase(self, hold_id: str, key: str, **amount: str) -> Any:
        return await self.run(INCREASE, "increaseHold", holdId=hold_id, idempotencyKey=key, **amount)


async def ada(api: Api, bonus: int = 10) -> tuple[Caller, str, str]:
    user_id, token = await api.user("ada@example.com", bonus=bonus)
    return Caller(api, await api.service()), gid("User", user_id), token


def success(kind: str, hold: dict[str, Any], balance: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"__typename": f"{kind}Success", "hold": hold, "balance": balance, **more}


# ------------------------------------------------------------------------------------------ priced holds


async def test_a_hold_of_a_quantity_is_priced_by_the_rate_card_exactly(api: Api) -> None:
    caller, user, _ = await ada(api)
    expires = (api.clock.now() + timedelta(hours=1)).isoformat()

    searches = await caller.hold(userId=user, activity="web_search", quantity="3", idempotencyKey="h1")
    # 0.000001 answer costs 0.000000002 credits: rounded up to one micro-credit, as a spend of it is.
    tiny = await caller.hold(userId=user, activity="answer", quantity="0.000001", idempotencyKey="h2")
    given = await caller.hold(userId=user, activity="web_search", credits="0.5", idempotencyKey="h3")

    assert searches == success(
        "HoldCredits",
        {
            "id": gid("Hold", 1),
            "status": "ACTIVE",
            "amount": "0.03",
            "captured": "0",
            "activity": "web_search",
            "quantity": "3",
            "expiresAt": expires,
        },
        {"total": "10", "held": "0.03", "available": "9.97"},
    )
    assert (tiny["hold"]["amount"], tiny["hold"]["quantity"]) == ("0.000001", "0.000001")
    assert (given["hold"]["amount"], given["hold"]["quantity"]) == ("0.5", None)
    assert given["balance"] == {"total": "10", "held": "0.530001", "available": "9.469999"}


async def test_a_priced_hold_replays_and_its_full_capture_records_the_quantity(api: Api) -> None:
    caller, user, _ = await ada(api)
    placed = await caller.hold(userId=user, activity="transcription", quantity="2.5", idempotencyKey="h1")
    again = await caller.hold(userId=user, activity="transcription", quantity="2.5", idempotencyKey="h1")
    other = await caller.hold(userId=user, activity="transcription", credits="0.015", idempotencyKey="h1")

    assert again == placed
    assert placed["hold"]["amount"] == "0.015"
    assert other == {
        "__typename": "IdempotencyConflict",
        "idempotencyKey": "h1",
        "message": "This idempotencyKey was already used with a different request",
    }
    captured = await api.data(
        CAPTURE, {"input": {"holdId": placed["hold"]["id"], "idempotencyKey": "c1"}}, caller.service
    )
    assert captured["captureHold"]["usageEvent"] == {"credits": "0.015"}
    event = await UsageEvent.get(hold_id=1)
    assert (event.quantity, event.activity, event.credits) == (2_500_000, "transcription", 15_000)


async def test_a_hold_given_in_credits_keeps_the_fingerprint_it_always_had(api: Api) -> None:
    """A key stored before holds took a quantity must replay the same request: its fingerprint is unchanged."""
    caller, user, _ = await ada(api)

    await caller.hold(userId=user, activity="answer", credits="1", timeoutSeconds=60, idempotencyKey="old")

    record = await IdempotencyRecord.get(key="old")
    user_pk = 1
    before_quantities = ledger.IdempotencyKey.for_request(
        record.scope,
        "old",
        "holdCredits",
        {
            "user": user_pk,
            "organization": None,
            "agent": "agent-1",
            "activity": "answer",
            "credits": 1_000_000,
            "timeout": 60,
        },
    )
    assert record.request_hash == before_quantities.fingerprint


# ------------------------------------------------------------------------------------------------ extend


async def test_extend_keeps_a_running_task_s_hold_past_its_old_timeout(api: Api) -> None:
    caller, user, token = await ada(api)
    account = await CreditAccount.get(user_id=1)
    watcher = api.app.state.services.bus.subscribe(frozenset({account.id}))
    placed = await caller.hold(userId=user, activity="answer", credits="4", timeoutSeconds=60, idempotencyKey="h1")
    hold_id = placed["hold"]["id"]
    api.clock.advance(timedelta(seconds=50))

    extended = await caller.extend(hold_id, 120, "e1")

    new_timeout = (api.clock.now() + timedelta(seconds=120)).isoformat()
    assert extended == success(
        "ExtendHold",
        {
            "id": hold_id,
            "status": "ACTIVE",
            "amount": "4",
            "captured": "0",
            "activity": "answer",
            "quantity": None,
            "expiresAt": new_timeout,
        },
        {"total": "10", "held": "4", "available": "6"},
    )
    events = [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
    assert [(e.reason, e.version, e.delta) for e in events if isinstance(e, ledger.BalanceChange)] == [
        ("HOLD", 2, 0),
        ("EXTEND", 3, 0),
    ]
    assert len(events) == 2
    # Past the old timeout: still held, and a replay answers as the first time.
    api.clock.advance(timedelta(seconds=20))
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"] == {
        "total": "10",
        "held": "4",
        "available": "6",
    }
    assert await caller.extend(hold_id, 120, "e1") == extended
    assert await caller.extend(hold_id, 60, "e1") == {
        "__typename": "IdempotencyConflict",
        "idempotencyKey": "e1",
        "message": "This idempotencyKey was already used with a different request",
    }
    # At the new timeout it is over: not held, and no longer extendable.
    api.clock.advance(timedelta(seconds=100))
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["held"] == "0"
    before = await snapshot()
    assert await caller.extend(hold_id, 120, "e2") == {
        "__typename": "HoldNotActive",
        "status": "EXPIRED",
        "message": "The hold is expired, not active",
    }
    assert changed(before, await snapshot()) == {"idempotency_records"}
    entries = await LedgerEntry.filter(hold_id=1).order_by("version").values_list("entry_type", "held_delta", "reason")
    assert entries == [("HOLD", 4_000_000, None), ("HOLD", 0, "EXTEND")]


async def test_a_hold_is_not_extended_past_thirty_days_after_it_was_placed(api: Api) -> None:
    caller, user, _ = await ada(api)
    placed = await caller.hold(userId=user, activity="answer", credits="1", timeoutSeconds=604800, idempotencyKey="h")
    hold_id = placed["hold"]["id"]
    latest = api.clock.now() + timedelta(days=30)
    for week in range(1, 4):  # a week at a time, each a day before the last one ends: to day 25
        api.clock.advance(timedelta(days=6))
        assert (await caller.extend(hold_id, 604800, f"week-{week}"))["__typename"] == "ExtendHoldSuccess"
    api.clock.advance(timedelta(days=6))  # day 24: six days of its life left
    before = await snapshot()

    refused = await caller.extend(hold_id, 6 * 86400 + 1, "too-long")

    assert refused == {
        "__typename": "ValidationError",
        "field": "timeoutSeconds",
        "message": "A hold lasts at most 30 days after it was placed: this one may be extended to"
        f" {latest.isoformat()} at the latest",
    }
    assert changed(before, await snapshot()) == set()
    last = await caller.extend(hold_id, 6 * 86400, "to-the-end")
    assert last["hold"]["expiresAt"] == latest.isoformat()


# ---------------------------------------------------------------------------------------------- increase


async def test_increase_adds_exactly_and_is_refused_past_the_available_credit(api: Api) -> None:
    caller, user, token = await ada(api)
    placed = await caller.hold(userId=user, activity="web_search", quantity="100", idempotencyKey="h1")
    hold_id = placed["hold"]["id"]
    assert placed["hold"]["amount"] == "1"

    units = await caller.increase(hold_id, "i1", quantity="50")
    credit = await caller.increase(hold_id, "i2", credits="0.250001")

    assert units == success(
        "IncreaseHold",
        {
            "id": hold_id,
            "status": "ACTIVE",
            "amount": "1.5",
            "captured": "0",
            "activity": "web_search",
            "quantity": "150",
            "expiresAt": placed["hold"]["expiresAt"],
        },
        {"total": "10", "held": "1.5", "available": "8.5"},
        limitWarnings=[],
    )
    assert (credit["hold"]["amount"], credit["hold"]["quantity"]) == ("1.750001", None)
    assert credit["balance"] == {"total": "10", "held": "1.750001", "available": "8.249999"}
    assert await caller.increase(hold_id, "i1", quantity="50") == units | {
        "hold": credit["hold"]  # the hold as it is now; the balance as the first answer gave it
    }
    before = await snapshot()
    refused = await caller.increase(hold_id, "i3", credits="8.25")
    assert refused == {
        "__typename": "InsufficientCredits",
        "available": "8.249999",
        "required": "8.25",
        "message": "Not enough credit available",
    }
    assert changed(before, await snapshot()) == {"idempotency_records"}
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["held"] == "1.750001"
    captured = await api.data(CAPTURE, {"input": {"holdId": hold_id, "idempotencyKey": "c"}}, caller.service)
    assert captured["captureHold"]["usageEvent"] == {"credits": "1.750001"}


async def test_an_increase_of_a_settled_hold_is_refused_and_changes_nothing(api: Api) -> None:
    caller, user, _ = await ada(api)
    placed = await caller.hold(userId=user, activity="answer", credits="1", idempotencyKey="h1")
    await api.data(CAPTURE, {"input": {"holdId": placed["hold"]["id"], "idempotencyKey": "c"}}, caller.service)
    before = await snapshot()

    refused = await caller.increase(placed["hold"]["id"], "i1", credits="1")

    assert refused == {
        "__typename": "HoldNotActive",
        "status": "CAPTURED",
        "message": "The hold is captured, not active",
    }
    assert changed(before, await snapshot()) == {"idempotency_records"}


async def test_an_increase_past_the_members_budget_is_refused_and_changes_nothing(api: Api) -> None:
    s = await setup_org(api)
    caller = Caller(api, await api.service())
    pool = (await api.data(POOL, {"org": s["org"]}, s["owner"]))["enableCreditPool"]["creditPool"]["id"]
    await api.data(GRANT, {"account": pool, "key": "fund"}, await api.admin())
    member = gid("User", s["member_id"])
    await api.data(BUDGET, {"org": s["org"], "user": member, "credits": "1"}, s["owner"])
    placed = await caller.hold(
        userId=member, organizationId=s["org"], activity="answer", credits="0.6", idempotencyKey="h1"
    )
    assert placed["balance"] == {"total": "10", "held": "0.6", "available": "9.4"}
    before = await snapshot()

    refused = await caller.increase(placed["hold"]["id"], "i1", credits="0.5")

    assert refused == {
        "__typename": "BudgetExceeded",
        "message": "This increase would exceed the member's monthly budget in this organization",
        "monthlyBudget": "1",
        "spentThisMonth": "0",
        "held": "0.6",
        "required": "0.5",
    }
    # The refusal under its key, and the budget's first refusal this month: its budget.reached.
    assert changed(before, await snapshot()) == {
        "idempotency_records",
        "events",
        "spend_limits",
    }  # reached_period: told once
    assert await caller.increase(placed["hold"]["id"], "i1", credits="0.5") == refused  # replayed
    fits = await caller.increase(placed["hold"]["id"], "i2", credits="0.4")
    assert (fits["hold"]["amount"], fits["balance"]) == ("1", {"total": "10", "held": "1", "available": "9"})
    assert (await Hold.get(id=1)).amount == 1_000_000


async def test_an_increase_by_quantity_of_an_activity_not_on_the_rate_card_is_a_validation_error(api: Api) -> None:
    caller, user, _ = await ada(api)
    placed = await caller.hold(userId=user, activity="juggling", credits="1", idempotencyKey="h1")
    before = await snapshot()

    refused = await caller.increase(placed["hold"]["id"], "i1", quantity="2")

    assert refused == {
        "__typename": "ValidationError",
        "field": "quantity",
        "message": "Activity 'juggling' is not on the rate card: give credits instead",
    }
    assert changed(before, await snapshot()) == set()
    assert (await caller.increase(placed["hold"]["id"], "i2", credits="2"))["hold"]["amount"] == "3"


async def test_an_increase_below_the_auto_top_up_threshold_queues_a_top_up(api: Api) -> None:
    caller, user, token = await ada(api, bonus=100)
    await api.data('mutation { addPaymentMethod(input: {token: "tok_visa"}) { __typename } }', token=token)
    configured = await api.data(
        'mutation { configureAutoTopUp(input: {threshold: "50", amount: "100", monthlyCap: "1000"}) { __typename } }',
        token=token,
    )
    assert configured == {"configureAutoTopUp": {"__typename": "ConfigureAutoTopUpSuccess"}}
    placed = await caller.hold(userId=user, activity="answer", credits="40", idempotencyKey="h1")
    await billing_auto_top_up.idle()
    assert await Transaction.all().count() == 0  # 60 available: above the threshold

    increased = await caller.increase(placed["hold"]["id"], "i1", credits="20")
    await billing_auto_top_up.idle()

    assert increased["balance"] == {"total": "100", "held": "60", "available": "40"}
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"] == {
        "total": "200",
        "held": "60",
        "available": "140",
    }
    assert await Transaction.all().values_list("status", "credits") == [("SUCCEEDED", 100 * MICRO)]


async def test_an_adjustment_read_back_from_the_ledger_keeps_the_reason_it_was_published_with(api: Api) -> None:
    """A subscriber that missed the events gets them from the ledger (resolvers/live.py): with the same reasons."""
    caller, user, _ = await ada(api)
    placed = await caller.hold(userId=user, activity="answer", credits="1", idempotencyKey="h1")
    await caller.extend(placed["hold"]["id"], 600, "e1")
    await caller.increase(placed["hold"]["id"], "i1", credits="1")

    entries = await LedgerEntry.filter(hold_id=1).order_by("version")

    assert [_reason_of(entry, {}) for entry in entries] == ["HOLD", "EXTEND", "INCREASE"]


async def test_a_hold_and_a_lot_read_expired_from_their_expiry_on_before_the_sweep_writes_it(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=10, bonus_days=1)
    caller = Caller(api, await api.service())
    placed = await caller.hold(
        userId=gid("User", user_id), activity="answer", credits="4", timeoutSeconds=60, idempotencyKey="h1"
    )
    status = "query($id: ID!) { node(id: $id) { ... on Hold { status } } }"
    lots = "{ me { credit { lots(first: 5) { edges { node { status remaining } } } } } }"

    async def read() -> tuple[str, list[dict[str, str]]]:
        hold = (await api.data(status, {"id": placed["hold"]["id"]}, token))["node"]["status"]
        edges = (await api.data(lots, token=token))["me"]["credit"]["lots"]["edges"]
        return hold, [edge["node"] for edge in edges]

    api.clock.advance(timedelta(seconds=59))
    assert await read() == ("ACTIVE", [{"status": "ACTIVE", "remaining": "10"}])
    api.clock.advance(timedelta(seconds=1))  # the hold's timeout: over, as the balance and captureHold say
    assert await read() == ("EXPIRED", [{"status": "ACTIVE", "remaining": "10"}])
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["held"] == "0"
    api.clock.advance(timedelta(days=1))  # the lot's expiry, with no sweep run
    assert await read() == ("EXPIRED", [{"status": "EXPIRED", "remaining": "10"}])
    assert await Hold.filter(status="ACTIVE").count() == 1  # the stored rows wait for the sweep
