"""Signed Stripe events whose object has fields of unexpected shapes (issue 9, point 7 follow-up): never a
500, never retried for ever. A field a handler reads that is missing or of another type than Stripe's makes
the event "malformed": stored, acknowledged with a 200 (Stripe would redeliver a non-2xx for days), set
aside (processed, so the sweep leaves it), its reason logged once; nothing else changes."""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

import pytest

from billing import webhook_events
from models.tables import CreditLot, Invoice, Subscription, Transaction, WebhookEvent
from tests.support.helpers import Api
from tests.support.payments import TOP_UP, top_up
from tests.support.stripe_standin import StripeStandIn, deliver
from tests.support.stripe_subscriptions import api as api
from tests.support.stripe_subscriptions import subscribed

WRONG = [None, [], {}, "", "x", 7, -1, True, 2**53, 1.5, [1], {"id": 1}]
"""Values of other types than Stripe's, for any field; each field gets three of them in turn (and goes
missing), so that the whole sweep stays within seconds."""
MISSING = object()


async def state() -> tuple[Any, ...]:
    """What an event may change, as stored (without the events themselves)."""
    return (
        sorted((s.id, s.status, s.external_reference, s.failed_attempts) for s in await Subscription.all()),
        sorted((t.id, t.status, t.gateway_reference, t.failure_reason) for t in await Transaction.all()),
        sorted((lot.id, lot.amount, lot.remaining) for lot in await CreditLot.all()),
        await Invoice.all().count(),
    )


async def templates(api: Api, standin: StripeStandIn) -> dict[str, dict[str, Any]]:
    """One genuine object for each handled event type, naming our rows (a subscription paid on its page, a
    PENDING top-up paid on its page), none delivered yet."""
    token, events = await subscribed(api, standin)
    await api.data(TOP_UP, top_up("50", "t1"), token)
    topup = next(t for t in await Transaction.all() if t.subscription_id is None)
    assert topup.gateway_reference is not None
    paid = standin.pay(topup.gateway_reference)
    subscription = events["created"]["data"]["object"]
    invoice = events["paid"]["data"]["object"]
    session = events["completed"]["data"]["object"]
    return {
        "checkout.session.completed:payment": paid,
        "checkout.session.async_payment_succeeded:payment": paid,
        "checkout.session.async_payment_failed:payment": paid,
        "checkout.session.expired:payment": paid,
        "checkout.session.completed:subscription": session,
        "checkout.session.expired:subscription": session,
        "invoice.paid": invoice,
        "invoice.payment_failed": invoice,
        "customer.subscription.created": subscription,
        "customer.subscription.updated": subscription,
        "customer.subscription.deleted": subscription,
    }


def event_type(key: str) -> str:
    return key.split(":")[0]


def test_every_handled_type_has_a_template() -> None:
    handled = set(webhook_events.HANDLERS)
    assert handled == {
        "checkout.session.completed:payment",
        "checkout.session.async_payment_succeeded:payment",
        "checkout.session.async_payment_failed:payment",
        "checkout.session.expired:payment",
        "checkout.session.completed:subscription",
        "checkout.session.expired:subscription",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }


async def test_each_top_level_field_of_the_wrong_type_or_missing_never_fails(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    """Every handled type, every top-level field of its object, missing or of each wrong type: a 200 (or a
    400 from the generic checks: metadata that is not a map of strings), never a 5xx; a malformed or refused
    event changes nothing; none is left for the sweep but those that name rows not written (deferred)."""
    objects = await templates(api, stripe_standin)
    started, answers = time.monotonic(), set()
    for key, genuine in objects.items():
        for index, field in enumerate(genuine):
            for value in [MISSING, *(WRONG[(index + turn * 4) % len(WRONG)] for turn in range(3))]:
                obj = copy.deepcopy(genuine)
                if value is MISSING:
                    del obj[field]
                else:
                    obj[field] = value
                event = stripe_standin.event(event_type(key), obj)
                before = await state()

                response = await deliver(api, event)

                assert response.status_code in (200, 400), (key, field, value, response.text)
                outcome = response.json()["outcome"] if response.status_code == 200 else "refused"
                answers.add(outcome)
                if outcome in ("malformed", "refused"):
                    assert await state() == before, (key, field, value)
                if outcome == "malformed":
                    assert (await WebhookEvent.get(id=event["id"])).processed_at is not None
    assert {"malformed", "refused", "processed"} <= answers
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("key", "change", "reason"),
    [
        ("invoice.paid", {"lines": {"data": "x"}}, "ValueError: no list of objects where one was expected"),
        ("invoice.paid", {"parent": "x"}, "ValueError: str where an object was expected"),
        ("invoice.paid", {"id": 7}, "ValueError: the id is not a non-empty string"),
        ("invoice.paid", {"attempt_count": 2**40}, "ValueError: 1099511627776 is not a count from 0 to 1000"),
        ("invoice.payment_failed", {"amount_paid": "12"},
         "ValueError: '12' is not a count from 0 to 9007199254740992"),
        ("customer.subscription.updated", {"items": []}, "ValueError: list where an object was expected"),
        ("customer.subscription.updated", {"items": {"data": {"id": "si"}}},
         "ValueError: no list of objects where one was expected"),
        ("customer.subscription.deleted", {"canceled_at": 2**53},
         "ValueError: unix time 9007199254740992 out of range"),
        ("customer.subscription.created", {"id": None}, "ValueError: the id is not a non-empty string"),
        ("checkout.session.completed:payment", {"id": ["cs"]}, "id is not a non-empty string"),
        ("checkout.session.expired:subscription", {"id": None}, "id is not a non-empty string"),
    ],
)  # fmt: skip
async def test_a_malformed_event_is_acknowledged_set_aside_and_logged_once(
    api: Api, stripe_standin: StripeStandIn, caplog: pytest.LogCaptureFixture, key: str, change: dict[str, Any],
    reason: str,
) -> None:  # fmt: skip
    objects = await templates(api, stripe_standin)
    obj = {**copy.deepcopy(objects[key]), **change}
    event = stripe_standin.event(event_type(key), obj)
    before = await state()
    caplog.set_level(logging.INFO, logger="creditline.webhooks")

    first = await deliver(api, event)
    again = await deliver(api, event)
    swept = await webhook_events.retry_unprocessed(webhook_events.context_for(api.app.state.services))

    assert (first.status_code, first.json()) == (200, {"received": event["id"], "outcome": "malformed"})
    assert (again.status_code, again.json()) == (200, {"received": event["id"], "outcome": "duplicate"})
    assert swept == (0, ())
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "creditline.webhooks"] == [
        ("ERROR", f"{event_type(key)} event {event['id']} cannot be processed: acknowledged and set aside: {reason}")
    ]
    stored = await WebhookEvent.get(id=event["id"])
    assert stored.processed_at is not None
    assert stored.type == event_type(key)
    assert await state() == before
    # It blocks nothing: the genuine event still does what it does.
    genuine = await deliver(api, stripe_standin.event(event_type(key), objects[key]))
    assert genuine.status_code == 200
    assert genuine.json()["outcome"] == "processed"


async def test_the_sweep_sets_aside_a_stored_event_it_cannot_read_and_goes_on(
    api: Api, stripe_standin: StripeStandIn
) -> None:
    """A stored payload without an object (stored before the checks on receipt) neither fails the sweep nor
    holds back the events after it."""
    objects = await templates(api, stripe_standin)
    now = api.clock.now()
    await WebhookEvent.create(id="evt_broken", gateway="stripe", type="invoice.paid", payload='{"data": []}',
                              created_at=now, received_at=now)  # fmt: skip
    paid = stripe_standin.event("invoice.paid", objects["invoice.paid"])
    await Subscription.filter(id=1).update(external_reference=None)
    early = copy.deepcopy(paid)
    early["data"]["object"]["parent"]["subscription_details"]["metadata"] = {"creditline_subscription": "2"}
    assert (await deliver(api, early)).json()["outcome"] == "deferred"
    # Our side is written now: the stored event names our subscription.
    await WebhookEvent.filter(id=early["id"]).update(payload=json.dumps(paid))

    processed, _ = await webhook_events.retry_unprocessed(webhook_events.context_for(api.app.state.services))

    assert processed == 1
    assert (await WebhookEvent.get(id="evt_broken")).processed_at is not None
    assert (await WebhookEvent.get(id=early["id"])).processed_at is not None
