"""billing/subscription_events.py without HTTP or GraphQL, through billing/webhook_events.py ``receive``: Stripe
Billing's events, built here as the gateway hands them over, grant each paid period once, make a subscription
PAST_DUE once per failed attempt, change nothing for a Stripe subscription that is not ours, and wait for our
rows when they come first. The gateway behind them is the stripe one, against the stand-in: every request the
handlers make to the processor is seen."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from billing import subscriptions as billing_subscriptions
from billing.payments import subscription_billing
from billing.webhook_events import Outcome, Receipt, context_for, receive, retry_unprocessed
from creditline.clock import Clock
from creditline.events import InProcessBus
from creditline.gateways import gateway_for
from creditline.services import Services
from creditline.settings import Settings
from gateway.base import GatewayEvent
from models import ledger, payments, subscriptions
from models.credits import MICRO
from models.ids import encode_id
from models.ledger import IdempotencyKey
from models.tables import (
    CreditAccount,
    CreditLot,
    Invoice,
    Subscription,
    SubscriptionStatus,
    Transaction,
    TransactionStatus,
    WebhookEvent,
)
from tests.support.backends import T0, Backend
from tests.support.events import balance_changes, emitted
from tests.support.snapshots import changed, snapshot
from tests.support.stripe_standin import StripeStandIn, stripe_settings
from tests.support.stripe_subscriptions import PLANS

PERIOD_1 = (T0, datetime(2026, 2, 15, 12, tzinfo=T0.tzinfo))
PERIOD_2 = (PERIOD_1[1], datetime(2026, 3, 15, 12, tzinfo=T0.tzinfo))
RETRY_AT = PERIOD_2[0] + timedelta(days=3)


@pytest.fixture
async def services(
    db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn
) -> AsyncIterator[Services]:
    stripe_standin.reset(clock.now)
    services = Services(
        settings=stripe_settings(settings, stripe_standin, "stripe"), clock=clock, bus=InProcessBus(), plans=PLANS
    )
    services.gateway = gateway_for(services.settings)
    try:
        yield services
    finally:
        await services.gateway.close()


async def account_of(email: str) -> int:
    user_id = await ledger.create_user(email, signup_bonus=0, bonus_lifetime=timedelta(days=30), now=T0)
    return int((await CreditAccount.get(user_id=user_id)).id)


async def incomplete(services: Services, account_id: int, page: str | None = None) -> tuple[Subscription, Transaction]:
    """A Pro subscription on the stripe gateway as ``subscribe`` writes it: INCOMPLETE, its first period PENDING
    (on the Checkout page ``page``, once opened)."""
    plan = services.plans.get("pro-monthly")
    assert plan is not None
    sub, first, _ = await subscriptions.start(
        account_id,
        plan=plan,
        billing=subscription_billing(services),
        gateway="stripe",
        payment_method_id=None,
        card_reference=None,
        idem=IdempotencyKey.for_request(f"account:{account_id}", "s1", "subscribe", {"planId": plan.id}),
        now=T0,
    )
    if page is not None:
        first = await payments.store_checkout_page(first.id, url=f"https://checkout.example/{page}", reference=page)
    return sub, first


def stamp(moment: datetime) -> int:
    return int(moment.timestamp())


def invoice(
    invoice_id: str,
    *,
    subscription: str = "sub_1",
    ours: int | None = 1,
    reason: str = "subscription_create",
    paid: bool = True,
    period: tuple[datetime, datetime] = PERIOD_1,
    price: str = "price_pro_monthly",
    amount: int = 5_000,
    attempt: int = 1,
    next_attempt: datetime | None = None,
) -> dict[str, Any]:
    """A Stripe Invoice of one period of ``subscription`` (its metadata naming our subscription ``ours``)."""
    return {
        "id": invoice_id,
        "object": "invoice",
        "status": "paid" if paid else "open",
        "billing_reason": reason,
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "currency": "usd",
        "attempt_count": attempt,
        "next_payment_attempt": None if next_attempt is None else stamp(next_attempt),
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "subscription": subscription,
                "metadata": {} if ours is None else {"creditline_subscription": str(ours)},
            },
        },
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": f"il_{invoice_id}",
                    "object": "line_item",
                    "period": {"start": stamp(period[0]), "end": stamp(period[1])},
                    "pricing": {"type": "price_details", "price_details": {"price": price}},
                    "parent": {"type": "subscription_item_details"},
                }
            ],
        },
    }


def session(session_id: str, *, subscription: str | None, ours: int | None = 1) -> dict[str, Any]:
    """A subscription-mode Checkout Session (completed when it made ``subscription``)."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": "subscription",
        "status": "expired" if subscription is None else "complete",
        "subscription": subscription,
        "metadata": {} if ours is None else {"creditline_subscription": str(ours)},
    }


