"""POST /webhooks/stripe: signatures checked by the Stripe SDK, timestamps bounded past and future, every event
stored once and processed once, whatever the order or the number of deliveries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from models.tables import CreditLot, Transaction, WebhookEvent
from tests.support.backends import Backend
from tests.support.helpers import BALANCE, Api
from tests.support.payments import TOP_UP, top_up
from tests.support.stripe_standin import StripeStandIn, deliver, sign, stripe_api


@pytest.fixture
async def api(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, "stripe") as api:
        yield api


async def paid_checkout(api: Api, standin: StripeStandIn) -> tuple[str, dict[str, Any]]:
    """A user with a PENDING top-up of 50 credits paid on Stripe's page, and the event Stripe would send."""
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("50", "t1"), token)
    return token, standin.event("checkout.session.completed", standin.pay("cs_test0001"))


def forged(event: dict[str, Any], stamp: int) -> str:
    return sign(json.dumps(event), stamp, secret="whsec_someone_else")


@pytest.mark.parametrize(
    ("signature", "at", "expected"),
    [
        (lambda event, stamp: forged(event, stamp), 0, "Bad signature: No signatures found matching the expected"),
        (lambda event, stamp: sign(json.dumps({**event, "id": "evt_other"}), stamp), 0, "Bad signature: No signa"),
        (lambda event, stamp: "", 0, "Bad signature: No Stripe-Signature header value was provided."),
        (lambda event, stamp: "t=soon,v1=abc", 0, "Bad signature: Unable to extract timestamp and signatures"),
        (lambda event, stamp: f"t={stamp},v0=abc", 0, "Bad signature: No signatures found with expected scheme v1"),
        (None, -301, "Timestamp too old"),
        (None, 301, "Timestamp in the future"),
    ],
)
async def test_forged_stale_and_future_deliveries_are_refused_and_store_nothing(
    api: Api, stripe_standin: StripeStandIn, signature: Any, at: int, expected: str
) -> None:
    token, event = await paid_checkout(api, stripe_standin)
    when = api.clock.now() + timedelta(seconds=at)
    header = None if signature is None else signature(event, int(when.timestamp()))

    response = await deliver(api, event, at=when, signature=header)

    assert response.status_code == 400
    assert response.text.startswith(expected), response.text
    assert await WebhookEvent.all().count() == 0
    assert (await Transaction.get(id=1)).status == "PENDING"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "0"


@pytest.mark.parametrize("seconds", [-300, 300])
async def test_timestamps_within_the_tolerance_are_accepted(
    api: Api, stripe_standin: StripeStandIn, seconds: int
) -> None:
    token, event = await paid_checkout(api, stripe_standin)

    response = await deliver(api, event, at=api.clock.now() + timedelta(seconds=seconds))

    assert (response.status_code, response.json()["outcome"]) == (200, "processed")
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"


