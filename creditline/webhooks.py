"""``POST /webhooks/stripe``: Stripe's signed events, for the stripe and legacy gateways.

A bad signature or a timestamp out of bounds is a 400 and nothing is stored. A verified event is stored
once and processed once (gateway/webhooks.py); any verified event, known or not, gets a 2xx so that
Stripe stops sending it. A failure while processing is a 500: Stripe delivers it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from gateway import webhooks
from gateway.base import InvalidWebhook
from resolvers.context import Services
from resolvers.mutations.payments import subscription_billing

MAX_BODY = 1 << 20
"""Stripe's events are far smaller; a larger body is refused before it is read whole."""


def handling(services: Services) -> webhooks.WebhookContext:
    """What webhook handlers work with, now."""
    return webhooks.WebhookContext(
        services.gateway, services.plans, subscription_billing(services), services.clock.now()
    )


def stripe_webhook(services: Services) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        gateway = services.gateway
        if gateway.name not in ("stripe", "legacy"):
            return PlainTextResponse(f"The {gateway.name} gateway receives no Stripe webhooks", 404)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return PlainTextResponse("Body too large", 413)
        now = services.clock.now()
        try:
            event = gateway.verify_event(bytes(body), request.headers.get("stripe-signature"), now)
        except InvalidWebhook as exc:
            return PlainTextResponse(str(exc), 400)
        receipt = await webhooks.receive(handling(services), event)
        services.bus.publish(receipt.changes)
        return JSONResponse({"received": event.id, "outcome": receipt.outcome.value})

    return endpoint
