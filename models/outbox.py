"""The outbox: events for the platform, written in the transaction of the change that causes them.

An event is never inferred afterwards: the operation that moves a balance, settles a payment or trips a limit
calls ``emit`` with the same ``Sql`` (the same transaction), so the event exists if and only if the change
committed. Delivery (``creditline/webhooks``) reads the table after commit; nothing here calls the network.

Ordering: an account's events carry ``sequence`` 1, 2, 3... An event of an account is emitted under that
account's row lock (every ledger operation holds it; others take it with ``lock_account``), so the next
number is read and written without a race, and the unique ``(account_id, sequence)`` turns a caller that forgot
the lock into an error instead of a duplicate. Pruning keeps each account's newest event, so numbering never
starts again.
"""

from __future__ import annotations

import json
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from models.sql import Sql

_written: ContextVar[bool] = ContextVar("creditline_outbox_written", default=False)


def note_written() -> None:
    """Called by every statement that writes work for the delivery workers (an event; a redelivery): the
    task's next publish after its commit (the bus, creditline/events.py) wakes them. A context variable, so
    it is this task's (a request's, a job's) and not another's whose transaction has not committed yet.

    What publishes it: the operations that publish their balance changes, and for every other path the end
    of each GraphQL operation (HTTP and websocket), each sweeper pass, each auto top-up's settling and the
    bus's ``stop`` (a CLI command)."""
    _written.set(True)


def take_written() -> bool:
    """Whether this task wrote an event since it last asked (a rolled-back one too: a wake for nothing)."""
    if not _written.get():
        return False
    _written.set(False)
    return True


class EventType(StrEnum):
    """Every event type, as receivers see it in ``type``. Names are part of the API: never renamed."""

    BALANCE_LOW = "balance.low"
    BALANCE_DEPLETED = "balance.depleted"
    BALANCE_RECOVERED = "balance.recovered"
    BALANCE_RUNS_OUT_SOON = "balance.runs_out_soon"
    CREDIT_EXPIRING = "credit.expiring"
    CREDIT_EXPIRED = "credit.expired"
    SPEND_LIMIT_WARNING = "spend_limit.warning"
    SPEND_LIMIT_REACHED = "spend_limit.reached"
    AGENT_PAUSED = "agent.paused"
    BUDGET_WARNING = "budget.warning"
    BUDGET_REACHED = "budget.reached"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    AUTO_TOP_UP_SUCCEEDED = "auto_top_up.succeeded"
    AUTO_TOP_UP_FAILED = "auto_top_up.failed"
    AUTO_TOP_UP_DISABLED = "auto_top_up.disabled"
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_PAST_DUE = "subscription.past_due"
    SUBSCRIPTION_CANCELED = "subscription.canceled"
    INVOICE_CREATED = "invoice.created"
    REFUND_CREATED = "refund.created"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"


@dataclass(frozen=True, slots=True)
class EmittedEvent:
    """An event written in the caller's transaction (``id`` is the row's; ``public_id`` the ``webhook-id``)."""

    id: int
    public_id: str
    type: EventType
    account_id: int | None
    organization_id: int | None
    sequence: int | None
    data: dict[str, Any]
    created_at: datetime


def new_public_id() -> str:
    """``evt_`` and 32 random hex characters (128 bits): unguessable, and says nothing of how many exist."""
    return "evt_" + secrets.token_hex(16)


# One statement: the account's next number is read in the insert itself (the caller holds the account lock).
_INSERT_FOR_ACCOUNT = (
    "INSERT INTO events (public_id, type, account_id, organization_id, sequence, data, created_at)"
    " VALUES ($1, $2, $3, $4, (SELECT COALESCE(MAX(e.sequence), 0) + 1 FROM events e WHERE e.account_id = $3),"
    " $5, $6) RETURNING id, sequence"
)
_INSERT_FOR_DEPLOYMENT = (
    "INSERT INTO events (public_id, type, account_id, organization_id, sequence, data, created_at)"
    " VALUES ($1, $2, NULL, $3, NULL, $4, $5) RETURNING id, sequence"
)


async def emit(
    sql: Sql,
    event_type: EventType,
    data: dict[str, Any],
    now: datetime,
    *,
    account_id: int | None,
    organization_id: int | None = None,
) -> EmittedEvent:
    """Write one event in ``sql``'s transaction: one INSERT. ``account_id``'s row must be locked by the caller
    (its ``sequence`` is the next after the account's newest). ``data`` must be JSON (ints, strings, lists...);
    amounts of credit in it are strings of credits, as the GraphQL ``Credits`` scalar writes them."""
    public_id = new_public_id()
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    note_written()
    if account_id is None:
        row = await sql.fetchrow(_INSERT_FOR_DEPLOYMENT, public_id, event_type.value, organization_id, text, now)
    else:
        row = await sql.fetchrow(
            _INSERT_FOR_ACCOUNT, public_id, event_type.value, account_id, organization_id, text, now
        )
    assert row is not None
    sequence = None if row["sequence"] is None else int(row["sequence"])
    return EmittedEvent(int(row["id"]), public_id, event_type, account_id, organization_id, sequence, data, now)


async def prune(sql: Sql, before: datetime) -> int:
    """Delete events created before ``before`` (their deliveries go with them), except each account's newest,
    which keeps its ``sequence`` counting on, and those with a delivery still PENDING (sent, or failed, first:
    a retention shorter than the retry period never loses a retry). Returns how many were deleted."""
    return await sql.execute("DELETE FROM events WHERE " + PRUNABLE, before)


PRUNABLE = (
    "created_at < $1 AND (account_id IS NULL OR sequence <"
    " (SELECT MAX(n.sequence) FROM events n WHERE n.account_id = events.account_id))"
    # a delivery still being retried keeps its event, whatever the retention (shorter than the retry period)
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id AND d.status = 'PENDING')"
)
"""Which events ``prune`` deletes (``$1``: the cut-off): older than it, not an account's newest, and without a
PENDING delivery."""
