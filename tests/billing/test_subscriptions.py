"""billing.subscriptions without GraphQL, on the card-on-file sandbox: subscribing charges and grants the first
period, a declined first payment leaves nothing live, cancel / resume / change plan / move the card, and each
refusal is a typed error that changed nothing. Renewals go through billing.reconcile.renew_subscriptions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from billing import payments, subscriptions
from billing.errors import PaymentMethodNotFoundError, PaymentUnavailableError, SubscriptionNotChangeableError
from billing.reconcile import reconcile_pending, renew_subscriptions
from models import ledger
from models.balance import Balance
from models.credits import MICRO
from models.ledger import BalanceChange, IdempotencyConflictError, IdempotencyKey
from models.plans import PlanSpec
from models.subscriptions import AlreadySubscribedError, live_subscription
from models.tables import (
    CreditAccount,
    CreditLot,
    Invoice,
    PaymentMethod,
    Subscription,
    SubscriptionStatus,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from tests.support.backends import T0
from tests.support.billing import Customer, UnreachableGateway
from tests.support.snapshots import changed, snapshot

FREE = Balance(free=100 * MICRO, paid=0, held=0)
PRO = Balance(free=100 * MICRO, paid=6_000 * MICRO, held=0)
"""Ada's 100 free credits and the first Pro period's 6,000."""
PRO_AT_PERIOD_END = Balance(free=0, paid=6_000 * MICRO, held=0)
"""Her free credits expired after 30 days; the period's credit stays."""
FIRST_PERIOD = (T0, datetime(2026, 2, 15, 12, tzinfo=T0.tzinfo))
SECOND_PERIOD = (FIRST_PERIOD[1], datetime(2026, 3, 15, 12, tzinfo=T0.tzinfo))


def plan(ada: Customer, plan_id: str) -> PlanSpec:
    found = ada.services.plans.get(plan_id)
    assert found is not None
    return found


def key(name: str = "s1", plan_id: str = "pro-monthly") -> IdempotencyKey:
    return IdempotencyKey.for_request("user:1", name, "subscribe", {"planId": plan_id})


async def subscribe(
    ada: Customer, card: PaymentMethod | None, plan_id: str = "pro-monthly", name: str = "s1"
) -> tuple[Subscription, Transaction]:
    return await subscriptions.subscribe(
        ada.services, ada.account_id, plan=plan(ada, plan_id), method=card, idem=key(name, plan_id)
    )


async def subscribed(ada: Customer) -> tuple[Subscription, PaymentMethod]:
    """Ada on Pro, its first period paid with her visa; the change it published is read off."""
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    sub, first = await subscribe(ada, card)
    assert (sub.status, first.status) == (SubscriptionStatus.ACTIVE, TransactionStatus.SUCCEEDED)
    assert await ada.balance() == PRO
    ada.changes()
    return sub, card


async def renewal_of(sub: Subscription) -> Transaction:
    latest = await Transaction.filter(subscription_id=sub.id).order_by("-id").first()
    assert latest is not None
    return latest


def period_end(ada: Customer) -> None:
    ada.services.clock.advance(FIRST_PERIOD[1] - ada.services.clock.now())


async def test_subscribing_charges_the_first_period_and_grants_its_lot(ada: Customer) -> None:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")

    sub, first = await subscribe(ada, card)

    assert (sub.status, sub.plan_id, sub.next_plan_id, sub.gateway, sub.payment_method_id) == (
        SubscriptionStatus.ACTIVE,
        "pro-monthly",
        None,
        "sandbox",
        card.id,
    )
    assert (sub.current_period_start, sub.current_period_end, sub.cancel_at_period_end) == (*FIRST_PERIOD, False)
    assert (first.type, first.status, first.credits, first.amount, first.currency, first.subscription_id) == (
        TransactionType.SUBSCRIPTION,
        TransactionStatus.SUCCEEDED,
        6_000 * MICRO,
        5_000,
        "USD",
        sub.id,
    )
    assert (first.period_start, first.period_end) == FIRST_PERIOD
    assert ada.gateway.calls == [f"creditline-transaction-{first.id}"]
    lots = await CreditLot.filter(account_id=ada.account_id, kind="PAID").values_list("amount", "expires_at")
    assert lots == [(6_000 * MICRO, None)]  # a monthly plan's credit does not expire
    invoice = await Invoice.get(transaction_id=first.id)
    assert (invoice.total, invoice.currency, invoice.status) == (5_000, "USD", "PAID")
    assert await ada.balance() == PRO
    [change] = ada.changes()
    assert isinstance(change, BalanceChange)
    assert (change.reason, change.delta, change.balance) == ("SUBSCRIPTION", 6_000 * MICRO, PRO)


