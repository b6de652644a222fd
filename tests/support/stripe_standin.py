"""A local stand-in for the parts of Stripe's API that Creditline calls, for the real ``stripe`` SDK to talk to.

It serves real HTTP on 127.0.0.1 (uvicorn, in the tests' event loop), answers with Stripe-shaped JSON
objects, records every request with its Idempotency-Key, and honours the keys as Stripe does: the same key
with the same parameters replays the first answer (``Idempotent-Replayed: true``), with other parameters it
is an ``idempotency_error``. Test PaymentMethods follow Stripe's test names (``pm_card_visa``,
``pm_card_chargeDeclined``, ...); attaching one makes a new PaymentMethod, as Stripe does. Tests move
Checkout Sessions along (``pay``, ``settle``, ``expire``), Stripe Billing's subscriptions too (``renew``,
``retry``, ``end``), refund in Stripe's dashboard (``refund_in_dashboard``) and build the events Stripe would
send (``event``). Objects have the shapes of the installed SDK's API version (16.1): an invoice names its
subscription in ``parent.subscription_details`` and its price in ``lines.data[].pricing.price_details``; a
subscription's current period lives on its items.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import html
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from tests.support.helpers import Api
from tests.support.live import free_port

API_KEY = "sk_test_creditline_standin"
WEBHOOK_SECRET = "whsec_creditline_standin"
MINIMUM = 50
"""Stripe's smallest charge in USD cents."""

