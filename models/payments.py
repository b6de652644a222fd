"""Payments for credit: transactions, their completion into PAID lots, invoices and saved cards
(docs/rules.md, Payments and Invoices).

A top-up is written PENDING in its own transaction, charged outside any transaction, then completed
under the account's row lock: the completion re-reads the transaction and acts only while it is still
PENDING, so a retried or concurrent completion never grants twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from models import event_data, ledger
from models.credits import format_credits
from models.ledger import Event, IdempotencyConflictError, IdempotencyKey, LedgerError
from models.money import Price
from models.sql import Sql
from models.tables import (
    LIVE_SUBSCRIPTION,
    AutoTopUp,
    CreditKind,
    LotSource,
    PaymentMethod,
    Subscription,
    Transaction,
    TransactionStatus,
    TransactionType,
)


async def start_top_up(
    account_id: int,
    *,
    credits: int,
    price: Price,
    gateway: str,
    payment_method_id: int | None,
    card_reference: str | None,
    kind: TransactionType,
    idem: IdempotencyKey,
    now: datetime,
) -> tuple[Transaction, bool]:
    """Write a PENDING transaction, or find the one this key wrote before. Returns it and whether it is new."""
    existing = await Transaction.filter(idempotency_scope=idem.scope, idempotency_key=idem.key).first()
    if existing is not None:
        if existing.request_hash != idem.fingerprint:
            raise IdempotencyConflictError()
        return existing, False
    async with in_transaction() as conn:
        sql = Sql(conn)
        rows = await sql.fetch(
            "INSERT INTO transactions (account_id, type, status, credits, amount, currency, gateway,"
            " payment_method_id, card_reference, idempotency_scope, idempotency_key, request_hash, created_at)"
            " VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            " ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING RETURNING id",
            account_id,
            kind.value,
            credits,
            price.of(credits),
            price.currency,
            gateway,
            payment_method_id,
            card_reference,
            idem.scope,
            idem.key,
            idem.fingerprint,
            now,
        )
    if not rows:  # a concurrent request with the same key won the insert
        return await start_top_up(
            account_id,
            credits=credits,
            price=price,
            gateway=gateway,
            payment_method_id=payment_method_id,
            card_reference=card_reference,
            kind=kind,
            idem=idem,
            now=now,
        )
    return await Transaction.get(id=rows[0]["id"]), True


async def store_checkout_page(transaction_id: int, *, url: str, reference: str | None) -> Transaction:
    """Store the address of a PENDING payment's hosted checkout page and the processor's reference for it.
    A webhook may have completed the transaction meanwhile: its status stays, and so does its reference."""
    await Sql(connections.get("default")).execute(
        "UPDATE transactions SET checkout_url = $1, gateway_reference = COALESCE(gateway_reference, $2) WHERE id = $3",
        url,
        reference,
        transaction_id,
    )
    return await Transaction.get(id=transaction_id)


CHARGE_IN_FLIGHT = timedelta(minutes=1)
"""How long the request that wrote a PENDING payment may still be charging it: the reconcile job leaves a
payment younger than this alone (``billing.reconcile.reconcile_pending``), and so does a resend."""


async def settled(transaction: Transaction, *, wait_seconds: float, now: datetime) -> tuple[Transaction, bool]:
    """A resend's view of the payment its key wrote: once the first call has recorded the gateway's answer,
    waiting up to ``wait_seconds`` for it. Returns the transaction and whether its outcome is still being
    learnt (PENDING, and young enough that the first call may still be charging it).

    The first call charges outside any database transaction (so there is no row lock to wait on): this
    polls the row, quickly at first. A payment PENDING for longer than ``CHARGE_IN_FLIGHT`` is not waited
    for: its first call is over (its charge went unanswered) and the reconcile job finishes it."""
    if now - transaction.created_at >= CHARGE_IN_FLIGHT:
        return transaction, False
    deadline = time.monotonic() + wait_seconds
    delay = 0.01
    while transaction.status == TransactionStatus.PENDING:
        left = deadline - time.monotonic()
        if left <= 0:
            return transaction, True
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.2)
        transaction = await Transaction.get(id=transaction.id)
    return transaction, False


async def complete(
    transaction_id: int, *, succeeded: bool, reference: str | None, failure_reason: str | None, now: datetime
) -> tuple[Transaction, tuple[Event, ...]]:
    """Record the gateway's answer to a top-up. Success grants a PAID lot and issues the invoice, in one
    transaction; only a PENDING transaction changes, so completing twice grants once."""
    account_id = (await Transaction.get(id=transaction_id)).account_id
    changes: tuple[Event, ...] = ()
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await ledger.lock_account(sql, account_id)
        row = await pending_row(sql, transaction_id)
        if row is not None:
            if succeeded:
                source = LotSource.AUTO_TOP_UP if row["type"] == TransactionType.AUTO_TOP_UP else LotSource.TOP_UP
                credits = int(row["credits"])
                line = f"{format_credits(credits)} credits"
                lot_reason = "Auto top-up" if source is LotSource.AUTO_TOP_UP else "Top-up"
                changes = await record_success(sql, account, row, source, None, lot_reason, line, reference, now)
            else:
                await record_failure(sql, account, transaction_id, failure_reason, reference, now)
    return await Transaction.get(id=transaction_id), changes


async def pending_row(sql: Sql, transaction_id: int) -> dict[str, Any] | None:
    """The transaction, if it is still PENDING; read under the account lock the caller holds."""
    row = await sql.fetchrow(
        "SELECT id, status, credits, amount, currency, type, subscription_id, period_start, period_end"
        " FROM transactions WHERE id = $1",
        transaction_id,
    )
    assert row is not None
    return row if row["status"] == TransactionStatus.PENDING else None


async def record_success(
    sql: Sql,
    account: dict[str, Any],
    row: dict[str, Any],
    source: LotSource,
    expires_at: datetime | None,
    lot_reason: str,
    invoice_line: str,
    reference: str | None,
    now: datetime,
) -> tuple[Event, ...]:
    """Grant the paid credit, mark the transaction SUCCEEDED and issue its invoice (under the account lock)."""
    granted = await ledger.grant_locked(
        sql, account, int(row["credits"]), CreditKind.PAID, source, expires_at, lot_reason, now
    )
    await sql.execute(
        "UPDATE transactions SET status = 'SUCCEEDED', lot_id = $1, gateway_reference = $2, completed_at = $3"
        " WHERE id = $4",
        granted.lot_id,
        reference,
        now,
        row["id"],
    )
    await _issue_invoice(sql, row, int(account["id"]), invoice_line, now)
    await event_data.payment_settled(sql, account, int(row["id"]), now)
    return granted.changes  # the balance change and the alerts it resolved (a top-up's balance.recovered)


async def record_failure(
    sql: Sql,
    account: dict[str, Any],
    transaction_id: int,
    failure_reason: str | None,
    reference: str | None,
    now: datetime,
) -> None:
    """Mark the PENDING payment FAILED (under the account lock) and emit its ``payment.failed``."""
    await sql.execute(
        "UPDATE transactions SET status = 'FAILED', failure_reason = $1, gateway_reference = $2, completed_at = $3"
        " WHERE id = $4",
        failure_reason or "Payment failed",
        reference,
        now,
        transaction_id,
    )
    await event_data.payment_settled(sql, account, transaction_id, now)


async def _issue_invoice(sql: Sql, row: dict[str, Any], account_id: int, description: str, now: datetime) -> None:
    # The sequence row is locked by taking a number until commit: numbers are sequential and without gaps.
    # One upsert, not an update then an insert: migration 0010 seeds the row, and should it be missing,
    # concurrent first payments must not race to insert it (PostgreSQL makes the loser wait, then update).
    taken = await sql.fetchrow(
        "INSERT INTO invoice_sequence (id, last_number) VALUES (1, 1)"
        " ON CONFLICT (id) DO UPDATE SET last_number = invoice_sequence.last_number + 1 RETURNING last_number"
    )
    assert taken is not None
    number = int(taken["last_number"])
    credits, amount = int(row["credits"]), int(row["amount"])
    lines = [{"description": description, "quantity": format_credits(credits), "amount": amount}]
    await sql.execute(
        "INSERT INTO invoices (number, transaction_id, account_id, lines, total, currency, status, issued_at,"
        " paid_at) VALUES ($1, $2, $3, $4, $5, $6, 'PAID', $7, $8)",
        number,
        row["id"],
        account_id,
        json.dumps(lines),
        amount,
        row["currency"],
        now,
        now,
    )


@dataclass(frozen=True, slots=True)
class CardDetails:
    """A card as the processor saved it: its reference there, and what the customer sees of it."""

    reference: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


async def save_card(account_id: int, *, gateway: str, card: CardDetails, now: datetime) -> PaymentMethod:
    """Save a card; the account's first card becomes its default."""
    async with in_transaction():
        has_default = await PaymentMethod.filter(account_id=account_id, removed_at=None, is_default=True).exists()
        return await PaymentMethod.create(
            account_id=account_id,
            gateway=gateway,
            reference=card.reference,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            is_default=not has_default,
            created_at=now,
        )