async def test_a_resend_gets_the_same_subscription_and_charges_nothing_again(ada: Customer) -> None:
    sub, card = await subscribed(ada)
    before = await snapshot()

    again, first = await subscribe(ada, card)

    assert (again.id, again.status, first.status) == (sub.id, SubscriptionStatus.ACTIVE, TransactionStatus.SUCCEEDED)
    assert len(ada.gateway.calls) == 1
    assert await snapshot() == before
    assert ada.changes() == []


async def test_a_declined_first_payment_leaves_no_live_subscription_and_no_credit(ada: Customer) -> None:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    ada.gateway.declines.append("Your card was declined.")

    sub, first = await subscribe(ada, card)

    assert (first.status, first.failure_reason) == (TransactionStatus.FAILED, "Your card was declined.")
    assert (sub.status, sub.status_reason, sub.canceled_at) == (
        SubscriptionStatus.CANCELED,
        "The first payment failed: Your card was declined.",
        T0,
    )
    assert (sub.current_period_start, sub.current_period_end) == (None, None)
    assert await live_subscription(ada.account_id) is None
    assert await ada.balance() == FREE
    assert await CreditLot.filter(account_id=ada.account_id).count() == 1  # the signup bonus alone
    assert await Invoice.all().count() == 0
    assert ada.changes() == []
    # Nothing is left to block the next attempt.
    retried, paid = await subscribe(ada, card, name="s2")
    assert (retried.status, paid.status) == (SubscriptionStatus.ACTIVE, TransactionStatus.SUCCEEDED)
    assert await ada.balance() == PRO


async def test_an_unanswered_first_payment_stays_pending_and_the_reconcile_job_pays_it_once(ada: Customer) -> None:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    ada.services.gateway = unreachable = UnreachableGateway()

    sub, first = await subscribe(ada, card)

    assert (sub.status, first.status) == (SubscriptionStatus.INCOMPLETE, TransactionStatus.PENDING)
    assert await ada.balance() == FREE
    ada.services.settings = replace(ada.services.settings, replay_wait_seconds=0)
    before = await snapshot()
    with pytest.raises(PaymentUnavailableError, match="still waiting for the payment's outcome"):
        await subscribe(ada, card)  # a resend while the first call may still be charging
    assert await snapshot() == before

    ada.services.gateway = ada.gateway
    ada.services.clock.advance(timedelta(minutes=1))
    assert await reconcile_pending(ada.services) == 1

    assert unreachable.calls == ada.gateway.calls == [f"creditline-transaction-{first.id}"]  # the same request
    paid = await Subscription.get(id=sub.id)
    assert (paid.status, paid.current_period_start) == (SubscriptionStatus.ACTIVE, T0)  # the period it was for
    assert (await Transaction.get(id=first.id)).status == TransactionStatus.SUCCEEDED
    assert await ada.balance() == PRO
    assert [c.delta for c in ada.changes() if isinstance(c, BalanceChange)] == [6_000 * MICRO]


