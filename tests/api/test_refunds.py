"""Refunds on the sandbox gateway: money back, credit voided in proportion as far as it is unspent."""

from __future__ import annotations

from typing import Any

import pytest

from models.ledger import BalanceChange
from models.tables import LedgerEntry, Refund, Transaction
from tests.support.helpers import SPEND, Api, gid
from tests.support.refunds import REFUND, paid_customer, refund

STATE = """{ me { credit { balance { total paid held available }
  lots(first: 10) { edges { node { remaining status } } }
  ledger(first: 10) { edges { node { type delta } } } } } }"""
HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) { __typename } }"""


async def test_a_full_refund_returns_the_money_and_voids_the_credit(api: Api) -> None:
    _, user, txn = await paid_customer(api)
    admin = await api.admin()
    bus = api.app.state.services.bus
    watcher = bus.subscribe(None)
    try:
        data = await api.data(REFUND, refund(txn, reason="Duplicate purchase"), admin)
        change = watcher.queue.get_nowait()
    finally:
        watcher.close()

    assert data["refundPayment"] == {
        "__typename": "RefundPaymentSuccess",
        "refund": {
            "id": gid("Refund", 1),
            "status": "SUCCEEDED",
            "amount": {"amount": 250, "currency": "USD"},
            "credits": "250",
            "reason": "Duplicate purchase",
            "failureReason": None,
        },
        "transaction": {"id": txn, "status": "SUCCEEDED", "refunds": [{"amount": {"amount": 250}, "credits": "250"}]},
        "balance": {"total": "0", "paid": "0", "held": "0", "available": "0"},
    }
    assert isinstance(change, BalanceChange)
    assert (change.reason, change.delta) == ("REFUND", -250_000_000)
    state = (await api.data(STATE, token=user))["me"]["credit"]
    assert state["lots"]["edges"] == [{"node": {"remaining": "0", "status": "VOIDED"}}]
    assert state["ledger"]["edges"][0] == {"node": {"type": "REFUND", "delta": "-250"}}
    assert await api.data(REFUND, refund(txn, reason="Duplicate purchase"), admin) == data  # replay
    again = await api.data(REFUND, refund(txn, key="r2"), admin)
    assert again["refundPayment"] == {
        "__typename": "ValidationError",
        "message": "The payment has been refunded in full",
        "field": "transactionId",
    }
    assert await Refund.all().count() == 1


async def test_partial_refunds_add_up_to_the_whole_payment_and_all_its_credit(api: Api) -> None:
    _, user, txn = await paid_customer(api, "10")  # USD 0.10 for 10 credits
    admin = await api.admin()

    first = await api.data(REFUND, refund(txn, "a", amount=3), admin)
    too_much = await api.data(REFUND, refund(txn, "b", amount=8), admin)
    rest = await api.data(REFUND, refund(txn, "c"), admin)

    assert first["refundPayment"]["refund"]["credits"] == "3"
    assert too_much["refundPayment"] == {
        "__typename": "ValidationError",
        "message": "At most 7 (minor units) of this payment can be refunded",
        "field": "amount",
    }
    assert rest["refundPayment"]["refund"]["amount"]["amount"] == 7
    assert rest["refundPayment"]["refund"]["credits"] == "7"
    assert (await api.data(STATE, token=user))["me"]["credit"]["balance"]["total"] == "0"


async def test_credit_already_spent_or_held_is_not_voided(api: Api) -> None:
    user_id, user, txn = await paid_customer(api, "250")
    service = await api.service()
    admin = await api.admin()
    spend = {
        "userId": gid("User", user_id),
        "agentId": "a",
        "activity": "answer",
        "credits": "200",
        "idempotencyKey": "s",
    }
    await api.data(SPEND, {"input": spend}, service)
    hold = {**spend, "credits": "20", "idempotencyKey": "h"}
    assert (await api.data(HOLD, {"input": hold}, service))["holdCredits"]["__typename"] == "HoldCreditsSuccess"

    data = await api.data(REFUND, refund(txn), admin)

    assert data["refundPayment"]["refund"]["credits"] == "30"
    assert data["refundPayment"]["balance"] == {"total": "20", "paid": "20", "held": "20", "available": "0"}


async def test_a_refund_the_gateway_refuses_keeps_the_credit(api: Api) -> None:
    _, user, txn = await paid_customer(api)
    await Transaction.filter(id=1).update(gateway_reference="ch_unknown")
    admin = await api.admin()

    data = await api.data(REFUND, refund(txn), admin)

    assert data["refundPayment"] == {"__typename": "RefundFailed", "message": "The refund failed: No such charge"}
    assert (await api.data(STATE, token=user))["me"]["credit"]["balance"]["total"] == "250"
    retry = await api.data(REFUND, refund(txn, "r2"), admin)  # a failed refund does not use up the payment
    assert retry["refundPayment"]["__typename"] == "RefundFailed"


@pytest.mark.parametrize(
    ("who", "payload", "expected"),
    [
        ("user", {}, {"__typename": "Forbidden", "message": "This needs an admin token"}),
        ("admin", {"amount": 0}, {"__typename": "ValidationError", "field": "amount",
                                  "message": "amount must be a positive number of minor units"}),
        ("admin", {"idempotencyKey": ""}, {"__typename": "ValidationError", "field": "idempotencyKey"}),
        ("admin", {"transactionId": "bogus"}, {"__typename": "NotFound", "message": "Transaction not found"}),
        ("admin", {"amount": 251}, {"__typename": "ValidationError", "field": "amount",
                                    "message": "At most 250 (minor units) of this payment can be refunded"}),
    ],
)  # fmt: skip
async def test_bad_refunds_are_refused_and_change_nothing(
    api: Api, who: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    _, user, txn = await paid_customer(api)
    token = user if who == "user" else await api.admin()
    before = await api.data(STATE, token=user)

    data = await api.data(REFUND, {"input": {"transactionId": txn, "idempotencyKey": "k", **payload}}, token)

    got = data["refundPayment"]
    assert {key: got[key] for key in expected} == expected
    assert await api.data(STATE, token=user) == before
    assert (await Refund.all().count(), await LedgerEntry.filter(entry_type="REFUND").count()) == (0, 0)


async def test_a_failed_payment_cannot_be_refunded(api: Api) -> None:
    _, user, txn = await paid_customer(api, token="tok_chargeDeclined")
    admin = await api.admin()

    data = await api.data(REFUND, refund(txn), admin)

    assert data["refundPayment"] == {
        "__typename": "ValidationError",
        "message": "Only a SUCCEEDED payment can be refunded",
        "field": "transactionId",
    }
    assert await Refund.all().count() == 0
