"""What a webhook event handler is: the context it gets, what it returns, and how it joins a table of handlers.

The handler modules (billing/checkout_events.py, billing/subscription_events.py) each fill their own table;
billing/webhook_events.py merges them into the one it dispatches on. Both sides import this module and not
each other, so there is no cycle to break.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.base import Gateway, GatewayEvent
from models.ledger import Event
from models.plans import PlanCatalog
from models.subscriptions import Billing


@dataclass(frozen=True, slots=True)
class WebhookContext:
    """The gateway (to ask the processor where things stand), the plans, how subscriptions bill, the time."""

    gateway: Gateway
    plans: PlanCatalog
    billing: Billing
    now: datetime


Changes = tuple[Event, ...]
"""The balance changes a handler committed; the caller publishes them (after commit)."""

Handler = Callable[[GatewayEvent, WebhookContext], Awaitable[Changes | None]]
"""Handles one event; returns None when our side is not written yet (the event is retried by the sweep)."""

HandlerTable = dict[str, Handler]
"""Handlers by event type, or by ``<type>:<mode>`` for the handlers of one mode."""


def handles(table: HandlerTable, *types: str, mode: str | None = None) -> Callable[[Handler], Handler]:
    """Register a handler in ``table`` for event types, optionally only for objects of one ``mode`` (Checkout
    Sessions: ``payment`` or ``subscription``). One handler per type and mode."""

    def register(handler: Handler) -> Handler:
        for event_type in types:
            key = event_type if mode is None else f"{event_type}:{mode}"
            assert key not in table, key
            table[key] = handler
        return handler

    return register
