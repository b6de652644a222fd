"""billing/webhook_events.py without HTTP or GraphQL: verified events stored once, processed once, deferred
while our rows are missing and retried by the sweep, unknown types ignored, malformed ones set aside."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from billing.webhook_events import Outcome, receive, retry_unprocessed
from billing.webhook_handler import WebhookContext
from gateway.base import GatewayEvent
from gateway.stripe import StripeGateway
from gateway.stripe_api import StripeApi
from models import ledger, money, payments
from models.credits import MICRO
from models.ledger import IdempotencyKey
from models.plans import PlanCatalog
from models.subscriptions import Billing
from models.tables import CreditAccount, CreditLot, Transaction, TransactionType, WebhookEvent
from tests.support.backends import T0, Backend
from tests.support.events import balance_changes, emitted
from tests.support.snapshots import changed, snapshot


@pytest.fixture
def ctx(db: Backend) -> WebhookContext:
    # The handlers exercised here never call the processor: no Stripe API behind the gateway.
    gateway = StripeGateway(StripeApi(secret_key="sk_test_unused", webhook_secret="whsec_unused"))
    return WebhookContext(gateway, PlanCatalog(), Billing(currency="USD", retry_days=(1, 3, 5)), T0)


async def account_of(email: str) -> int:
    user_id = await ledger.create_user(email, signup_bonus=0, bonus_lifetime=timedelta(days=30), now=T0)
    return int((await CreditAccount.get(user_id=user_id)).id)


async def pending_top_up(account_id: int, credits: int = 50) -> Transaction:
    """A PENDING stripe top-up of ``credits`` credits (their price: as many US cents)."""
    txn, _ = await payments.start_top_up(
        account_id,
        credits=credits * MICRO,
        price=money.Price("USD", 100),
        gateway="stripe",
        payment_method_id=None,
        card_reference=None,
        kind=TransactionType.TOP_UP,
        idem=IdempotencyKey.for_request(f"account:{account_id}", "t1", "topUp", {"credits": credits}),
        now=T0,
    )
    return txn


def event(event_id: str, event_type: str, obj: dict[str, Any], created: datetime = T0) -> GatewayEvent:
    payload = {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}
    return GatewayEvent(event_id, event_type, created, obj, json.dumps(payload))


def paid_session(transaction_id: int, amount: int = 50) -> dict[str, Any]:
    return {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "payment",
        "metadata": {"creditline_transaction": str(transaction_id)},
        "amount_total": amount,
        "currency": "usd",
        "payment_status": "paid",
    }


async def paid_credit(account_id: int, now: datetime) -> int:
    return (await ledger.read_balances([account_id], now))[account_id].paid


async def test_a_redelivered_event_is_processed_once(ctx: WebhookContext) -> None:
    account = await account_of("ada@example.com")
    txn = await pending_top_up(account)
    paid = event("evt_1", "checkout.session.completed", paid_session(txn.id))

    first = await receive(ctx, paid)
    before = await snapshot()
    later = replace(ctx, now=T0 + timedelta(hours=1))
    again = await receive(later, paid)
    swept = await retry_unprocessed(later)

    assert first.outcome is Outcome.PROCESSED
    assert [(c.account_id, c.delta, c.balance.paid) for c in balance_changes(first.changes)] == [
        (account, 50 * MICRO, 50 * MICRO)
    ]
    assert (again.outcome, again.changes) == (Outcome.DUPLICATE, ())
    assert swept == (0, ())
    assert await snapshot() == before  # the redelivery changed nothing, not even the stored event
    stored = await WebhookEvent.get(id="evt_1")
    assert (stored.type, stored.received_at, stored.processed_at) == ("checkout.session.completed", T0, T0)
    done = await Transaction.get(id=txn.id)
    assert (done.status, done.gateway_reference, done.completed_at) == ("SUCCEEDED", "cs_test_1", T0)
    lots = await CreditLot.filter(account_id=account).values_list("kind", "amount", "remaining")
    assert lots == [("PAID", 50 * MICRO, 50 * MICRO)]
    assert await paid_credit(account, later.now) == 50 * MICRO
    # Another event about the same session (async_payment_succeeded after completed): settled, nothing more.
    await receive(later, event("evt_2", "checkout.session.async_payment_succeeded", paid_session(txn.id)))
    found = await emitted()
    assert [kind for kind, _ in found] == ["payment.succeeded", "invoice.created"]
    assert found[0][1]["transaction"]["status"] == "SUCCEEDED"


async def test_an_event_before_our_rows_is_deferred_then_processed_by_the_sweep(ctx: WebhookContext) -> None:
    account = await account_of("ada@example.com")
    early = event("evt_early", "checkout.session.completed", paid_session(1))  # names the top-up about to be written

    deferred = await receive(ctx, early)
    still = await retry_unprocessed(replace(ctx, now=T0 + timedelta(minutes=1)))

    assert (deferred.outcome, deferred.changes) == (Outcome.DEFERRED, ())
    assert still == (0, ())
    assert await Transaction.all().count() == 0
    assert (await WebhookEvent.get(id="evt_early")).processed_at is None

    txn = await pending_top_up(account)
    assert txn.id == 1
    before = await snapshot()
    sweep = replace(ctx, now=T0 + timedelta(minutes=5))
    processed, changes = await retry_unprocessed(sweep)

    assert processed == 1
    assert [(c.account_id, c.delta) for c in balance_changes(changes)] == [(account, 50 * MICRO)]
    after = await snapshot()
    # The top-up completed (its lot, ledger entry, invoice, balance and events) and the event is done; nothing else.
    assert changed(before, after) == {
        "events",
        "webhook_events",
        "transactions",
        "credit_lots",
        "ledger_entries",
        "credit_accounts",
        "invoices",
        "invoice_sequence",
    }
    assert (await WebhookEvent.get(id="evt_early")).processed_at == sweep.now
    assert (await Transaction.get(id=txn.id)).status == "SUCCEEDED"
    assert await paid_credit(account, sweep.now) == 50 * MICRO
    assert await retry_unprocessed(replace(sweep, now=sweep.now + timedelta(minutes=5))) == (0, ())
    assert await snapshot() == after


async def test_an_unknown_event_type_is_stored_acknowledged_and_ignored(ctx: WebhookContext) -> None:
    account = await account_of("ada@example.com")
    txn = await pending_top_up(account)
    before = await snapshot()

    receipt = await receive(ctx, event("evt_other", "customer.created", {"id": "cus_1", "object": "customer"}))

    assert (receipt.outcome, receipt.changes) == (Outcome.IGNORED, ())
    assert changed(before, await snapshot()) == {"webhook_events"}
    stored = await WebhookEvent.get(id="evt_other")
    assert (stored.type, stored.processed_at) == ("customer.created", T0)
    assert (await Transaction.get(id=txn.id)).status == "PENDING"
    assert await paid_credit(account, T0) == 0


async def test_a_malformed_event_is_set_aside_once_and_never_retried(
    ctx: WebhookContext, caplog: pytest.LogCaptureFixture
) -> None:
    account = await account_of("ada@example.com")
    before = await snapshot()
    caplog.set_level(logging.INFO, logger="creditline.webhooks")
    malformed = event("evt_bad", "invoice.paid", {"id": "in_1", "object": "invoice", "parent": "not an object"})

    receipt = await receive(ctx, malformed)
    swept = await retry_unprocessed(replace(ctx, now=T0 + timedelta(minutes=5)))
    again = await receive(replace(ctx, now=T0 + timedelta(hours=1)), malformed)

    assert (receipt.outcome, receipt.changes) == (Outcome.MALFORMED, ())
    assert swept == (0, ())
    assert again.outcome is Outcome.DUPLICATE
    assert changed(before, await snapshot()) == {"webhook_events"}
    stored = await WebhookEvent.get(id="evt_bad")
    assert (stored.processed_at, json.loads(stored.payload)["data"]["object"]) == (T0, malformed.object)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "creditline.webhooks"] == [
        (
            "ERROR",
            "invoice.paid event evt_bad cannot be processed: acknowledged and set aside:"
            " ValueError: str where an object was expected",
        )
    ]
    assert await paid_credit(account, T0) == 0
