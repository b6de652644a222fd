"""Subscriptions on the card-on-file gateways: each paid period grants the plan credit (docs/rules.md,
Renewals and retries).

A subscription starts INCOMPLETE with a PENDING transaction for its first period; the charge happens
outside any database transaction; completing it (under the account lock, only while PENDING) makes the
subscription ACTIVE and grants the period credit, or CANCELED if the first payment fails. At period end
the sweep writes the renewal transaction (its idempotency key names the subscription, the period and the
attempt, so two processes never write it twice), charges it and completes it. A failed renewal makes the
subscription PAST_DUE, retried on a schedule counted in days from the renewal date, then CANCELED.

On a hosted gateway (stripe) the processor bills and renews instead: models/hosted_subscriptions.py records
what it says, with the row helpers shared from here (``subscription_row``, ``grant_period``, ``mark_canceled``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models import event_data, ledger, payments
from models.credits import format_credits
from models.ledger import Event, IdempotencyConflictError, IdempotencyKey
from models.outbox import EventType
from models.plans import PlanCatalog, PlanSpec
from models.sql import Sql, as_datetime
from models.tables import LIVE_SUBSCRIPTION, LotSource, Subscription, SubscriptionStatus, Transaction


class AlreadySubscribedError(Exception):
    """The account already has a live subscription (``subscription_id``)."""

    def __init__(self, subscription_id: int) -> None:
        super().__init__("The account already has a subscription")
        self.subscription_id = subscription_id


class SubscriptionStateError(Exception):
    """The subscription is not in a state that allows the change."""


@dataclass(frozen=True, slots=True)
class Billing:
    """How subscription payments are priced and retried, from settings."""

    currency: str
    retry_days: Sequence[int]
    """Days after a failed renewal's due date on which it is charged again; after the last, CANCELED."""


async def live_subscription(account_id: int) -> Subscription | None:
    return await Subscription.filter(account_id=account_id, status__in=LIVE_SUBSCRIPTION).order_by("-id").first()


async def start(
    account_id: int,
    *,
    plan: PlanSpec,
    billing: Billing,
    gateway: str,
    payment_method_id: int | None,
    card_reference: str | None,
    idem: IdempotencyKey,
    now: datetime,
) -> tuple[Subscription, Transaction, bool]:
    """Write an INCOMPLETE subscription and the PENDING payment of its first period, or find what this key
    wrote before. Returns both and whether they are new. ``AlreadySubscribedError`` is stored under the key
    and replayed as such, even once that subscription has ended."""
    refusal: AlreadySubscribedError | None = None
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, account_id)  # one live subscription per account, even under races
        earlier = await sql.fetchrow(
            "SELECT id, request_hash FROM subscriptions WHERE idempotency_scope = $1 AND idempotency_key = $2",
            idem.scope,
            idem.key,
        )
        if earlier is not None:
            if earlier["request_hash"] != idem.fingerprint:
                raise IdempotencyConflictError()
            subscription_id, new = int(earlier["id"]), False
        elif (stored := await ledger.stored_refusal(sql, idem)) is not None:
            raise AlreadySubscribedError(int(stored["subscription_id"]))
        elif live := await sql.fetchrow(
            "SELECT id FROM subscriptions WHERE account_id = $1 AND status IN ('INCOMPLETE', 'ACTIVE', 'PAST_DUE')",
            account_id,
        ):
            refusal = AlreadySubscribedError(int(live["id"]))
            await ledger.store_refusal(
                sql, idem, {"refused": "already_subscribed", "subscription_id": refusal.subscription_id}, now
            )
        else:
            inserted = await sql.fetchrow(
                "INSERT INTO subscriptions (account_id, plan_id, status, gateway, payment_method_id,"
                " cancel_at_period_end, failed_attempts, idempotency_scope, idempotency_key, request_hash,"
                " created_at) VALUES ($1, $2, 'INCOMPLETE', $3, $4, $5, 0, $6, $7, $8, $9) RETURNING id",
                account_id,
                plan.id,
                gateway,
                payment_method_id,
                False,
                idem.scope,
                idem.key,
                idem.fingerprint,
                now,
            )
            assert inserted is not None
            subscription_id, new = int(inserted["id"]), True
            await _insert_payment(
                sql, subscription_id, account_id, plan, billing, gateway, card_reference, now, now, now, attempt=1
            )
    if refusal is not None:
        raise refusal
    subscription = await Subscription.get(id=subscription_id)
    first = await Transaction.filter(subscription_id=subscription_id).order_by("id").first()
    assert first is not None
    return subscription, first, new


