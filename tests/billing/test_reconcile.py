"""billing.reconcile without GraphQL: payments left PENDING are finished once, and card-on-file renewals
are charged once per period."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from billing import payments, subscriptions
from billing.reconcile import reconcile_pending, renew_subscriptions
from gateway.base import Charge, PaymentRefused
from models.balance import Balance
from models.credits import MICRO
from models.ledger import BalanceChange, IdempotencyKey
from models.tables import Invoice, Subscription, SubscriptionStatus, Transaction, TransactionStatus
from tests.support.billing import Customer, UnreachableGateway
from tests.support.helpers import ScriptedGateway

FREE = Balance(free=100 * MICRO, paid=0, held=0)


class KeyKeepingGateway(ScriptedGateway):
    """A processor that remembers an idempotency key for a day, as Stripe does."""

    idempotency_window: timedelta | None = timedelta(hours=24)


async def unanswered_top_up(ada: Customer, key: str = "k1") -> Transaction:
    working = ada.services.gateway
    ada.services.gateway = UnreachableGateway()
    txn = await payments.top_up(
        ada.services,
        ada.account_id,
        credits=50 * MICRO,
        method=None,
        payment_token="tok_visa",
        idem=IdempotencyKey.for_request("user:1", key, "topUp", {}),
    )
    ada.services.gateway = working
    assert txn.status == TransactionStatus.PENDING
    return txn


async def test_an_unanswered_payment_is_charged_again_with_its_key_and_completed_once(ada: Customer) -> None:
    txn = await unanswered_top_up(ada)
    ada.services.clock.advance(timedelta(minutes=1))

    assert await reconcile_pending(ada.services) == 1
    assert await reconcile_pending(ada.services) == 0

    assert ada.gateway.calls == [f"creditline-transaction-{txn.id}"]
    assert (await Transaction.get(id=txn.id)).status == TransactionStatus.SUCCEEDED
    assert await ada.balance() == Balance(free=100 * MICRO, paid=50 * MICRO, held=0)
    assert await Invoice.filter(transaction_id=txn.id).count() == 1
    assert [c.delta for c in ada.changes() if isinstance(c, BalanceChange)] == [50 * MICRO]


class RefusingFirstKey(ScriptedGateway):
    """A processor that refuses, for good and unexpectedly, every request about one transaction."""

    def __init__(self, refused_key: str) -> None:
        super().__init__()
        self.refused_key = refused_key

    async def charge(self, **request: Any) -> Charge:
        if request["idempotency_key"] == self.refused_key:
            self.calls.append(request["idempotency_key"])
            raise PaymentRefused("No such payment")
        return await super().charge(**request)


async def test_a_payment_that_cannot_be_reconciled_does_not_hold_back_the_others(
    ada: Customer, caplog: pytest.LogCaptureFixture
) -> None:
    first = await unanswered_top_up(ada)
    second = await unanswered_top_up(ada, key="k2")
    gateway = RefusingFirstKey(f"creditline-transaction-{first.id}")
    ada.services.gateway = gateway
    ada.services.clock.advance(timedelta(minutes=1))

    assert await reconcile_pending(ada.services) == 2

    assert gateway.calls == [f"creditline-transaction-{first.id}", f"creditline-transaction-{second.id}"]
    assert (await Transaction.get(id=first.id)).status == TransactionStatus.PENDING
    assert (await Transaction.get(id=second.id)).status == TransactionStatus.SUCCEEDED
    assert await ada.balance() == Balance(free=100 * MICRO, paid=50 * MICRO, held=0)
    assert f"transaction {first.id} stays pending: reconciling it failed" in caplog.text


async def test_a_payment_its_request_may_still_be_charging_is_left_alone(ada: Customer) -> None:
    txn = await unanswered_top_up(ada)

    assert await reconcile_pending(ada.services) == 0

    assert ada.gateway.calls == []
    assert (await Transaction.get(id=txn.id)).status == TransactionStatus.PENDING
    assert await ada.balance() == FREE


async def test_a_payment_not_confirmed_while_the_processor_kept_its_key_fails_uncharged(ada: Customer) -> None:
    txn = await unanswered_top_up(ada)
    ada.services.gateway = gateway = KeyKeepingGateway()
    ada.services.clock.advance(timedelta(hours=23))

    assert await reconcile_pending(ada.services) == 1

    assert gateway.calls == []  # charging now could pay twice: the processor may have forgotten the key
    failed = await Transaction.get(id=txn.id)
    assert (failed.status, failed.failure_reason) == (
        TransactionStatus.FAILED,
        "The payment could not be confirmed in time",
    )
    assert await ada.balance() == FREE
    assert await Invoice.all().count() == 0
    assert ada.changes() == []


async def subscribed(ada: Customer) -> Subscription:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    plan = ada.services.plans.get("starter-monthly")
    assert plan is not None
    sub, first = await subscriptions.subscribe(
        ada.services,
        ada.account_id,
        plan=plan,
        method=card,
        idem=IdempotencyKey.for_request("user:1", "s1", "subscribe", {}),
    )
    assert (sub.status, first.status) == (SubscriptionStatus.ACTIVE, TransactionStatus.SUCCEEDED)
    return sub


async def test_a_renewal_is_charged_once_at_period_end(ada: Customer) -> None:
    sub = await subscribed(ada)
    assert await renew_subscriptions(ada.services) == 0  # nothing is due yet
    ada.services.clock.advance(timedelta(days=31))

    assert await renew_subscriptions(ada.services) == 1
    assert await renew_subscriptions(ada.services) == 0

    renewal = await Transaction.filter(subscription_id=sub.id).order_by("-id").first()
    assert renewal is not None
    assert renewal.status == TransactionStatus.SUCCEEDED
    assert ada.gateway.calls == [f"creditline-transaction-{renewal.id - 1}", f"creditline-transaction-{renewal.id}"]
    assert (await ada.balance()).paid == 2 * 1_100 * MICRO


async def test_a_declined_renewal_grants_nothing_and_the_subscription_is_past_due(ada: Customer) -> None:
    sub = await subscribed(ada)
    ada.gateway.declines.append("Your card has insufficient funds.")
    ada.services.clock.advance(timedelta(days=31))

    assert await renew_subscriptions(ada.services) == 1

    assert (await Subscription.get(id=sub.id)).status == SubscriptionStatus.PAST_DUE
    renewal = await Transaction.filter(subscription_id=sub.id).order_by("-id").first()
    assert renewal is not None
    assert (renewal.status, renewal.failure_reason) == (TransactionStatus.FAILED, "Your card has insufficient funds.")
    assert (await ada.balance()).paid == 1_100 * MICRO  # the first period's credit alone
    assert await Invoice.filter(transaction_id=renewal.id).count() == 0
