"""billing.customers without GraphQL: the processor customer of an account is made once per account and gateway
(even by two requests at once: the idempotency key ``creditline-customer-<account id>`` makes Stripe answer both
with one customer), a gateway without customers has none, and the customer portal link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from billing.customers import customer_for, portal_url
from billing.errors import PaymentUnavailableError
from creditline.clock import Clock
from creditline.events import InProcessBus
from creditline.services import Services
from creditline.settings import Settings
from gateway.base import GatewayError
from gateway.sandbox import SandboxGateway
from gateway.stripe import StripeGateway
from gateway.stripe_api import StripeApi
from models import ledger, organizations
from models.tables import CreditAccount, GatewayCustomer
from tests.support.backends import T0, Backend
from tests.support.stripe_standin import API_KEY, WEBHOOK_SECRET, StripeStandIn, stripe_settings


class RacingGateway(StripeGateway):
    """The stripe gateway, except that each ``create_customer`` waits until ``callers`` calls have reached it:
    every caller looked for the account's customer and found none."""

    def __init__(self, standin: StripeStandIn, callers: int = 1) -> None:
        super().__init__(StripeApi(secret_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=standin.url))
        self.arrived = asyncio.Barrier(callers)

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        await self.arrived.wait()
        return await super().create_customer(
            account_id=account_id, email=email, name=name, idempotency_key=idempotency_key
        )


class CustomersCounted(SandboxGateway):
    """A gateway with customers that are not Stripe's, named ``name``, which makes a new customer on every call
    (it keeps no idempotency keys); each call waits until ``callers`` calls have reached it."""

    uses_customers = True

    def __init__(self, name: str, callers: int = 1) -> None:
        self.name = name
        self.made: list[str] = []
        self.arrived = asyncio.Barrier(callers)

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        self.made.append(idempotency_key)
        reference = f"cus_{self.name}_{len(self.made)}"
        await self.arrived.wait()
        return reference


class SandboxCounted(SandboxGateway):
    """The sandbox (no customers), recording any customer it is asked to make."""

    def __init__(self) -> None:
        self.made: list[str] = []

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        self.made.append(idempotency_key)
        return await super().create_customer(
            account_id=account_id, email=email, name=name, idempotency_key=idempotency_key
        )


@pytest.fixture
async def standin(db: Backend, clock: Clock, stripe_standin: StripeStandIn) -> StripeStandIn:
    stripe_standin.reset(clock.now)
    return stripe_standin


@pytest.fixture
async def stripe(standin: StripeStandIn) -> AsyncIterator[RacingGateway]:
    gateway = RacingGateway(standin)
    try:
        yield gateway
    finally:
        await gateway.close()