async def _insert_payment(
    sql: Sql,
    subscription_id: int,
    account_id: int,
    plan: PlanSpec,
    billing: Billing,
    gateway: str,
    card_reference: str | None,
    period_start: datetime,
    anchor: datetime,
    now: datetime,
    *,
    attempt: int,
) -> int | None:
    """The PENDING payment of one period; ``None`` if this attempt was written already (another process)."""
    rows = await sql.fetch(
        "INSERT INTO transactions (account_id, type, status, credits, amount, currency, gateway, payment_method_id,"
        " card_reference, subscription_id, period_start, period_end, idempotency_scope, idempotency_key,"
        " request_hash, created_at) SELECT $1, 'SUBSCRIPTION', 'PENDING', $2, $3, $4, $5, s.payment_method_id,"
        " $6, s.id, $7, $8, $9, $10, '', $11 FROM subscriptions s WHERE s.id = $12"
        " ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING RETURNING id",
        account_id,
        plan.credits,
        plan.price,
        billing.currency,
        gateway,
        card_reference,
        period_start,
        plan.period_end(period_start, anchor),
        f"subscription:{subscription_id}",
        f"{period_start.isoformat()}/attempt-{attempt}",
        now,
        subscription_id,
    )
    return int(rows[0]["id"]) if rows else None


async def complete(
    transaction_id: int,
    *,
    succeeded: bool,
    reference: str | None,
    failure_reason: str | None,
    plans: PlanCatalog,
    billing: Billing,
    now: datetime,
) -> tuple[Transaction, tuple[Event, ...]]:
    """Record the gateway's answer to a subscription payment and move the subscription, in one transaction."""
    txn = await Transaction.get(id=transaction_id)
    changes: tuple[Event, ...] = ()
    async with in_transaction() as conn:
        sql = Sql(conn)
        account = await ledger.lock_account(sql, txn.account_id)
        row = await payments.pending_row(sql, transaction_id)
        if row is not None:
            sub = await subscription_row(sql, int(row["subscription_id"]))
            if succeeded:
                changes = await grant_period(sql, account, row, sub, plans, reference, now)
            else:
                await payments.record_failure(sql, account, transaction_id, failure_reason, reference, now)
                await _unpaid(sql, row, sub, failure_reason or "Payment failed", billing, now)
    return await Transaction.get(id=transaction_id), changes


async def subscription_row(sql: Sql, subscription_id: int) -> dict[str, Any]:
    """The subscription as it is now (read under the caller's account lock)."""
    row = await sql.fetchrow(
        "SELECT id, account_id, plan_id, next_plan_id, status, cancel_at_period_end, failed_attempts,"
        " current_period_end, external_reference FROM subscriptions WHERE id = $1",
        subscription_id,
    )
    assert row is not None
    return row


async def grant_period(
    sql: Sql,
    account: dict[str, Any],
    row: dict[str, Any],
    sub: dict[str, Any],
    plans: PlanCatalog,
    reference: str | None,
    now: datetime,
) -> tuple[Event, ...]:
    """Complete the PENDING payment ``row`` of a period (its lot and invoice) and make the subscription ACTIVE
    for that period, unless it is an earlier period than the one known or the subscription was canceled."""
    start, end = as_datetime(row["period_start"]), as_datetime(row["period_end"])
    assert start is not None
    assert end is not None
    plan = plans.get(str(sub["plan_id"]))
    expires = end if plan is not None and plan.credits_expire_at_period_end else None
    name = plan.name if plan is not None else str(sub["plan_id"])
    line = f"{name} plan, {start:%Y-%m-%d} to {end:%Y-%m-%d}: {format_credits(int(row['credits']))} credits"
    changes = await payments.record_success(
        sql, account, row, LotSource.SUBSCRIPTION, expires, f"{name} plan", line, reference, now
    )
    known_end = as_datetime(sub["current_period_end"])
    if known_end is not None and end < known_end:  # a late answer for an earlier period: keep the later one
        return changes
    if sub["status"] != SubscriptionStatus.CANCELED:  # canceled while the charge was out: keep it canceled
        await sql.execute(
            "UPDATE subscriptions SET status = 'ACTIVE', current_period_start = $1, current_period_end = $2,"
            " failed_attempts = 0, next_attempt_at = NULL, status_reason = NULL WHERE id = $3",
            start,
            end,
            sub["id"],
        )
        if sub["status"] in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):  # not the first period
            await event_data.subscription_event(
                sql, EventType.SUBSCRIPTION_RENEWED, account, int(sub["id"]), now, int(row["id"])
            )
    return changes