def event(event_id: str, event_type: str, obj: dict[str, Any]) -> GatewayEvent:
    payload = {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}
    return GatewayEvent(event_id, event_type, T0, obj, json.dumps(payload))


async def delivered(services: Services, gateway_event: GatewayEvent) -> Receipt:
    return await receive(context_for(services), gateway_event)


async def paid_credit(services: Services, account_id: int) -> int:
    return (await ledger.read_balances([account_id], services.clock.now()))[account_id].paid


async def active(services: Services, account_id: int) -> Subscription:
    """Ours linked to Stripe's sub_1, its first period paid (invoice in_1)."""
    sub, _ = await incomplete(services, account_id)
    receipt = await delivered(services, event("evt_paid_1", "invoice.paid", invoice("in_1", ours=sub.id)))
    assert receipt.outcome is Outcome.PROCESSED
    paid = await Subscription.get(id=sub.id)
    assert (paid.status, paid.external_reference) == (SubscriptionStatus.ACTIVE, "sub_1")
    return paid


async def test_invoice_paid_grants_the_first_period_once(services: Services, stripe_standin: StripeStandIn) -> None:
    account = await account_of("ada@example.com")
    sub, first = await incomplete(services, account, page="cs_1")
    paid = invoice("in_1", ours=sub.id)

    receipt = await delivered(services, event("evt_1", "invoice.paid", paid))

    assert receipt.outcome is Outcome.PROCESSED
    assert [(c.account_id, c.reason, c.delta) for c in balance_changes(receipt.changes)] == [
        (account, "SUBSCRIPTION", 6_000 * MICRO)
    ]
    done = await Subscription.get(id=sub.id)
    assert (done.status, done.external_reference, done.current_period_start, done.current_period_end) == (
        SubscriptionStatus.ACTIVE,
        "sub_1",
        *PERIOD_1,
    )
    txn = await Transaction.get(id=first.id)
    assert (txn.status, txn.gateway_reference, txn.period_start, txn.period_end, txn.amount) == (
        TransactionStatus.SUCCEEDED,
        "in_1",
        *PERIOD_1,
        5_000,
    )
    lots = await CreditLot.filter(account_id=account).values_list("kind", "amount", "remaining")
    assert lots == [("PAID", 6_000 * MICRO, 6_000 * MICRO)]
    assert await Invoice.filter(transaction_id=first.id).count() == 1
    assert await paid_credit(services, account) == 6_000 * MICRO

    before = await snapshot()
    redelivered = await delivered(services, event("evt_1", "invoice.paid", paid))
    assert (redelivered.outcome, redelivered.changes) == (Outcome.DUPLICATE, ())
    assert await snapshot() == before
    # Stripe sends another event about the same invoice (invoice.payment_succeeded's twin): nothing more.
    again = await delivered(services, event("evt_2", "invoice.paid", paid))
    assert (again.outcome, again.changes) == (Outcome.PROCESSED, ())
    assert changed(before, await snapshot()) == {"webhook_events"}
    assert stripe_standin.requests == []


async def test_invoice_paid_grants_each_renewal_once_under_its_invoice(services: Services) -> None:
    account = await account_of("ada@example.com")
    sub = await active(services, account)
    services.clock.advance(PERIOD_2[0] - T0)
    renewal = invoice("in_2", ours=sub.id, reason="subscription_cycle", period=PERIOD_2)

    receipt = await delivered(services, event("evt_2", "invoice.paid", renewal))
    before = await snapshot()
    again = await delivered(services, event("evt_3", "invoice.paid", renewal))

    assert [c.delta for c in balance_changes(receipt.changes)] == [6_000 * MICRO]
    assert (again.outcome, again.changes) == (Outcome.PROCESSED, ())
    assert changed(before, await snapshot()) == {"webhook_events"}
    renewed = await Subscription.get(id=sub.id)
    assert (renewed.status, renewed.current_period_start, renewed.current_period_end) == (
        SubscriptionStatus.ACTIVE,
        *PERIOD_2,
    )
    txn = await Transaction.filter(subscription_id=sub.id).order_by("-id").first()
    assert txn is not None
    assert (txn.status, txn.idempotency_scope, txn.idempotency_key, txn.gateway_reference, txn.credits) == (
        TransactionStatus.SUCCEEDED,
        "stripe-invoice",
        "in_2",
        "in_2",
        6_000 * MICRO,
    )
    assert await paid_credit(services, account) == 12_000 * MICRO
    assert await Invoice.all().count() == 2
    ((_, renewed_event),) = await emitted("subscription.renewed")
    assert renewed_event["transactionId"] == encode_id("Transaction", txn.id)
    assert renewed_event["subscription"]["currentPeriodEnd"] == PERIOD_2[1].isoformat().replace("+00:00", "Z")