async def test_a_second_subscription_is_refused_and_its_key_keeps_that_answer(ada: Customer) -> None:
    sub, card = await subscribed(ada)
    before = await snapshot()

    with pytest.raises(AlreadySubscribedError) as refused:
        await subscribe(ada, card, "starter-monthly", name="s2")

    assert refused.value.subscription_id == sub.id
    # Only the refusal is stored, so that the same request gets the same answer.
    assert changed(before, await snapshot()) == {"idempotency_records"}
    assert len(ada.gateway.calls) == 1
    assert ada.changes() == []
    await subscriptions.cancel(ada.services, await Subscription.get(id=sub.id), at_period_end=False)
    with pytest.raises(AlreadySubscribedError):
        await subscribe(ada, card, "starter-monthly", name="s2")  # even once that subscription has ended
    assert await Subscription.all().count() == 1


async def test_the_same_key_for_another_plan_is_refused_and_writes_nothing(ada: Customer) -> None:
    _, card = await subscribed(ada)
    before = await snapshot()

    with pytest.raises(IdempotencyConflictError):
        await subscriptions.subscribe(
            ada.services,
            ada.account_id,
            plan=plan(ada, "starter-monthly"),
            method=card,
            idem=IdempotencyKey.for_request("user:1", "s1", "subscribe", {"planId": "starter-monthly"}),
        )

    assert await snapshot() == before
    assert len(ada.gateway.calls) == 1


async def test_canceling_at_period_end_keeps_the_period_and_the_renewal_ends_it_uncharged(ada: Customer) -> None:
    sub, _ = await subscribed(ada)

    canceled = await subscriptions.cancel(ada.services, sub, at_period_end=True)

    assert (canceled.status, canceled.cancel_at_period_end, canceled.canceled_at) == (
        SubscriptionStatus.ACTIVE,
        True,
        None,
    )
    assert await ada.balance() == PRO  # the credit granted for the period stays
    period_end(ada)
    assert await renew_subscriptions(ada.services) == 0

    ended = await Subscription.get(id=sub.id)
    assert (ended.status, ended.status_reason, ended.canceled_at) == (
        SubscriptionStatus.CANCELED,
        "Canceled at the end of the period",
        FIRST_PERIOD[1],
    )
    assert len(ada.gateway.calls) == 1
    assert await Transaction.filter(subscription_id=sub.id).count() == 1
    assert await ada.balance() == PRO_AT_PERIOD_END
    assert ada.changes() == []


async def test_a_resumed_subscription_renews_at_period_end(ada: Customer) -> None:
    sub, _ = await subscribed(ada)
    await subscriptions.cancel(ada.services, sub, at_period_end=True)

    resumed = await subscriptions.resume(ada.services, sub)

    assert (resumed.status, resumed.cancel_at_period_end) == (SubscriptionStatus.ACTIVE, False)
    period_end(ada)
    assert await renew_subscriptions(ada.services) == 1
    renewal = await renewal_of(sub)
    assert (renewal.status, renewal.period_start, renewal.period_end) == (TransactionStatus.SUCCEEDED, *SECOND_PERIOD)
    assert ada.gateway.calls[-1] == f"creditline-transaction-{renewal.id}"
    assert (await Subscription.get(id=sub.id)).current_period_end == SECOND_PERIOD[1]
    assert await ada.balance() == Balance(free=0, paid=12_000 * MICRO, held=0)


async def test_canceling_now_ends_it_at_once_and_keeps_the_credit_granted(ada: Customer) -> None:
    sub, _ = await subscribed(ada)

    canceled = await subscriptions.cancel(ada.services, sub, at_period_end=False)

    assert (canceled.status, canceled.status_reason, canceled.canceled_at, canceled.cancel_at_period_end) == (
        SubscriptionStatus.CANCELED,
        "Canceled by the customer",
        T0,
        False,
    )
    assert await live_subscription(ada.account_id) is None
    assert await ada.balance() == PRO
    period_end(ada)
    assert await renew_subscriptions(ada.services) == 0
    assert len(ada.gateway.calls) == 1