async def _unpaid(
    sql: Sql, row: dict[str, Any], sub: dict[str, Any], reason: str, billing: Billing, now: datetime
) -> None:
    if sub["status"] == SubscriptionStatus.CANCELED:
        return
    if sub["status"] == SubscriptionStatus.INCOMPLETE:  # the first payment: there is no period to keep
        await mark_canceled(sql, int(sub["id"]), f"The first payment failed: {reason}", now)
        return
    failed = int(sub["failed_attempts"]) + 1
    due = as_datetime(row["period_start"])
    assert due is not None
    if failed > len(billing.retry_days):
        await mark_canceled(sql, int(sub["id"]), f"Canceled after {failed} failed payments: {reason}", now)
        return
    await sql.execute(
        "UPDATE subscriptions SET status = 'PAST_DUE', failed_attempts = $1, next_attempt_at = $2,"
        " status_reason = $3 WHERE id = $4",
        failed,
        due + timedelta(days=billing.retry_days[failed - 1]),
        f"The renewal payment failed: {reason}",
        sub["id"],
    )
    if sub["status"] != SubscriptionStatus.PAST_DUE:  # once per lapse: a failed retry is a payment.failed only
        account = await event_data.account_row(sql, int(sub["account_id"]))
        await event_data.subscription_event(
            sql, EventType.SUBSCRIPTION_PAST_DUE, account, int(sub["id"]), now, int(row["id"])
        )


async def mark_canceled(sql: Sql, subscription_id: int, reason: str, now: datetime) -> None:
    """End the subscription now, for ``reason`` (under the caller's account lock), and emit its
    ``subscription.canceled``: every caller checks first that it is not canceled already."""
    await sql.execute(
        "UPDATE subscriptions SET status = 'CANCELED', canceled_at = $1, status_reason = $2,"
        " cancel_at_period_end = $3, next_attempt_at = NULL WHERE id = $4",
        now,
        reason,
        False,
        subscription_id,
    )
    found = await sql.fetchrow("SELECT account_id FROM subscriptions WHERE id = $1", subscription_id)
    assert found is not None
    account = await event_data.account_row(sql, int(found["account_id"]))
    await event_data.subscription_event(sql, EventType.SUBSCRIPTION_CANCELED, account, subscription_id, now)


async def due_payments(
    plans: PlanCatalog, billing: Billing, gateway: str, now: datetime, limit: int = 100
) -> list[int]:
    """Write the payments that are due (renewals at period end, PAST_DUE retries) of the card-on-file
    ``gateway``'s subscriptions and end those canceled at period end. Returns the ids of the PENDING
    transactions this call wrote, to be charged. (A hosted gateway's processor renews its own.)"""
    written: list[int] = []
    after = 0
    while True:
        due = (
            await Subscription.filter(id__gt=after, gateway=gateway)
            .filter(
                Q(status=SubscriptionStatus.ACTIVE, current_period_end__lte=now)
                | Q(status=SubscriptionStatus.PAST_DUE, next_attempt_at__lte=now)
            )
            .order_by("id")
            .limit(limit)
            .values_list("id", "account_id")
        )
        for subscription_id, account_id in due:
            async with in_transaction() as conn:
                sql = Sql(conn)
                await ledger.lock_account(sql, int(account_id))
                txn_id = await _renew_locked(sql, int(subscription_id), plans, billing, now)
                if txn_id is not None:
                    written.append(txn_id)
        if len(due) < limit:
            break
        after = int(due[-1][0])
    return written