async def set_default_card(account_id: int, method_id: int) -> PaymentMethod | None:
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, account_id)  # one default per account, even under concurrent calls
        method = await PaymentMethod.filter(id=method_id, account_id=account_id, removed_at=None).first()
        if method is None:
            return None
        await PaymentMethod.filter(account_id=account_id, is_default=True).update(is_default=False)
        method.is_default = True
        await method.save(update_fields=["is_default"])
    return method


class PaymentMethodInUseError(LedgerError):
    """The card pays for something that would stop working without it."""


async def remove_card(account_id: int, method_id: int, now: datetime) -> PaymentMethod | None:
    """Remove a saved card (kept for the transactions that used it); the oldest other card becomes default.
    Refused while auto top-up or a live subscription charges it (checked under the account lock that
    configuring them takes too)."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, account_id)
        method = await PaymentMethod.filter(id=method_id, account_id=account_id, removed_at=None).first()
        if method is None:
            return None
        if await AutoTopUp.filter(account_id=account_id, payment_method_id=method_id, enabled=True).exists():
            raise PaymentMethodInUseError(
                "Auto top-up charges this card: give auto top-up another card or switch it off first"
            )
        if await Subscription.filter(
            account_id=account_id, payment_method_id=method_id, status__in=LIVE_SUBSCRIPTION
        ).exists():
            raise PaymentMethodInUseError(
                "The subscription renews on this card: move it to another card (setSubscriptionPaymentMethod)"
                " or cancel it first"
            )
        was_default = method.is_default
        method.removed_at, method.is_default = now, False
        await method.save(update_fields=["removed_at", "is_default"])
        if was_default:
            successor = await PaymentMethod.filter(account_id=account_id, removed_at=None).order_by("id").first()
            if successor is not None:
                successor.is_default = True
                await successor.save(update_fields=["is_default"])
    return method
