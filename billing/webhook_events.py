"""Processor webhooks, stored once by event id and processed once, whatever the order or number of deliveries.

An event is stored (``webhook_events``) before it is handled and marked processed after. Handlers are
idempotent under the account lock (``payments.complete`` acts only on a PENDING transaction), so a
redelivery, two deliveries at once, or events in any order change a transaction at most once. A handler
that finds our side not written yet returns ``None``: the event stays unprocessed and the sweep retries it
(``retry_unprocessed``). Unknown event types are stored, acknowledged and ignored.

A verified event whose object has a field of another shape than Stripe's (``MalformedEvent``) can never be
processed: it is acknowledged (a 2xx, or Stripe would redeliver it for days), marked processed so that the
sweep leaves it, and its reason logged once at ERROR; its payload stays stored. The sweep handles each
event on its own: one that fails is logged and left for the next sweep, the others go on.

Handlers get a ``WebhookContext`` (the gateway, to ask the processor where things stand; the plans; the
time) and return the balance changes they committed; the caller publishes them (after commit). Subscription
events are handled in gateway/stripe_subscriptions.py, registered the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from tortoise import connections

from gateway.base import CHECKOUT_FAILURES, CheckoutState, Gateway, GatewayEvent
from models import payments
from models.ledger import BalanceChange
from models.plans import PlanCatalog
from models.sql import Sql, as_datetime
from models.subscriptions import Billing
from models.tables import Transaction, TransactionStatus

log = logging.getLogger("creditline.webhooks")


@dataclass(frozen=True, slots=True)
class WebhookContext:
    gateway: Gateway
    plans: PlanCatalog
    billing: Billing
    now: datetime


Changes = tuple[BalanceChange, ...]
Handler = Callable[[GatewayEvent, WebhookContext], Awaitable[Changes | None]]
HANDLERS: dict[str, Handler] = {}


T = TypeVar("T")


class MalformedEvent(Exception):
    """A verified event that its handler cannot read: a field missing, or of another type than Stripe's."""


def parsed(parse: Callable[[dict[str, Any]], T], obj: dict[str, Any]) -> T:
    """``parse(obj)``, a pure reading of an event's object (gateway/stripe.py): whatever it raises is the
    object's fault, so it is a ``MalformedEvent``."""
    try:
        return parse(obj)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise MalformedEvent(f"{type(exc).__name__}: {exc}") from exc


def text_field(obj: dict[str, Any], name: str) -> str:
    """A field the handler needs as a non-empty string (an object's id)."""
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{name} is not a non-empty string")
    return value


RETRY_FOR = timedelta(days=3)
"""How long an event that came before our own rows is retried (Stripe retries deliveries as long)."""


def handles(*types: str, mode: str | None = None) -> Callable[[Handler], Handler]:
    """Register a handler for event types, optionally only for objects of one ``mode`` (Checkout Sessions:
    ``payment`` or ``subscription``). One handler per type and mode."""

    def register(handler: Handler) -> Handler:
        for event_type in types:
            key = event_type if mode is None else f"{event_type}:{mode}"
            assert key not in HANDLERS, key
            HANDLERS[key] = handler
        return handler

    return register


def handler_for(event: GatewayEvent) -> Handler | None:
    mode = event.object.get("mode")
    return HANDLERS.get(f"{event.type}:{mode}") or HANDLERS.get(event.type)


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    """Stored and processed before: nothing done."""
    IGNORED = "ignored"
    """A type we do not handle: stored and acknowledged."""
    DEFERRED = "deferred"
    """Our side is not written yet: stored, retried by the sweep."""
    MALFORMED = "malformed"
    """Verified, but its object cannot be read: stored, acknowledged, never retried; the reason logged."""


@dataclass(frozen=True, slots=True)
class Receipt:
    outcome: Outcome
    changes: Changes = ()


async def receive(ctx: WebhookContext, event: GatewayEvent) -> Receipt:
    """Store a verified event once, and process it unless it was processed before."""
    gateway, now = ctx.gateway.name, ctx.now
    sql = Sql(connections.get("default"))
    stored = await sql.fetch(
        "INSERT INTO webhook_events (id, gateway, type, payload, created_at, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING id",
        event.id,
        gateway,
        event.type,
        event.payload,
        event.created,
        now,
    )
    if not stored:
        row = await sql.fetchrow("SELECT processed_at FROM webhook_events WHERE id = $1", event.id)
        if row is not None and row["processed_at"] is not None:
            return Receipt(Outcome.DUPLICATE)
    return await process(ctx, event)


