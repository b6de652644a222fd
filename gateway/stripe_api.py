"""What the ``stripe`` and ``legacy`` gateways share: one Stripe SDK client, customers, PaymentIntent charges
and webhook verification.

The client (``stripe.StripeClient`` over httpx, async methods) is made on first use, so a server starts and
answers ``billingConfig`` without reaching Stripe, and without a secret key at all. Every request that
creates something carries an idempotency key made from our own ids, so a retry (the SDK's, or the reconcile
job's) never creates or charges twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import stripe

from gateway.base import (
    Card,
    Charge,
    GatewayError,
    GatewayEvent,
    GatewayUnavailable,
    InvalidPaymentToken,
    InvalidWebhook,
    PaymentRefused,
)

log = logging.getLogger("creditline.gateway.stripe")
T = TypeVar("T")

NETWORK_RETRIES = 2
"""The SDK retries connection errors and 5xx/409 answers itself, with the same idempotency key."""


class HttpxClient(stripe.HTTPXClient):
    """The SDK's httpx client, sending the form body as ``content``: httpx deprecates ``data=`` for a
    ready-encoded body (and will drop it), and the SDK 16.1 still passes it that way."""

    def _get_request_args_kwargs(self, method: str, url: str, headers: Mapping[str, str], post_data: Any) -> list[Any]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        kwargs["content"] = kwargs.pop("data", None) or None
        return [args, kwargs]


class StripeApi:
    """The Stripe SDK client of one process, and the calls both Stripe gateways make."""

    def __init__(
        self, *, secret_key: str, webhook_secret: str, api_base: str = "", webhook_tolerance_seconds: int = 300
    ) -> None:
        self._secret_key = secret_key
        self._webhook_secret = webhook_secret
        self._api_base = api_base
        self._tolerance = webhook_tolerance_seconds
        self._client: stripe.StripeClient | None = None
        self._http: HttpxClient | None = None

    def unavailable_reason(self) -> str | None:
        if not self._secret_key:
            return "Payments are off: CREDITLINE_STRIPE_SECRET_KEY is not set"
        return None

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            if reason := self.unavailable_reason():
                raise GatewayUnavailable(reason)
            self._http = HttpxClient(timeout=30)
            self._client = stripe.StripeClient(
                self._secret_key,
                base_addresses={"api": self._api_base} if self._api_base else None,
                http_client=self._http,
                max_network_retries=NETWORK_RETRIES,
            )
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]
            self._http, self._client = None, None

    async def call(self, request: Callable[[stripe.StripeClient], Awaitable[T]]) -> T:
        """Run one SDK request. An answer that settles nothing (network, 5xx, rate limit, keys) is a
        ``GatewayError``; a request Stripe refuses for good is ``PaymentRefused``; card errors pass through."""
        try:
            return await request(self.client)
        except stripe.CardError:
            raise
        except stripe.InvalidRequestError as exc:
            raise PaymentRefused(exc.user_message or "Stripe refused the request") from exc
        except stripe.StripeError as exc:
            log.warning("Stripe request failed: %s", exc)
            raise GatewayError(f"Stripe could not be reached: {exc.user_message or type(exc).__name__}") from exc

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        params: stripe.params.CustomerCreateParams = {"name": name, "metadata": {"creditline_account": str(account_id)}}
        if email:
            params["email"] = email
        customer = await self.call(
            lambda client: client.v1.customers.create_async(params, {"idempotency_key": idempotency_key})
        )
        return customer.id

    async def describe_card(self, token: str, *, customer: str | None) -> Card:
        """The card a client-side PaymentMethod id names; attached to ``customer`` when given, so that it
        can be charged again (also off-session)."""
        if not token.startswith("pm_"):
            raise InvalidPaymentToken("Give a Stripe PaymentMethod id (pm_...) made by Stripe.js")
        try:
            if customer is None:
                method = await self.call(lambda client: client.v1.payment_methods.retrieve_async(token))
            else:
                method = await self.call(
                    lambda client: client.v1.payment_methods.attach_async(
                        token, {"customer": customer}, {"idempotency_key": f"creditline-attach-{customer}-{token}"}
                    )
                )
        except PaymentRefused as exc:
            raise InvalidPaymentToken(str(exc)) from exc
        except stripe.CardError as exc:
            raise InvalidPaymentToken(exc.user_message or "Stripe refused this card") from exc
        if method.card is None:
            raise InvalidPaymentToken("Only cards can be saved")
        card = method.card
        return Card(
            reference=method.id, brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year
        )

    async def detach_card(self, reference: str) -> None:
        try:
            await self.call(lambda client: client.v1.payment_methods.detach_async(reference))
        except PaymentRefused as exc:  # already detached, or never attached
            log.info("Stripe did not detach %s: %s", reference, exc)

    async def default_card(self, customer: str) -> str | None:
        found = await self.call(lambda client: client.v1.customers.retrieve_async(customer))
        default = found.invoice_settings.default_payment_method if found.invoice_settings else None
        return default if isinstance(default, str) or default is None else default.id

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        card: str,
        idempotency_key: str,
        description: str,
        customer: str | None,
        off_session: bool,
    ) -> Charge:
        """Create and confirm a PaymentIntent in one request. The same key (and the same parameters, which
        is why they come only from our stored rows) returns the first answer."""
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency.lower(),
            "payment_method": card,
            "allowed_payment_method_types": ["card"],
            "confirm": True,
            "error_on_requires_action": True,  # nobody is there to authenticate: decline instead
            "description": description,
        }
        if customer is not None:
            params["customer"] = customer
        if off_session:
            params["off_session"] = True
        try:
            intent = await self.call(
                lambda client: client.v1.payment_intents.create_async(params, {"idempotency_key": idempotency_key})
            )
        except stripe.CardError as exc:
            declined = exc.error.payment_intent if exc.error is not None else None
            reason = exc.user_message or "Your card was declined."
            if exc.code == "authentication_required":
                reason = "The card's bank asks the card holder to authenticate, which an in-app charge cannot do"
            return Charge(False, declined.id if declined is not None else None, reason)
        except PaymentRefused as exc:
            return Charge(False, None, str(exc))
        if intent.status == "succeeded":
            return Charge(True, intent.id)
        if intent.status == "processing":
            raise GatewayError(f"Stripe is still processing {intent.id}")
        if intent.status == "requires_action":
            return Charge(False, intent.id, "This card needs the card holder to authenticate: use another card")
        return Charge(False, intent.id, f"The payment was not completed ({intent.status})")

    async def refund(self, *, charge: str, amount: int, idempotency_key: str) -> Charge:
        """Refund part or all of a PaymentIntent (``pi_...``), of the payment of a Checkout Session (``cs_...``)
        or of a subscription invoice (``in_...``). A refund Stripe accepts (succeeded, or pending at the bank)
        is a success."""
        try:
            intent: str | stripe.PaymentIntent | None = charge
            if charge.startswith("cs_"):
                session = await self.call(lambda client: client.v1.checkout.sessions.retrieve_async(charge))
                intent = session.payment_intent
            elif charge.startswith("in_"):
                paid = await self.call(
                    lambda client: client.v1.invoice_payments.list_async({"invoice": charge, "status": "paid"})
                )
                intent = next((p.payment.payment_intent for p in paid.data if p.payment.payment_intent), None)
            charge = intent if isinstance(intent, str) else intent.id if intent is not None else ""
            refund = await self.call(
                lambda client: client.v1.refunds.create_async(
                    {"payment_intent": charge, "amount": amount}, {"idempotency_key": idempotency_key}
                )
            )
        except PaymentRefused as exc:
            return Charge(False, None, str(exc))
        if refund.status in ("succeeded", "pending"):
            return Charge(True, refund.id)
        return Charge(False, refund.id, f"The refund {refund.status}: {refund.failure_reason or 'no reason given'}")

    def verify_event(self, payload: bytes, signature: str | None, now: datetime) -> GatewayEvent:
        """The SDK checks the signature; the timestamp is bounded here, past and future, on our clock (the
        SDK checks only the past, on the wall clock)."""
        if not self._webhook_secret:
            raise InvalidWebhook("Webhooks are off: CREDITLINE_STRIPE_WEBHOOK_SECRET is not set")
        try:
            stripe.WebhookSignature.verify_header(payload, signature, self._webhook_secret, tolerance=None)
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(f"Bad signature: {exc.user_message}") from exc
        assert signature is not None
        stamp = next(part[2:] for part in signature.split(",") if part.startswith("t="))
        skew = now.timestamp() - int(stamp)
        if abs(skew) > self._tolerance:
            raise InvalidWebhook(f"Timestamp {'too old' if skew > 0 else 'in the future'} ({stamp})")
        try:
            body = json.loads(payload)
            event = GatewayEvent(
                id=_text(body["id"]),
                type=_text(body["type"]),
                created=datetime.fromtimestamp(int(body["created"]), UTC),
                object=_mapping(body["data"]["object"]),
                payload=payload.decode(),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidWebhook("Malformed event") from exc
        return event


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise ValueError("not an identifier")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


class StripeBacked:
    """The gateway methods that are the same on ``stripe`` and ``legacy``."""

    name: str
    card_on_file: bool
    uses_customers = True
    idempotency_window: timedelta | None = timedelta(hours=24)

    def __init__(self, api: StripeApi) -> None:
        self.api = api

    def unavailable_reason(self) -> str | None:
        return self.api.unavailable_reason()

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        return await self.api.create_customer(
            account_id=account_id, email=email, name=name, idempotency_key=idempotency_key
        )

    def verify_event(self, payload: bytes, signature: str | None, now: datetime) -> GatewayEvent:
        return self.api.verify_event(payload, signature, now)

    async def refund(self, *, charge: str, amount: int, currency: str, idempotency_key: str) -> Charge:
        return await self.api.refund(charge=charge, amount=amount, idempotency_key=idempotency_key)

    async def close(self) -> None:
        await self.api.close()
