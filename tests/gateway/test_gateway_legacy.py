"""The legacy gateway (cards on file through Stripe PaymentMethods and PaymentIntents) through the real Stripe
SDK, against the local stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from billing.payments import charge_pending
from billing.reconcile import reconcile_pending
from creditline.clock import Clock
from creditline.settings import Settings
from models.ledger import IdempotencyKey
from models.money import Price
from models.payments import start_top_up
from models.tables import CreditLot, GatewayCustomer, Invoice, PaymentMethod, Transaction, TransactionType
from tests.support.backends import Backend
from tests.support.helpers import BALANCE, Api, gid
from tests.support.payments import ADD_CARD, CARDS, CHANGE, TOP_UP, top_up
from tests.support.stripe_standin import StripeStandIn, stripe_api

PORTAL = """mutation { createCustomerPortalSession(input: {}) { __typename ... on Error { message } } }"""


@pytest.fixture
async def api(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, "legacy") as api:
        yield api


async def state(api: Api, token: str) -> tuple[Any, ...]:
    balance = (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]
    return (
        balance,
        await Transaction.all().count(),
        await CreditLot.filter(kind="PAID").count(),
        await Invoice.all().count(),
        await PaymentMethod.all().count(),
    )


async def test_a_saved_card_is_attached_to_the_accounts_customer_and_charged(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    saved = await api.data(ADD_CARD, {"token": "pm_card_visa"}, token)

    assert saved["addPaymentMethod"] == {
        "__typename": "AddPaymentMethodSuccess",
        "paymentMethod": {
            "id": gid("PaymentMethod", 1),
            "brand": "visa",
            "last4": "4242",
            "expMonth": 12,
            "expYear": 2034,
            "isDefault": True,
        },
    }
    (attach,) = stripe_standin.calls("POST", "/v1/payment_methods/pm_card_visa/attach")
    assert (attach.params, attach.idempotency_key) == (
        {"customer": "cus_test0001"},
        "creditline-attach-cus_test0001-pm_card_visa",
    )
    assert (await PaymentMethod.get(id=1)).reference == "pm_test0001"
    assert stripe_standin.methods["pm_test0001"]["customer"] == "cus_test0001"
    assert (await GatewayCustomer.get(account_id=1)).reference == "cus_test0001"

    paid = await api.data(TOP_UP, top_up("50", "t1", paymentMethodId=gid("PaymentMethod", 1)), token)

    assert paid["topUp"]["__typename"] == "TopUpSuccess"
    assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
    assert paid["topUp"]["transaction"]["invoice"]["number"] == "INV-000001"
    (charge,) = stripe_standin.calls("POST", "/v1/payment_intents")
    assert charge.idempotency_key == "creditline-transaction-1"
    assert charge.params == {
        "amount": "50",
        "currency": "usd",
        "payment_method": "pm_test0001",
        "allowed_payment_method_types[0]": "card",
        "confirm": "true",
        "error_on_requires_action": "true",
        "description": "50 credits",
        "customer": "cus_test0001",
    }
    assert (await Transaction.get(id=1)).gateway_reference == "pi_test0001"
    assert await api.data(TOP_UP, top_up("50", "t1", paymentMethodId=gid("PaymentMethod", 1)), token) == paid
    assert len(stripe_standin.calls("POST", "/v1/payment_intents")) == 1
    second = await api.data(ADD_CARD, {"token": "pm_card_mastercard"}, token)
    assert second["addPaymentMethod"]["paymentMethod"]["isDefault"] is False
    assert len(stripe_standin.calls("POST", "/v1/customers")) == 1  # one customer per account
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"


async def test_a_one_off_card_is_charged_without_being_saved(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    paid = await api.data(TOP_UP, top_up("50", "t1", paymentToken="pm_card_mastercard"), token)

    assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
    assert [r.path for r in stripe_standin.requests] == [
        "/v1/payment_methods/pm_card_mastercard",
        "/v1/payment_intents",
    ]
    assert "customer" not in stripe_standin.requests[1].params
    assert await PaymentMethod.all().count() == 0


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        ("pm_card_chargeDeclined", "Your card was declined."),
        ("pm_card_chargeDeclinedInsufficientFunds", "Your card has insufficient funds."),
        (
            "pm_card_authenticationRequired",
            "The card's bank asks the card holder to authenticate, which an in-app charge cannot do",
        ),
    ],
)
async def test_a_declined_card_leaves_a_failed_transaction_and_no_credit(
    api: Api, stripe_standin: StripeStandIn, card: str, reason: str
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": card}, token)

    data = await api.data(TOP_UP, top_up("50", "d1", paymentMethodId=gid("PaymentMethod", 1)), token)

    assert data["topUp"] == {
        "__typename": "PaymentDeclined",
        "message": f"The payment failed: {reason}",
        "reason": reason,
        "transaction": {"status": "FAILED", "failureReason": reason, "invoice": None},
    }
    assert (await Transaction.get(id=1)).gateway_reference == "pi_test0001"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["total"] == "0"
    assert await api.data(TOP_UP, top_up("50", "d1", paymentMethodId=gid("PaymentMethod", 1)), token) == data
    assert len(stripe_standin.calls("POST", "/v1/payment_intents")) == 1


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("tok_visa", "Give a Stripe PaymentMethod id (pm_...) made by Stripe.js"),
        ("pm_nope", "No such PaymentMethod: 'pm_nope'"),
        ("", "token must be 1 to 255 characters"),
    ],
)
async def test_a_bad_card_token_is_refused_and_saves_nothing(
    api: Api, stripe_standin: StripeStandIn, token: str, message: str
) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    before = await state(api, user)

    saved = await api.data(ADD_CARD, {"token": token}, user)
    paid = await api.data(TOP_UP, top_up("50", "t1", paymentToken=token), user)

    assert saved["addPaymentMethod"] == {"__typename": "ValidationError", "message": message}
    field = "paymentToken"
    expected = message.replace("token must", "paymentToken must") if not token else message
    assert paid["topUp"] == {"__typename": "ValidationError", "message": expected, "field": field}
    assert await state(api, user) == before
    assert stripe_standin.calls("POST", "/v1/payment_intents") == []


async def test_a_charge_whose_answer_was_lost_is_confirmed_by_reconcile_with_the_same_key(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": "pm_card_visa"}, token)
    stripe_standin.outage["/v1/payment_intents"] = 1

    pending = await api.data(TOP_UP, top_up("50", "t1", paymentMethodId=gid("PaymentMethod", 1)), token)

    assert pending["topUp"]["__typename"] == "TopUpSuccess"
    assert pending["topUp"]["transaction"]["status"] == "PENDING"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "0"
    services = api.app.state.services
    api.clock.advance(timedelta(minutes=2))

    assert await reconcile_pending(services) == 1
    assert await reconcile_pending(services) == 0

    charges = stripe_standin.calls("POST", "/v1/payment_intents")
    assert [c.idempotency_key for c in charges] == ["creditline-transaction-1"] * 2
    assert charges[0].params == charges[1].params
    assert (await Transaction.get(id=1)).status == "SUCCEEDED"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"


async def test_a_crash_after_stripe_charged_completes_once_from_stripes_replayed_answer(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": "pm_card_visa"}, token)
    services = api.app.state.services
    txn, _ = await start_top_up(
        1,
        credits=50_000_000,
        price=Price("USD", 100),
        gateway="legacy",
        payment_method_id=1,
        card_reference="pm_test0001",
        kind=TransactionType.TOP_UP,
        idem=IdempotencyKey.for_request("user:1", "crashed", "topUp", {}),
        now=api.clock.now(),
    )
    # Stripe charged the card, and the process died before it recorded the answer:
    charged = await services.gateway.charge(
        amount=50,
        currency="USD",
        card="pm_test0001",
        idempotency_key=f"creditline-transaction-{txn.id}",
        description="50 credits",
        customer="cus_test0001",
    )
    assert charged.succeeded
    api.clock.advance(timedelta(minutes=2))

    assert await reconcile_pending(services) == 1

    assert [c.replayed for c in stripe_standin.calls("POST", "/v1/payment_intents")] == [False, True]
    assert len(stripe_standin.intents) == 1
    await txn.refresh_from_db()
    assert (txn.status, txn.gateway_reference) == ("SUCCEEDED", charged.reference)
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"


async def test_a_charge_not_confirmed_within_stripes_key_lifetime_is_not_sent_again(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": "pm_card_visa"}, token)
    stripe_standin.outage["/v1/payment_intents"] = 1
    await api.data(TOP_UP, top_up("50", "t1", paymentMethodId=gid("PaymentMethod", 1)), token)
    api.clock.advance(timedelta(hours=23))

    assert await reconcile_pending(api.app.state.services) == 1

    txn = await Transaction.get(id=1)
    assert (txn.status, txn.failure_reason) == ("FAILED", "The payment could not be confirmed in time")
    assert len(stripe_standin.calls("POST", "/v1/payment_intents")) == 1


@pytest.mark.parametrize(
    ("card", "status", "reason"),
    [
        ("pm_card_visa", "SUCCEEDED", None),
        (
            "pm_card_authenticationRequired",
            "FAILED",
            "The card's bank asks the card holder to authenticate, which an in-app charge cannot do",
        ),
    ],
)
async def test_renewals_and_auto_top_ups_charge_the_saved_card_off_session(
    api: Api, stripe_standin: StripeStandIn, card: str, status: str, reason: str | None
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": card}, token)
    txn, _ = await start_top_up(
        1,
        credits=50_000_000,
        price=Price("USD", 100),
        gateway="legacy",
        payment_method_id=1,
        card_reference="pm_test0001",
        kind=TransactionType.AUTO_TOP_UP,
        idem=IdempotencyKey.for_request("system", "auto-1", "autoTopUp", {}),
        now=api.clock.now(),
    )

    done = await charge_pending(api.app.state.services, txn)

    assert (done.status, done.failure_reason) == (status, reason)
    (charge,) = stripe_standin.calls("POST", "/v1/payment_intents")
    assert (charge.params["off_session"], charge.params["customer"]) == ("true", "cus_test0001")


async def test_removing_a_card_detaches_it_at_stripe(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    for card in ("pm_card_visa", "pm_card_mastercard"):
        await api.data(ADD_CARD, {"token": card}, token)

    made_default = await api.data(CHANGE % "setDefaultPaymentMethod", {"id": gid("PaymentMethod", 2)}, token)
    removed = await api.data(CHANGE % "removePaymentMethod", {"id": gid("PaymentMethod", 2)}, token)

    assert made_default["setDefaultPaymentMethod"]["paymentMethods"][1]["isDefault"] is True
    assert removed["removePaymentMethod"]["paymentMethods"] == [{"last4": "4242", "isDefault": True}]
    assert [r.path for r in stripe_standin.calls("POST", "/v1/payment_methods/pm_test0002/detach")] == [
        "/v1/payment_methods/pm_test0002/detach"
    ]
    assert stripe_standin.methods["pm_test0002"]["customer"] is None
    assert stripe_standin.methods["pm_test0001"]["customer"] == "cus_test0001"
    assert (await api.data(CARDS, token=token))["me"]["credit"]["paymentMethods"] == [
        {"id": gid("PaymentMethod", 1), "last4": "4242", "isDefault": True}
    ]


async def test_the_customer_portal_is_not_for_card_on_file_gateways(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    data = await api.data(PORTAL, token=token)

    assert data["createCustomerPortalSession"] == {
        "__typename": "PaymentUnavailable",
        "message": "On the legacy gateway cards are managed in-app",
    }
    assert stripe_standin.requests == []
