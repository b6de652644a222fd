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

Handlers get a ``WebhookContext`` and return the balance changes they committed; the caller publishes them
(after commit). The table they are dispatched on (``HANDLERS``) is made of the top-up Checkout handlers
(billing/checkout_events.py) and the Stripe Billing ones (billing/subscription_events.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tortoise import connections

from billing import checkout_events, subscription_events
from billing.payments import subscription_billing
from billing.webhook_handler import Changes, Handler, HandlerTable, WebhookContext
from creditline.services import Services
from gateway.base import GatewayEvent, MalformedEvent
from models.sql import Sql, as_datetime

log = logging.getLogger("creditline.webhooks")


def _merged(*tables: HandlerTable) -> HandlerTable:
    merged: HandlerTable = {}
    for table in tables:
        assert not merged.keys() & table.keys(), merged.keys() & table.keys()  # one handler per type and mode
        merged |= table
    return merged


HANDLERS: HandlerTable = _merged(checkout_events.HANDLERS, subscription_events.HANDLERS)
"""Every event type we handle, by type or ``<type>:<mode>``."""


def context_for(services: Services) -> WebhookContext:
    """What webhook handlers work with, now."""
    return WebhookContext(services.gateway, services.plans, subscription_billing(services), services.clock.now())


RETRY_FOR = timedelta(days=3)
"""How long an event that came before our own rows is retried (Stripe retries deliveries as long)."""


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
