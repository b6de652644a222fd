"""Subscriptions on the stripe gateway: plans with Stripe prices, an ``api`` fixture on the stripe gateway
against the stand-in, and a subscription paid on Stripe's page with the events Stripe then sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from creditline.clock import Clock
from creditline.settings import Settings
from models.credits import MICRO
from models.plans import PlanCatalog, PlanSpec
from tests.support.backends import Backend
from tests.support.helpers import Api
from tests.support.stripe_standin import StripeStandIn, stripe_api
from tests.support.subscriptions import subscribe_input

PLANS = PlanCatalog(
    (
        PlanSpec("starter-monthly", "Starter", 1_000, "MONTH", 1_100 * MICRO, False, "price_starter_monthly"),
        PlanSpec("pro-monthly", "Pro", 5_000, "MONTH", 6_000 * MICRO, False, "price_pro_monthly"),
        PlanSpec("pro-yearly", "Pro (yearly)", 50_000, "YEAR", 75_000 * MICRO, True, "price_pro_yearly"),
        PlanSpec("founders", "Founders", 2_000, "MONTH", 3_000 * MICRO, False),
        PlanSpec("gone", "Gone", 2_000, "MONTH", 3_000 * MICRO, False, "price_gone"),
    )
)

FIELDS = """id status planId nextPlanId currentPeriodStart currentPeriodEnd cancelAtPeriodEnd canceledAt
  statusReason nextAttemptAt paymentMethod { last4 }"""

SUBSCRIBE = f"""mutation($input: SubscribeInput!) {{ subscribe(input: $input) {{
  __typename
  ... on SubscribeSuccess {{ checkoutUrl subscription {{ {FIELDS} }}
      transaction {{ id type status credits amount {{ amount currency }} checkoutUrl invoice {{ number }} }} }}
  ... on PaymentDeclined {{ message reason transaction {{ status failureReason }} }}
  ... on ValidationError {{ message field }}
  ... on Error {{ message }} }} }}"""


@pytest.fixture
async def api(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, "stripe") as api:
        api.app.state.services.plans = PLANS
        yield api


async def subscribed(api: Api, standin: StripeStandIn, email: str = "ada@example.com") -> tuple[str, dict[str, Any]]:
    """A user whose pro-monthly subscription was paid on Stripe's page, and the events Stripe then sends."""
    _, token = await api.user(email, bonus=0)
    await api.data(SUBSCRIBE, subscribe_input(), token)
    session = standin.pay("cs_test0001")
    events = {
        "created": standin.event("customer.subscription.created", standin.subscriptions["sub_test0001"]),
        "completed": standin.event("checkout.session.completed", session),
        "paid": standin.event("invoice.paid", standin.invoice_of("sub_test0001")),
    }
    return token, events