async def test_a_renewal_at_another_plans_price_grants_that_plan_and_one_no_plan_has_waits(
    services: Services,
) -> None:
    account = await account_of("ada@example.com")
    sub = await active(services, account)
    services.clock.advance(PERIOD_2[0] - T0)
    starter = invoice("in_2", ours=sub.id, reason="subscription_cycle", period=PERIOD_2, price="price_starter_monthly")

    receipt = await delivered(services, event("evt_2", "invoice.paid", starter))

    assert [c.delta for c in balance_changes(receipt.changes)] == [1_100 * MICRO]
    assert (await Subscription.get(id=sub.id)).plan_id == "starter-monthly"

    later = (PERIOD_2[1], datetime(2026, 4, 15, 12, tzinfo=T0.tzinfo))
    unknown = invoice("in_3", ours=sub.id, reason="subscription_cycle", period=later, price="price_retired")
    before = await snapshot()
    waiting = await delivered(services, event("evt_3", "invoice.paid", unknown))

    assert (waiting.outcome, waiting.changes) == (Outcome.DEFERRED, ())
    assert changed(before, await snapshot()) == {"webhook_events"}  # stored, to grant once the plan is configured
    assert (await WebhookEvent.get(id="evt_3")).processed_at is None
    assert await paid_credit(services, account) == 7_100 * MICRO


async def test_invoice_payment_failed_makes_it_past_due_once_per_attempt(services: Services) -> None:
    account = await account_of("ada@example.com")
    sub = await active(services, account)
    services.clock.advance(PERIOD_2[0] - T0)
    failed = invoice(
        "in_2", ours=sub.id, reason="subscription_cycle", paid=False, period=PERIOD_2, next_attempt=RETRY_AT
    )

    receipt = await delivered(services, event("evt_2", "invoice.payment_failed", failed))
    before = await snapshot()
    same_attempt = await delivered(services, event("evt_3", "invoice.payment_failed", failed))

    assert (receipt.outcome, receipt.changes, same_attempt.outcome) == (Outcome.PROCESSED, (), Outcome.PROCESSED)
    assert changed(before, await snapshot()) == {"webhook_events"}
    reason = "Stripe could not collect the payment (attempt 1), next attempt 2026-02-18 12:00 UTC"
    past_due = await Subscription.get(id=sub.id)
    assert (past_due.status, past_due.failed_attempts, past_due.next_attempt_at, past_due.status_reason) == (
        SubscriptionStatus.PAST_DUE,
        1,
        RETRY_AT,
        f"The renewal payment failed: {reason}",
    )
    assert (past_due.current_period_start, past_due.current_period_end) == PERIOD_1  # the period not paid is not kept

    services.clock.advance(RETRY_AT - services.clock.now())
    second = invoice("in_2", ours=sub.id, reason="subscription_cycle", paid=False, period=PERIOD_2, attempt=2)
    await delivered(services, event("evt_4", "invoice.payment_failed", second))

    attempts = await Transaction.filter(subscription_id=sub.id, status=TransactionStatus.FAILED).order_by("id")
    assert [(t.idempotency_key, t.failure_reason, t.credits) for t in attempts] == [
        ("in_2/attempt-1", reason, 6_000 * MICRO),
        (
            "in_2/attempt-2",
            "Stripe could not collect the payment (attempt 2), no further attempt scheduled",
            6_000 * MICRO,
        ),
    ]
    again = await Subscription.get(id=sub.id)
    assert (again.status, again.failed_attempts, again.next_attempt_at) == (SubscriptionStatus.PAST_DUE, 2, None)
    assert await paid_credit(services, account) == 6_000 * MICRO  # the first period alone
    assert await Invoice.all().count() == 1
    lapsed = await emitted("payment.failed", "subscription.past_due")
    assert [kind for kind, _ in lapsed] == ["payment.failed", "subscription.past_due", "payment.failed"]
    assert [data["transaction"]["id"] for kind, data in lapsed if kind == "payment.failed"] == [
        encode_id("Transaction", t.id) for t in attempts
    ]