async def _renew_locked(
    sql: Sql, subscription_id: int, plans: PlanCatalog, billing: Billing, now: datetime
) -> int | None:
    sub = await sql.fetchrow(
        "SELECT s.id, s.account_id, s.plan_id, s.next_plan_id, s.status, s.gateway, s.cancel_at_period_end,"
        " s.failed_attempts, s.next_attempt_at, s.current_period_end, s.created_at, p.reference AS card"
        " FROM subscriptions s LEFT JOIN payment_methods p ON p.id = s.payment_method_id WHERE s.id = $1",
        subscription_id,
    )
    assert sub is not None
    period_end = as_datetime(sub["current_period_end"])
    if sub["status"] not in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE) or period_end is None:
        return None
    if period_end > now:
        return None
    if sub["cancel_at_period_end"]:
        await mark_canceled(sql, subscription_id, "Canceled at the end of the period", now)
        return None
    if sub["status"] == SubscriptionStatus.PAST_DUE:
        retry_at = as_datetime(sub["next_attempt_at"])
        if retry_at is None or retry_at > now:
            return None
    anchor = as_datetime(sub["created_at"])
    assert anchor is not None
    plan_id = str(sub["next_plan_id"] or sub["plan_id"])
    plan = plans.get(plan_id)
    if plan is None:
        await mark_canceled(sql, subscription_id, f"The plan {plan_id} is no longer offered", now)
        return None
    if sub["next_plan_id"]:  # a plan change takes effect with the period it pays for
        await sql.execute(
            "UPDATE subscriptions SET plan_id = $1, next_plan_id = NULL WHERE id = $2", plan.id, subscription_id
        )
    return await _insert_payment(
        sql,
        subscription_id,
        int(sub["account_id"]),
        plan,
        billing,
        str(sub["gateway"]),
        None if sub["card"] is None else str(sub["card"]),
        period_end,
        anchor,
        now,
        attempt=int(sub["failed_attempts"]) + 1,
    )


async def cancel(subscription: Subscription, *, at_period_end: bool, now: datetime) -> Subscription:
    """Cancel now, or at the end of the paid period (a PAST_DUE subscription has none left: now)."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, subscription.account_id)
        current = await subscription_row(sql, subscription.id)
        if current["status"] not in LIVE_SUBSCRIPTION:
            raise SubscriptionStateError("The subscription is already canceled")
        if at_period_end and current["status"] == SubscriptionStatus.ACTIVE:
            await sql.execute("UPDATE subscriptions SET cancel_at_period_end = $1 WHERE id = $2", True, subscription.id)
        else:
            await mark_canceled(sql, subscription.id, "Canceled by the customer", now)
    return await Subscription.get(id=subscription.id)


async def resume(subscription: Subscription) -> Subscription:
    """Undo a cancellation at period end, while the period lasts."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, subscription.account_id)
        current = await subscription_row(sql, subscription.id)
        if current["status"] != SubscriptionStatus.ACTIVE or not current["cancel_at_period_end"]:
            raise SubscriptionStateError("Only a subscription set to cancel at period end can be resumed")
        await sql.execute("UPDATE subscriptions SET cancel_at_period_end = $1 WHERE id = $2", False, subscription.id)
    return await Subscription.get(id=subscription.id)


async def change_plan(subscription: Subscription, plan: PlanSpec) -> Subscription:
    """Switch plans from the next renewal on (choosing the current plan again undoes a pending change)."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, subscription.account_id)
        current = await subscription_row(sql, subscription.id)
        if current["status"] not in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):
            raise SubscriptionStateError("Only an active subscription can change plans")
        next_plan = None if plan.id == current["plan_id"] else plan.id
        await sql.execute("UPDATE subscriptions SET next_plan_id = $1 WHERE id = $2", next_plan, subscription.id)
    return await Subscription.get(id=subscription.id)


async def set_payment_method(subscription: Subscription, payment_method_id: int) -> Subscription | None:
    """Charge renewals (and a PAST_DUE retry) to another saved card of the account; ``None`` if the card
    is not one of the account's saved cards."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        await ledger.lock_account(sql, subscription.account_id)
        current = await subscription_row(sql, subscription.id)
        if current["status"] not in LIVE_SUBSCRIPTION:
            raise SubscriptionStateError("The subscription is already canceled")
        updated = await sql.execute(
            "UPDATE subscriptions SET payment_method_id = $1 WHERE id = $2 AND EXISTS (SELECT 1 FROM payment_methods"
            " WHERE id = $1 AND account_id = $3 AND removed_at IS NULL)",
            payment_method_id,
            subscription.id,
            subscription.account_id,
        )
        if not updated:
            return None
    return await Subscription.get(id=subscription.id)
