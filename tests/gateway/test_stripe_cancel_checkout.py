"""cancelCheckout on the stripe gateway, through the real Stripe SDK against the local stand-in: a top-up whose
Checkout page the customer left is closed at Stripe, then FAILED with no credit; a page already paid is not
canceled; nothing changes when Stripe cannot be reached or there is nothing to cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from creditline.clock import Clock
from creditline.settings import Settings
from gateway.base import HostedGateway
from models import organizations, portal
from models.tables import CreditAccount, MemberRole, Transaction
from tests.support.backends import Backend
from tests.support.events import account_data, emitted
from tests.support.helpers import BALANCE, Api, gid
from tests.support.payments import TOP_UP, top_up
from tests.support.snapshots import changed, snapshot
from tests.support.stripe_standin import StripeStandIn, deliver, stripe_api
from tests.support.stripe_subscriptions import PLANS, SUBSCRIBE
from tests.support.subscriptions import subscribe_input

CANCEL = """mutation($id: ID!) { cancelCheckout(input: {transactionId: $id}) {
  __typename
  ... on CancelCheckoutSuccess { transaction { id type status failureReason checkoutUrl invoice { number } } }
  ... on CheckoutCompleted { message transaction { id status failureReason checkoutUrl } }
  ... on ValidationError { message field }
  ... on Error { message } } }"""
TRANSACTIONS = "{ me { credit { transactions { edges { node { status checkoutUrl failureReason } } } } } }"
TXN = gid("Transaction", 1)
PAGE = "cs_test0001"
EXPIRE = f"/v1/checkout/sessions/{PAGE}/expire"
CANCELED = {
    "__typename": "CancelCheckoutSuccess",
    "transaction": {
        "id": TXN,
        "type": "TOP_UP",
        "status": "FAILED",
        "failureReason": "The checkout was canceled",
        "checkoutUrl": None,
        "invoice": None,
    },
}


@pytest.fixture
async def api(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, "stripe") as api:
        api.app.state.services.plans = PLANS
        yield api


async def pending_top_up(api: Api, email: str = "ada@example.com") -> str:
    """A user who opened the Checkout page of a 50-credit top-up and left it unpaid; their token."""
    _, token = await api.user(email, bonus=0)
    opened = await api.data(TOP_UP, top_up("50", "t1"), token)
    assert opened["topUp"]["transaction"]["status"] == "PENDING"
    return token


async def cancel(api: Api, token: str, transaction: str = TXN) -> dict[str, Any]:
    answer: dict[str, Any] = (await api.data(CANCEL, {"id": transaction}, token))["cancelCheckout"]
    return answer


async def paid_balance(api: Api, token: str) -> str:
    balance: str = (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"]
    return balance


def failed_event(reason: str) -> tuple[str, dict[str, Any]]:
    return (
        "payment.failed",
        {
            "account": account_data(1, 1),
            "transaction": {
                "id": TXN,
                "type": "TOP_UP",
                "status": "FAILED",
                "credits": "50",
                "amount": 50,
                "currency": "USD",
                "failureReason": reason,
                "subscriptionId": None,
                "periodStart": None,
                "periodEnd": None,
                "completedAt": "2026-01-15T12:00:00Z",
            },
        },
    )


async def test_a_canceled_checkout_is_closed_at_stripe_and_fails_the_top_up_without_credit(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await pending_top_up(api)

    answer = await cancel(api, token)

    assert answer == CANCELED
    assert stripe_standin.sessions[PAGE]["status"] == "expired"
    assert len(stripe_standin.calls("POST", EXPIRE)) == 1
    assert (await api.data(TRANSACTIONS, token=token))["me"]["credit"]["transactions"]["edges"] == [
        {"node": {"status": "FAILED", "checkoutUrl": None, "failureReason": "The checkout was canceled"}}
    ]
    assert await paid_balance(api, token) == "0"
    txn = await Transaction.get(id=1)
    assert txn.gateway_reference == PAGE  # the expired webhook that follows still finds it
    assert await emitted() == [failed_event("The checkout was canceled")]
    # The top-up's replay answers the canceled transaction, as for any failed payment.
    replay = await api.data(TOP_UP, top_up("50", "t1"), token)
    assert replay["topUp"]["__typename"] == "PaymentDeclined"
    assert replay["topUp"]["reason"] == "The checkout was canceled"


async def test_canceling_again_answers_the_same_canceled_top_up_and_asks_stripe_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await pending_top_up(api)
    await cancel(api, token)
    before, requests = await snapshot(), len(stripe_standin.requests)

    again = await cancel(api, token)

    assert again == CANCELED
    assert changed(before, await snapshot()) == set()
    assert len(stripe_standin.requests) == requests
    assert len(await emitted("payment.failed")) == 1


async def test_the_expired_webhook_stripe_sends_after_a_cancel_changes_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await pending_top_up(api)
    await cancel(api, token)
    before = await snapshot()

    response = await deliver(api, stripe_standin.event("checkout.session.expired", dict(stripe_standin.sessions[PAGE])))

    assert (response.status_code, response.json()["outcome"]) == (200, "processed")
    assert changed(before, await snapshot()) == {"webhook_events"}  # stored as received, and nothing else
    txn = await Transaction.get(id=1)
    assert (txn.status, txn.failure_reason) == ("FAILED", "The checkout was canceled")
    assert await paid_balance(api, token) == "0"
    assert len(await emitted("payment.failed")) == 1
    assert await cancel(api, token) == CANCELED


async def test_a_checkout_paid_at_stripe_before_its_webhook_is_being_confirmed_and_not_canceled(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await pending_top_up(api)
    paid = stripe_standin.pay(PAGE)  # the customer paid; Stripe's webhook is on its way
    before = await snapshot()

    answer = await cancel(api, token)

    assert answer == {
        "__typename": "CheckoutCompleted",
        "message": "The checkout was completed: the payment is being confirmed",
        "transaction": {
            "id": TXN,
            "status": "PENDING",
            "failureReason": None,
            "checkoutUrl": f"{stripe_standin.url}/pay/{PAGE}",
        },
    }
    assert changed(before, await snapshot()) == set()
    assert stripe_standin.sessions[PAGE]["status"] == "complete"
    # The webhook then grants the credit as if no cancel had been asked for; canceling now is refused.
    assert (await deliver(api, stripe_standin.event("checkout.session.completed", paid))).status_code == 200
    assert await paid_balance(api, token) == "50"
    assert await cancel(api, token) == {
        "__typename": "ValidationError",
        "message": "The top-up is SUCCEEDED: only a PENDING one can be canceled",
        "field": "transactionId",
    }


async def test_a_webhook_that_completes_the_top_up_while_the_page_is_closed_is_answered_as_it_settled_it(
    api: Api, stripe_standin: StripeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await pending_top_up(api)
    gateway = api.app.state.services.gateway
    assert isinstance(gateway, HostedGateway)
    expire = gateway.expire_checkout

    async def paid_first(reference: str) -> None:
        # The customer pays in another tab and Stripe's webhook lands just before our request to close the page.
        event = stripe_standin.event("checkout.session.completed", stripe_standin.pay(reference))
        assert (await deliver(api, event)).json()["outcome"] == "processed"
        await expire(reference)  # Stripe refuses: the session is complete

    monkeypatch.setattr(gateway, "expire_checkout", paid_first)

    answer = await cancel(api, token)

    assert answer == {
        "__typename": "CancelCheckoutSuccess",
        "transaction": {
            "id": TXN,
            "type": "TOP_UP",
            "status": "SUCCEEDED",
            "failureReason": None,
            "checkoutUrl": None,
            "invoice": {"number": "INV-000001"},
        },
    }
    assert await paid_balance(api, token) == "50"
    assert [kind for kind, _ in await emitted()] == ["payment.succeeded", "invoice.created"]


async def test_a_page_closed_at_stripe_whose_cancel_was_not_recorded_is_canceled_when_asked_again(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    # A cancel that closed the page and died before writing, or Stripe's own expiry whose webhook is late: Stripe
    # refuses to close a closed page, and says it is expired.
    token = await pending_top_up(api)
    stripe_standin.expire(PAGE)

    answer = await cancel(api, token)

    assert answer == CANCELED
    assert len(stripe_standin.calls("POST", EXPIRE)) == 1
    assert len(stripe_standin.calls("GET", f"/v1/checkout/sessions/{PAGE}")) == 1
    assert await paid_balance(api, token) == "0"


async def test_when_stripe_cannot_be_reached_nothing_is_canceled_and_asking_again_does_it(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await pending_top_up(api)
    stripe_standin.outage[EXPIRE] = 1
    before = await snapshot()

    answer = await cancel(api, token)

    assert answer == {
        "__typename": "PaymentUnavailable",
        "message": "Nothing was canceled (Stripe could not be reached: Stripe is briefly unavailable): try again",
    }
    assert changed(before, await snapshot()) == set()
    assert stripe_standin.sessions[PAGE]["status"] == "open"
    assert await cancel(api, token) == CANCELED


async def test_another_users_checkout_is_refused_and_an_unknown_one_is_not_found(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    await pending_top_up(api)
    _, eve = await api.user("eve@example.com", bonus=0)
    before, requests = await snapshot(), len(stripe_standin.requests)

    refused = await cancel(api, eve)
    unknown = await cancel(api, eve, gid("Transaction", 99))
    not_a_transaction = await cancel(api, eve, gid("CreditAccount", 1))

    assert refused == {
        "__typename": "Forbidden",
        "message": "Paying for this account needs its owner, or the BILLING or OWNER role in its organization",
    }
    assert unknown == not_a_transaction == {"__typename": "NotFound", "message": "Transaction not found"}
    assert changed(before, await snapshot()) == set()
    assert len(stripe_standin.requests) == requests


async def test_whoever_may_top_up_a_pool_may_cancel_its_checkout_and_a_plain_member_may_not(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    owner, owner_token = await api.user("ada@example.com", bonus=0)
    billing, billing_token = await api.user("bill@example.com", bonus=0)
    member, member_token = await api.user("bob@example.com", bonus=0)
    now = api.clock.now()
    acme = await organizations.create("Acme", owner, now)
    await organizations.add_member(acme.id, billing, [MemberRole.BILLING], now)
    await organizations.add_member(acme.id, member, [MemberRole.MEMBER], now)
    pool = await organizations.enable_pool(acme.id, now)
    opened = await api.data(TOP_UP, top_up("50", "p1", accountId=gid("CreditAccount", pool.id)), owner_token)
    transaction = opened["topUp"]["transaction"]["id"]

    refused = await cancel(api, member_token, transaction)
    done = await cancel(api, billing_token, transaction)

    assert refused["__typename"] == "Forbidden"
    assert done["__typename"] == "CancelCheckoutSuccess"
    assert done["transaction"]["status"] == "FAILED"


async def test_a_portal_session_cancels_the_checkout_of_its_own_account(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    # The My Credit page, back from Checkout's cancel_url (?checkout=canceled&transaction=<id>), drops the page.
    await pending_top_up(api)
    account = await CreditAccount.get(user_id=1)
    code, _ = await portal.mint_code(account.id, created_by="test", now=api.clock.now(), lifetime=timedelta(minutes=5))
    session = (await api.client.post("/portal/session", json={"code": code})).json()["token"]

    assert await cancel(api, session) == CANCELED


async def test_what_has_no_open_checkout_is_a_validation_error_and_changes_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    stripe_standin.outage["/v1/checkout/sessions"] = 1  # the page is not opened: the top-up stays PENDING
    unopened = await api.data(TOP_UP, top_up("50", "t1"), token)
    assert unopened["topUp"]["__typename"] == "PaymentUnavailable"
    opened = await api.data(SUBSCRIBE, subscribe_input(), token)  # a subscription's first period, on its page
    first_period = opened["subscribe"]["transaction"]["id"]
    await api.data(TOP_UP, top_up("50", "t2"), token)
    event = stripe_standin.event("checkout.session.completed", stripe_standin.pay("cs_test0002"))
    assert (await deliver(api, event)).status_code == 200  # the second top-up is paid
    before, requests = await snapshot(), len(stripe_standin.requests)

    answers = [await cancel(api, token, gid("Transaction", pk)) for pk in (1, 3)]
    answers.append(await cancel(api, token, first_period))

    assert [(answer["__typename"], answer["message"], answer["field"]) for answer in answers] == [
        (
            "ValidationError",
            "The top-up's checkout page is not open yet: send the same topUp again to get it",
            "transactionId",
        ),
        ("ValidationError", "The top-up is SUCCEEDED: only a PENDING one can be canceled", "transactionId"),
        (
            "ValidationError",
            "Only a top-up's checkout can be canceled; this is a SUBSCRIPTION payment: cancel the subscription"
            " with cancelSubscription",
            "transactionId",
        ),
    ]
    assert changed(before, await snapshot()) == set()
    assert len(stripe_standin.requests) == requests