async def test_a_past_due_subscription_is_canceled_now_even_when_asked_at_period_end(ada: Customer) -> None:
    sub, _ = await subscribed(ada)
    ada.gateway.declines.append("Your card has insufficient funds.")
    period_end(ada)
    assert await renew_subscriptions(ada.services) == 1
    past_due = await Subscription.get(id=sub.id)
    assert past_due.status == SubscriptionStatus.PAST_DUE

    canceled = await subscriptions.cancel(ada.services, past_due, at_period_end=True)

    assert (canceled.status, canceled.cancel_at_period_end, canceled.next_attempt_at) == (
        SubscriptionStatus.CANCELED,
        False,
        None,
    )
    ada.services.clock.advance(timedelta(days=1))
    assert await renew_subscriptions(ada.services) == 0  # its retry is not charged


async def test_a_plan_change_takes_effect_with_the_renewal_it_pays_for(ada: Customer) -> None:
    sub, _ = await subscribed(ada)

    changed_plan = await subscriptions.change_plan(ada.services, sub, plan(ada, "starter-monthly"))
    assert (changed_plan.plan_id, changed_plan.next_plan_id) == ("pro-monthly", "starter-monthly")
    undone = await subscriptions.change_plan(ada.services, sub, plan(ada, "pro-monthly"))
    assert (undone.plan_id, undone.next_plan_id) == ("pro-monthly", None)
    await subscriptions.change_plan(ada.services, sub, plan(ada, "starter-monthly"))
    assert await ada.balance() == PRO  # the period paid for keeps its plan and credit
    assert len(ada.gateway.calls) == 1

    period_end(ada)
    assert await renew_subscriptions(ada.services) == 1

    renewal = await renewal_of(sub)
    assert (renewal.status, renewal.credits, renewal.amount) == (TransactionStatus.SUCCEEDED, 1_100 * MICRO, 1_000)
    renewed = await Subscription.get(id=sub.id)
    assert (renewed.plan_id, renewed.next_plan_id) == ("starter-monthly", None)
    assert await ada.balance() == Balance(free=0, paid=7_100 * MICRO, held=0)
    assert [c.delta for c in ada.changes() if isinstance(c, BalanceChange)] == [1_100 * MICRO]


async def test_renewals_are_charged_to_the_card_the_subscription_was_moved_to(ada: Customer) -> None:
    sub, visa = await subscribed(ada)
    mastercard = await payments.save_card(ada.services, ada.account_id, "tok_mastercard")

    moved = await subscriptions.set_payment_method(sub, mastercard.id)

    assert moved.payment_method_id == mastercard.id
    assert (await payments.remove_card(ada.services, ada.account_id, visa.id)) is not None  # no longer in use
    period_end(ada)
    assert await renew_subscriptions(ada.services) == 1
    renewal = await renewal_of(sub)
    assert (renewal.status, renewal.payment_method_id, renewal.card_reference) == (
        TransactionStatus.SUCCEEDED,
        mastercard.id,
        "card_sandbox_tok_mastercard",
    )