async def process(ctx: WebhookContext, event: GatewayEvent) -> Receipt:
    handler = handler_for(event)
    outcome = Outcome.IGNORED if handler is None else Outcome.PROCESSED
    try:
        changes = () if handler is None else await handler(event, ctx)
    except MalformedEvent as exc:
        log.error("%s event %s cannot be processed: acknowledged and set aside: %s", event.type, event.id, exc)
        changes, outcome = (), Outcome.MALFORMED
    if changes is None:
        return Receipt(Outcome.DEFERRED)
    await Sql(connections.get("default")).execute(
        "UPDATE webhook_events SET processed_at = $1 WHERE id = $2 AND processed_at IS NULL", ctx.now, event.id
    )
    return Receipt(outcome, changes)


async def retry_unprocessed(ctx: WebhookContext) -> tuple[int, Changes]:
    """Process again the stored events that came before our own rows (oldest first). Returns how many were
    processed now and their changes. An event that fails is logged and left for the next sweep: it does not
    hold back the others."""
    rows = await Sql(connections.get("default")).fetch(
        "SELECT id, type, payload, created_at FROM webhook_events"
        " WHERE processed_at IS NULL AND received_at >= $1 ORDER BY created_at, id",
        ctx.now - RETRY_FOR,
    )
    processed, changes = 0, Changes()
    for row in rows:
        created = as_datetime(row["created_at"]) or datetime.fromtimestamp(0, UTC)
        try:
            obj = json.loads(row["payload"])["data"]["object"]
            if not isinstance(obj, dict):
                raise TypeError("data.object is not an object")
        except (ValueError, KeyError, TypeError) as exc:  # stored before its shape was checked on receipt
            log.error("stored event %s does not parse, not retried: %s", row["id"], exc)
            await _set_aside(row["id"], ctx.now)
            continue
        event = GatewayEvent(row["id"], row["type"], created, obj, row["payload"])
        try:
            receipt = await process(ctx, event)
        except Exception:
            log.exception("event %s (%s) failed again: retried at the next sweep", event.id, event.type)
            continue
        if receipt.outcome is not Outcome.DEFERRED:
            processed += 1
            changes += receipt.changes
    return processed, changes


async def _set_aside(event_id: str, now: datetime) -> None:
    await Sql(connections.get("default")).execute(
        "UPDATE webhook_events SET processed_at = $1 WHERE id = $2 AND processed_at IS NULL", now, event_id
    )


# --- Stripe Checkout, payment mode (top-ups) -------------------------------------------------------------


async def _checkout_transaction(session: dict[str, Any]) -> Transaction | bool | None:
    """The top-up a Checkout Session pays for: the transaction, None when it is ours but not written yet,
    False when the session is not a top-up of ours (or does not match the one we opened)."""
    named = (session.get("metadata") or {}).get("creditline_transaction") or session.get("client_reference_id")
    if not isinstance(named, str) or not named.isascii() or not named.isdigit() or len(named) > 18:
        return False
    txn = await Transaction.filter(id=int(named)).first()
    if txn is None:
        return None
    if txn.gateway != "stripe":
        return False
    if txn.gateway_reference is not None and txn.gateway_reference != session.get("id"):
        log.warning(
            "Checkout Session %s names transaction %s, opened as %s", session.get("id"), named, txn.gateway_reference
        )
        return False
    if session.get("amount_total") not in (None, txn.amount) or str(session.get("currency", "")).upper() not in (
        "",
        txn.currency,
    ):
        log.error("Checkout Session %s does not charge what transaction %s costs: ignored", session.get("id"), named)
        return False
    return txn


@handles("checkout.session.completed", "checkout.session.async_payment_succeeded", mode="payment")
async def _checkout_paid(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    session = event.object
    text_field(session, "id")
    txn = await _checkout_transaction(session)
    if not isinstance(txn, Transaction):
        return None if txn is None else ()
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return ()  # a delayed payment method: its async_payment_* event settles it
    if txn.status != TransactionStatus.PENDING:
        return ()
    _, changes = await payments.complete(
        txn.id, succeeded=True, reference=str(session["id"]), failure_reason=None, now=ctx.now
    )
    return changes


@handles("checkout.session.async_payment_failed", "checkout.session.expired", mode="payment")
async def _checkout_failed(event: GatewayEvent, ctx: WebhookContext) -> Changes | None:
    session = event.object
    text_field(session, "id")
    txn = await _checkout_transaction(session)
    if not isinstance(txn, Transaction):
        return None if txn is None else ()
    reason = CHECKOUT_FAILURES[
        CheckoutState.EXPIRED if event.type == "checkout.session.expired" else CheckoutState.FAILED
    ]
    _, changes = await payments.complete(
        txn.id, succeeded=False, reference=str(session["id"]), failure_reason=reason, now=ctx.now
    )
    return changes


from gateway import stripe_subscriptions  # noqa: E402, F401  (registers the subscription handlers)
