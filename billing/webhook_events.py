"""Processor webhooks, stored once by event id and processed once, whatever the order or number of deliveries.

An event is stored (models/webhook_events.py) before it is handled and marked processed after. Handlers are
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

from billing import checkout_events, subscription_events
from billing.payments import subscription_billing
from billing.webhook_handler import Changes, Handler, HandlerTable, WebhookContext
from creditline.services import Services
from gateway.base import GatewayEvent, MalformedEvent
from models import webhook_events as stored_events

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
    is_new = await stored_events.store(event.id, ctx.gateway.name, event.type, event.payload, event.created, ctx.now)
    if not is_new and await stored_events.processed_at(event.id) is not None:
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
    await stored_events.mark_processed(event.id, ctx.now)
    return Receipt(outcome, changes)


async def retry_unprocessed(ctx: WebhookContext) -> tuple[int, Changes]:
    """Process again the stored events that came before our own rows (oldest first). Returns how many were
    processed now and their changes. An event that fails is logged and left for the next sweep: it does not
    hold back the others."""
    processed, changes = 0, Changes()
    for stored in await stored_events.unprocessed_since(ctx.now - RETRY_FOR):
        created = stored.created_at or datetime.fromtimestamp(0, UTC)
        try:
            obj = json.loads(stored.payload)["data"]["object"]
            if not isinstance(obj, dict):
                raise TypeError("data.object is not an object")
        except (ValueError, KeyError, TypeError) as exc:  # stored before its shape was checked on receipt
            log.error("stored event %s does not parse, not retried: %s", stored.id, exc)
            await stored_events.mark_processed(stored.id, ctx.now)  # set aside: the sweep leaves it
            continue
        event = GatewayEvent(stored.id, stored.type, created, obj, stored.payload)
        try:
            receipt = await process(ctx, event)
        except Exception:
            log.exception("event %s (%s) failed again: retried at the next sweep", event.id, event.type)
            continue
        if receipt.outcome is not Outcome.DEFERRED:
            processed += 1
            changes += receipt.changes
    return processed, changes