async def test_a_failed_attempt_told_after_the_invoice_was_paid_leaves_it_active(services: Services) -> None:
    account = await account_of("ada@example.com")
    sub = await active(services, account)
    services.clock.advance(RETRY_AT - T0)
    retried = invoice("in_2", ours=sub.id, reason="subscription_cycle", period=PERIOD_2, attempt=2)
    late = invoice("in_2", ours=sub.id, reason="subscription_cycle", paid=False, period=PERIOD_2, next_attempt=RETRY_AT)

    await delivered(services, event("evt_2", "invoice.paid", retried))
    receipt = await delivered(services, event("evt_1", "invoice.payment_failed", late))

    assert receipt.outcome is Outcome.PROCESSED
    kept = await Subscription.get(id=sub.id)
    assert (kept.status, kept.failed_attempts, kept.current_period_end) == (SubscriptionStatus.ACTIVE, 0, PERIOD_2[1])
    statuses = [t.status for t in await Transaction.filter(subscription_id=sub.id).order_by("id")]
    assert statuses == [TransactionStatus.SUCCEEDED, TransactionStatus.SUCCEEDED, TransactionStatus.FAILED]
    assert await paid_credit(services, account) == 12_000 * MICRO


async def test_a_failed_first_invoice_is_left_to_its_checkout_page(services: Services) -> None:
    account = await account_of("ada@example.com")
    sub, first = await incomplete(services, account, page="cs_1")
    before = await snapshot()

    receipt = await delivered(
        services, event("evt_1", "invoice.payment_failed", invoice("in_1", ours=sub.id, paid=False))
    )

    assert (receipt.outcome, receipt.changes) == (Outcome.PROCESSED, ())
    assert changed(before, await snapshot()) == {"webhook_events"}
    assert (await Transaction.get(id=first.id)).status == TransactionStatus.PENDING


def foreign(invoice_id: str, *, ours: int | None, paid: bool = True) -> dict[str, Any]:
    """A renewal invoice of sub_x, a Stripe subscription that is not ours."""
    return invoice(invoice_id, subscription="sub_x", ours=ours, reason="subscription_cycle", paid=paid, period=PERIOD_2)


