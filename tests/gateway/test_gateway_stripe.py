"""The stripe gateway through the real Stripe SDK, against the local stand-in: Checkout top-ups completed by
webhooks or by the reconcile job, the customer portal, and a server without keys."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from tortoise import connections

from billing.reconcile import reconcile_pending
from creditline.clock import Clock
from creditline.settings import Settings
from gateway.base import PaymentCheckout
from models.ledger import BalanceChange
from models.sql import job_lock
from models.tables import CreditLot, GatewayCustomer, Invoice, Transaction, WebhookEvent
from resolvers.mutations.payments import PAYING_NEEDS_ROLE
from tests.support.backends import Backend
from tests.support.helpers import BALANCE, Api, gid
from tests.support.live import serve
from tests.support.payments import ADD_CARD, CONFIG, TOP_UP, top_up
from tests.support.stripe_standin import StripeStandIn, deliver, stripe_api, stripe_settings

PORTAL = """mutation($input: CreateCustomerPortalSessionInput!) { createCustomerPortalSession(input: $input) {
  __typename ... on CreateCustomerPortalSessionSuccess { url } ... on Error { message } } }"""
TRANSACTIONS = "{ me { credit { transactions { edges { node { status checkoutUrl failureReason } } } } } }"
SUCCESS = "https://app.example/my-credit/billing?checkout=success&transaction=VHJhbnNhY3Rpb246MQ%3D%3D"


@pytest.fixture
async def api(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, "stripe") as api:
        yield api


async def state(api: Api, token: str) -> tuple[Any, ...]:
    balance = (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]
    return (
        balance,
        await Transaction.all().count(),
        await CreditLot.filter(kind="PAID").count(),
        await Invoice.all().count(),
        await GatewayCustomer.all().count(),
    )


async def test_a_top_up_opens_checkout_and_the_paid_webhook_grants_credit_once(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    watcher = api.app.state.services.bus.subscribe(frozenset({1}))

    opened = await api.data(TOP_UP, top_up("100", "t1"), token)

    checkout_url = f"{stripe_standin.url}/pay/cs_test0001"
    assert opened["topUp"] == {
        "__typename": "TopUpSuccess",
        "checkoutUrl": checkout_url,
        "transaction": {
            "id": gid("Transaction", 1),
            "type": "TOP_UP",
            "status": "PENDING",
            "credits": "100",
            "amount": {"amount": 100, "currency": "USD"},
            "failureReason": None,
            "invoice": None,
        },
    }
    (customer,) = stripe_standin.calls("POST", "/v1/customers")
    assert (customer.idempotency_key, customer.params) == (
        "creditline-customer-1",
        {"name": "ada@example.com", "email": "ada@example.com", "metadata[creditline_account]": "1"},
    )
    (session,) = stripe_standin.calls("POST", "/v1/checkout/sessions")
    assert session.idempotency_key == "creditline-transaction-1"
    assert session.params == {
        "mode": "payment",
        "customer": "cus_test0001",
        "client_reference_id": "1",
        "metadata[creditline_transaction]": "1",
        "payment_intent_data[description]": "100 credits",
        "payment_intent_data[metadata][creditline_transaction]": "1",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "100",
        "line_items[0][price_data][product_data][name]": "100 credits",
        "success_url": SUCCESS,
        "cancel_url": SUCCESS.replace("success", "canceled"),
    }
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "0"
    assert (await api.data(TRANSACTIONS, token=token))["me"]["credit"]["transactions"]["edges"] == [
        {"node": {"status": "PENDING", "checkoutUrl": checkout_url, "failureReason": None}}
    ]
    assert await api.data(TOP_UP, top_up("100", "t1"), token) == opened  # a replay opens no second page
    assert len(stripe_standin.calls("POST", "/v1/checkout/sessions")) == 1
    assert watcher.queue.empty()

    event = stripe_standin.event("checkout.session.completed", stripe_standin.pay("cs_test0001"))
    response = await deliver(api, event)

    assert (response.status_code, response.json()) == (200, {"received": "evt_test0001", "outcome": "processed"})
    change = watcher.queue.get_nowait()
    assert isinstance(change, BalanceChange)
    assert (change.reason, change.delta) == ("TOP_UP", 100_000_000)
    paid = await api.data(TOP_UP, top_up("100", "t1"), token)
    assert paid["topUp"]["checkoutUrl"] is None
    assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
    assert paid["topUp"]["transaction"]["invoice"]["number"] == "INV-000001"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "100"
    txn = await Transaction.get(id=1)
    assert (txn.gateway_reference, txn.checkout_url) == ("cs_test0001", checkout_url)

    again = await deliver(api, event)
    assert again.json() == {"received": "evt_test0001", "outcome": "duplicate"}
    assert watcher.queue.empty()
    assert (await CreditLot.filter(kind="PAID").count(), await WebhookEvent.all().count()) == (1, 1)
    watcher.close()


@pytest.mark.parametrize(
    ("order", "status", "paid"),
    [
        (("completed", "succeeded"), "SUCCEEDED", "50"),
        (("succeeded", "completed"), "SUCCEEDED", "50"),
        (("completed", "failed"), "FAILED", "0"),
        (("failed", "completed"), "FAILED", "0"),
    ],
)
async def test_a_delayed_payment_is_settled_by_its_async_event_in_either_order(
    api: Api, stripe_standin: StripeStandIn, order: tuple[str, str], status: str, paid: str
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("50", "t1"), token)
    completed = stripe_standin.event("checkout.session.completed", stripe_standin.pay("cs_test0001", delayed=True))
    settled_ok = order[1] == "succeeded" or order[0] == "succeeded"
    settled = stripe_standin.settle("cs_test0001", succeeded=settled_ok)
    async_event = stripe_standin.event(
        f"checkout.session.async_payment_{'succeeded' if settled_ok else 'failed'}", settled
    )
    events = {"completed": completed, "succeeded": async_event, "failed": async_event}

    first = await deliver(api, events[order[0]])
    second = await deliver(api, events[order[1]])

    assert (first.json()["outcome"], second.json()["outcome"]) == ("processed", "processed")
    txn = await Transaction.get(id=1)
    reason = None if status == "SUCCEEDED" else "The payment failed after checkout"
    assert (txn.status, txn.failure_reason) == (status, reason)
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == paid
    assert await CreditLot.filter(kind="PAID").count() == (1 if paid != "0" else 0)


async def test_an_expired_checkout_fails_the_top_up_and_a_late_paid_event_changes_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("50", "t1"), token)
    expired = stripe_standin.event("checkout.session.expired", stripe_standin.expire("cs_test0001"))

    assert (await deliver(api, expired)).json()["outcome"] == "processed"

    assert (await api.data(TRANSACTIONS, token=token))["me"]["credit"]["transactions"]["edges"] == [
        {"node": {"status": "FAILED", "checkoutUrl": None, "failureReason": "The checkout page expired before payment"}}
    ]
    before = await state(api, token)
    paid = {**stripe_standin.sessions["cs_test0001"], "status": "complete", "payment_status": "paid"}
    assert (await deliver(api, stripe_standin.event("checkout.session.completed", paid))).status_code == 200
    assert await state(api, token) == before
    replay = await api.data(TOP_UP, top_up("50", "t1"), token)
    assert replay["topUp"]["__typename"] == "PaymentDeclined"
    assert replay["topUp"]["reason"] == "The checkout page expired before payment"


async def test_the_paid_webhook_may_arrive_before_the_checkout_page_is_stored(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    outcomes: list[str] = []

    test_context = contextvars.copy_context()  # the stand-in serves in its own task, with its own context

    async def paid_at_once(session: dict[str, Any]) -> None:
        event = stripe_standin.event("checkout.session.completed", stripe_standin.pay(session["id"]))
        response = await asyncio.get_running_loop().create_task(deliver(api, event), context=test_context)
        outcomes.append(response.json()["outcome"])

    stripe_standin.on_checkout_created = paid_at_once

    data = await api.data(TOP_UP, top_up("60", "t1"), token)

    assert outcomes == ["processed"]
    assert data["topUp"]["__typename"] == "TopUpSuccess"
    assert data["topUp"]["checkoutUrl"] is None
    assert data["topUp"]["transaction"]["status"] == "SUCCEEDED"
    txn = await Transaction.get(id=1)
    assert (txn.gateway_reference, txn.checkout_url) == ("cs_test0001", f"{stripe_standin.url}/pay/cs_test0001")
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "60"


async def test_an_event_for_a_transaction_not_written_yet_is_kept_and_processed_by_the_sweep(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    early = {
        "id": "cs_test0001",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 70,
        "currency": "usd",
        "client_reference_id": "1",
        "metadata": {"creditline_transaction": "1"},
    }
    response = await deliver(api, stripe_standin.event("checkout.session.completed", early))
    assert response.json()["outcome"] == "deferred"
    assert (await WebhookEvent.get(id="evt_test0001")).processed_at is None

    await api.data(TOP_UP, top_up("70", "t1"), token)
    assert await reconcile_pending(api.app.state.services) == 0  # the top-up itself is too recent to ask about

    event = await WebhookEvent.get(id="evt_test0001")
    assert event.processed_at == api.clock.now()
    assert (await Transaction.get(id=1)).status == "SUCCEEDED"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "70"


async def test_reconcile_asks_stripe_how_each_pending_checkout_ended(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    for key in ("paid", "expired", "open", "delayed"):
        await api.data(TOP_UP, top_up("50", key), token)
    stripe_standin.pay("cs_test0001")
    stripe_standin.expire("cs_test0002")
    stripe_standin.pay("cs_test0004", delayed=True)
    services = api.app.state.services
    assert await reconcile_pending(services) == 0
    api.clock.advance(timedelta(minutes=2))

    assert await reconcile_pending(services) == 4

    statuses = [(t.status, t.failure_reason) for t in await Transaction.all().order_by("id")]
    assert statuses == [
        ("SUCCEEDED", None),
        ("FAILED", "The checkout page expired before payment"),
        ("PENDING", None),
        ("PENDING", None),
    ]
    retrieved = stripe_standin.calls("GET", "/v1/checkout/sessions/cs_test0001")
    assert [r.params for r in retrieved] == [{"expand[0]": "payment_intent"}]
    stripe_standin.settle("cs_test0004", succeeded=False)
    assert await reconcile_pending(services) == 2
    assert (await Transaction.get(id=4)).failure_reason == "The payment failed after checkout"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"


async def test_a_page_stripe_made_but_we_never_stored_is_found_again_with_the_same_key(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    stripe_standin.outage["/v1/checkout/sessions"] = 1  # the customer is made, the Checkout request fails

    refused = await api.data(TOP_UP, top_up("80", "t1"), token)

    assert refused["topUp"] == {
        "__typename": "PaymentUnavailable",
        "message": "Stripe could not be reached: Stripe is briefly unavailable"
        " Send the same request again to get the checkout page.",
    }
    txn = await Transaction.get(id=1)
    assert (txn.status, txn.checkout_url, txn.gateway_reference) == ("PENDING", None, None)
    assert stripe_standin.sessions == {}
    # Stripe made the page, and the answer was lost on the way back:
    gateway = api.app.state.services.gateway
    lost = await gateway.create_payment_checkout(
        PaymentCheckout(
            transaction_id=1,
            customer="cus_test0001",
            amount=80,
            currency="USD",
            description="80 credits",
            success_url=SUCCESS,
            cancel_url=SUCCESS.replace("success", "canceled"),
            idempotency_key="creditline-transaction-1",
        )
    )
    stripe_standin.pay(lost.reference)
    api.clock.advance(timedelta(minutes=2))

    assert await reconcile_pending(api.app.state.services) == 1

    assert list(stripe_standin.sessions) == ["cs_test0001"]
    assert [r.replayed for r in stripe_standin.calls("POST", "/v1/checkout/sessions")] == [False, False, True]
    txn = await Transaction.get(id=1)
    assert (txn.status, txn.gateway_reference) == ("SUCCEEDED", "cs_test0001")
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "80"


async def test_a_checkout_page_never_opened_in_a_day_fails(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    stripe_standin.outage["/v1/checkout/sessions"] = 1
    await api.data(TOP_UP, top_up("80", "t1"), token)
    api.clock.advance(timedelta(hours=26))

    assert await reconcile_pending(api.app.state.services) == 1

    txn = await Transaction.get(id=1)
    assert (txn.status, txn.failure_reason) == ("FAILED", "The checkout page was never opened")
    assert stripe_standin.sessions == {}


async def test_stripe_refusing_the_checkout_fails_the_top_up_with_its_reason(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    data = await api.data(TOP_UP, top_up("10", "small"), token)

    reason = "The Checkout Session's total amount due must add up to at least $0.50 usd"
    assert data["topUp"] == {
        "__typename": "PaymentDeclined",
        "message": f"The payment failed: {reason}",
        "reason": reason,
        "transaction": {"status": "FAILED", "failureReason": reason, "invoice": None},
    }
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["total"] == "0"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            top_up("50", "b", paymentToken="tok_visa"),
            ("Give no paymentMethodId or paymentToken: the card is entered at checkout", None),
        ),
        (
            top_up("50", "b", paymentMethodId=gid("PaymentMethod", 1)),
            ("Give no paymentMethodId or paymentToken: the card is entered at checkout", None),
        ),
        (top_up("9", "b"), ("credits must be between 10 and 100000", "credits")),
        (top_up("50.5", "b"), ("credits must be a whole number of credits", "credits")),
        (top_up("50", ""), ("idempotencyKey must be 1 to 255 characters", "idempotencyKey")),
    ],
)
async def test_bad_top_up_input_on_stripe_is_refused_and_changes_nothing(
    api: Api, stripe_standin: StripeStandIn, variables: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    before = await state(api, token)

    data = await api.data(TOP_UP, variables, token)

    assert data["topUp"] == {"__typename": "ValidationError", "message": expected[0], "field": expected[1]}
    assert await state(api, token) == before
    assert stripe_standin.requests == []


async def test_cards_are_managed_in_the_customer_portal_of_the_accounts_one_customer(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, ada = await api.user("ada@example.com", bonus=0)
    _, bob = await api.user("bob@example.com", bonus=0)

    refused = await api.data(ADD_CARD, {"token": "pm_card_visa"}, ada)
    assert refused["addPaymentMethod"] == {
        "__typename": "PaymentUnavailable",
        "message": "Cards are managed in the payment processor's customer portal",
    }
    first = await api.data(PORTAL, {"input": {}}, ada)
    second = await api.data(PORTAL, {"input": {"accountId": gid("CreditAccount", 1)}}, ada)

    assert first["createCustomerPortalSession"] == {
        "__typename": "CreateCustomerPortalSessionSuccess",
        "url": f"{stripe_standin.url}/portal/cus_test0001",
    }
    assert second == first
    assert len(stripe_standin.calls("POST", "/v1/customers")) == 1
    assert [r.params for r in stripe_standin.calls("POST", "/v1/billing_portal/sessions")] == [
        {"customer": "cus_test0001", "return_url": "https://app.example/my-credit/billing"}
    ] * 2
    before = await state(api, bob)
    others = await api.data(PORTAL, {"input": {"accountId": gid("CreditAccount", 1)}}, bob)
    assert others["createCustomerPortalSession"] == {
        "__typename": "Forbidden",
        "message": PAYING_NEEDS_ROLE,
    }
    missing = await api.data(PORTAL, {"input": {"accountId": "nonsense"}}, bob)
    assert missing["createCustomerPortalSession"] == {"__typename": "NotFound", "message": "Credit account not found"}
    assert await state(api, bob) == before
    assert len(stripe_standin.calls("POST", "/v1/billing_portal/sessions")) == 2


async def test_without_keys_the_server_starts_answers_billing_config_and_refuses_payments(
    db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn
) -> None:
    stripe_standin.reset(clock.now)
    keyless = replace(
        stripe_settings(settings, stripe_standin, "stripe"), stripe_secret_key="", stripe_webhook_secret=""
    )
    async with serve(keyless, clock) as live:  # a real start-up, lifespan and all
        api = live.api
        _, token = await api.user("ada@example.com", bonus=0)
        config = await api.data(CONFIG, token=token)
        assert config["billingConfig"]["gateway"] == "stripe"
        before = await state(api, token)

        paid = await api.data(TOP_UP, top_up("50", "t1"), token)
        portal = await api.data(PORTAL, {"input": {}}, token)
        hook = await deliver(api, stripe_standin.event("checkout.session.completed", {"id": "cs_1"}))

        off = "Payments are off: CREDITLINE_STRIPE_SECRET_KEY is not set"
        assert paid["topUp"] == {"__typename": "PaymentUnavailable", "message": off}
        assert portal["createCustomerPortalSession"] == {"__typename": "PaymentUnavailable", "message": off}
        assert (hook.status_code, hook.text) == (400, "Webhooks are off: CREDITLINE_STRIPE_WEBHOOK_SECRET is not set")
        assert await state(api, token) == before
        assert await WebhookEvent.all().count() == 0
    assert stripe_standin.requests == []


async def test_reconcile_runs_in_one_process_at_a_time(api: Api, db: Backend, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("50", "t1"), token)
    stripe_standin.pay("cs_test0001")
    api.clock.advance(timedelta(minutes=2))
    services = api.app.state.services

    async with job_lock(connections.get("default"), "reconcile") as held:
        assert held
        busy = await reconcile_pending(services)
    # SQLite too (a lock file): a `creditline sweep` beside the server does not reconcile at the same time.
    assert (busy, (await Transaction.get(id=1)).status) == (0, "PENDING")
    await reconcile_pending(services)
    assert (await Transaction.get(id=1)).status == "SUCCEEDED"
