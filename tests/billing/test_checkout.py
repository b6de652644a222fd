"""billing.checkout without GraphQL, on the stripe gateway against the local stand-in: a hosted top-up's page
is opened once, what the processor says settles it once, and a page that could not be opened is a refusal
that leaves the payment PENDING."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from billing import checkout
from billing.checkout import CHECKOUT_CANCELED, CHECKOUT_FAILURES
from billing.errors import CheckoutNotCancelableError, PaymentUnavailableError
from creditline.clock import Clock
from creditline.events import InProcessBus
from creditline.gateways import gateway_for
from creditline.services import Services
from creditline.settings import Settings
from gateway.base import CheckoutState, HostedGateway
from models import ledger
from models.credits import MICRO
from models.ledger import IdempotencyKey
from models.tables import CreditAccount, Invoice, OutboxEvent, Transaction, TransactionStatus
from tests.support.backends import Backend
from tests.support.stripe_standin import StripeStandIn, stripe_settings

KEY = IdempotencyKey.for_request("user:1", "t1", "topUp", {"credits": 80 * MICRO})


@pytest.fixture
async def services(
    db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn
) -> AsyncIterator[Services]:
    stripe_standin.reset(clock.now)
    services = Services(settings=stripe_settings(settings, stripe_standin, "stripe"), clock=clock, bus=InProcessBus())
    services.gateway = gateway_for(services.settings)
    await ledger.create_user("ada@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=clock.now())
    try:
        yield services
    finally:
        await services.gateway.close()


def hosted(services: Services) -> HostedGateway:
    assert isinstance(services.gateway, HostedGateway)
    return services.gateway


async def paid(services: Services) -> int:
    account = await CreditAccount.get(user_id=1)
    return (await ledger.read_balances([account.id], services.clock.now()))[account.id].paid


async def test_a_hosted_top_up_opens_one_page_and_its_payment_is_granted_once(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    account = await CreditAccount.get(user_id=1)
    txn = await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)
    again = await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)

    assert (txn.status, txn.checkout_url) == (TransactionStatus.PENDING, f"{stripe_standin.url}/pay/cs_test0001")
    assert (again.id, again.checkout_url) == (txn.id, txn.checkout_url)
    (session,) = stripe_standin.calls("POST", "/v1/checkout/sessions")
    assert session.idempotency_key == f"creditline-transaction-{txn.id}"
    assert (
        session.params["success_url"]
        == "https://app.example/my-credit/billing?checkout=success&transaction=VHJhbnNhY3Rpb246MQ%3D%3D"
    )
    assert await paid(services) == 0

    stripe_standin.pay("cs_test0001")
    settled = await checkout.settle_checkout(services, hosted(services), await Transaction.get(id=txn.id))
    twice = await checkout.settle_checkout(services, hosted(services), await Transaction.get(id=txn.id))

    assert settled.status == twice.status == TransactionStatus.SUCCEEDED
    assert await paid(services) == 80 * MICRO
    assert await Invoice.filter(transaction_id=txn.id).count() == 1


async def test_a_page_that_cannot_be_opened_is_unavailable_and_leaves_the_payment_pending(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    account = await CreditAccount.get(user_id=1)
    stripe_standin.outage["/v1/checkout/sessions"] = 1

    with pytest.raises(PaymentUnavailableError, match="Send the same request again to get the checkout page"):
        await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)

    (txn,) = await Transaction.all()
    assert (txn.status, txn.checkout_url, txn.gateway_reference) == (TransactionStatus.PENDING, None, None)
    assert await paid(services) == 0
    resent = await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)
    assert (resent.id, resent.checkout_url) == (txn.id, f"{stripe_standin.url}/pay/cs_test0001")


async def test_an_expired_page_fails_the_payment_and_grants_nothing(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    account = await CreditAccount.get(user_id=1)
    txn = await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)
    stripe_standin.expire("cs_test0001")

    failed = await checkout.settle_checkout(services, hosted(services), txn)

    assert failed.status == TransactionStatus.FAILED
    assert await paid(services) == 0
    assert await Invoice.all().count() == 0


async def test_two_cancels_at_once_close_the_page_once_and_fail_the_top_up_once(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    account = await CreditAccount.get(user_id=1)
    txn = await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)

    first, second = await asyncio.gather(
        checkout.cancel(services, hosted(services), txn), checkout.cancel(services, hosted(services), txn)
    )

    assert {(t.status, t.failure_reason) for t in (first, second)} == {(TransactionStatus.FAILED, CHECKOUT_CANCELED)}
    assert stripe_standin.sessions["cs_test0001"]["status"] == "expired"
    assert await OutboxEvent.filter(type="payment.failed").count() == 1
    assert await paid(services) == 0


async def test_a_cancel_of_a_page_the_webhook_expired_meanwhile_keeps_the_expiry(
    services: Services, stripe_standin: StripeStandIn
) -> None:
    # The expiry recorded first wins: the transaction is answered as it is, with its reason and one payment.failed.
    account = await CreditAccount.get(user_id=1)
    txn = await checkout.top_up(services, hosted(services), account.id, credits=80 * MICRO, idem=KEY)
    stripe_standin.expire("cs_test0001")
    expired = await checkout.settle_checkout(services, hosted(services), await Transaction.get(id=txn.id))

    with pytest.raises(CheckoutNotCancelableError, match="The top-up is FAILED: only a PENDING one can be canceled"):
        await checkout.cancel(services, hosted(services), expired)
    # A cancel that read the transaction PENDING before the expiry was recorded answers it as recorded.
    answered = await checkout.cancel(services, hosted(services), txn)

    expiry = CHECKOUT_FAILURES[CheckoutState.EXPIRED]
    assert (answered.status, answered.failure_reason) == (TransactionStatus.FAILED, expiry)
    assert await OutboxEvent.filter(type="payment.failed").count() == 1