async def test_events_for_a_stripe_subscription_not_ours_change_nothing(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    account = await account_of("ada@example.com")
    sub = await active(services, account)
    services.clock.advance(PERIOD_2[0] - T0)
    before = await snapshot()

    receipts = [
        await delivered(services, gateway_event)
        for gateway_event in (
            event("evt_a", "invoice.paid", foreign("in_x1", ours=None)),
            event("evt_b", "invoice.paid", foreign("in_x2", ours=sub.id)),  # it names ours, which stands for sub_1
            event("evt_c", "invoice.payment_failed", foreign("in_x3", ours=None, paid=False)),
            event("evt_d", "customer.subscription.updated", {"id": "sub_x", "object": "subscription"}),
            event("evt_e", "checkout.session.completed", session("cs_x", subscription="sub_x", ours=None)),
            event("evt_f", "checkout.session.completed", session("cs_y", subscription="sub_x", ours=sub.id)),
        )
    ]

    assert [(r.outcome, r.changes) for r in receipts] == [(Outcome.PROCESSED, ())] * 6
    assert changed(before, await snapshot()) == {"webhook_events"}
    assert await WebhookEvent.filter(processed_at=None).count() == 0
    assert stripe_standin.requests == []  # not even asked about


async def test_an_event_before_our_row_is_deferred_then_applied_by_the_sweep(services: Services) -> None:
    account = await account_of("ada@example.com")
    early_paid = event("evt_1", "invoice.paid", invoice("in_1", ours=1))  # names the subscription about to be written
    early_link = event("evt_2", "checkout.session.completed", session("cs_1", subscription="sub_1", ours=1))
    before = await snapshot()

    receipts = [await delivered(services, early_paid), await delivered(services, early_link)]

    assert [(r.outcome, r.changes) for r in receipts] == [(Outcome.DEFERRED, ())] * 2
    assert changed(before, await snapshot()) == {"webhook_events"}
    assert await WebhookEvent.filter(processed_at=None).count() == 2
    assert await retry_unprocessed(context_for(services)) == (0, ())

    sub, first = await incomplete(services, account)
    assert sub.id == 1
    services.clock.advance(timedelta(minutes=5))
    processed, changes = await retry_unprocessed(context_for(services))

    assert processed == 2
    assert [(c.account_id, c.delta) for c in balance_changes(changes)] == [(account, 6_000 * MICRO)]
    done = await Subscription.get(id=sub.id)
    assert (done.status, done.external_reference) == (SubscriptionStatus.ACTIVE, "sub_1")
    assert (await Transaction.get(id=first.id)).status == TransactionStatus.SUCCEEDED
    assert await WebhookEvent.filter(processed_at=None).count() == 0
    assert await retry_unprocessed(context_for(services)) == (0, ())
    assert await paid_credit(services, account) == 6_000 * MICRO


async def test_a_completed_checkout_links_ours_and_an_expired_one_fails_the_first_payment_once(
    services: Services,
) -> None:
    ada, bob = await account_of("ada@example.com"), await account_of("bob@example.com")
    adas, _ = await incomplete(services, ada, page="cs_1")
    bobs, bobs_first = await incomplete(services, bob, page="cs_2")

    linked = await delivered(
        services, event("evt_1", "checkout.session.completed", session("cs_1", subscription="sub_1"))
    )
    expired = event("evt_2", "checkout.session.expired", session("cs_2", subscription=None, ours=bobs.id))
    receipt = await delivered(services, expired)
    before = await snapshot()
    again = await delivered(services, event("evt_3", "checkout.session.expired", expired.object))

    assert (linked.outcome, receipt.outcome, again.outcome) == (Outcome.PROCESSED,) * 3
    assert changed(before, await snapshot()) == {"webhook_events"}
    linked_sub = await Subscription.get(id=adas.id)
    assert (linked_sub.status, linked_sub.external_reference) == (SubscriptionStatus.INCOMPLETE, "sub_1")
    reason = "The checkout page expired before payment"
    canceled = await Subscription.get(id=bobs.id)
    assert (canceled.status, canceled.status_reason) == (
        SubscriptionStatus.CANCELED,
        f"The first payment failed: {reason}",
    )
    failed = await Transaction.get(id=bobs_first.id)
    assert (failed.status, failed.failure_reason) == (TransactionStatus.FAILED, reason)
    assert await paid_credit(services, ada) == await paid_credit(services, bob) == 0
    # Bob's payment failed and his subscription ended, each told once; Ada's linking tells nothing.
    told = await emitted()
    assert [kind for kind, _ in told] == ["payment.failed", "subscription.canceled"]
    assert told[0][1]["transaction"]["id"] == encode_id("Transaction", bobs_first.id)
    assert (told[1][1]["subscription"]["id"], told[1][1]["subscription"]["status"]) == (
        encode_id("Subscription", bobs.id),
        "CANCELED",
    )
    assert told[1][1]["account"]["id"] == encode_id("CreditAccount", bob)


async def test_a_page_we_did_not_open_expiring_changes_nothing(services: Services) -> None:
    account = await account_of("ada@example.com")
    sub, first = await incomplete(services, account, page="cs_1")
    before = await snapshot()

    receipt = await delivered(
        services, event("evt_1", "checkout.session.expired", session("cs_other", subscription=None, ours=sub.id))
    )

    assert receipt.outcome is Outcome.PROCESSED
    assert changed(before, await snapshot()) == {"webhook_events"}
    assert (await Transaction.get(id=first.id)).status == TransactionStatus.PENDING


async def test_a_subscription_update_is_read_from_the_processor_and_waits_while_it_cannot_be_reached(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    account = await account_of("ada@example.com")
    sub, _ = await billing_subscriptions.subscribe(
        services,
        account,
        plan=PLANS.plans["pro-monthly"],
        method=None,
        idem=IdempotencyKey.for_request("user:1", "s1", "subscribe", {}),
    )
    stripe_standin.pay("cs_test0001")
    await delivered(services, event("evt_1", "invoice.paid", stripe_standin.invoice_of("sub_test0001")))
    stale = copy.deepcopy(stripe_standin.subscriptions["sub_test0001"])
    stripe_standin.subscriptions["sub_test0001"]["cancel_at_period_end"] = True  # in the customer portal
    stripe_standin.outage["/v1/subscriptions/sub_test0001"] = 1
    before = await snapshot()

    waiting = await delivered(services, event("evt_2", "customer.subscription.updated", stale))

    assert (waiting.outcome, waiting.changes) == (Outcome.DEFERRED, ())
    assert changed(before, await snapshot()) == {"webhook_events"}
    services.clock.advance(timedelta(minutes=5))
    assert await retry_unprocessed(context_for(services)) == (1, ())

    # What the event said is stale: the subscription as Stripe has it now is what ours becomes.
    assert stale["cancel_at_period_end"] is False
    synced = await Subscription.get(id=sub.id)
    assert (synced.status, synced.cancel_at_period_end, synced.current_period_end) == (
        SubscriptionStatus.ACTIVE,
        True,
        PERIOD_1[1],
    )
    assert len(stripe_standin.calls("GET", "/v1/subscriptions/sub_test0001")) == 2
    assert await paid_credit(services, account) == 6_000 * MICRO