async def account_of(email: str) -> int:
    user_id = await ledger.create_user(email, signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    return int((await CreditAccount.get(user_id=user_id)).id)


async def test_the_customer_is_made_on_first_need_and_found_again_after(
    stripe: RacingGateway, standin: StripeStandIn
) -> None:
    account = await account_of("ada@example.com")

    first = await customer_for(stripe, account, T0)
    again = await customer_for(stripe, account, T0 + timedelta(days=1))

    assert first == again == "cus_test0001"
    (made,) = standin.calls("POST", "/v1/customers")
    assert (made.idempotency_key, made.params) == (
        f"creditline-customer-{account}",
        {"name": "ada@example.com", "email": "ada@example.com", "metadata[creditline_account]": str(account)},
    )
    rows = await GatewayCustomer.filter(account_id=account).values_list("gateway", "reference", "created_at")
    assert rows == [("stripe", "cus_test0001", T0)]


async def test_two_requests_at_once_make_one_row_and_one_processor_customer(
    standin: StripeStandIn,
) -> None:
    account = await account_of("ada@example.com")
    racing = RacingGateway(standin, callers=2)
    try:
        answers = await asyncio.gather(customer_for(racing, account, T0), customer_for(racing, account, T0))
    finally:
        await racing.close()

    assert list(answers) == ["cus_test0001", "cus_test0001"]
    made = standin.calls("POST", "/v1/customers")
    assert [(r.idempotency_key, r.replayed) for r in made] == [
        (f"creditline-customer-{account}", False),
        (f"creditline-customer-{account}", True),  # both asked; Stripe answered the second with the first customer
    ]
    assert list(standin.customers) == ["cus_test0001"]
    assert await GatewayCustomer.filter(account_id=account).values_list("gateway", "reference") == [
        ("stripe", "cus_test0001")
    ]


async def test_requests_at_once_all_get_the_customer_stored_first(db: Backend) -> None:
    account = await account_of("ada@example.com")
    forgetful = CustomersCounted("other", callers=2)

    answers = await asyncio.gather(customer_for(forgetful, account, T0), customer_for(forgetful, account, T0))

    assert forgetful.made == [f"creditline-customer-{account}"] * 2
    (stored,) = await GatewayCustomer.filter(account_id=account)
    assert stored.reference in ("cus_other_1", "cus_other_2")
    assert list(answers) == [stored.reference] * 2  # never the one whose row lost the insert


async def test_each_account_and_each_gateway_has_its_own_customer(stripe: RacingGateway) -> None:
    ada, bob = await account_of("ada@example.com"), await account_of("bob@example.com")
    other = CustomersCounted("other")

    assert await customer_for(stripe, ada, T0) == "cus_test0001"
    assert await customer_for(stripe, bob, T0) == "cus_test0002"
    assert await customer_for(other, ada, T0) == "cus_other_1"
    assert await customer_for(other, ada, T0) == "cus_other_1"

    assert other.made == [f"creditline-customer-{ada}"]
    rows = await GatewayCustomer.all().order_by("id").values_list("account_id", "gateway", "reference")
    assert rows == [(ada, "stripe", "cus_test0001"), (bob, "stripe", "cus_test0002"), (ada, "other", "cus_other_1")]


async def test_an_organizations_pool_is_a_customer_named_after_the_organization(
    stripe: RacingGateway, standin: StripeStandIn
) -> None:
    owner = await ledger.create_user("ada@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=T0)
    acme = await organizations.create("Acme", owner, T0)
    pool = await organizations.enable_pool(acme.id, T0)

    assert await customer_for(stripe, pool.id, T0) == "cus_test0001"

    (made,) = standin.calls("POST", "/v1/customers")
    assert made.params == {"name": "Acme", "metadata[creditline_account]": str(pool.id)}  # no email of its own


async def test_a_gateway_without_customers_has_none(db: Backend) -> None:
    account = await account_of("ada@example.com")
    sandbox = SandboxCounted()

    assert await customer_for(sandbox, account, T0) is None

    assert sandbox.made == []
    assert await GatewayCustomer.all().count() == 0


async def test_a_customer_the_processor_did_not_make_is_not_stored(
    stripe: RacingGateway, standin: StripeStandIn
) -> None:
    account = await account_of("ada@example.com")
    standin.outage["/v1/customers"] = 1

    with pytest.raises(GatewayError, match="Stripe could not be reached"):
        await customer_for(stripe, account, T0)

    assert await GatewayCustomer.all().count() == 0
    assert await customer_for(stripe, account, T0) == "cus_test0001"  # the next need asks again, with the same key
    assert [r.idempotency_key for r in standin.calls("POST", "/v1/customers")] == [f"creditline-customer-{account}"] * 2


async def test_the_portal_link_is_the_processors_for_the_accounts_customer(
    clock: Clock, settings: Settings, stripe: RacingGateway, standin: StripeStandIn
) -> None:
    account = await account_of("ada@example.com")
    services = Services(settings=stripe_settings(settings, standin, "stripe"), clock=clock, bus=InProcessBus())

    url = await portal_url(services, stripe, account, "https://app.example/my-credit/billing")

    assert url == f"{standin.url}/portal/cus_test0001"
    (portal,) = standin.calls("POST", "/v1/billing_portal/sessions")
    assert portal.params == {"customer": "cus_test0001", "return_url": "https://app.example/my-credit/billing"}


@pytest.mark.parametrize("down", ["/v1/customers", "/v1/billing_portal/sessions"])
async def test_a_portal_link_the_processor_cannot_make_is_unavailable(
    clock: Clock, settings: Settings, stripe: RacingGateway, standin: StripeStandIn, down: str
) -> None:
    account = await account_of("ada@example.com")
    services = Services(settings=stripe_settings(settings, standin, "stripe"), clock=clock, bus=InProcessBus())
    standin.outage[down] = 1

    with pytest.raises(PaymentUnavailableError, match="Stripe could not be reached"):
        await portal_url(services, stripe, account, "https://app.example/my-credit/billing")

    assert standin.portals == []
    customers = [c.reference for c in await GatewayCustomer.all()]
    assert customers == ([] if down == "/v1/customers" else ["cus_test0001"])  # a customer made is kept
