"""refundPayment on the stripe gateway (a Checkout top-up) and the legacy gateway (a PaymentIntent charge),
through the real Stripe SDK against the stand-in: what Stripe is asked, the credit voided, and a refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from creditline.clock import Clock
from creditline.settings import Settings
from models.tables import LedgerEntry, Refund
from tests.support.backends import Backend
from tests.support.helpers import BALANCE, Api, gid
from tests.support.payments import ADD_CARD, TOP_UP, top_up
from tests.support.refunds import REFUND, refund
from tests.support.stripe_standin import StripeStandIn, deliver, stripe_api

FAILED = """mutation($input: RefundPaymentInput!) { refundPayment(input: $input) { __typename
  ... on RefundFailed { message reason refund { status amount { amount } credits failureReason } }
  ... on Error { message } } }"""


@pytest.fixture(params=["stripe", "legacy"])
async def api(
    request: pytest.FixtureRequest, db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn
) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, request.param) as api:
        yield api


async def paid(api: Api, standin: StripeStandIn, credits: str = "100") -> str:
    """A user who paid ``credits`` credits (USD cents as many): on stripe through a Checkout page and its
    webhook, on legacy with a saved card charged by a PaymentIntent. Returns the user's token."""
    _, token = await api.user("ada@example.com", bonus=0)
    if api.settings.gateway == "stripe":
        await api.data(TOP_UP, top_up(credits, "t1"), token)
        completed = standin.event("checkout.session.completed", standin.pay("cs_test0001"))
        assert (await deliver(api, completed)).json()["outcome"] == "processed"
    else:
        await api.data(ADD_CARD, {"token": "pm_card_visa"}, token)
        data = await api.data(TOP_UP, top_up(credits, "t1", paymentMethodId=gid("PaymentMethod", 1)), token)
        assert data["topUp"]["transaction"]["status"] == "SUCCEEDED"
    assert standin.intents["pi_test0001"]["status"] == "succeeded"
    return token


async def balance(api: Api, token: str) -> Any:
    return (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]


async def test_a_partial_refund_asks_stripe_to_refund_the_payment_intent_and_voids_the_credit(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await paid(api, stripe_standin)
    admin = await api.admin()

    data = await api.data(REFUND, refund(gid("Transaction", 1), amount=30, reason="Partly unused"), admin)

    assert data["refundPayment"]["__typename"] == "RefundPaymentSuccess"
    assert data["refundPayment"]["refund"] == {
        "id": gid("Refund", 1),
        "status": "SUCCEEDED",
        "amount": {"amount": 30, "currency": "USD"},
        "credits": "30",
        "reason": "Partly unused",
        "failureReason": None,
    }
    assert data["refundPayment"]["balance"] == {"total": "70", "paid": "70", "held": "0", "available": "70"}
    (asked,) = stripe_standin.calls("POST", "/v1/refunds")
    assert (asked.params, asked.idempotency_key) == (
        {"payment_intent": "pi_test0001", "amount": "30"},
        "creditline-refund-1",
    )
    # A hosted top-up is known by its Checkout Session: its PaymentIntent is found through it.
    looked_up = stripe_standin.calls("GET", "/v1/checkout/sessions/cs_test0001")
    assert len(looked_up) == (1 if api.settings.gateway == "stripe" else 0)
    assert stripe_standin.intents["pi_test0001"]["amount_refunded"] == 30
    assert (await Refund.get(id=1)).gateway_reference == "re_test0001"

    rest = await api.data(REFUND, refund(gid("Transaction", 1), key="r2"), admin)

    assert rest["refundPayment"]["refund"]["amount"] == {"amount": 70, "currency": "USD"}
    assert stripe_standin.calls("POST", "/v1/refunds")[-1].params == {"payment_intent": "pi_test0001", "amount": "70"}
    assert await balance(api, token) == {"total": "0", "free": "0", "paid": "0", "held": "0", "available": "0"}
    assert stripe_standin.intents["pi_test0001"]["amount_refunded"] == 100


async def test_a_refund_stripe_refuses_fails_and_voids_nothing(api: Api, stripe_standin: StripeStandIn) -> None:
    token = await paid(api, stripe_standin)
    stripe_standin.refund_in_dashboard("pi_test0001")  # refunded in Stripe's dashboard already
    admin = await api.admin()
    before = await balance(api, token)

    data = await api.data(FAILED, refund(gid("Transaction", 1)), admin)

    reason = "Charge for pi_test0001 has already been refunded."
    assert data["refundPayment"] == {
        "__typename": "RefundFailed",
        "message": f"The refund failed: {reason}",
        "reason": reason,
        "refund": {"status": "FAILED", "amount": {"amount": 100}, "credits": "0", "failureReason": reason},
    }
    assert (
        await balance(api, token)
        == before
        == {"total": "100", "free": "0", "paid": "100", "held": "0", "available": "100"}
    )
    assert await LedgerEntry.filter(entry_type="REFUND").count() == 0
    assert len(stripe_standin.refunds) == 1  # only the dashboard's


async def test_a_refund_whose_answer_was_lost_is_asked_again_with_the_same_key(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await paid(api, stripe_standin)
    admin = await api.admin()
    stripe_standin.outage["/v1/refunds"] = 1

    lost = await api.data(REFUND, refund(gid("Transaction", 1)), admin)

    assert lost["refundPayment"] == {
        "__typename": "PaymentUnavailable",
        "message": "The payment processor could not be reached: try again",
    }
    assert (await Refund.get(id=1)).status == "PENDING"
    assert (await balance(api, token))["total"] == "100"

    again = await api.data(REFUND, refund(gid("Transaction", 1)), admin)

    assert again["refundPayment"]["refund"]["status"] == "SUCCEEDED"
    assert [r.idempotency_key for r in stripe_standin.calls("POST", "/v1/refunds")] == ["creditline-refund-1"] * 2
    assert len(stripe_standin.refunds) == 1
    assert (await balance(api, token))["total"] == "0"
