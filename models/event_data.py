"""The data of the events billing and the sweep emit (``models.outbox``), built from the rows they describe.

Every event follows the README's conventions ("Events and webhooks"): ``data.account`` names the account, the
other rows are GraphQL global ids with the fields a platform acts on, credit is a string of credits, money
integer minor units with its currency, instants ISO-8601 UTC. Each builder reads its row in the caller's
transaction, after the change, so the event says what committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.credits import format_credits
from models.ids import encode_id
from models.instants import iso_z
from models.money import invoice_number
from models.outbox import EventType, emit
from models.sql import Sql, as_datetime


def instant(value: Any) -> str | None:
    """An instant read from a row (a ``datetime``, or SQLite's text) as ``iso_z`` writes it (``None`` stays
    ``None``)."""
    moment = as_datetime(value)
    return None if moment is None else iso_z(moment)


def account_ref(account: dict[str, Any]) -> dict[str, Any]:
    """``data.account`` from an account row with ``id``, ``user_id`` and ``organization_id`` (the lock's row)."""
    user_id, organization_id = account.get("user_id"), account.get("organization_id")
    return {
        "id": encode_id("CreditAccount", int(account["id"])),
        "userId": None if user_id is None else encode_id("User", int(user_id)),
        "organizationId": None if organization_id is None else encode_id("Organization", int(organization_id)),
    }


async def account_row(sql: Sql, account_id: int) -> dict[str, Any]:
    """The columns ``account_ref`` needs, for a caller that locked the account without keeping its row."""
    row = await sql.fetchrow("SELECT id, user_id, organization_id FROM credit_accounts WHERE id = $1", account_id)
    assert row is not None
    return row


async def emit_for(
    sql: Sql, event_type: EventType, account: dict[str, Any], data: dict[str, Any], now: datetime
) -> None:
    """Emit an account's event (the caller holds the account's lock): ``data.account`` first, then ``data``."""
    organization_id = account.get("organization_id")
    await emit(
        sql,
        event_type,
        {"account": account_ref(account), **data},
        now,
        account_id=int(account["id"]),
        organization_id=None if organization_id is None else int(organization_id),
    )


# ------------------------------------------------------------------------------------------ rows


async def transaction_data(sql: Sql, transaction_id: int) -> dict[str, Any]:
    row = await sql.fetchrow(
        "SELECT id, type, status, credits, amount, currency, failure_reason, subscription_id, period_start,"
        " period_end, completed_at FROM transactions WHERE id = $1",
        transaction_id,
    )
    assert row is not None
    subscription_id = row["subscription_id"]
    return {
        "id": encode_id("Transaction", int(row["id"])),
        "type": str(row["type"]),
        "status": str(row["status"]),
        "credits": format_credits(int(row["credits"])),
        "amount": int(row["amount"]),
        "currency": str(row["currency"]),
        "failureReason": row["failure_reason"],
        "subscriptionId": None if subscription_id is None else encode_id("Subscription", int(subscription_id)),
        "periodStart": instant(row["period_start"]),
        "periodEnd": instant(row["period_end"]),
        "completedAt": instant(row["completed_at"]),
    }


async def subscription_data(sql: Sql, subscription_id: int) -> dict[str, Any]:
    row = await sql.fetchrow(
        "SELECT id, status, plan_id, next_plan_id, current_period_start, current_period_end, cancel_at_period_end,"
        " canceled_at, status_reason, failed_attempts, next_attempt_at FROM subscriptions WHERE id = $1",
        subscription_id,
    )
    assert row is not None
    return {
        "id": encode_id("Subscription", int(row["id"])),
        "status": str(row["status"]),
        "planId": str(row["plan_id"]),
        "nextPlanId": row["next_plan_id"],
        "currentPeriodStart": instant(row["current_period_start"]),
        "currentPeriodEnd": instant(row["current_period_end"]),
        "cancelAtPeriodEnd": bool(row["cancel_at_period_end"]),
        "canceledAt": instant(row["canceled_at"]),
        "statusReason": row["status_reason"],
        "failedAttempts": int(row["failed_attempts"]),
        "nextAttemptAt": instant(row["next_attempt_at"]),
    }


async def invoice_data(sql: Sql, transaction_id: int) -> dict[str, Any]:
    row = await sql.fetchrow(
        "SELECT id, number, status, total, currency, transaction_id, issued_at FROM invoices WHERE transaction_id = $1",
        transaction_id,
    )
    assert row is not None
    return {
        "id": encode_id("Invoice", int(row["id"])),
        "number": invoice_number(int(row["number"])),
        "status": str(row["status"]),
        "total": int(row["total"]),
        "currency": str(row["currency"]),
        "transactionId": encode_id("Transaction", int(row["transaction_id"])),
        "issuedAt": instant(row["issued_at"]),
    }


async def refund_data(sql: Sql, refund_id: int) -> dict[str, Any]:
    row = await sql.fetchrow(
        "SELECT r.id, r.status, r.amount, r.credits, r.reason, r.transaction_id, r.completed_at, t.currency"
        " FROM refunds r JOIN transactions t ON t.id = r.transaction_id WHERE r.id = $1",
        refund_id,
    )
    assert row is not None
    return {
        "id": encode_id("Refund", int(row["id"])),
        "status": str(row["status"]),
        "amount": int(row["amount"]),
        "currency": str(row["currency"]),
        "credits": format_credits(int(row["credits"] or 0)),
        "reason": row["reason"],
        "transactionId": encode_id("Transaction", int(row["transaction_id"])),
        "completedAt": instant(row["completed_at"]),
    }


# ------------------------------------------------------------------------------------------ billing events


async def payment_settled(sql: Sql, account: dict[str, Any], transaction_id: int, now: datetime) -> None:
    """``payment.succeeded`` or ``payment.failed`` (and, on success, ``invoice.created``) for a payment that has
    just left PENDING, or was written FAILED, in ``sql``'s transaction: called only where that transition is
    written, so a replayed webhook or a retried reconcile, which finds it settled, emits nothing."""
    transaction = await transaction_data(sql, transaction_id)
    succeeded = transaction["status"] == "SUCCEEDED"
    kind = EventType.PAYMENT_SUCCEEDED if succeeded else EventType.PAYMENT_FAILED
    await emit_for(sql, kind, account, {"transaction": transaction}, now)
    if succeeded:
        await emit_for(
            sql, EventType.INVOICE_CREATED, account, {"invoice": await invoice_data(sql, transaction_id)}, now
        )


async def subscription_event(
    sql: Sql,
    event_type: EventType,
    account: dict[str, Any],
    subscription_id: int,
    now: datetime,
    transaction_id: int | None = None,
) -> None:
    """A ``subscription.*`` event: the subscription as it is after the change, and the payment behind it."""
    data: dict[str, Any] = {"subscription": await subscription_data(sql, subscription_id)}
    data["transactionId"] = None if transaction_id is None else encode_id("Transaction", transaction_id)
    await emit_for(sql, event_type, account, data, now)


async def refund_created(sql: Sql, account: dict[str, Any], refund_id: int, now: datetime) -> None:
    await emit_for(sql, EventType.REFUND_CREATED, account, {"refund": await refund_data(sql, refund_id)}, now)
