"""billing.hosted_subscriptions without GraphQL, on the stripe gateway against the local stand-in (the real stripe
SDK): subscribing opens one Checkout page per first payment, settling it grants the period once, cancel / resume
/ change plan go through the processor and show at once, and a processor that cannot be reached or refuses is a
typed error that changed nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from billing import hosted_subscriptions, subscriptions
from billing.errors import PaymentUnavailableError, SubscriptionNotChangeableError
from creditline.clock import Clock
from creditline.events import BusSubscription, InProcessBus
from creditline.gateways import gateway_for
from creditline.services import Services
from creditline.settings import Settings
from gateway.base import HostedGateway
from models import ledger
from models.credits import MICRO
from models.ledger import BalanceChange, IdempotencyKey
from models.plans import PlanSpec
from models.subscriptions import live_subscription
from models.tables import (
    CreditAccount,
    CreditLot,
    GatewayCustomer,
    Invoice,
    Subscription,
    SubscriptionStatus,
    Transaction,
    TransactionStatus,
)
from tests.support.backends import T0, Backend
from tests.support.snapshots import snapshot
from tests.support.stripe_standin import StripeStandIn, stripe_settings
from tests.support.stripe_subscriptions import PLANS

PERIOD = (T0, datetime(2026, 2, 15, 12, tzinfo=T0.tzinfo))
SUCCESS = "https://app.example/my-credit/billing?checkout=success&subscription=U3Vic2NyaXB0aW9uOjE%3D"


@dataclass
class Stripe:
    """Ada, with no credit, on the stripe gateway; the stand-in behind it; what she is published."""

    services: Services
    gateway: HostedGateway
    standin: StripeStandIn
    account_id: int
    published: BusSubscription

    async def paid(self) -> int:
        now = self.services.clock.now()
        return (await ledger.read_balances([self.account_id], now))[self.account_id].paid

    def changes(self) -> list[tuple[str, int]]:
        """The balance changes published since the last call (reason, delta)."""
        seen: list[tuple[str, int]] = []
        while not self.published.queue.empty():
            change = self.published.queue.get_nowait()
            assert isinstance(change, BalanceChange)
            seen.append((change.reason, change.delta))
        return seen

    def plan(self, plan_id: str) -> PlanSpec:
        found = self.services.plans.get(plan_id)
        assert found is not None
        return found

    async def subscribe(self, plan_id: str = "pro-monthly", name: str = "s1") -> tuple[Subscription, Transaction]:
        return await subscriptions.subscribe(
            self.services,
            self.account_id,
            plan=self.plan(plan_id),
            method=None,
            idem=IdempotencyKey.for_request("user:1", name, "subscribe", {"planId": plan_id}),
        )

    async def live(self) -> Subscription:
        found = await live_subscription(self.account_id)
        assert found is not None
        return found


@pytest.fixture
async def stripe(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Stripe]:
    stripe_standin.reset(clock.now)
    services = Services(
        settings=stripe_settings(settings, stripe_standin, "stripe"), clock=clock, bus=InProcessBus(), plans=PLANS
    )
    services.gateway = gateway = gateway_for(services.settings)
    assert isinstance(gateway, HostedGateway)
    user_id = await ledger.create_user("ada@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    account = await CreditAccount.get(user_id=user_id)
    try:
        yield Stripe(services, gateway, stripe_standin, account.id, services.bus.subscribe(None))
    finally:
        await gateway.close()


async def active(stripe: Stripe) -> Subscription:
    """Ada's Pro subscription, its first period paid on Stripe's page and settled."""
    _, first = await stripe.subscribe()
    stripe.standin.pay("cs_test0001")
    await hosted_subscriptions.settle_subscription_checkout(stripe.services, stripe.gateway, first)
    sub = await stripe.live()
    assert (sub.status, sub.external_reference) == (SubscriptionStatus.ACTIVE, "sub_test0001")
    stripe.changes()
    return sub


def subscription_updates(stripe: Stripe) -> list[dict[str, str]]:
    return [r.params for r in stripe.standin.calls("POST", "/v1/subscriptions/sub_test0001")]


async def test_subscribing_opens_one_checkout_page_and_the_same_key_gets_it_again(stripe: Stripe) -> None:
    sub, first = await stripe.subscribe()
    again, resent = await stripe.subscribe()

    page = f"{stripe.standin.url}/pay/cs_test0001"
    assert (sub.status, sub.gateway, sub.plan_id, sub.external_reference) == (
        SubscriptionStatus.INCOMPLETE,
        "stripe",
        "pro-monthly",
        None,
    )
    assert (first.status, first.checkout_url, first.gateway_reference, first.credits, first.amount) == (
        TransactionStatus.PENDING,
        page,
        "cs_test0001",
        6_000 * MICRO,
        5_000,
    )
    assert (again.id, resent.id, resent.checkout_url) == (sub.id, first.id, page)
    (session,) = stripe.standin.calls("POST", "/v1/checkout/sessions")
    assert session.idempotency_key == f"creditline-transaction-{first.id}"
    assert (session.params["mode"], session.params["line_items[0][price]"]) == ("subscription", "price_pro_monthly")
    assert (session.params["customer"], session.params["success_url"]) == ("cus_test0001", SUCCESS)
    (customer,) = stripe.standin.calls("POST", "/v1/customers")
    assert customer.idempotency_key == f"creditline-customer-{stripe.account_id}"
    assert await stripe.paid() == 0
    assert stripe.changes() == []

    # Opening it again (the reconcile job after a crash) sends the same key: Stripe answers with the same page.
    reopened = await hosted_subscriptions.open_subscription_checkout(stripe.services, stripe.gateway, resent)

    assert (reopened.checkout_url, reopened.gateway_reference) == (page, "cs_test0001")
    assert [r.replayed for r in stripe.standin.calls("POST", "/v1/checkout/sessions")] == [False, True]
    assert len(stripe.standin.sessions) == 1


async def test_a_paid_page_is_settled_once_and_grants_the_period(stripe: Stripe) -> None:
    sub, first = await stripe.subscribe()
    stripe.standin.pay("cs_test0001")

    settled = await hosted_subscriptions.settle_subscription_checkout(stripe.services, stripe.gateway, first)
    # The reconcile job, holding the row as it was before the first settle (or a webhook) completed it.
    twice = await hosted_subscriptions.settle_subscription_checkout(stripe.services, stripe.gateway, first)

    assert settled.status == twice.status == TransactionStatus.SUCCEEDED
    assert settled.gateway_reference == "in_test0001"
    assert (settled.period_start, settled.period_end) == PERIOD
    paid = await Subscription.get(id=sub.id)
    assert (paid.status, paid.external_reference, paid.current_period_start, paid.current_period_end) == (
        SubscriptionStatus.ACTIVE,
        "sub_test0001",
        *PERIOD,
    )
    assert await stripe.paid() == 6_000 * MICRO
    assert await CreditLot.filter(account_id=stripe.account_id, kind="PAID").count() == 1
    invoice = await Invoice.get(transaction_id=first.id)
    assert (invoice.total, invoice.status) == (5_000, "PAID")
    assert stripe.changes() == [("SUBSCRIPTION", 6_000 * MICRO)]


async def test_a_page_still_open_is_left_pending(stripe: Stripe) -> None:
    sub, first = await stripe.subscribe()
    before = await snapshot()

    still = await hosted_subscriptions.settle_subscription_checkout(stripe.services, stripe.gateway, first)

    assert still.status == TransactionStatus.PENDING
    assert (await Subscription.get(id=sub.id)).status == SubscriptionStatus.INCOMPLETE
    assert await snapshot() == before


async def test_an_expired_page_fails_the_first_payment_and_cancels_the_subscription(stripe: Stripe) -> None:
    sub, first = await stripe.subscribe()
    stripe.standin.expire("cs_test0001")

    failed = await hosted_subscriptions.settle_subscription_checkout(stripe.services, stripe.gateway, first)

    reason = "The checkout page expired before payment"
    assert (failed.status, failed.failure_reason) == (TransactionStatus.FAILED, reason)
    canceled = await Subscription.get(id=sub.id)
    assert (canceled.status, canceled.status_reason) == (
        SubscriptionStatus.CANCELED,
        f"The first payment failed: {reason}",
    )
    assert await live_subscription(stripe.account_id) is None
    assert await stripe.paid() == 0
    assert await Invoice.all().count() == 0
    assert stripe.changes() == []


@pytest.mark.parametrize(
    ("plan_id", "reason", "sessions"),
    [
        ("gone", "No such price: 'price_gone'", 1),  # Stripe refuses the page
        ("founders", "The plan founders has no Stripe price", 0),  # never sent
    ],
)
async def test_a_page_that_cannot_bill_the_plan_fails_the_first_payment(
    stripe: Stripe, plan_id: str, reason: str, sessions: int
) -> None:
    sub, first = await stripe.subscribe(plan_id)

    assert (first.status, first.failure_reason, first.checkout_url) == (TransactionStatus.FAILED, reason, None)
    assert (sub.status, sub.status_reason) == (SubscriptionStatus.CANCELED, f"The first payment failed: {reason}")
    assert len(stripe.standin.calls("POST", "/v1/checkout/sessions")) == sessions
    assert await stripe.paid() == 0
    assert stripe.changes() == []


async def test_a_page_that_cannot_be_opened_is_unavailable_and_a_resend_opens_it(stripe: Stripe) -> None:
    stripe.standin.outage["/v1/checkout/sessions"] = 1

    with pytest.raises(PaymentUnavailableError, match="Send the same request again to get the checkout page"):
        await stripe.subscribe()

    sub = await stripe.live()
    (first,) = await Transaction.all()
    assert (sub.status, first.status, first.checkout_url, first.gateway_reference) == (
        SubscriptionStatus.INCOMPLETE,
        TransactionStatus.PENDING,
        None,
        None,
    )
    assert await stripe.paid() == 0
    _, resent = await stripe.subscribe()
    assert (resent.id, resent.checkout_url) == (first.id, f"{stripe.standin.url}/pay/cs_test0001")
    keys = [r.idempotency_key for r in stripe.standin.calls("POST", "/v1/checkout/sessions")]
    assert keys == [f"creditline-transaction-{first.id}"] * 2


async def test_cancel_at_period_end_resume_and_change_plan_go_through_the_processor(stripe: Stripe) -> None:
    sub = await active(stripe)

    canceled = await subscriptions.cancel(stripe.services, sub, at_period_end=True)
    assert (canceled.status, canceled.cancel_at_period_end) == (SubscriptionStatus.ACTIVE, True)
    assert stripe.standin.subscriptions["sub_test0001"]["cancel_at_period_end"] is True

    resumed = await subscriptions.resume(stripe.services, canceled)
    assert (resumed.status, resumed.cancel_at_period_end) == (SubscriptionStatus.ACTIVE, False)

    changed = await subscriptions.change_plan(stripe.services, resumed, stripe.plan("starter-monthly"))
    assert (changed.status, changed.plan_id, changed.next_plan_id) == (
        SubscriptionStatus.ACTIVE,
        "pro-monthly",
        "starter-monthly",
    )
    assert (changed.current_period_start, changed.current_period_end) == PERIOD
    assert subscription_updates(stripe) == [
        {"cancel_at_period_end": "true"},
        {"cancel_at_period_end": "false"},
        {"items[0][id]": "si_test0001", "items[0][price]": "price_starter_monthly", "proration_behavior": "none"},
    ]
    assert stripe.standin.subscriptions["sub_test0001"]["items"]["data"][0]["price"]["id"] == "price_starter_monthly"
    assert await stripe.paid() == 6_000 * MICRO  # the period paid for keeps its plan and credit
    assert stripe.changes() == []

    ended = await subscriptions.cancel(stripe.services, changed, at_period_end=False)

    assert (ended.status, ended.status_reason, ended.canceled_at) == (
        SubscriptionStatus.CANCELED,
        "Canceled by the customer",
        T0,
    )
    assert len(stripe.standin.calls("DELETE", "/v1/subscriptions/sub_test0001")) == 1
    assert stripe.standin.subscriptions["sub_test0001"]["status"] == "canceled"
    assert await stripe.paid() == 6_000 * MICRO


async def test_a_subscription_whose_page_is_not_paid_is_dropped_and_its_page_closed(stripe: Stripe) -> None:
    sub, first = await stripe.subscribe()

    dropped = await subscriptions.cancel(stripe.services, sub, at_period_end=True)

    assert (dropped.status, dropped.status_reason) == (SubscriptionStatus.CANCELED, "Canceled by the customer")
    assert len(stripe.standin.calls("POST", "/v1/checkout/sessions/cs_test0001/expire")) == 1
    assert stripe.standin.sessions["cs_test0001"]["status"] == "expired"
    failed = await Transaction.get(id=first.id)
    assert (failed.status, failed.failure_reason) == (TransactionStatus.FAILED, "Canceled before payment")
    assert await stripe.paid() == 0


async def test_a_paid_page_whose_payment_is_not_confirmed_cannot_be_dropped(stripe: Stripe) -> None:
    sub, _ = await stripe.subscribe()
    stripe.standin.pay("cs_test0001")  # paid; neither a webhook nor the reconcile job has said so yet
    before = await snapshot()

    with pytest.raises(SubscriptionNotChangeableError, match="The checkout was completed: the payment is being"):
        await subscriptions.cancel(stripe.services, sub, at_period_end=False)

    assert await snapshot() == before


CHANGES: dict[str, Callable[[Stripe, Subscription], Awaitable[Subscription]]] = {
    "cancel at period end": lambda stripe, sub: subscriptions.cancel(stripe.services, sub, at_period_end=True),
    "cancel now": lambda stripe, sub: subscriptions.cancel(stripe.services, sub, at_period_end=False),
    "resume": lambda stripe, sub: subscriptions.resume(stripe.services, sub),
    "change plan": lambda stripe, sub: subscriptions.change_plan(stripe.services, sub, stripe.plan("starter-monthly")),
}


@pytest.mark.parametrize("change", CHANGES)
async def test_a_processor_that_cannot_be_reached_is_unavailable_and_nothing_changes(
    stripe: Stripe, change: str
) -> None:
    sub = await active(stripe)
    if change == "resume":
        sub = await subscriptions.cancel(stripe.services, sub, at_period_end=True)
    stripe.standin.outage["/v1/subscriptions/sub_test0001"] = 1
    before, processor = await snapshot(), copy.deepcopy(stripe.standin.subscriptions["sub_test0001"])

    with pytest.raises(PaymentUnavailableError, match="Stripe could not be reached"):
        await CHANGES[change](stripe, sub)

    assert await snapshot() == before
    assert stripe.standin.subscriptions["sub_test0001"] == processor
    assert stripe.changes() == []


async def test_a_page_that_cannot_be_closed_now_is_unavailable_and_nothing_changes(stripe: Stripe) -> None:
    sub, _ = await stripe.subscribe()
    stripe.standin.outage["/v1/checkout/sessions/cs_test0001/expire"] = 1
    before = await snapshot()

    with pytest.raises(PaymentUnavailableError, match="Stripe could not be reached"):
        await subscriptions.cancel(stripe.services, sub, at_period_end=False)

    assert await snapshot() == before
    assert stripe.standin.sessions["cs_test0001"]["status"] == "open"


async def test_a_change_stripe_refuses_is_not_changeable_and_nothing_changes(stripe: Stripe) -> None:
    sub = await active(stripe)
    stripe.standin.subscriptions["sub_test0001"]["status"] = "canceled"  # ended at Stripe; its event is on its way
    before = await snapshot()

    with pytest.raises(SubscriptionNotChangeableError, match="Stripe refused the change: A canceled subscription"):
        await subscriptions.cancel(stripe.services, sub, at_period_end=True)

    assert await snapshot() == before


async def test_changes_our_subscription_does_not_allow_are_refused_without_asking_the_processor(
    stripe: Stripe,
) -> None:
    sub = await active(stripe)
    ended = await subscriptions.cancel(stripe.services, sub, at_period_end=False)
    requests = len(stripe.standin.requests)
    before = await snapshot()

    with pytest.raises(SubscriptionNotChangeableError, match="set to cancel at period end can be resumed"):
        await subscriptions.resume(stripe.services, sub)  # ACTIVE, but not set to cancel
    with pytest.raises(SubscriptionNotChangeableError, match="Only an active subscription can change plans"):
        await subscriptions.change_plan(stripe.services, ended, stripe.plan("starter-monthly"))
    with pytest.raises(SubscriptionNotChangeableError, match="set to cancel at period end can be resumed"):
        await subscriptions.resume(stripe.services, ended)

    assert await snapshot() == before
    assert len(stripe.standin.requests) == requests


async def test_the_processor_customer_is_made_once_for_the_account(stripe: Stripe) -> None:
    _, first = await stripe.subscribe()
    await subscriptions.cancel(stripe.services, await stripe.live(), at_period_end=False)
    await stripe.subscribe(name="s2")

    assert len(stripe.standin.calls("POST", "/v1/customers")) == 1
    assert [s["customer"] for s in stripe.standin.sessions.values()] == ["cus_test0001", "cus_test0001"]
    assert await GatewayCustomer.filter(account_id=stripe.account_id).values_list("gateway", "reference") == [
        ("stripe", "cus_test0001")
    ]
    assert first.status == TransactionStatus.PENDING
