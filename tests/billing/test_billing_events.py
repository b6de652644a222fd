"""The billing events (models/event_data.py, written by models/payments.py, subscriptions.py, refunds.py and
models/ledger/auto_top_up.py) without GraphQL, on both databases: payment.succeeded with invoice.created, and
payment.failed, once per payment however often it is charged again or replayed; refund.created; auto_top_up.*
up to its disabling; subscription.renewed / past_due / canceled once per transition."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from billing import auto_top_up as billing_auto_top_up
from billing import payments, refunds, subscriptions
from billing.reconcile import renew_subscriptions
from models import ledger
from models.credits import MICRO
from models.ids import encode_id
from models.ledger import IdempotencyKey, auto_top_up
from models.tables import Invoice, Refund, Subscription, Transaction
from tests.support.backends import T0
from tests.support.billing import Customer, UnreachableGateway
from tests.support.events import account_data, emitted

NOW = "2026-01-15T12:00:00Z"


def key(name: str = "k1", credits: int = 50 * MICRO) -> IdempotencyKey:
    return IdempotencyKey.for_request("user:1", name, "topUp", {"credits": credits})


def me(ada: Customer) -> dict[str, Any]:
    return account_data(ada.account_id, 1)


def transaction(txn: Transaction, status: str, failure: str | None = None, **more: Any) -> dict[str, Any]:
    return {
        "id": encode_id("Transaction", txn.id),
        "type": str(txn.type),
        "status": status,
        "credits": str(txn.credits // MICRO),
        "amount": txn.amount,
        "currency": "USD",
        "failureReason": failure,
        "subscriptionId": None,
        "periodStart": None,
        "periodEnd": None,
        "completedAt": NOW,
        **more,
    }


async def top_up(ada: Customer, name: str = "k1") -> Transaction:
    return await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key(name)
    )


async def test_a_paid_top_up_writes_payment_succeeded_and_invoice_created_once(ada: Customer) -> None:
    txn = await top_up(ada)
    await top_up(ada)  # the resend: the same payment, nothing more
    await payments.charge_pending(ada.services, txn)  # the reconcile job's retry finds it settled
    invoice = await Invoice.get(transaction_id=txn.id)
    assert await emitted() == [
        ("payment.succeeded", {"account": me(ada), "transaction": transaction(txn, "SUCCEEDED")}),
        (
            "invoice.created",
            {
                "account": me(ada),
                "invoice": {
                    "id": encode_id("Invoice", invoice.id),
                    "number": "INV-000001",
                    "status": "PAID",
                    "total": 50,
                    "currency": "USD",
                    "transactionId": encode_id("Transaction", txn.id),
                    "issuedAt": NOW,
                },
            },
        ),
    ]


async def test_a_declined_top_up_writes_payment_failed_with_its_reason(ada: Customer) -> None:
    ada.gateway.declines.append("Your card was declined.")
    txn = await top_up(ada)
    await top_up(ada)
    assert await emitted() == [
        (
            "payment.failed",
            {"account": me(ada), "transaction": transaction(txn, "FAILED", "Your card was declined.")},
        )
    ]


async def test_an_unanswered_charge_writes_nothing_until_its_answer(ada: Customer) -> None:
    ada.services.gateway = UnreachableGateway()
    txn = await top_up(ada)
    assert await emitted() == []
    ada.services.gateway = ada.gateway
    await payments.charge_pending(ada.services, txn)
    await payments.charge_pending(ada.services, txn)
    assert [kind for kind, _ in await emitted()] == ["payment.succeeded", "invoice.created"]


async def test_a_refund_writes_refund_created_once(ada: Customer) -> None:
    txn = await top_up(ada)
    idem = IdempotencyKey.for_request("admin", "r1", "refundPayment", {"amount": None})
    refund = await refunds.refund(ada.services, txn, amount=None, reason="asked", idem=idem)
    await refunds.refund(ada.services, txn, amount=None, reason="asked", idem=idem)
    assert (await emitted("refund.created")) == [
        (
            "refund.created",
            {
                "account": me(ada),
                "refund": {
                    "id": encode_id("Refund", refund.id),
                    "status": "SUCCEEDED",
                    "amount": 50,
                    "currency": "USD",
                    "credits": "50",
                    "reason": "asked",
                    "transactionId": encode_id("Transaction", txn.id),
                    "completedAt": NOW,
                },
            },
        )
    ]
    assert await Refund.all().count() == 1


async def _queued_top_up(ada: Customer, name: str) -> int | None:
    terms = billing_auto_top_up.terms(ada.services)
    assert terms is not None
    spent = await ledger.spend(
        ("user_id", 1),
        user_id=1,
        organization_id=None,
        agent_id="agent-1",
        activity="answer",
        credits=60 * MICRO,
        quantity=None,
        idem=IdempotencyKey.for_request("service:test", name, "spendCredits", {}),
        now=ada.services.clock.now(),
        auto_top_up=terms,
    )
    return spent.queued_top_up


async def test_auto_top_up_writes_succeeded_then_failed_until_it_is_disabled(ada: Customer) -> None:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    terms = billing_auto_top_up.terms(ada.services)
    assert terms is not None
    config = auto_top_up.Config(True, 150 * MICRO, 100 * MICRO, None, 1_000 * MICRO, card.id)
    # 100 available is below the threshold of 150 already: configuring queues the first top-up.
    first = await auto_top_up.configure(ada.account_id, config, terms=terms, now=ada.services.clock.now())
    assert first is not None
    assert await billing_auto_top_up.charge(ada.services, first) is True
    assert await billing_auto_top_up.charge(ada.services, first) is False  # settled already: nothing more
    txn = await Transaction.get(id=first)
    assert (await emitted("auto_top_up.succeeded", "auto_top_up.failed", "auto_top_up.disabled")) == [
        ("auto_top_up.succeeded", {"account": me(ada), "transaction": transaction(txn, "SUCCEEDED")})
    ]
    ada.gateway.declines.extend(["Your card was declined."] * 3)
    retries = []
    for n in range(3):
        queued = await _queued_top_up(ada, f"d{n}")
        if queued is None:  # backing off: the sweep's retry queues it when the back-off runs out
            ada.services.clock.advance(timedelta(hours=7))
            queued = await auto_top_up.retry_locked(ada.account_id, terms, ada.services.clock.now())
        assert queued is not None
        await billing_auto_top_up.charge(ada.services, queued)
        retries.append(await Transaction.get(id=queued))
    found = await emitted("auto_top_up.failed", "auto_top_up.disabled")
    assert [(kind, data["declines"]) for kind, data in found] == [
        ("auto_top_up.failed", 1),
        ("auto_top_up.failed", 2),
        ("auto_top_up.failed", 3),
        ("auto_top_up.disabled", 3),
    ]
    assert found[0][1]["transaction"]["failureReason"] == "Your card was declined."
    assert found[2][1]["nextAttemptAt"] is None
    assert found[3][1]["reason"] == ("Switched off after 3 declined payments in a row: Your card was declined.")
    assert [data["transaction"]["id"] for _, data in found] == [
        encode_id("Transaction", t.id) for t in [*retries, retries[-1]]
    ]


async def test_a_subscription_writes_renewed_past_due_and_canceled_once_each(ada: Customer) -> None:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    plan = ada.services.plans.get("pro-monthly")
    assert plan is not None
    idem = IdempotencyKey.for_request("user:1", "s1", "subscribe", {"planId": "pro-monthly"})
    sub, _ = await subscriptions.subscribe(ada.services, ada.account_id, plan=plan, method=card, idem=idem)
    assert await emitted("subscription.renewed", "subscription.past_due", "subscription.canceled") == []
    end = (await Subscription.get(id=sub.id)).current_period_end
    assert end is not None
    ada.services.clock.advance(end - ada.services.clock.now())
    assert await renew_subscriptions(ada.services) == 1
    ((kind, renewed),) = await emitted("subscription.renewed")
    assert (renewed["subscription"]["id"], renewed["subscription"]["status"]) == (
        encode_id("Subscription", sub.id),
        "ACTIVE",
    )
    assert renewed["subscription"]["currentPeriodStart"] == end.isoformat().replace("+00:00", "Z")
    renewal = await Transaction.filter(subscription_id=sub.id).order_by("-id").first()
    assert renewal is not None
    assert renewed["transactionId"] == encode_id("Transaction", renewal.id)

    # The next renewal is declined on every retry day: past due once, then canceled once.
    ada.gateway.declines.extend(["Your card has insufficient funds."] * 4)
    second_end = (await Subscription.get(id=sub.id)).current_period_end
    assert second_end is not None
    for days_after in (0, 1, 3, 5):
        ada.services.clock.advance(second_end + timedelta(days=days_after) - ada.services.clock.now())
        assert await renew_subscriptions(ada.services) == 1
    found = await emitted("subscription.past_due", "subscription.canceled", "payment.failed")
    assert [kind for kind, _ in found] == [
        "payment.failed",
        "subscription.past_due",
        "payment.failed",
        "payment.failed",
        "payment.failed",
        "subscription.canceled",
    ]
    past_due, canceled = found[1][1]["subscription"], found[5][1]["subscription"]
    assert (past_due["status"], past_due["failedAttempts"], past_due["statusReason"]) == (
        "PAST_DUE",
        1,
        "The renewal payment failed: Your card has insufficient funds.",
    )
    assert (canceled["status"], canceled["statusReason"]) == (
        "CANCELED",
        "Canceled after 4 failed payments: Your card has insufficient funds.",
    )
    assert found[0][1]["transaction"]["subscriptionId"] == encode_id("Subscription", sub.id)
    assert ada.services.clock.now() > T0
