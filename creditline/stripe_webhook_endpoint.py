"""``POST /webhooks/stripe``: Stripe's signed events, for the stripe and legacy gateways.

A bad signature or a timestamp out of bounds is a 400 and nothing is stored. A verified event is stored
once and processed once (billing/webhook_events.py); any verified event, known or not, gets a 2xx so that
Stripe stops sending it; so does one whose object cannot be read ("malformed": stored, set aside, the reason
logged). A failure while processing is a 500: Stripe delivers it again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from billing import webhook_events
from creditline.services import Services
from gateway.base import InvalidWebhook
from resolvers import boundary

MAX_BODY = 1 << 20
"""Stripe's events are far smaller; a larger body is refused before it is read whole."""

MAX_SIGNATURE_HEADER = 1024
"""``t=<unix time>,v1=<64 hex>`` is under 100 characters; a few signatures during a secret's rotation fit."""

MAX_DEPTH = 32
"""Stripe's events nest a handful of levels; deeper JSON is refused before the parser recurses into it."""

MAX_NUMBER = 2**53
"""Amounts and unix times are far below it; beyond it integers lose meaning in JSON and overflow dates."""

_SIGNATURE_PART = re.compile(r"[A-Za-z0-9_]+=[A-Za-z0-9_]*")


def _signature_header(value: str | None) -> str | None:
    """The ``Stripe-Signature`` header, refused (``InputError``) unless it is short ASCII made of
    ``key=value`` parts with a timestamp of at most 12 digits; what is left (a missing header, a timestamp
    that is no number) the SDK refuses with its own message."""
    if not value:
        return value
    field = "Stripe-Signature"
    if len(value) > MAX_SIGNATURE_HEADER or not value.isascii():
        raise boundary.InputError(field, f"{field} must be at most {MAX_SIGNATURE_HEADER} ASCII characters")
    parts = value.split(",")
    if not all(_SIGNATURE_PART.fullmatch(part) for part in parts):
        raise boundary.InputError(field, f"{field} must be comma-separated key=value parts")
    for part in parts:
        if part.startswith("t=") and part[2:].isdigit():
            boundary.digits(part[2:], f"{field} timestamp", 12)
    return value


def _refuse_constant(name: str) -> Any:
    raise boundary.InputError("body", f"body is not JSON: {name} is not a number")


def _check_event_json(node: Any, depth: int = 0) -> None:
    """What the handlers may rely on in any event: text that a database can store, integers in range,
    finite numbers, ``metadata`` a map of strings (Stripe's own rule), bounded nesting."""
    if depth > MAX_DEPTH:
        raise boundary.InputError("body", f"body nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, str):
        boundary.storable(node, "body")
    elif isinstance(node, bool) or node is None:
        return
    elif isinstance(node, int):
        if abs(node) > MAX_NUMBER:
            raise boundary.InputError("body", f"body has an integer out of range: at most {MAX_NUMBER} in size")
    elif isinstance(node, float):
        if not math.isfinite(node) or abs(node) > MAX_NUMBER:
            raise boundary.InputError("body", "body has a number out of range")
    elif isinstance(node, list):
        for item in node:
            _check_event_json(item, depth + 1)
    elif isinstance(node, dict):
        for name, value in node.items():
            boundary.storable(name, "body")
            if (
                name == "metadata"
                and value is not None
                and (not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()))
            ):
                raise boundary.InputError("body", "body has a metadata that is not a map of strings")
            _check_event_json(value, depth + 1)


def decode_event_body(body: bytes) -> str:
    """The webhook body as text, once it is UTF-8 JSON of an object that ``_check_event_json`` accepts."""
    text = boundary.utf8(body, "body")
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant)
    except boundary.InputError:
        raise
    except ValueError:
        raise boundary.InputError("body", "body is not JSON") from None
    except RecursionError:  # the parser recurses: 1 MB of brackets exhausts it
        raise boundary.InputError("body", f"body nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(parsed, dict):
        raise boundary.InputError("body", "body must be a JSON object")
    _check_event_json(parsed)
    return text


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
        try:
            signature = _signature_header(request.headers.get("stripe-signature"))
            decode_event_body(bytes(body))
        except boundary.InputError as exc:
            return PlainTextResponse(exc.message, 400)
        now = services.clock.now()
        try:
            event = gateway.verify_event(bytes(body), signature, now)
        except InvalidWebhook as exc:
            return PlainTextResponse(str(exc), 400)
        try:
            receipt = await webhook_events.receive(webhook_events.context_for(services), event)
        finally:  # a handler that failed after one of its commits wrote events: they are sent all the same
            services.bus.publish(())
        services.bus.publish(receipt.changes)
        return JSONResponse({"received": event.id, "outcome": receipt.outcome.value})

    return endpoint