# test PaymentMethod -> (brand, last4, decline code or None, message)
TEST_METHODS: dict[str, tuple[str, str, str | None, str]] = {
    "pm_card_visa": ("visa", "4242", None, ""),
    "pm_card_mastercard": ("mastercard", "4444", None, ""),
    "pm_card_chargeDeclined": ("visa", "0002", "card_declined", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995", "card_declined", "Your card has insufficient funds."),
    "pm_card_authenticationRequired": (
        "visa",
        "3184",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
}


PRICES: dict[str, tuple[int, str, str]] = {
    "price_starter_monthly": (1_000, "usd", "month"),
    "price_pro_monthly": (5_000, "usd", "month"),
    "price_pro_yearly": (50_000, "usd", "year"),
}
"""The recurring Prices the stand-in knows: id -> (unit amount, currency, interval)."""
RETRY_AFTER = timedelta(days=3)
"""When Stripe's smart retries try a failed invoice again, in the stand-in."""


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    replayed: bool


class StripeError(Exception):
    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": {"type": kind, "message": message, **extra}}


@dataclass
class StripeStandIn:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    portals: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    outage: dict[str, int] = field(default_factory=dict)
    """Path -> how many of the next requests to it get a 503 (Stripe-Should-Retry: false: the SDK gives up)."""
    on_checkout_created: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    """Runs before the answer to a new Checkout Session leaves (a webhook racing our own write)."""
    now: Callable[[], datetime] = datetime.now
    _keys: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    _ids: dict[str, itertools.count[int]] = field(default_factory=dict)

    def reset(self, now: Callable[[], datetime]) -> None:
        """Forget everything (ids, keys, objects) between tests: each test starts from an empty Stripe."""
        self.__dict__.update(StripeStandIn(url=self.url, now=now).__dict__)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_test{next(self._ids.setdefault(prefix, itertools.count(1))):04d}"

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    # --- what tests do on Stripe's side ------------------------------------------------------------------

    def pay(self, session_id: str, *, delayed: bool = False) -> dict[str, Any]:
        """The customer pays on the Checkout page (``delayed``: a bank debit that settles later). In subscription
        mode Stripe makes the subscription and its first invoice, paid (``invoice_of`` finds it)."""
        session = self.sessions[session_id]
        if session["mode"] == "subscription":
            subscription = self._subscription(session)
            invoice = self._invoice(subscription, "subscription_create", paid=True)
            subscription["latest_invoice"] = invoice["id"]
            session.update(
                status="complete", payment_status="paid", subscription=subscription["id"], invoice=invoice["id"]
            )
            return dict(session)
        intent = self._intent(session["amount_total"], session["currency"], session["customer"], None)
        intent["status"] = "processing" if delayed else "succeeded"
        session.update(status="complete", payment_status="unpaid" if delayed else "paid", payment_intent=intent["id"])
        return dict(session)

    def settle(self, session_id: str, *, succeeded: bool) -> dict[str, Any]:
        session = self.sessions[session_id]
        self.intents[session["payment_intent"]]["status"] = "succeeded" if succeeded else "requires_payment_method"
        session["payment_status"] = "paid" if succeeded else "unpaid"
        return dict(session)

    def expire(self, session_id: str) -> dict[str, Any]:
        self.sessions[session_id]["status"] = "expired"
        return dict(self.sessions[session_id])

    def invoice_of(self, subscription_id: str, index: int = -1) -> dict[str, Any]:
        """One of a subscription's invoices, oldest first (default: the latest)."""
        return dict([i for i in self.invoices.values() if _subscription_of(i) == subscription_id][index])

    def renew(self, subscription_id: str, *, paid: bool = True) -> dict[str, Any]:
        """Stripe Billing renews at period end: the next period starts and its invoice is charged (``paid``
        or not: then the subscription is past_due and the invoice retried later). Returns the invoice."""
        subscription = self.subscriptions[subscription_id]
        item = subscription["items"]["data"][0]
        start = datetime.fromtimestamp(item["current_period_end"], UTC)
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] = _stamp_of(_next_period(start, item["price"]["recurring"]["interval"]))
        invoice = self._invoice(subscription, "subscription_cycle", paid=paid)
        subscription["latest_invoice"] = invoice["id"]
        subscription["status"] = "active" if paid else "past_due"
        return dict(invoice)

    def retry(self, invoice_id: str, *, paid: bool, last: bool = False) -> dict[str, Any]:
        """Stripe tries a failed invoice again (``last``: no further attempt is scheduled)."""
        invoice = self.invoices[invoice_id]
        invoice["attempt_count"] += 1
        subscription = self.subscriptions[_subscription_of(invoice)]
        if paid:
            invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
            invoice["next_payment_attempt"] = None
            self._invoice_paid(invoice)
            subscription["status"] = "active"
        else:
            retry_at = None if last else _stamp_of(self.now() + RETRY_AFTER)
            invoice["next_payment_attempt"] = retry_at
        return dict(invoice)

    def end(self, subscription_id: str, *, reason: str = "payment_failed") -> dict[str, Any]:
        """Stripe ends the subscription (after its last failed retry, or at period end)."""
        subscription = self.subscriptions[subscription_id]
        subscription.update(status="canceled", canceled_at=self._stamp(), ended_at=self._stamp())
        subscription["cancellation_details"]["reason"] = reason
        return dict(subscription)

    def refund_in_dashboard(self, intent_id: str) -> dict[str, Any]:
        """Someone refunds the whole payment in Stripe's dashboard."""
        intent = self.intents[intent_id]
        return self._refund(intent, intent["amount"] - intent.get("amount_refunded", 0))

    def event(self, type: str, obj: dict[str, Any], created: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int((created or self.now()).timestamp()),
            "type": type,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": obj},
        }

    # --- the API -------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/v1/customers", self._create_customer, methods=["POST"]),
            Route("/v1/customers/{id}", self._get_customer, methods=["GET"]),
            Route("/v1/payment_methods/{id}", self._get_method, methods=["GET"]),
            Route("/v1/payment_methods/{id}/attach", self._attach, methods=["POST"]),
            Route("/v1/payment_methods/{id}/detach", self._detach, methods=["POST"]),
            Route("/v1/payment_intents", self._create_intent, methods=["POST"]),
            Route("/v1/checkout/sessions", self._create_session, methods=["POST"]),
            Route("/v1/checkout/sessions/{id}", self._get_session, methods=["GET"]),
            Route("/v1/checkout/sessions/{id}/expire", self._expire_session, methods=["POST"]),
            Route("/v1/billing_portal/sessions", self._create_portal, methods=["POST"]),
            Route("/v1/subscriptions/{id}", self._get_subscription, methods=["GET"]),
            Route("/v1/subscriptions/{id}", self._update_subscription, methods=["POST"]),
            Route("/v1/subscriptions/{id}", self._cancel_subscription, methods=["DELETE"]),
            Route("/v1/invoices", self._list_invoices, methods=["GET"]),
            Route("/v1/invoice_payments", self._list_invoice_payments, methods=["GET"]),
            Route("/v1/refunds", self._create_refund, methods=["POST"]),
        ]
        pages = [  # what a customer's browser opens: no API key
            Route("/pay/{id}", self._checkout_page, methods=["GET"]),
            Route("/pay/{id}", self._checkout_pay, methods=["POST"]),
            Route("/portal/{customer}", self._portal_page, methods=["GET"]),
        ]
        return Starlette(routes=[replace_endpoint(route, self._serve) for route in routes] + pages)

    # --- the pages Stripe shows the customer (the browser tests open them) --------------------------------

    async def _checkout_page(self, request: Request) -> Response:
        """A Checkout page: the amount, a Pay button and a link back (cancel_url), as Stripe's has."""
        session = self.sessions.get(request.path_params["id"])
        if session is None or session["status"] != "open":
            return HTMLResponse("<h1>This Checkout Session is no longer open</h1>", 404)
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        return HTMLResponse(
            f"<!doctype html><html lang='en'><head><title>Checkout stand-in</title></head><body>"
            f"<h1>Pay {html.escape(amount)}</h1>"
            f"<form method='post'><button type='submit'>Pay</button></form>"
            f"<a href='{html.escape(session['cancel_url'])}'>Back</a></body></html>"
        )

    async def _checkout_pay(self, request: Request) -> Response:
        """The customer pays: Stripe sends them to success_url at once; the webhook comes on its own (the
        test delivers it, with ``event``, when it chooses)."""
        session = self.sessions.get(request.path_params["id"])
        if session is None or session["status"] != "open":
            return HTMLResponse("<h1>This Checkout Session is no longer open</h1>", 404)
        self.pay(session["id"])
        return RedirectResponse(session["success_url"], status_code=303)

    async def _portal_page(self, request: Request) -> Response:
        """The customer portal: a link back to the return_url of the customer's latest portal session."""
        customer = request.path_params["customer"]
        found = [portal for portal in self.portals if portal["customer"] == customer]
        if not found:
            return HTMLResponse("<h1>No portal session</h1>", 404)
        back = html.escape(str(found[-1]["return_url"]))
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><title>Customer portal stand-in</title></head><body>"
            f"<h1>Customer portal</h1><a href='{back}'>Return to Creditline</a></body></html>"
        )

    async def _serve(
        self, request: Request, handler: Callable[[Request, dict[str, str]], Awaitable[dict[str, Any]]]
    ) -> Response:
        body = (await request.body()).decode()
        params = dict(parse_qsl(body or request.url.query, keep_blank_values=True))
        key = request.headers.get("idempotency-key")
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            self.requests.append(Recorded(request.method, request.url.path, params, key, False))
            return _error(StripeError(401, "invalid_request_error", "Invalid API Key provided"))
        fingerprint = json.dumps([request.method, request.url.path, sorted(params.items())])
        if request.method == "POST" and key in self._keys:
            first, status, answer = self._keys[key]
            self.requests.append(Recorded(request.method, request.url.path, params, key, True))
            if first != fingerprint:
                return _error(
                    StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were first"
                        f" used with. Try using a key other than '{key}' if you meant to execute a different request.",
                    )
                )
            return JSONResponse(answer, status, headers={"Idempotent-Replayed": "true"})
        self.requests.append(Recorded(request.method, request.url.path, params, key, False))
        if self.outage.get(request.url.path, 0) > 0:
            self.outage[request.url.path] -= 1
            error = StripeError(503, "api_error", "Stripe is briefly unavailable")
            return JSONResponse(error.body, 503, headers={"Stripe-Should-Retry": "false"})
        try:
            status, answer = 200, await handler(request, params)
        except StripeError as exc:
            status, answer = exc.status, exc.body
        if request.method == "POST" and key is not None and status != 503:
            self._keys[key] = (fingerprint, status, answer)
        return JSONResponse(answer, status)

    def _stamp(self) -> int:
        return int(self.now().timestamp())

    async def _create_customer(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        customer: dict[str, Any] = {
            "id": self.new_id("cus"),
            "object": "customer",
            "created": self._stamp(),
            "email": params.get("email"),
            "name": params.get("name"),
            "metadata": _nested(params, "metadata"),
            "invoice_settings": {"default_payment_method": None, "custom_fields": None, "footer": None},
            "livemode": False,
        }
        self.customers[customer["id"]] = customer
        return customer

    async def _get_customer(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        return self._customer(request.path_params["id"])

    def _customer(self, customer_id: str) -> dict[str, Any]:
        if customer_id not in self.customers:
            raise StripeError(
                404, "invalid_request_error", f"No such customer: '{customer_id}'", code="resource_missing"
            )
        return self.customers[customer_id]

    def _method(self, method_id: str) -> dict[str, Any]:
        if method_id in TEST_METHODS and method_id not in self.methods:
            brand, last4, _, _ = TEST_METHODS[method_id]
            return _payment_method(method_id, brand, last4, None, self._stamp())
        if method_id not in self.methods:
            raise StripeError(
                404,
                "invalid_request_error",
                f"No such PaymentMethod: '{method_id}'",
                code="resource_missing",
                param="payment_method",
            )
        return self.methods[method_id]

    async def _get_method(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        return self._method(request.path_params["id"])

    async def _attach(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        customer = self._customer(params.get("customer", ""))["id"]
        method = self._method(request.path_params["id"])
        if method["id"] in TEST_METHODS:  # Stripe makes a new PaymentMethod from a test one
            method = {**method, "id": self.new_id("pm"), "template": method["id"]}
        elif method["customer"] not in (None, customer):
            raise StripeError(400, "invalid_request_error", "The payment method is attached to another customer")
        method["customer"] = customer
        self.methods[method["id"]] = method
        return method

    async def _detach(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        method = self._method(request.path_params["id"])
        if method.get("customer") is None:
            raise StripeError(
                400,
                "invalid_request_error",
                "The payment method you provided is not attached to a customer so detachment is impossible.",
            )
        method["customer"] = None
        return method

    def _intent(self, amount: int, currency: str, customer: str | None, method: str | None) -> dict[str, Any]:
        intent: dict[str, Any] = {
            "id": self.new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "payment_method": method,
            "status": "requires_payment_method",
            "created": self._stamp(),
            "metadata": {},
            "livemode": False,
        }
        self.intents[intent["id"]] = intent
        return intent

    async def _create_intent(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        amount, currency = _amount(params.get("amount")), params.get("currency", "")
        customer = params.get("customer")
        if customer is not None:
            self._customer(customer)
        method = self._method(params.get("payment_method", ""))
        owner = method.get("customer")
        if owner is not None and owner != customer:
            raise StripeError(
                400,
                "invalid_request_error",
                "The provided PaymentMethod was previously attached to a Customer: pass that Customer to use it.",
                param="payment_method",
            )
        intent = self._intent(amount, currency, customer, method["id"])
        intent["description"] = params.get("description")
        _, _, decline, message = TEST_METHODS[method.get("template", method["id"])]
        off_session = params.get("off_session") == "true"
        if (
            decline == "authentication_required"
            and not off_session
            and params.get("error_on_requires_action") != "true"
        ):
            intent["status"] = "requires_action"
            return intent
        if decline is not None:
            raise StripeError(
                402, "card_error", message, code=decline, decline_code="generic_decline", payment_intent=intent
            )
        intent["status"] = "succeeded"
        return intent

    async def _create_session(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        customer = self._customer(params.get("customer", ""))["id"]
        for name in ("mode", "success_url", "cancel_url"):
            if not params.get(name):
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.", param=name)
        if params["mode"] == "subscription":
            unit, currency, _ = self._price(params.get("line_items[0][price]", ""))
        else:
            unit = _amount(params.get("line_items[0][price_data][unit_amount]"))
            currency = params.get("line_items[0][price_data][currency]", "")
        amount = unit * int(params.get("line_items[0][quantity]", "1"))
        if amount < MINIMUM:
            raise StripeError(
                400,
                "invalid_request_error",
                "The Checkout Session's total amount due must add up to at least $0.50 usd",
            )
        session_id = self.new_id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": params["mode"],
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "currency": currency,
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": _nested(params, "metadata"),
            "payment_intent": None,
            "subscription": None,
            "invoice": None,
            "line_items_price": params.get("line_items[0][price]"),
            "subscription_metadata": _nested(params, "subscription_data[metadata]"),
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "url": f"{self.url}/pay/{session_id}",
            "created": self._stamp(),
            "expires_at": self._stamp() + 86_400,
            "livemode": False,
        }
        self.sessions[session_id] = session
        if self.on_checkout_created is not None:
            await self.on_checkout_created(dict(session))
        return session

    async def _get_session(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        session_id = request.path_params["id"]
        if session_id not in self.sessions:
            raise StripeError(404, "invalid_request_error", f"No such checkout.session: '{session_id}'")
        session = dict(self.sessions[session_id])
        if "payment_intent" in params.values() and session["payment_intent"] is not None:
            session["payment_intent"] = self.intents[session["payment_intent"]]
        return session

    async def _expire_session(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            raise StripeError(404, "invalid_request_error", f"No such checkout.session: '{request.path_params['id']}'")
        if session["status"] != "open":
            raise StripeError(
                400, "invalid_request_error", "Only Checkout Sessions with a status of `open` can be expired."
            )
        session["status"] = "expired"
        return dict(session)

    def _price(self, price_id: str) -> tuple[int, str, str]:
        if price_id not in PRICES:
            raise StripeError(
                400, "invalid_request_error", f"No such price: '{price_id}'", param="line_items[0][price]"
            )
        return PRICES[price_id]

    def _price_object(self, price_id: str) -> dict[str, Any]:
        unit, currency, interval = self._price(price_id)
        return {
            "id": price_id,
            "object": "price",
            "unit_amount": unit,
            "currency": currency,
            "recurring": {"interval": interval, "interval_count": 1},
            "livemode": False,
        }

    def _subscription(self, session: dict[str, Any]) -> dict[str, Any]:
        price = self._price_object(session["line_items_price"])
        start = self.now()
        subscription_id = self.new_id("sub")
        subscription: dict[str, Any] = {
            "id": subscription_id,
            "object": "subscription",
            "customer": session["customer"],
            "status": "active",
            "metadata": dict(session["subscription_metadata"]),
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "ended_at": None,
            "cancellation_details": {"reason": None, "comment": None, "feedback": None},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": self.new_id("si"),
                        "object": "subscription_item",
                        "price": price,
                        "quantity": 1,
                        "subscription": subscription_id,
                        "current_period_start": _stamp_of(start),
                        "current_period_end": _stamp_of(_next_period(start, price["recurring"]["interval"])),
                    }
                ],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={subscription_id}",
            },
            "latest_invoice": None,
            "created": self._stamp(),
            "start_date": self._stamp(),
            "livemode": False,
        }
        self.subscriptions[subscription_id] = subscription
        return subscription

    def _invoice(self, subscription: dict[str, Any], reason: str, *, paid: bool) -> dict[str, Any]:
        item = subscription["items"]["data"][0]
        price = item["price"]
        amount = price["unit_amount"]
        invoice_id = self.new_id("in")
        invoice: dict[str, Any] = {
            "id": invoice_id,
            "object": "invoice",
            "customer": subscription["customer"],
            "status": "paid" if paid else "open",
            "billing_reason": reason,
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount,
            "currency": price["currency"],
            "attempt_count": 1,
            "attempted": True,
            "next_payment_attempt": None if paid else _stamp_of(self.now() + RETRY_AFTER),
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "subscription": subscription["id"],
                    "metadata": dict(subscription["metadata"]),
                },
            },
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": self.new_id("il"),
                        "object": "line_item",
                        "amount": amount,
                        "currency": price["currency"],
                        "quantity": 1,
                        "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
                        "pricing": {
                            "type": "price_details",
                            "price_details": {"price": price["id"], "product": "prod_creditline"},
                            "unit_amount_decimal": str(amount),
                        },
                        "parent": {
                            "type": "subscription_item_details",
                            "invoice_item_details": None,
                            "subscription_item_details": {
                                "subscription": subscription["id"],
                                "subscription_item": item["id"],
                                "proration": False,
                            },
                        },
                    }
                ],
                "has_more": False,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "created": self._stamp(),
            "livemode": False,
        }
        self.invoices[invoice_id] = invoice
        if paid:
            self._invoice_paid(invoice)
        return invoice

    def _invoice_paid(self, invoice: dict[str, Any]) -> None:
        """Stripe pays an invoice with a PaymentIntent, listed among the invoice's payments."""
        intent = self._intent(invoice["amount_due"], invoice["currency"], invoice["customer"], None)
        intent["status"] = "succeeded"
        payment_id = self.new_id("inpay")
        self.invoice_payments[payment_id] = {
            "id": payment_id,
            "object": "invoice_payment",
            "invoice": invoice["id"],
            "status": "paid",
            "is_default": True,
            "amount_paid": invoice["amount_due"],
            "amount_requested": invoice["amount_due"],
            "currency": invoice["currency"],
            "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
            "created": self._stamp(),
            "livemode": False,
        }

    async def _list_invoice_payments(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        found = [
            payment
            for payment in self.invoice_payments.values()
            if params.get("invoice") in (None, payment["invoice"]) and params.get("status") in (None, payment["status"])
        ]
        return {"object": "list", "data": found, "has_more": False, "url": "/v1/invoice_payments"}

    def _known_subscription(self, subscription_id: str) -> dict[str, Any]:
        if subscription_id not in self.subscriptions:
            raise StripeError(404, "invalid_request_error", f"No such subscription: '{subscription_id}'")
        return self.subscriptions[subscription_id]

    async def _get_subscription(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        return self._known_subscription(request.path_params["id"])

    async def _update_subscription(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        subscription = self._known_subscription(request.path_params["id"])
        if subscription["status"] == "canceled":
            raise StripeError(
                400,
                "invalid_request_error",
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        if "cancel_at_period_end" in params:
            subscription["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
            subscription["cancellation_details"]["reason"] = (
                "cancellation_requested" if subscription["cancel_at_period_end"] else None
            )
        if "items[0][price]" in params:
            item = subscription["items"]["data"][0]
            if params.get("items[0][id]") != item["id"]:
                raise StripeError(400, "invalid_request_error", "No such subscription item", param="items[0][id]")
            item["price"] = self._price_object(params["items[0][price]"])
        return subscription

    async def _cancel_subscription(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        subscription = self._known_subscription(request.path_params["id"])
        if subscription["status"] == "canceled":
            raise StripeError(400, "invalid_request_error", "This subscription has already been canceled.")
        return self.end(subscription["id"], reason="cancellation_requested")

    async def _list_invoices(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        found = [
            invoice
            for invoice in reversed(self.invoices.values())  # newest first, as Stripe lists them
            if params.get("subscription") in (None, _subscription_of(invoice))
            and params.get("status") in (None, invoice["status"])
        ]
        return {"object": "list", "data": found, "has_more": False, "url": "/v1/invoices"}

    def _refund(self, intent: dict[str, Any], amount: int) -> dict[str, Any]:
        refunded = intent.get("amount_refunded", 0)
        if refunded >= intent["amount"]:
            raise StripeError(
                400,
                "invalid_request_error",
                f"Charge for {intent['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount > intent["amount"] - refunded:
            raise StripeError(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({intent['amount'] - refunded})",
                param="amount",
            )
        intent["amount_refunded"] = refunded + amount
        refund = {
            "id": self.new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "failure_reason": None,
            "created": self._stamp(),
        }
        self.refunds[refund["id"]] = refund
        return refund

    async def _create_refund(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        intent_id = params.get("payment_intent", "")
        intent = self.intents.get(intent_id)
        if intent is None:
            raise StripeError(
                404, "invalid_request_error", f"No such payment_intent: '{intent_id}'", param="payment_intent"
            )
        if intent["status"] != "succeeded":
            raise StripeError(
                400,
                "invalid_request_error",
                f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
            )
        amount = (
            _amount(params["amount"]) if "amount" in params else intent["amount"] - intent.get("amount_refunded", 0)
        )
        return self._refund(intent, amount)

    async def _create_portal(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        customer = self._customer(params.get("customer", ""))["id"]
        portal = {
            "id": self.new_id("bps"),
            "object": "billing_portal.session",
            "customer": customer,
            "return_url": params.get("return_url"),
            "url": f"{self.url}/portal/{customer}",
            "created": self._stamp(),
            "livemode": False,
        }
        self.portals.append(portal)
        return portal


def replace_endpoint(route: Route, serve: Callable[..., Awaitable[Response]]) -> Route:
    handler = route.endpoint

    async def endpoint(request: Request) -> Response:
        return await serve(request, handler)

    return Route(route.path, endpoint, methods=list(route.methods or ()))


def _payment_method(method_id: str, brand: str, last4: str, customer: str | None, created: int) -> dict[str, Any]:
    return {
        "id": method_id,
        "object": "payment_method",
        "type": "card",
        "customer": customer,
        "created": created,
        "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034, "country": "US"},
        "livemode": False,
    }


def _subscription_of(invoice: dict[str, Any]) -> str:
    return str(invoice["parent"]["subscription_details"]["subscription"])


def _stamp_of(moment: datetime) -> int:
    return int(moment.timestamp())


def _next_period(start: datetime, interval: str) -> datetime:
    """The same day and time a month (or a year) later, on the month's last day if it is shorter."""
    months = start.month - 1 + (1 if interval == "month" else 12)
    year, month = start.year + months // 12, months % 12 + 1
    return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))


def _nested(params: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {key[len(prefix) : -1]: value for key, value in params.items() if key.startswith(prefix)}


def _amount(raw: str | None) -> int:
    if raw is None or not raw.isdigit():
        raise StripeError(400, "invalid_request_error", "Invalid integer: amount", param="amount")
    return int(raw)


def _error(exc: StripeError) -> Response:
    return JSONResponse(exc.body, exc.status)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[StripeStandIn]:
    standin = StripeStandIn()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(standin.app(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    standin.url = f"http://127.0.0.1:{port}"
    try:
        yield standin
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def running_in_thread() -> Iterator[StripeStandIn]:
    """The stand-in on a thread of its own (its own event loop), for a ``creditline serve`` subprocess and a
    browser to talk to while a synchronous test (Playwright) runs."""
    standin = StripeStandIn()
    port = free_port()
    standin.url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(standin.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="stripe-standin", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the Stripe stand-in did not start")
        time.sleep(0.01)
    try:
        yield standin
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def stripe_settings(base: Settings, standin: StripeStandIn, gateway: str) -> Settings:
    return replace(
        base,
        gateway=gateway,
        stripe_secret_key=API_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=standin.url,
        public_url="https://app.example",
    )


@contextlib.asynccontextmanager
async def stripe_api(base: Settings, standin: StripeStandIn, clock: Clock, gateway: str) -> AsyncIterator[Api]:
    """The Creditline app on the ``stripe`` or ``legacy`` gateway, pointed at the stand-in."""
    standin.reset(clock.now)
    settings = stripe_settings(base, standin, gateway)
    app = create_app(settings, clock=clock, manage_database=False, run_jobs=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield Api(client, app, clock, settings)
    finally:
        await app.state.services.gateway.close()


def sign(payload: str, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    """The Stripe-Signature header Stripe would send, made by the SDK's own signer."""
    header: str = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return header


async def deliver(
    api: Api, event: dict[str, Any], *, at: datetime | None = None, signature: str | None = None
) -> httpx.Response:
    """POST an event to /webhooks/stripe as Stripe does: the raw JSON body, signed at ``at`` (default now)."""
    payload = json.dumps(event)
    stamp = int((at or api.clock.now()).timestamp())
    headers = {"stripe-signature": signature if signature is not None else sign(payload, stamp)}
    return await api.client.post("/webhooks/stripe", content=payload, headers=headers)