async def test_a_card_that_is_not_the_accounts_is_refused_and_nothing_changes(ada: Customer) -> None:
    sub, _ = await subscribed(ada)
    bob = await ledger.create_user("bob@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    bobs_account = await CreditAccount.get(user_id=bob)
    bobs_card = await payments.save_card(ada.services, bobs_account.id, "tok_mastercard")
    removed = await payments.save_card(ada.services, ada.account_id, "tok_mastercard")
    await payments.remove_card(ada.services, ada.account_id, removed.id)
    before = await snapshot()

    for card_id in (bobs_card.id, removed.id, 999):
        with pytest.raises(PaymentMethodNotFoundError, match="Payment method not found on this account"):
            await subscriptions.set_payment_method(sub, card_id)

    assert await snapshot() == before


async def test_a_canceled_subscription_cannot_be_changed_and_nothing_changes(ada: Customer) -> None:
    sub, card = await subscribed(ada)
    await subscriptions.cancel(ada.services, sub, at_period_end=False)
    before = await snapshot()
    starter = plan(ada, "starter-monthly")

    with pytest.raises(SubscriptionNotChangeableError, match="The subscription is already canceled"):
        await subscriptions.cancel(ada.services, sub, at_period_end=False)
    with pytest.raises(SubscriptionNotChangeableError, match="The subscription is already canceled"):
        await subscriptions.cancel(ada.services, sub, at_period_end=True)
    with pytest.raises(SubscriptionNotChangeableError, match="set to cancel at period end can be resumed"):
        await subscriptions.resume(ada.services, sub)
    with pytest.raises(SubscriptionNotChangeableError, match="Only an active subscription can change plans"):
        await subscriptions.change_plan(ada.services, sub, starter)
    with pytest.raises(SubscriptionNotChangeableError, match="The subscription is already canceled"):
        await subscriptions.set_payment_method(sub, card.id)

    assert await snapshot() == before
    assert ada.changes() == []


async def test_resuming_a_subscription_not_set_to_cancel_is_refused_and_nothing_changes(ada: Customer) -> None:
    sub, _ = await subscribed(ada)
    before = await snapshot()

    with pytest.raises(SubscriptionNotChangeableError) as refused:
        await subscriptions.resume(ada.services, sub)

    assert refused.value.message == "Only a subscription set to cancel at period end can be resumed"
    assert await snapshot() == before


async def test_a_past_due_renewal_paid_on_its_retry_day_makes_it_active_again(ada: Customer) -> None:
    sub, _ = await subscribed(ada)
    ada.gateway.declines.append("Your card has insufficient funds.")
    period_end(ada)
    assert await renew_subscriptions(ada.services) == 1
    past_due = await Subscription.get(id=sub.id)
    assert (past_due.status, past_due.failed_attempts, past_due.next_attempt_at) == (
        SubscriptionStatus.PAST_DUE,
        1,
        FIRST_PERIOD[1] + timedelta(days=1),
    )
    ada.services.clock.advance(timedelta(hours=23))
    assert await renew_subscriptions(ada.services) == 0  # not before its retry day

    ada.services.clock.advance(timedelta(hours=1))
    assert await renew_subscriptions(ada.services) == 1

    retry = await renewal_of(sub)
    assert (retry.status, retry.period_start, retry.period_end) == (TransactionStatus.SUCCEEDED, *SECOND_PERIOD)
    assert retry.idempotency_key == f"{SECOND_PERIOD[0].isoformat()}/attempt-2"
    active = await Subscription.get(id=sub.id)
    assert (active.status, active.failed_attempts, active.next_attempt_at, active.status_reason) == (
        SubscriptionStatus.ACTIVE,
        0,
        None,
        None,
    )
    assert active.current_period_end == SECOND_PERIOD[1]
    assert await ada.balance() == Balance(free=0, paid=12_000 * MICRO, held=0)
    assert len(ada.gateway.calls) == 3  # the first period, the declined renewal, its retry


async def test_a_renewal_declined_on_every_retry_day_cancels_the_subscription(ada: Customer) -> None:
    sub, _ = await subscribed(ada)
    ada.gateway.declines.extend(["Your card has insufficient funds."] * 4)
    period_end(ada)

    for days_after in (0, 1, 3, 5):
        ada.services.clock.advance(FIRST_PERIOD[1] + timedelta(days=days_after) - ada.services.clock.now())
        assert await renew_subscriptions(ada.services) == 1

    canceled = await Subscription.get(id=sub.id)
    assert (canceled.status, canceled.status_reason, canceled.canceled_at) == (
        SubscriptionStatus.CANCELED,
        "Canceled after 4 failed payments: Your card has insufficient funds.",
        FIRST_PERIOD[1] + timedelta(days=5),
    )
    failed = await Transaction.filter(subscription_id=sub.id, status=TransactionStatus.FAILED).count()
    assert failed == 4
    assert await ada.balance() == PRO_AT_PERIOD_END  # the first period's credit alone
    assert ada.changes() == []
    ada.services.clock.advance(timedelta(days=30))
    assert await renew_subscriptions(ada.services) == 0