async def test_a_replayed_delivery_is_processed_once_even_re_signed_later(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token, event = await paid_checkout(api, stripe_standin)

    first = await deliver(api, event)
    api.clock.advance(timedelta(hours=1))
    again = await deliver(api, event)  # Stripe retries with a fresh signature
    stale = await deliver(api, event, at=api.clock.now() - timedelta(hours=1))  # an attacker's old capture

    assert [r.json()["outcome"] for r in (first, again)] == ["processed", "duplicate"]
    assert stale.status_code == 400
    stored = await WebhookEvent.get(id=event["id"])
    assert (stored.gateway, stored.type, json.loads(stored.payload)) == ("stripe", event["type"], event)
    assert stored.processed_at == stored.received_at == api.clock.now() - timedelta(hours=1)
    assert await CreditLot.filter(kind="PAID").count() == 1
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"


async def test_concurrent_deliveries_of_one_event_grant_once(api: Api, stripe_standin: StripeStandIn) -> None:
    token, event = await paid_checkout(api, stripe_standin)

    responses = await asyncio.gather(*(deliver(api, event) for _ in range(4)))

    assert all(r.status_code == 200 for r in responses)
    assert await CreditLot.filter(kind="PAID").count() == 1
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "50"
    assert (await WebhookEvent.get(id=event["id"])).processed_at is not None


async def test_shuffled_events_of_several_top_ups_end_as_stripe_says(api: Api, stripe_standin: StripeStandIn) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    for n in range(1, 5):
        await api.data(TOP_UP, top_up(str(50 * n), f"t{n}"), token)
    paid = stripe_standin.event("checkout.session.completed", stripe_standin.pay("cs_test0001"))
    expired = stripe_standin.event("checkout.session.expired", stripe_standin.expire("cs_test0002"))
    delayed = stripe_standin.event("checkout.session.completed", stripe_standin.pay("cs_test0003", delayed=True))
    settled = stripe_standin.event(
        "checkout.session.async_payment_succeeded", stripe_standin.settle("cs_test0003", succeeded=True)
    )
    late = stripe_standin.event("checkout.session.completed", stripe_standin.pay("cs_test0004", delayed=True))
    bounced = stripe_standin.event(
        "checkout.session.async_payment_failed", stripe_standin.settle("cs_test0004", succeeded=False)
    )
    unknown = stripe_standin.event("customer.updated", {"id": "cus_test0001", "object": "customer"})

    for event in (settled, bounced, unknown, expired, late, paid, delayed, settled, paid, expired):
        assert (await deliver(api, event)).status_code == 200

    statuses = [(t.status, t.failure_reason) for t in await Transaction.all().order_by("id")]
    assert statuses == [
        ("SUCCEEDED", None),
        ("FAILED", "The checkout page expired before payment"),
        ("SUCCEEDED", None),
        ("FAILED", "The payment failed after checkout"),
    ]
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "200"
    assert await WebhookEvent.filter(processed_at=None).count() == 0
    assert await WebhookEvent.all().count() == 7


@pytest.mark.parametrize(
    ("event_type", "obj", "outcome"),
    [
        ("customer.created", {"id": "cus_1", "object": "customer"}, "ignored"),
        ("checkout.session.completed", {"id": "cs_x", "object": "checkout.session", "mode": "setup"}, "ignored"),
        ("checkout.session.expired", {"id": "cs_x", "object": "checkout.session", "mode": "subscription"}, "processed"),
        (
            "checkout.session.completed",
            {"id": "cs_x", "object": "checkout.session", "mode": "payment", "payment_status": "paid"},
            "processed",
        ),
        (
            "checkout.session.completed",
            {
                "id": "cs_x",
                "object": "checkout.session",
                "mode": "payment",
                "payment_status": "paid",
                "metadata": {"creditline_transaction": "1"},
            },
            "processed",
        ),
    ],
)
async def test_events_that_are_not_ours_are_acknowledged_and_change_nothing(
    api: Api, stripe_standin: StripeStandIn, event_type: str, obj: dict[str, Any], outcome: str
) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("50", "t1"), token)  # transaction 1, paid on page cs_test0001, not cs_x
    event = stripe_standin.event(event_type, obj)

    response = await deliver(api, event)

    assert (response.status_code, response.json()["outcome"]) == (200, outcome)
    assert (await WebhookEvent.get(id=event["id"])).processed_at is not None
    assert (await Transaction.get(id=1)).status == "PENDING"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "0"


async def test_a_session_charging_another_amount_than_ours_grants_nothing(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    token, event = await paid_checkout(api, stripe_standin)
    event["data"]["object"]["amount_total"] = 1

    assert (await deliver(api, event)).status_code == 200

    assert (await Transaction.get(id=1)).status == "PENDING"
    assert (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]["paid"] == "0"


async def test_a_malformed_event_with_a_good_signature_is_refused(api: Api) -> None:
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "checkout.session.completed"})
    stamp = int(api.clock.now().timestamp())

    response = await api.client.post(
        "/webhooks/stripe", content=payload, headers={"stripe-signature": sign(payload, stamp)}
    )

    assert (response.status_code, response.text) == (400, "Malformed event")
    assert await WebhookEvent.all().count() == 0


async def test_the_sandbox_gateway_has_no_stripe_webhooks(api: Api) -> None:
    app = create_app(Settings(database_url="unused"), clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/webhooks/stripe", content="{}", headers={"stripe-signature": "t=1,v1=x"})
    assert (response.status_code, response.text) == (404, "The sandbox gateway receives no Stripe webhooks")
