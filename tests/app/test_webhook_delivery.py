"""Webhook delivery (creditline/webhooks, models/webhook_deliveries.py) to a receiver started by the test, which
verifies every signature with the standardwebhooks library, as a platform would."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from tortoise.transactions import in_transaction

from creditline.app import build_services
from creditline.clock import Clock
from creditline.events import OUTBOX, OUTBOX_WRITTEN, BusSubscription
from creditline.jobs import prune_events
from creditline.services import Services
from creditline.settings import Settings
from creditline.webhooks.sending import refusal
from creditline.webhooks.worker import CONCURRENCY, PER_ENDPOINT, DeliveryWorker
from models import limits
from models.credits import MICRO
from models.ids import encode_id
from models.ledger.alerts import store_levels
from models.limit_rules import LimitSpec
from models.outbox import EmittedEvent, EventType, emit, take_written
from models.sql import Sql
from models.tables import (
    CreditAccount,
    LimitScope,
    LimitWindow,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from models.webhook_deliveries import (
    Claimed,
    Outcome,
    backoff_ceiling,
    claim_due,
    fan_out,
    next_attempt_at,
    record_outcomes,
)
from models.webhook_urls import is_public_address
from models.webhooks import delete_endpoint, redeliver
from tests.support import readme_events
from tests.support.backends import T0, Backend
from tests.support.events import emitted as events_of
from tests.support.helpers import SPEND, Api, spend_variables
from tests.support.live import connect, receive, serve
from tests.support.statements import StatementCounter
from tests.support.statements import counter as counter
from tests.support.webhook_receiver import Receiver, receiving

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()


class Highest(random.Random):
    """Full jitter drawing its upper bound every time: the schedule's ceilings, exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


def webhook_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "unused",
        "webhook_allow_private": True,
        "webhook_timeout_seconds": 0.5,
        **overrides,
    }
    return Settings(**values)


def worker_for(
    clock: Clock,
    *,
    rng: random.Random | None = None,
    concurrency: int = CONCURRENCY,
    per_endpoint: int = PER_ENDPOINT,
    **overrides: Any,
) -> DeliveryWorker:
    services = build_services(webhook_settings(**overrides), clock)
    return DeliveryWorker(services, rng=rng or Highest(), concurrency=concurrency, per_endpoint=per_endpoint)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


async def endpoint(
    url: str,
    *,
    event_types: str = "",
    organization_id: int | None = None,
    secret: str = SECRET,
    created_at: datetime = T0,
    **extra: Any,
) -> WebhookEndpoint:
    return await WebhookEndpoint.create(
        url=url,
        event_types=event_types,
        organization_id=organization_id,
        secret=secret,
        created_at=created_at,
        updated_at=created_at,
        **extra,
    )


async def emitted(
    event_type: EventType,
    data: dict[str, Any],
    now: datetime = T0,
    *,
    account_id: int | None = None,
    organization_id: int | None = None,
) -> EmittedEvent:
    async with in_transaction() as conn:
        return await emit(Sql(conn), event_type, data, now, account_id=account_id, organization_id=organization_id)


async def lows_then_depleted(count: int) -> None:
    """``count`` balance.low events of account 1, then ``count`` balance.depleted of account 2."""
    for event_type, account_id in ((EventType.BALANCE_LOW, 1), (EventType.BALANCE_DEPLETED, 2)):
        for n in range(count):
            await emitted(event_type, {"n": n}, account_id=account_id)


async def delivery_states() -> list[tuple[int, str, int]]:
    return [(d.endpoint_id, d.status.value, d.attempts) for d in await WebhookDelivery.all().order_by("id")]


