"""Stripe Checkout's events for top-ups (payment-mode sessions): they complete the PENDING transaction we opened.

A session names its transaction in its metadata (or ``client_reference_id``); one that names none of ours,
names one opened for another session, or charges another amount or currency than ours is ignored. Completion
acts only on a PENDING transaction under the account lock (``payments.complete``), so any order or number of
deliveries changes it once.
"""

from __future__ import annotations

import logging
from typing import Any

from billing.checkout import CHECKOUT_FAILURES
from billing.webhook_handler import Changes, HandlerTable, WebhookContext, handles
from gateway.base import CheckoutState, GatewayEvent
from gateway.stripe_events import text_field
from models import payments
from models.tables import Transaction, TransactionStatus

log = logging.getLogger("creditline.webhooks")

HANDLERS: HandlerTable = {}


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


@handles(HANDLERS, "checkout.session.completed", "checkout.session.async_payment_succeeded", mode="payment")
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


@handles(HANDLERS, "checkout.session.async_payment_failed", "checkout.session.expired", mode="payment")
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
