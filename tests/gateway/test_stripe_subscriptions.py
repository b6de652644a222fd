"""Subscriptions on the stripe gateway through the real Stripe SDK, against the local stand-in: subscribe opens a
subscription-mode Checkout page, Stripe Billing's events (in any order, replayed) grant each paid period once,
failed renewals make it PAST_DUE until Stripe ends it, and cancel, resume and plan changes go through Stripe."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from billing.reconcile import reconcile_pending, renew_subscriptions
from models.credits import MICRO
from models.tables import CreditLot, Invoice, Subscription, Transaction, WebhookEvent
from resolvers.mutations.payments import PAYING_NEEDS_ROLE
from tests.support.helpers import Api, gid
from tests.support.refunds import REFUND, refund
from tests.support.stripe_standin import StripeStandIn, deliver
from tests.support.stripe_subscriptions import FIELDS, SUBSCRIBE, subscribed
from tests.support.stripe_subscriptions import api as api
from tests.support.subscriptions import subscribe_input

CHANGED = f"""__typename ... on SubscriptionSuccess {{ subscription {{ {FIELDS} }} }}
  ... on SubscriptionNotChangeable {{ message }} ... on ValidationError {{ message field }}
  ... on Error {{ message }}"""
CANCEL = f"mutation($input: CancelSubscriptionInput!) {{ cancelSubscription(input: $input) {{ {CHANGED} }} }}"
RESUME = f"mutation($input: ResumeSubscriptionInput!) {{ resumeSubscription(input: $input) {{ {CHANGED} }} }}"
CHANGE_PLAN = f"mutation($input: ChangePlanInput!) {{ changePlan(input: $input) {{ {CHANGED} }} }}"
SET_CARD = (
    "mutation($input: SetSubscriptionPaymentMethodInput!) "
    f"{{ setSubscriptionPaymentMethod(input: $input) {{ {CHANGED} }} }}"
)
ACCOUNT = f"""{{ me {{ credit {{ balance {{ total paid }} subscription {{ {FIELDS} }}
  transactions(first: 20) {{ edges {{ node {{ type status credits amount {{ amount }} failureReason
      invoice {{ number lines {{ description }} }} }} }} }}
  lots(first: 20) {{ edges {{ node {{ kind amount expiresAt }} }} }} }} }} }}"""

PERIOD_1 = ("2026-01-15T12:00:00+00:00", "2026-02-15T12:00:00+00:00")
PERIOD_2 = ("2026-02-15T12:00:00+00:00", "2026-03-15T12:00:00+00:00")
SUCCESS = "https://app.example/my-credit/billing?checkout=success&subscription=U3Vic2NyaXB0aW9uOjE%3D"


async def account(api: Api, token: str) -> Any:
    return (await api.data(ACCOUNT, token=token))["me"]["credit"]


async def counts() -> tuple[int, int, int, int, int]:
    return (
        await Subscription.all().count(),
        await Transaction.all().count(),
        await CreditLot.filter(kind="PAID").count(),
        await Invoice.all().count(),
        await WebhookEvent.filter(processed_at=None).count(),
    )


async def delivered(api: Api, *events: dict[str, Any]) -> list[str]:
    outcomes = []
    for event in events:
        response = await deliver(api, event)
        assert response.status_code == 200, response.text
        outcomes.append(response.json()["outcome"])
    return outcomes


async def active(api: Api, standin: StripeStandIn) -> str:
    token, events = await subscribed(api, standin)
    assert await delivered(api, *events.values()) == ["processed"] * 3
    return token


async def test_a_plan_without_a_stripe_price_is_listed_as_not_subscribable(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    plans = (await api.data("{ plans { id subscribable } }", token=token))["plans"]

    assert plans == [
        {"id": "starter-monthly", "subscribable": True},
        {"id": "pro-monthly", "subscribable": True},
        {"id": "pro-yearly", "subscribable": True},
        {"id": "founders", "subscribable": False},
        {"id": "gone", "subscribable": True},  # its price is refused by Stripe only when a page is opened
    ]


async def test_subscribing_opens_a_subscription_checkout_page_and_a_replay_gets_the_same_page(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    data = await api.data(SUBSCRIBE, subscribe_input(), token)

    page = f"{stripe_standin.url}/pay/cs_test0001"
    assert data["subscribe"] == {
        "__typename": "SubscribeSuccess",
        "checkoutUrl": page,
        "subscription": {
            "id": gid("Subscription", 1),
            "status": "INCOMPLETE",
            "planId": "pro-monthly",
            "nextPlanId": None,
            "currentPeriodStart": None,
            "currentPeriodEnd": None,
            "cancelAtPeriodEnd": False,
            "canceledAt": None,
            "statusReason": None,
            "nextAttemptAt": None,
            "paymentMethod": None,
        },
        "transaction": {
            "id": gid("Transaction", 1),
            "type": "SUBSCRIPTION",
            "status": "PENDING",
            "credits": "6000",
            "amount": {"amount": 5000, "currency": "USD"},
            "checkoutUrl": page,
            "invoice": None,
        },
    }
    (session,) = stripe_standin.calls("POST", "/v1/checkout/sessions")
    assert session.idempotency_key == "creditline-transaction-1"
    assert session.params == {
        "mode": "subscription",
        "customer": "cus_test0001",
        "client_reference_id": "1",
        "metadata[creditline_subscription]": "1",
        "metadata[creditline_transaction]": "1",
        "subscription_data[metadata][creditline_subscription]": "1",
        "line_items[0][price]": "price_pro_monthly",
        "line_items[0][quantity]": "1",
        "success_url": SUCCESS,
        "cancel_url": SUCCESS.replace("success", "canceled"),
    }
    assert (await Subscription.get(id=1)).gateway == "stripe"
    assert (await Transaction.get(id=1)).gateway_reference == "cs_test0001"
    assert await api.data(SUBSCRIBE, subscribe_input(), token) == data
    assert len(stripe_standin.calls("POST", "/v1/checkout/sessions")) == 1
    assert (await account(api, token))["balance"] == {"total": "0", "paid": "0"}


ORDERS = {
    "in order": ["completed", "created", "paid"],
    "paid first": ["paid", "completed", "created"],
    "subscription last": ["paid", "created", "completed"],
    "replayed": ["completed", "paid", "completed", "created", "paid", "created"],
}


@pytest.mark.parametrize("order", [*ORDERS, "shuffled"])
async def test_the_paid_checkout_activates_the_subscription_and_grants_its_credit_once_in_any_order(
    api: Api, stripe_standin: StripeStandIn, order: str
) -> None:
    token, events = await subscribed(api, stripe_standin)
    names = ORDERS.get(order) or random.Random(7).sample(["completed", "created", "paid"] * 2, 6)
    watcher = api.app.state.services.bus.subscribe(frozenset({1}))

    outcomes = await delivered(api, *(events[name] for name in names))

    assert outcomes == ["duplicate" if name in names[:i] else "processed" for i, name in enumerate(names)]
    credit = await account(api, token)
    assert credit["subscription"] == {
        "id": gid("Subscription", 1),
        "status": "ACTIVE",
        "planId": "pro-monthly",
        "nextPlanId": None,
        "currentPeriodStart": PERIOD_1[0],
        "currentPeriodEnd": PERIOD_1[1],
        "cancelAtPeriodEnd": False,
        "canceledAt": None,
        "statusReason": None,
        "nextAttemptAt": None,
        "paymentMethod": None,
    }
    assert credit["balance"] == {"total": "6000", "paid": "6000"}
    assert credit["transactions"]["edges"] == [
        {
            "node": {
                "type": "SUBSCRIPTION",
                "status": "SUCCEEDED",
                "credits": "6000",
                "amount": {"amount": 5000},
                "failureReason": None,
                "invoice": {
                    "number": "INV-000001",
                    "lines": [{"description": "Pro plan, 2026-01-15 to 2026-02-15: 6000 credits"}],
                },
            }
        }
    ]
    assert await counts() == (1, 1, 1, 1, 0)
    sub, txn = await Subscription.get(id=1), await Transaction.get(id=1)
    assert (sub.external_reference, txn.gateway_reference) == ("sub_test0001", "in_test0001")
    change = watcher.queue.get_nowait()
    assert (change.reason, change.delta) == ("SUBSCRIPTION", 6_000 * MICRO)
    assert watcher.queue.empty()
    watcher.close()


async def test_a_renewal_invoice_grants_the_next_period_once(api: Api, stripe_standin: StripeStandIn) -> None:
    token = await active(api, stripe_standin)
    api.clock.advance(timedelta(days=31))
    assert await renew_subscriptions(api.app.state.services) == 0  # Stripe renews it, not our sweep
    assert await Transaction.all().count() == 1

    invoice = stripe_standin.renew("sub_test0001")
    paid = stripe_standin.event("invoice.paid", invoice)
    updated = stripe_standin.event("customer.subscription.updated", stripe_standin.subscriptions["sub_test0001"])
    assert await delivered(api, updated, paid, paid) == ["processed", "processed", "duplicate"]
    assert await delivered(api, stripe_standin.event("invoice.paid", invoice)) == ["processed"]  # a new event id

    credit = await account(api, token)
    assert credit["subscription"]["status"] == "ACTIVE"
    assert (credit["subscription"]["currentPeriodStart"], credit["subscription"]["currentPeriodEnd"]) == PERIOD_2
    assert credit["balance"] == {"total": "12000", "paid": "12000"}
    assert [edge["node"]["invoice"]["lines"] for edge in credit["transactions"]["edges"]] == [
        [{"description": "Pro plan, 2026-02-15 to 2026-03-15: 6000 credits"}],
        [{"description": "Pro plan, 2026-01-15 to 2026-02-15: 6000 credits"}],
    ]
    renewal = await Transaction.get(id=2)
    assert (renewal.idempotency_scope, renewal.idempotency_key, renewal.gateway_reference) == (
        "stripe-invoice",
        "in_test0002",
        "in_test0002",
    )
    assert await counts() == (1, 2, 2, 2, 0)


async def test_a_failed_renewal_is_past_due_until_stripe_gives_up_and_cancels(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    api.clock.advance(timedelta(days=31))
    invoice = stripe_standin.renew("sub_test0001", paid=False)
    failed = stripe_standin.event("invoice.payment_failed", invoice)
    updated = stripe_standin.event("customer.subscription.updated", stripe_standin.subscriptions["sub_test0001"])

    assert await delivered(api, failed, updated, failed) == ["processed", "processed", "duplicate"]
    assert await delivered(api, stripe_standin.event("invoice.payment_failed", invoice)) == ["processed"]

    reason = "Stripe could not collect the payment (attempt 1), next attempt 2026-02-18 12:00 UTC"
    credit = await account(api, token)
    assert {key: credit["subscription"][key] for key in ("status", "statusReason", "nextAttemptAt")} == {
        "status": "PAST_DUE",
        "statusReason": f"The renewal payment failed: {reason}",
        "nextAttemptAt": "2026-02-18T12:00:00+00:00",
    }
    assert credit["transactions"]["edges"][0]["node"] == {
        "type": "SUBSCRIPTION",
        "status": "FAILED",
        "credits": "6000",
        "amount": {"amount": 5000},
        "failureReason": reason,
        "invoice": None,
    }
    assert credit["balance"]["total"] == "6000"

    api.clock.advance(timedelta(days=3))
    last = stripe_standin.event("invoice.payment_failed", stripe_standin.retry("in_test0002", paid=False, last=True))
    ended = stripe_standin.event("customer.subscription.deleted", stripe_standin.end("sub_test0001"))
    assert await delivered(api, ended, last) == ["processed", "processed"]

    credit = await account(api, token)
    assert {key: credit["subscription"][key] for key in ("status", "statusReason", "canceledAt")} == {
        "status": "CANCELED",
        "statusReason": "Canceled after failed payments",
        "canceledAt": "2026-02-18T12:00:00+00:00",
    }
    assert [(t.status, t.failure_reason) for t in await Transaction.all().order_by("id")] == [
        ("SUCCEEDED", None),
        ("FAILED", reason),
        ("FAILED", "Stripe could not collect the payment (attempt 2), no further attempt scheduled"),
    ]
    assert credit["balance"]["total"] == "6000"
    assert await counts() == (1, 3, 1, 1, 0)


async def test_a_retry_that_pays_makes_it_active_again_and_a_late_failure_event_changes_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    api.clock.advance(timedelta(days=31))
    failed = stripe_standin.event("invoice.payment_failed", stripe_standin.renew("sub_test0001", paid=False))
    paid = stripe_standin.event("invoice.paid", stripe_standin.retry("in_test0002", paid=True))

    assert await delivered(api, paid, failed) == ["processed", "processed"]

    credit = await account(api, token)
    assert {key: credit["subscription"][key] for key in ("status", "statusReason", "currentPeriodEnd")} == {
        "status": "ACTIVE",
        "statusReason": None,
        "currentPeriodEnd": PERIOD_2[1],
    }
    assert credit["balance"]["total"] == "12000"
    assert [t.status for t in await Transaction.all().order_by("id")] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]


async def test_cancel_at_period_end_resume_and_change_plan_go_through_stripe_and_show_at_once(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    stale = stripe_standin.event("customer.subscription.updated", dict(stripe_standin.subscriptions["sub_test0001"]))

    canceled = await api.data(CANCEL, {"input": {}}, token)
    assert canceled["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    assert canceled["cancelSubscription"]["subscription"]["status"] == "ACTIVE"
    resumed = await api.data(RESUME, {"input": {}}, token)
    assert resumed["resumeSubscription"]["subscription"]["cancelAtPeriodEnd"] is False
    again = await api.data(CANCEL, {"input": {}}, token)
    assert again["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    assert [r.params for r in stripe_standin.calls("POST", "/v1/subscriptions/sub_test0001")] == [
        {"cancel_at_period_end": "true"},
        {"cancel_at_period_end": "false"},
        {"cancel_at_period_end": "true"},
    ]
    # An event from before the changes: the subscription is read from Stripe, so it does not undo them.
    assert await delivered(api, stale) == ["processed"]
    assert (await Subscription.get(id=1)).cancel_at_period_end is True
    await api.data(RESUME, {"input": {}}, token)

    changed = await api.data(CHANGE_PLAN, {"input": {"planId": "starter-monthly"}}, token)

    assert changed["changePlan"]["__typename"] == "SubscriptionSuccess"
    assert {key: changed["changePlan"]["subscription"][key] for key in ("status", "planId", "nextPlanId")} == {
        "status": "ACTIVE",
        "planId": "pro-monthly",
        "nextPlanId": "starter-monthly",
    }
    assert stripe_standin.calls("POST", "/v1/subscriptions/sub_test0001")[-1].params == {
        "items[0][id]": "si_test0001",
        "items[0][price]": "price_starter_monthly",
        "proration_behavior": "none",
    }
    api.clock.advance(timedelta(days=31))
    renewal = stripe_standin.event("invoice.paid", stripe_standin.renew("sub_test0001"))
    assert await delivered(api, renewal) == ["processed"]
    credit = await account(api, token)
    assert (credit["subscription"]["planId"], credit["subscription"]["nextPlanId"]) == ("starter-monthly", None)
    assert credit["transactions"]["edges"][0]["node"]["credits"] == "1100"
    assert credit["transactions"]["edges"][0]["node"]["amount"] == {"amount": 1000}
    assert credit["balance"]["total"] == "7100"

    now = await api.data(CANCEL, {"input": {"atPeriodEnd": False}}, token)

    assert now["cancelSubscription"]["subscription"]["status"] == "CANCELED"
    assert now["cancelSubscription"]["subscription"]["statusReason"] == "Canceled by the customer"
    assert len(stripe_standin.calls("DELETE", "/v1/subscriptions/sub_test0001")) == 1
    assert stripe_standin.subscriptions["sub_test0001"]["status"] == "canceled"
    deleted = stripe_standin.event("customer.subscription.deleted", stripe_standin.subscriptions["sub_test0001"])
    assert await delivered(api, deleted) == ["processed"]
    assert (await Subscription.get(id=1)).status_reason == "Canceled by the customer"


async def test_a_subscription_whose_checkout_is_not_finished_is_dropped_and_its_page_closed(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(SUBSCRIBE, subscribe_input(), token)

    data = await api.data(CANCEL, {"input": {}}, token)

    assert {key: data["cancelSubscription"]["subscription"][key] for key in ("status", "statusReason")} == {
        "status": "CANCELED",
        "statusReason": "Canceled by the customer",
    }
    assert len(stripe_standin.calls("POST", "/v1/checkout/sessions/cs_test0001/expire")) == 1
    assert stripe_standin.sessions["cs_test0001"]["status"] == "expired"
    txn = await Transaction.get(id=1)
    assert (txn.status, txn.failure_reason) == ("FAILED", "Canceled before payment")
    expired = stripe_standin.event("checkout.session.expired", stripe_standin.sessions["cs_test0001"])
    assert await delivered(api, expired) == ["processed"]
    fresh = await api.data(SUBSCRIBE, subscribe_input(key="s2"), token)
    assert fresh["subscribe"]["subscription"]["status"] == "INCOMPLETE"
    assert await counts() == (2, 2, 0, 0, 0)


async def test_a_paid_checkout_cannot_be_dropped(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(SUBSCRIBE, subscribe_input(), token)
    stripe_standin.pay("cs_test0001")  # paid; the webhooks are still on their way

    data = await api.data(CANCEL, {"input": {}}, token)

    assert data["cancelSubscription"] == {
        "__typename": "SubscriptionNotChangeable",
        "message": "The checkout was completed: the payment is being confirmed",
    }
    assert ((await Subscription.get(id=1)).status, (await Transaction.get(id=1)).status) == ("INCOMPLETE", "PENDING")


async def test_an_expired_checkout_fails_the_first_payment_and_cancels(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(SUBSCRIBE, subscribe_input(), token)

    expired = stripe_standin.event("checkout.session.expired", stripe_standin.expire("cs_test0001"))
    assert await delivered(api, expired, expired) == ["processed", "duplicate"]

    sub, txn = await Subscription.get(id=1), await Transaction.get(id=1)
    reason = "The checkout page expired before payment"
    assert (sub.status, sub.status_reason) == ("CANCELED", f"The first payment failed: {reason}")
    assert (txn.status, txn.failure_reason) == ("FAILED", reason)
    replay = await api.data(SUBSCRIBE, subscribe_input(), token)
    assert replay["subscribe"] == {
        "__typename": "PaymentDeclined",
        "message": f"The payment failed: {reason}",
        "reason": reason,
        "transaction": {"status": "FAILED", "failureReason": reason},
    }


async def test_stripe_refusing_the_checkout_fails_the_payment_and_cancels_the_subscription(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    data = await api.data(SUBSCRIBE, subscribe_input("gone"), token)

    reason = "No such price: 'price_gone'"
    assert data["subscribe"] == {
        "__typename": "PaymentDeclined",
        "message": f"The payment failed: {reason}",
        "reason": reason,
        "transaction": {"status": "FAILED", "failureReason": reason},
    }
    sub = await Subscription.get(id=1)
    assert (sub.status, sub.status_reason) == ("CANCELED", f"The first payment failed: {reason}")
    assert (await account(api, token))["balance"]["total"] == "0"


async def test_reconcile_finishes_a_paid_checkout_whose_webhooks_were_missed(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, ada = await api.user("ada@example.com", bonus=0)
    _, bob = await api.user("bob@example.com", bonus=0)
    await api.data(SUBSCRIBE, subscribe_input(), ada)
    await api.data(SUBSCRIBE, subscribe_input("pro-yearly"), bob)
    stripe_standin.pay("cs_test0001")
    stripe_standin.expire("cs_test0002")
    api.clock.advance(timedelta(minutes=2))

    assert await reconcile_pending(api.app.state.services) == 2
    assert await reconcile_pending(api.app.state.services) == 0

    credit = await account(api, ada)
    assert credit["subscription"]["status"] == "ACTIVE"
    assert (credit["subscription"]["currentPeriodStart"], credit["subscription"]["currentPeriodEnd"]) == PERIOD_1
    assert credit["balance"]["total"] == "6000"
    assert (await Subscription.get(id=1)).external_reference == "sub_test0001"
    assert [r.params for r in stripe_standin.calls("GET", "/v1/invoices")] == [
        {"subscription": "sub_test0001", "status": "paid", "limit": "100"}
    ]
    bobs = await Subscription.get(id=2)
    assert (bobs.status, bobs.status_reason) == (
        "CANCELED",
        "The first payment failed: The checkout page expired before payment",
    )
    # The webhooks arrive late: nothing is granted twice.
    session = stripe_standin.sessions["cs_test0001"]
    late = [
        stripe_standin.event("invoice.paid", stripe_standin.invoice_of("sub_test0001")),
        stripe_standin.event("checkout.session.completed", session),
    ]
    assert await delivered(api, *late) == ["processed", "processed"]
    assert await counts() == (2, 2, 1, 1, 0)


async def test_a_yearly_plan_grants_credit_that_expires_at_the_end_of_the_period(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(SUBSCRIBE, subscribe_input("pro-yearly"), token)
    stripe_standin.pay("cs_test0001")

    assert await delivered(api, stripe_standin.event("invoice.paid", stripe_standin.invoice_of("sub_test0001"))) == [
        "processed"
    ]

    credit = await account(api, token)
    assert credit["lots"]["edges"] == [
        {"node": {"kind": "PAID", "amount": "75000", "expiresAt": "2027-01-15T12:00:00+00:00"}}
    ]
    assert credit["subscription"]["currentPeriodEnd"] == "2027-01-15T12:00:00+00:00"


async def test_events_for_stripe_subscriptions_that_are_not_ours_change_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    foreign = dict(stripe_standin.invoice_of("sub_test0001"))
    foreign.update(
        id="in_foreign",
        billing_reason="subscription_cycle",
        parent={"type": "subscription_details", "subscription_details": {"subscription": "sub_x", "metadata": {}}},
    )
    relinked = dict(foreign, id="in_relinked")
    relinked["parent"] = {
        "type": "subscription_details",
        "subscription_details": {"subscription": "sub_x", "metadata": {"creditline_subscription": "1"}},
    }
    before = await account(api, token)

    outcomes = await delivered(
        api,
        stripe_standin.event("invoice.paid", foreign),
        stripe_standin.event("invoice.paid", relinked),
        stripe_standin.event("customer.subscription.updated", {"id": "sub_x", "object": "subscription"}),
    )

    assert outcomes == ["processed"] * 3
    assert await account(api, token) == before
    assert stripe_standin.calls("GET", "/v1/subscriptions/sub_x") == []


async def test_an_invoice_for_a_subscription_not_written_yet_waits_for_it(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token, events = await subscribed(api, stripe_standin)
    await Subscription.filter(id=1).update(external_reference=None)
    early = dict(events["paid"]["data"]["object"])
    early["parent"]["subscription_details"]["metadata"] = {"creditline_subscription": "2"}
    early_event = stripe_standin.event("invoice.paid", early)

    assert await delivered(api, early_event) == ["deferred"]
    assert (await WebhookEvent.get(id=early_event["id"])).processed_at is None


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            subscribe_input("founders"),
            {
                "__typename": "ValidationError",
                "message": "The plan founders has no Stripe price: it cannot be subscribed to on the stripe gateway",
                "field": "planId",
            },
        ),
        (
            subscribe_input(paymentMethodId=gid("PaymentMethod", 1)),
            {
                "__typename": "ValidationError",
                "message": "Give no paymentMethodId: the card is entered at checkout",
                "field": "paymentMethodId",
            },
        ),
        (
            subscribe_input("platinum"),
            {
                "__typename": "ValidationError",
                "message": "Unknown plan 'platinum': choose one of starter-monthly, pro-monthly, pro-yearly,"
                " founders, gone",
                "field": "planId",
            },
        ),
        (subscribe_input(accountId=gid("CreditAccount", 2)), {"__typename": "Forbidden", "message": PAYING_NEEDS_ROLE}),
    ],
)
async def test_bad_subscribe_input_is_refused_and_changes_nothing(
    api: Api, stripe_standin: StripeStandIn, variables: dict[str, Any], expected: dict[str, Any]
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.user("bob@example.com", bonus=0)

    data = await api.data(SUBSCRIBE, variables, token)

    assert data["subscribe"] == expected
    assert await counts() == (0, 0, 0, 0, 0)
    assert stripe_standin.requests == []


async def test_changes_that_stripe_cannot_bill_or_that_are_not_yours_are_refused(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    _, bob = await api.user("bob@example.com", bonus=0)
    requests = len(stripe_standin.requests)
    before = await account(api, token)

    founders = await api.data(CHANGE_PLAN, {"input": {"planId": "founders"}}, token)
    card = await api.data(SET_CARD, {"input": {"paymentMethodId": gid("PaymentMethod", 1)}}, token)
    others = await api.data(CANCEL, {"input": {"accountId": gid("CreditAccount", 1)}}, bob)
    none = await api.data(CANCEL, {"input": {}}, bob)

    assert founders["changePlan"] == {
        "__typename": "ValidationError",
        "message": "The plan founders has no Stripe price: it cannot be billed on the stripe gateway",
        "field": "planId",
    }
    assert card["setSubscriptionPaymentMethod"] == {
        "__typename": "PaymentUnavailable",
        "message": "Cards are managed in the payment processor's customer portal",
    }
    assert others["cancelSubscription"] == {"__typename": "Forbidden", "message": PAYING_NEEDS_ROLE}
    assert none["cancelSubscription"] == {"__typename": "NotFound", "message": "The account has no active subscription"}
    assert await account(api, token) == before
    assert len(stripe_standin.requests) == requests


async def test_a_stripe_refusal_of_a_change_is_shown_and_changes_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    stripe_standin.subscriptions["sub_test0001"]["status"] = "canceled"  # ended at Stripe; the event is on its way
    before = await account(api, token)

    data = await api.data(CANCEL, {"input": {}}, token)

    assert data["cancelSubscription"] == {
        "__typename": "SubscriptionNotChangeable",
        "message": "Stripe refused the change: A canceled subscription can only update its cancellation_details"
        " and metadata.",
    }
    assert await account(api, token) == before


async def test_a_subscription_payment_is_refunded_through_the_payment_intent_that_paid_its_invoice(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token = await active(api, stripe_standin)
    admin = await api.admin()
    (payment,) = stripe_standin.invoice_payments.values()
    intent = payment["payment"]["payment_intent"]

    data = await api.data(REFUND, refund(gid("Transaction", 1), amount=2500), admin)

    assert data["refundPayment"]["refund"]["credits"] == "3000"
    assert data["refundPayment"]["balance"]["total"] == "3000"
    assert [r.params for r in stripe_standin.calls("GET", "/v1/invoice_payments")] == [
        {"invoice": "in_test0001", "status": "paid"}
    ]
    (asked,) = stripe_standin.calls("POST", "/v1/refunds")
    assert (asked.params, asked.idempotency_key) == (
        {"payment_intent": intent, "amount": "2500"},
        "creditline-refund-1",
    )
    assert (await account(api, token))["subscription"]["status"] == "ACTIVE"