async def test_a_delivery_is_signed_standard_webhooks_with_the_documented_body(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    hook = await endpoint(receiver.url)
    first = await emitted(EventType.BALANCE_LOW, {"available": "4.5"}, account_id=7)
    second = await emitted(EventType.BALANCE_DEPLETED, {"available": "0"}, T0 + timedelta(seconds=1), account_id=7)
    deployment = await emitted(EventType.INVOICE_CREATED, {"invoice": {"id": "x"}})
    worker = worker_for(clock)
    try:
        assert await worker.run_once() == 3
    finally:
        await worker.close()

    assert receiver.ids() == [first.public_id, second.public_id, deployment.public_id]
    assert [r.verified(SECRET) for r in receiver.received] == [
        {"type": "balance.low", "timestamp": "2026-01-15T12:00:00+00:00", "data": {"available": "4.5", "sequence": 1}},
        {
            "type": "balance.depleted",
            "timestamp": "2026-01-15T12:00:01+00:00",
            "data": {"available": "0", "sequence": 2},
        },
        {
            "type": "invoice.created",
            "timestamp": "2026-01-15T12:00:00+00:00",
            "data": {"invoice": {"id": "x"}, "sequence": None},
        },
    ]
    headers = receiver.received[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Creditline-Webhooks/1.0"
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        receiver.received[0].verified(OTHER_SECRET)
    delivery = await WebhookDelivery.get(event_id=first.id)
    assert (delivery.status.value, delivery.attempts, delivery.last_status_code, delivery.last_response) == (
        "SUCCEEDED",
        1,
        200,
        "ok",
    )
    assert (delivery.delivered_at, delivery.next_attempt_at, delivery.endpoint_id) == (T0, None, hook.id)
    assert [(a.attempt, a.status_code, a.response_body, a.error) for a in await WebhookAttempt.all()] == [
        (1, 200, "ok", None)
    ] * 3
    assert await OutboxEvent.filter(dispatched_at=None).count() == 0


async def test_endpoints_get_the_types_and_organization_they_ask_for_and_nothing_from_before(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    every = await endpoint(receiver.url)
    lows = await endpoint(receiver.url, event_types="balance.low balance.recovered")
    pool = await endpoint(receiver.url, organization_id=5)
    disabled = await endpoint(receiver.url, status="DISABLED")
    low = await emitted(EventType.BALANCE_LOW, {}, account_id=1, organization_id=5)
    paid = await emitted(EventType.PAYMENT_SUCCEEDED, {}, account_id=2, organization_id=6)
    later = await endpoint(receiver.url, created_at=T0 + timedelta(seconds=1))
    worker = worker_for(clock)
    try:
        await worker.run_once()
    finally:
        await worker.close()

    sent = sorted((d.event_id, d.endpoint_id) for d in await WebhookDelivery.all())
    assert sent == [(low.id, every.id), (low.id, lows.id), (low.id, pool.id), (paid.id, every.id)]
    assert disabled.id not in {e for _, e in sent}
    assert later.id not in {e for _, e in sent}
    assert sorted(receiver.ids()) == sorted([low.public_id] * 3 + [paid.public_id])


async def test_down_500_and_slow_receivers_get_every_event_once_with_the_same_id(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    await endpoint(receiver.url)
    events = [await emitted(EventType.BALANCE_LOW, {"n": n}, account_id=3) for n in range(3)]
    worker = worker_for(clock)
    try:
        await receiver.stop()  # down: the connection is refused
        assert await worker.run_once() == 3
        assert await delivery_states() == [(1, "PENDING", 1)] * 3
        first = await WebhookDelivery.first()
        assert first is not None
        assert first.last_error is not None
        assert "ConnectError" in first.last_error
        assert first.next_attempt_at == T0 + timedelta(seconds=10)

        await receiver.start()
        receiver.status = 500
        receiver.answer = "x" * 5000
        clock.advance(timedelta(seconds=10))
        assert await worker.run_once() == 3
        failed = await WebhookDelivery.first()
        assert failed is not None
        assert (failed.last_status_code, failed.last_response, failed.attempts) == (500, "x" * 1024, 2)
        assert failed.next_attempt_at == clock.now() + timedelta(seconds=20)

        receiver.status, receiver.answer, receiver.delay = 200, "ok", 2.0  # past the 0.5 s timeout
        clock.advance(timedelta(seconds=20))
        assert await worker.run_once() == 3
        slow = await WebhookDelivery.first()
        assert slow is not None
        assert (slow.last_status_code, slow.last_error) == (None, "timed out after 0.5 s")

        receiver.delay = 0.0
        clock.advance(timedelta(seconds=40))
        assert await worker.run_once() == 3
        assert await worker.run_once() == 0  # nothing left
    finally:
        await worker.close()

    assert await delivery_states() == [(1, "SUCCEEDED", 4)] * 3
    ids = receiver.ids()
    assert sorted(set(ids)) == sorted(e.public_id for e in events)
    assert all(ids.count(e.public_id) == 3 for e in events)  # 500, slow, then 200: never another id
    for received in receiver.received:
        received.verified(SECRET)
    attempts = [(a.attempt, a.status_code) for a in await WebhookAttempt.filter(delivery_id=1).order_by("attempt")]
    assert attempts == [(1, None), (2, 500), (3, None), (4, 200)]
    hook = await WebhookEndpoint.get()
    assert hook.failing_since is None  # a success resets it


async def test_back_off_doubles_with_jitter_then_fails_after_the_retry_period(db: Backend, clock: Clock) -> None:
    await endpoint("http://127.0.0.1:9/never")  # discard port: nothing listens
    await endpoint("http://127.0.0.1:9/again")
    await emitted(EventType.PAYMENT_FAILED, {})
    worker = worker_for(clock, webhook_retry_hours=1)
    started = clock.now()
    waits: list[timedelta] = []
    try:
        while True:
            await worker.run_once()
            delivery = await WebhookDelivery.get(endpoint_id=1)
            if delivery.status.value != "PENDING":
                break
            assert delivery.next_attempt_at is not None
            waits.append(delivery.next_attempt_at - clock.now())
            clock.freeze(delivery.next_attempt_at)
    finally:
        await worker.close()

    assert [w.total_seconds() for w in waits] == [10, 20, 40, 80, 160, 320, 640, 1280, 1050]  # the last: the end
    assert clock.now() == started + timedelta(hours=1)
    assert (delivery.status.value, delivery.attempts, delivery.next_attempt_at) == ("FAILED", 10, None)
    assert [b.total_seconds() for b in map(backoff_ceiling, [1, 2, 12, 13, 40])] == [10, 20, 20480, 21600, 21600]


def test_full_jitter_draws_between_a_second_and_the_ceiling_and_never_past_the_deadline() -> None:
    rng = random.Random(7)
    waits = [next_attempt_at(T0, 3, T0 + timedelta(days=3), rng) - T0 for _ in range(200)]
    assert min(waits) >= timedelta(seconds=1)
    assert max(waits) <= timedelta(seconds=40)
    assert len(set(waits)) > 100  # jittered, not one value
    assert next_attempt_at(T0, 30, T0 + timedelta(minutes=5), Highest()) == T0 + timedelta(minutes=5)


async def test_an_endpoint_failing_for_the_retry_period_is_disabled_and_the_others_hear_of_it(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    failing = await endpoint("http://127.0.0.1:9/down")
    listener = await endpoint(receiver.url, event_types="webhook_endpoint.disabled", secret=OTHER_SECRET)
    await emitted(EventType.BALANCE_LOW, {}, account_id=1)
    worker = worker_for(clock, webhook_retry_hours=1)
    try:
        await worker.run_once()
        await emitted(EventType.BALANCE_DEPLETED, {}, clock.now() + timedelta(minutes=59), account_id=1)
        clock.advance(timedelta(minutes=59))
        await worker.run_once()
        assert (await WebhookEndpoint.get(id=failing.id)).status.value == "ENABLED"
        clock.advance(timedelta(minutes=1))
        await worker.run_once()
    finally:
        await worker.close()

    hook = await WebhookEndpoint.get(id=failing.id)
    assert (hook.status.value, hook.disabled_reason, hook.disabled_at) == (
        "DISABLED",
        "Every delivery failed for 1 hours",
        T0 + timedelta(hours=1),
    )
    assert [(d.endpoint_id, d.status.value) for d in await WebhookDelivery.all().order_by("id")] == [
        (failing.id, "FAILED"),
        (failing.id, "FAILED"),
        (listener.id, "SUCCEEDED"),
    ]
    [told] = [r.verified(OTHER_SECRET) for r in receiver.received]
    assert readme_events.undocumented(told["type"], {k: v for k, v in told["data"].items() if k != "sequence"}) == []
    assert [r.verified(OTHER_SECRET) for r in receiver.received] == [
        {
            "type": "webhook_endpoint.disabled",
            "timestamp": "2026-01-15T13:00:00+00:00",
            "data": {
                "endpoint": {"id": encode_id("WebhookEndpoint", failing.id), "url": "http://127.0.0.1:9/down"},
                "reason": "Every delivery failed for 1 hours",
                "sequence": None,
            },
        }
    ]


async def test_a_redirect_is_a_failure_and_not_followed(db: Backend, clock: Clock) -> None:
    async with receiving(status=302, location="http://127.0.0.1:9/elsewhere") as redirecting:
        await endpoint(redirecting.url)
        await emitted(EventType.REFUND_CREATED, {})
        worker = worker_for(clock)
        try:
            await worker.run_once()
        finally:
            await worker.close()
    assert len(redirecting.received) == 1
    delivery = await WebhookDelivery.get()
    assert (delivery.status.value, delivery.last_status_code, delivery.last_error) == (
        "PENDING",
        302,
        "redirect not followed (to http://127.0.0.1:9/elsewhere)",
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:{port}/h", "127.0.0.1 is a loopback address"),
        ("http://10.1.2.3:{port}/h", "10.1.2.3 is a private address"),
        ("http://169.254.169.254:{port}/h", "169.254.169.254 is a link-local address"),
        ("http://[::1]:{port}/h", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/h", "::ffff:127.0.0.1 carries 127.0.0.1, a loopback address"),
        ("http://0.0.0.0:{port}/h", "0.0.0.0 is an unspecified address"),
        ("http://localhost:{port}/h", "is a loopback address"),
    ],
)
async def test_private_addresses_are_refused_without_the_setting(
    db: Backend, clock: Clock, receiver: Receiver, url: str, why: str
) -> None:
    await endpoint(url.format(port=receiver.port))
    await emitted(EventType.BALANCE_LOW, {}, account_id=1)
    worker = worker_for(clock, webhook_allow_private=False)
    try:
        await worker.run_once()
    finally:
        await worker.close()
    assert receiver.received == []
    delivery = await WebhookDelivery.get()
    assert delivery.status.value == "PENDING"
    assert delivery.last_status_code is None
    assert delivery.last_error is not None
    assert why in delivery.last_error
    assert "CREDITLINE_WEBHOOK_ALLOW_PRIVATE is off" in delivery.last_error


async def test_a_name_is_checked_by_every_address_it_resolves_to_and_connected_to_the_checked_one(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        # One resolution only: a second one (a rebinding DNS answer) would say 93.184.216.34.
        assert host == "hooks.example.com"
        resolved.append(host)
        return ["127.0.0.1"]

    resolved: list[str] = []
    await endpoint(f"http://hooks.example.com:{receiver.port}/hooks")
    await emitted(EventType.BALANCE_LOW, {}, account_id=1)
    refused = DeliveryWorker(build_services(webhook_settings(webhook_allow_private=False), clock), resolver=rebinding)
    try:
        await refused.run_once()
    finally:
        await refused.close()
    delivery = await WebhookDelivery.get()
    assert delivery.last_error == (
        "refused: hooks.example.com resolves to 127.0.0.1 is a loopback address"
        " (CREDITLINE_WEBHOOK_ALLOW_PRIVATE is off)"
    )
    assert receiver.received == []

    clock.advance(timedelta(seconds=10))
    allowed = DeliveryWorker(build_services(webhook_settings(), clock), resolver=rebinding)
    try:
        await allowed.run_once()
    finally:
        await allowed.close()
    assert len(receiver.received) == 1
    assert receiver.received[0].headers["host"] == f"hooks.example.com:{receiver.port}"
    assert resolved == ["hooks.example.com", "hooks.example.com"]  # once per attempt
    assert (await WebhookDelivery.get()).status.value == "SUCCEEDED"


def test_the_address_rule() -> None:
    assert [refusal(a) for a in ("93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34")] == [None] * 3
    assert refusal("192.168.0.1") == "192.168.0.1 is a private address"
    assert refusal("fe80::1") == "fe80::1 is a link-local address"
    assert refusal("fc00::1") == "fc00::1 is a private address"
    assert refusal("224.0.0.1") == "224.0.0.1 is a multicast address"
    assert refusal("100.64.0.1") == "100.64.0.1 is a shared (carrier-grade NAT) address"
    assert refusal("::ffff:10.1.2.3") == "::ffff:10.1.2.3 carries 10.1.2.3, a private address"
    assert refusal("fe80::1%eth0") == "fe80::1 is a link-local address"
    assert refusal("::") == ":: is an unspecified address"
    assert refusal("240.0.0.1") == "240.0.0.1 is a reserved address"
    # One rule: the sender refuses exactly what the admin API's check (models/webhook_urls) calls not public.
    addresses = ["93.184.216.34", "10.0.0.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "224.0.1.1",
                 "240.0.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "ff0e::1", "::ffff:10.0.0.1",
                 "::ffff:93.184.216.34", "2606:4700::1111", "2001:db8::1"]  # fmt: skip
    assert [refusal(a) is None for a in addresses] == [is_public_address(a) for a in addresses]
    assert [a for a in addresses if refusal(a) is None] == ["93.184.216.34", "::ffff:93.184.216.34", "2606:4700::1111"]


async def test_during_a_rotation_both_secrets_sign_and_after_it_only_the_new(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    await endpoint(receiver.url, previous_secret=OLD_SECRET, previous_secret_expires_at=T0 + timedelta(hours=1))
    await emitted(EventType.BALANCE_LOW, {}, account_id=1)
    worker = worker_for(clock)
    try:
        await worker.run_once()
        clock.advance(timedelta(hours=1))
        await emitted(EventType.BALANCE_RECOVERED, {}, clock.now(), account_id=1)
        await worker.run_once()
    finally:
        await worker.close()
    during, after = receiver.received
    assert during.verified(SECRET) == during.verified(OLD_SECRET)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert after.verified(SECRET)["type"] == "balance.recovered"
    with pytest.raises(WebhookVerificationError):
        after.verified(OLD_SECRET)
    assert Webhook(SECRET).verify(after.body, after.headers) == json.loads(after.body)


async def test_the_sweep_prunes_events_past_retention_with_their_deliveries(db: Backend, clock: Clock) -> None:
    hook = await endpoint("http://127.0.0.1:9/x")
    old = [await emitted(EventType.BALANCE_LOW, {}, T0, account_id=a) for a in (1, 1, 2)]
    await emitted(EventType.INVOICE_CREATED, {}, T0)
    worker = worker_for(clock)
    try:
        await worker.run_once()
    finally:
        await worker.close()
    assert await WebhookAttempt.all().count() == 4
    clock.advance(timedelta(days=31))
    recent = await emitted(EventType.BALANCE_LOW, {}, clock.now(), account_id=1)
    services = build_services(webhook_settings(), clock)

    # the deliveries are still PENDING (their last try, at the retry period's end, has not run): nothing goes
    assert await delivery_states() == [(hook.id, "PENDING", 1)] * 4
    assert await prune_events(services) == 0
    assert await OutboxEvent.all().count() == 5
    worker = worker_for(clock)
    try:
        await worker.run_once()  # the last try: FAILED
    finally:
        await worker.close()
    assert await delivery_states() == [(hook.id, "FAILED", 2)] * 4 + [(hook.id, "FAILED", 1)]

    assert await prune_events(services) == 3  # account 1's older two, the deployment's; 2's newest stays
    # and the endpoint, failing for the whole retry period, was disabled: its event is recent
    left = [(e.id, e.type) for e in await OutboxEvent.all().order_by("id")]
    assert left == [
        (old[2].id, "balance.low"),
        (recent.id, "balance.low"),
        (recent.id + 1, "webhook_endpoint.disabled"),
    ]
    assert [d.event_id for d in await WebhookDelivery.all().order_by("id")] == [old[2].id, recent.id]
    assert await WebhookAttempt.all().count() == 3
    assert await WebhookEndpoint.filter(id=hook.id).exists()


async def test_a_retention_shorter_than_the_retry_period_never_prunes_a_pending_delivery(
    db: Backend, clock: Clock, receiver: Receiver
) -> None:
    hook = await endpoint("http://127.0.0.1:9/down")
    kept = [await emitted(EventType.BALANCE_LOW, {"n": n}, T0, account_id=1) for n in range(3)]
    worker = worker_for(clock, event_retention_days=1)
    try:
        await worker.run_once()  # refused: PENDING, retried for 72 hours
        clock.advance(timedelta(days=2))
        assert await prune_events(worker.services) == 0
        assert await delivery_states() == [(hook.id, "PENDING", 1)] * 3
        await WebhookEndpoint.filter(id=hook.id).update(url=receiver.url)  # the receiver is back
        await worker.run_once()
    finally:
        await worker.close()
    assert receiver.ids() == [e.public_id for e in kept]
    assert await prune_events(worker.services) == 2  # delivered: the older two go, the account's newest stays
    assert [e.id for e in await OutboxEvent.all()] == [kept[2].id]


async def test_one_slow_endpoint_does_not_hold_back_the_others(db: Backend, clock: Clock) -> None:
    async with receiving(delay=0.4) as slow, receiving() as fast:
        await endpoint(slow.url, event_types="balance.low")
        await endpoint(fast.url, event_types="balance.depleted")
        await lows_then_depleted(8)
        worker = worker_for(clock, rng=random.Random(), webhook_timeout_seconds=5, concurrency=6, per_endpoint=2)
        try:
            run = asyncio.create_task(worker.run_once())
            await fast.wait_for(8, within=3)
            assert len(slow.received) <= 4  # two at a time, 0.4 s each: the fast ones did not wait for them
            await run
        finally:
            await worker.close()
        assert len(slow.received) == 8


@pytest.mark.parametrize("url", ["https://0177.0.0.1/h", "https://256.1.1.1/h", "https://xn--/h"])
async def test_a_stored_url_no_client_can_send_to_is_a_failed_attempt_with_its_reason(
    db: Backend, clock: Clock, url: str
) -> None:
    """The API refuses such URLs now; one stored before is an attempt like any failure (logged, retried, given
    up on), not an error before the attempt that left the delivery claimed again every lease, unlogged."""
    await endpoint(url)
    async with in_transaction() as conn:
        await emit(Sql(conn), EventType.REFUND_CREATED, {}, T0, account_id=None)
    worker = worker_for(clock, webhook_allow_private=False)
    try:
        await worker.run_once()
    finally:
        await worker.close()
    delivery = await WebhookDelivery.get()
    [attempt] = await WebhookAttempt.all()
    assert (delivery.status.value, delivery.attempts, delivery.last_status_code) == ("PENDING", 1, None)
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at > T0
    assert attempt.error is not None  # what the URL's parser or the IDNA codec said of it
    assert ("Invalid IPv4 address" in attempt.error) != ("A-label" in attempt.error)
    assert delivery.last_error == attempt.error


async def _claim_all(clock: Clock) -> list[Claimed]:
    await fan_out(clock.now())
    return await claim_due(clock.now(), timedelta(seconds=15), 1000, 1000, {})


def _answered(status: int | None, at: datetime) -> Outcome:
    return Outcome(status, 3, "ok" if status else None, None if status else "ConnectionRefusedError", at)


@pytest.mark.parametrize("events", [6, 60])
async def test_a_batch_of_outcomes_is_recorded_in_the_same_few_statements_whatever_its_size(
    db: Backend, clock: Clock, counter: StatementCounter, events: int
) -> None:
    succeeding = await endpoint("http://127.0.0.1:9/a")
    relapsing = await endpoint("http://127.0.0.1:9/b", failing_since=T0 - timedelta(hours=2))
    failing = await endpoint("http://127.0.0.1:9/c", failing_since=T0 - timedelta(hours=1))
    for n in range(events):
        await emitted(EventType.BALANCE_LOW, {"n": n}, account_id=n + 1)
    claimed = await _claim_all(clock)
    assert len(claimed) == 3 * events
    later = T0 + timedelta(seconds=5)
    by_endpoint: dict[int, list[Claimed]] = {}
    for c in claimed:
        by_endpoint.setdefault(c.endpoint_id, []).append(c)
    outcomes: list[tuple[Claimed, Outcome]] = [(c, _answered(200, T0)) for c in by_endpoint[succeeding.id]]
    # relapsing: its successes first (clearing failing_since), then one failure at ``later``: failing since then
    *ok, last = by_endpoint[relapsing.id]
    outcomes += [(c, _answered(204, T0)) for c in ok] + [(last, _answered(None, later))]
    outcomes += [(c, _answered(500, later)) for c in by_endpoint[failing.id]]

    recorded = await counter.during(record_outcomes(outcomes, T0, timedelta(hours=72), Highest()))

    # endpoints still there (and which were failing), attempts, deliveries, series starts, failing_since set after
    # a success, set when unset, and one disable check per endpoint that failed: the same 8 for 6 events as for 60
    # (none to clear: the endpoint that only succeeded was not failing, the one that was failed again last)
    assert len([s for s in counter.statements if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]) == 8
    assert [r.status for r in recorded] == ["SUCCEEDED"] * (2 * events - 1) + ["PENDING"] * (events + 1)
    assert {r.next_attempt_at for r in recorded if r.status == "PENDING"} == {T0 + timedelta(seconds=10)}
    hooks = {h.id: h.failing_since for h in await WebhookEndpoint.all()}
    assert hooks == {succeeding.id: None, relapsing.id: later, failing.id: T0 - timedelta(hours=1)}
    states = {(d.endpoint_id, d.status.value, d.attempts, d.last_status_code) for d in await WebhookDelivery.all()}
    assert states == {
        (succeeding.id, "SUCCEEDED", 1, 200),
        (relapsing.id, "SUCCEEDED", 1, 204),
        (relapsing.id, "PENDING", 1, None),
        (failing.id, "PENDING", 1, 500),
    }
    assert await WebhookAttempt.all().count() == 3 * events
    # recorded again (a lease that ran out, another claim counted a later attempt): logged, decides nothing
    again = await record_outcomes(outcomes[:1], T0, timedelta(hours=72), Highest())
    assert [r.status for r in again] == ["STALE"]


async def test_a_redelivery_while_an_attempt_is_under_way_waits_for_its_lease_instead_of_sending_twice(
    db: Backend, clock: Clock
) -> None:
    async with receiving(gate=1000) as receiver:  # holds every answer until the test opens the gate
        hook = await endpoint(receiver.url)
        sent = await emitted(EventType.BALANCE_LOW, {"available": "4.5"}, account_id=7)
        worker = worker_for(clock, webhook_timeout_seconds=5)  # a lease of 4 × 5 + 5 = 25 s
        try:
            running = asyncio.create_task(worker.run_once())
            await receiver.wait_for(1)  # the attempt is under way: claimed, not recorded
            row = await OutboxEvent.get(id=sent.id)
            redelivered = await redeliver(hook, row, clock.now())
            assert (redelivered.status.value, redelivered.attempts) == ("PENDING", 0)
            assert redelivered.next_attempt_at == T0 + timedelta(seconds=25)  # when the claim runs out
            receiver._gate_open.set()
            assert await running == 1  # the new series is not due yet: nothing more was sent
            assert receiver.ids() == [sent.public_id]
            after = await WebhookDelivery.get(id=redelivered.id)
            # the attempt's outcome belonged to the old series: logged, and it decided nothing
            assert (after.status.value, after.attempts, after.next_attempt_at, after.delivered_at) == (
                "PENDING",
                0,
                T0 + timedelta(seconds=25),
                None,
            )
            assert [(a.attempt, a.status_code) for a in await WebhookAttempt.all()] == [(1, 200)]

            clock.advance(timedelta(seconds=25))
            assert await worker.run_once() == 1
        finally:
            await worker.close()
        assert receiver.ids() == [sent.public_id, sent.public_id]  # once more, later, with the same webhook-id
        assert receiver.overlaps == []
        done = await WebhookDelivery.get(id=redelivered.id)
        assert (done.status.value, done.attempts, done.leased_until) == ("SUCCEEDED", 1, None)


async def test_an_endpoint_deleted_while_its_outcome_waits_loses_only_its_own_outcome(
    db: Backend, clock: Clock
) -> None:
    kept = await endpoint("http://127.0.0.1:9/kept")
    deleted = await endpoint("http://127.0.0.1:9/deleted")
    await emitted(EventType.BALANCE_LOW, {"n": 1}, account_id=1)
    claimed = await _claim_all(clock)
    assert sorted(c.endpoint_id for c in claimed) == [kept.id, deleted.id]
    assert await delete_endpoint(deleted.id) is not None

    recorded = await record_outcomes([(c, _answered(200, T0)) for c in claimed], T0, timedelta(hours=72), Highest())

    assert {c.endpoint_id: r.status for c, r in zip(claimed, recorded, strict=True)} == {
        kept.id: "SUCCEEDED",
        deleted.id: "GONE",
    }
    assert await delivery_states() == [(kept.id, "SUCCEEDED", 1)]
    assert [
        (a.delivery.endpoint_id, a.status_code) for a in await WebhookAttempt.all().prefetch_related("delivery")
    ] == [(kept.id, 200)]


async def test_deleting_an_endpoint_mid_send_leaves_the_other_endpoints_delivered_once(
    db: Backend, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with receiving(gate=1000) as held, receiving(gate=1000) as doomed:  # both answer when the test says
        kept = await endpoint(held.url)
        deleted = await endpoint(doomed.url)
        await emitted(EventType.BALANCE_LOW, {"n": 1}, account_id=1)
        worker = worker_for(clock, webhook_timeout_seconds=5)
        try:
            run = asyncio.create_task(worker.run_once())
            await held.wait_for(1)
            await doomed.wait_for(1)
            assert await delete_endpoint(deleted.id) is not None
            with caplog.at_level("INFO", logger="creditline.webhooks"):
                held._gate_open.set()  # answered together: their outcomes share a batch
                doomed._gate_open.set()
                await asyncio.wait_for(run, 10)
        finally:
            await worker.close()
        assert await delivery_states() == [(kept.id, "SUCCEEDED", 1)]
        assert await WebhookAttempt.all().count() == 1
        assert len(held.received) == 1
        assert [r for r in caplog.records if r.levelno >= 30] == []


async def test_endpoints_that_never_answer_leave_request_slots_to_a_healthy_one(db: Backend, clock: Clock) -> None:
    """Two stuck endpoints held 4 + 4 = all 8 slots until their timeout; with three endpoints active each gets
    8 // 3 = 2, so the healthy one's deliveries go out at once."""
    async with receiving(gate=1000) as stuck_a, receiving(gate=1000) as stuck_b, receiving() as healthy:
        a = await endpoint(stuck_a.url, event_types="balance.low")
        b = await endpoint(stuck_b.url, event_types="balance.low")
        await endpoint(healthy.url, event_types="balance.depleted")
        await lows_then_depleted(6)  # the stuck ones' deliveries first: they are started first
        worker = worker_for(clock, rng=random.Random(), webhook_timeout_seconds=30, concurrency=8, per_endpoint=4)
        try:
            run = asyncio.create_task(worker.run_once())
            await healthy.wait_for(6, within=20)  # well within the stuck ones' 30 s timeout
            # two each while the healthy one was active, four each once it had nothing left
            assert max(len(stuck_a.received), len(stuck_b.received)) <= 4
            assert await WebhookAttempt.filter(delivery__endpoint_id__in=[a.id, b.id]).count() == 0  # none timed out
            stuck_a._gate_open.set()
            stuck_b._gate_open.set()
            await asyncio.wait_for(run, 20)
        finally:
            await worker.close()
        assert (len(stuck_a.received), len(stuck_b.received), len(healthy.received)) == (6, 6, 6)


async def test_stopping_gives_back_the_claims_not_sent_and_waits_only_for_the_requests_under_way(
    db: Backend, clock: Clock
) -> None:
    """SIGTERM with deliveries to an endpoint that never answers took the whole lease (4 timeouts and 5 s, 45 s
    by default) to exit: past a 30 s grace. Stopping now takes the requests' timeout at most, and the claims
    still waiting for a slot are due again at once (another process, or the next start, sends them)."""
    async with receiving(gate=1000) as stuck:
        await endpoint(stuck.url, event_types="balance.low")
        for n in range(10):
            await emitted(EventType.BALANCE_LOW, {"n": n}, account_id=1)
        worker = worker_for(clock, webhook_timeout_seconds=2, concurrency=2, per_endpoint=2)
        run = asyncio.create_task(worker.run())
        await stuck.wait_for(2, within=20)  # both slots taken; the other claims wait for one
        claimed = await WebhookDelivery.filter(leased_until__isnull=False).count()
        assert claimed > 2
        started = asyncio.get_running_loop().time()
        run.cancel()  # as the application's shutdown does
        with pytest.raises(asyncio.CancelledError):
            await run
        took = asyncio.get_running_loop().time() - started
        assert took < 2 + 5, f"stopping took {took:.1f} s"  # the timeout and the margin, not the 13 s lease
        stuck._gate_open.set()
    deliveries = await WebhookDelivery.all().order_by("id")
    sent = [d for d in deliveries if d.attempts]
    assert len(stuck.received) == 2
    assert [(d.status.value, d.leased_until) for d in sent] == [("PENDING", None)] * 2  # timed out, recorded
    assert await WebhookAttempt.filter(delivery_id__in=[d.id for d in sent]).count() == 2
    given_back = [d for d in deliveries if not d.attempts]
    assert len(given_back) == 8
    assert {(d.status.value, d.leased_until) for d in given_back} == {("PENDING", None)}
    assert all(d.next_attempt_at is not None and d.next_attempt_at <= T0 for d in given_back)


# --------------------------------------------------------------------------------- woken by what wrote events


async def test_only_a_commit_that_wrote_an_event_wakes_the_worker_and_it_delivers_without_waiting_to_poll(
    api: Api, receiver: Receiver
) -> None:
    """Every committed change used to wake the worker for a pass (two statements): 0.3 ms of a spend's CPU,
    though most spends write no event. A spend that crosses nothing wakes it no more; one that crosses a level
    does, and its event arrives though the next poll is a minute away."""
    await endpoint(receiver.url, event_types="balance.low")
    user_id, _ = await api.user("ada@example.com", bonus=20)
    await CreditAccount.filter(user_id=user_id).update(alert_levels=store_levels((12 * MICRO,)))
    service = await api.service()
    app_services: Services = api.app.state.services
    settings = dataclasses.replace(api.settings, webhook_allow_private=True, webhook_poll_seconds=60)
    worker = DeliveryWorker(dataclasses.replace(app_services, settings=settings))  # the app's bus
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.3)
        assert worker.passes == 1  # the pass it makes at start
        spent = await api.data(SPEND, spend_variables(user_id, "1", "k1"), service)  # 20 -> 19
        assert spent["spendCredits"]["__typename"] == "SpendCreditsSuccess"
        await asyncio.sleep(0.3)  # a wake is followed by a pass within 10 ms
        assert (worker.wakes, worker.passes, receiver.received) == (0, 1, [])

        spent = await api.data(SPEND, spend_variables(user_id, "8", "k2"), service)  # 19 -> 11: crosses 12
        assert spent["spendCredits"]["__typename"] == "SpendCreditsSuccess"
        await receiver.wait_for(1, within=10)
        assert worker.wakes == 1
        assert worker.passes >= 2
        event = await OutboxEvent.get(type="balance.low")
        assert receiver.ids() == [event.public_id]
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def _capped_account(api: Api) -> tuple[int, str]:
    """A user whose account may spend 5 credits a day, 4 of them spent: the next spend of 1.5 is refused and,
    the first refusal of the day, writes ``spend_limit.reached`` (and no balance change to publish)."""
    user_id, _ = await api.user("ada@example.com", bonus=100)
    account = await CreditAccount.get(user_id=user_id)
    await limits.set_limit(int(account.id), LimitSpec(LimitScope.ACCOUNT, 5 * MICRO, LimitWindow.DAY), T0)
    service = await api.service()
    spent = await api.data(SPEND, spend_variables(user_id, "4", "k1"), service)
    assert spent["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    return user_id, service


def _wakes(subscription: BusSubscription) -> int:
    count = 0
    while not subscription.queue.empty():
        assert subscription.queue.get_nowait() == OUTBOX_WRITTEN
        count += 1
    return count


async def test_an_operation_that_wrote_events_and_published_no_change_wakes_the_workers_at_its_end(
    api: Api,
) -> None:
    """A refused spend publishes no balance change, but the first refusal by a cap writes spend_limit.reached:
    the end of the GraphQL operation publishes its wake. The second refusal writes nothing and wakes nobody."""
    user_id, service = await _capped_account(api)
    workers = api.app.state.services.bus.subscribe(None, OUTBOX)
    _wakes(workers)  # the first spend's (its spend_limit.warning at 80%)
    try:
        refused = await api.data(SPEND, spend_variables(user_id, "1.5", "k2"), service)
        assert refused["spendCredits"]["__typename"] == "SpendLimitExceeded"
        assert [t for t, _ in await events_of("spend_limit.reached")] == ["spend_limit.reached"]
        assert _wakes(workers) == 1
        await api.data(SPEND, spend_variables(user_id, "1.5", "k3"), service)
        assert [t for t, _ in await events_of("spend_limit.reached")] == ["spend_limit.reached"]  # told once
        assert _wakes(workers) == 0
    finally:
        workers.close()


async def test_a_mutation_over_a_websocket_wakes_the_workers_for_the_events_it_wrote(
    db: Backend, settings: Settings, clock: Clock
) -> None:
    async with serve(settings, clock) as live:
        user_id, service = await _capped_account(live.api)
        workers = live.api.app.state.services.bus.subscribe(None, OUTBOX)
        _wakes(workers)
        ws = await connect(live, service)
        try:
            query = {"query": SPEND, "variables": spend_variables(user_id, "1.5", "k2")}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
            answer = await receive(ws)
            assert answer["payload"]["data"]["spendCredits"]["__typename"] == "SpendLimitExceeded"
            assert await receive(ws) == {"id": "1", "type": "complete"}
            assert [t for t, _ in await events_of("spend_limit.reached")] == ["spend_limit.reached"]
            assert _wakes(workers) == 1
        finally:
            workers.close()
            await ws.close()


async def test_a_redelivery_wakes_the_workers(db: Backend, receiver: Receiver) -> None:
    row = await endpoint(receiver.url)
    sent = await emitted(EventType.BALANCE_LOW, {"n": 1}, account_id=1)
    take_written()
    await redeliver(row, await OutboxEvent.get(id=sent.id), T0)
    assert take_written()
