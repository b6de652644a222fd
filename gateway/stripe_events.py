"""Reading the object of a verified Stripe event: typed values, or ``MalformedEvent`` when Stripe's shape is not there.

Pure translation, no database: billing decides what each event means (billing/checkout_events.py,
billing/subscription_events.py). The readers of whole
objects (``invoice_from``, ``subscription_from``) are gateway/stripe.py's, shared with its API calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gateway.base import GatewayEvent, HostedInvoice, HostedSubscription, MalformedEvent
from gateway.stripe import invoice_from, subscription_from

T = TypeVar("T")


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


def event_invoice(event: GatewayEvent) -> HostedInvoice | None:
    """The invoice an ``invoice.*`` event is about; None when it does not bill a subscription."""
    return parsed(invoice_from, event.object)


def event_subscription(event: GatewayEvent) -> HostedSubscription:
    """The subscription a ``customer.subscription.*`` event is about, as the event tells it."""
    return parsed(subscription_from, event.object)
