"""What ``alertRaised`` may have missed: the alert changes of an account after a given event, read back from the
outbox (``events``) and the alerts they raised or resolved, as ``AlertChanged`` (``models.ledger.alerts``)."""

from __future__ import annotations

import json

from tortoise import connections

from models.credits import parse_credits
from models.ledger.alerts import AlertChanged
from models.outbox import EventType
from models.sql import Sql, as_datetime

ALERT_TYPES = (EventType.BALANCE_LOW.value, EventType.BALANCE_DEPLETED.value, EventType.BALANCE_RECOVERED.value)


async def last_sequence(account_id: int) -> int:
    """The account's newest event's ``sequence`` (0: none yet): where a watcher starts."""
    row = await Sql(connections.get("default")).fetchrow(
        "SELECT COALESCE(MAX(sequence), 0) AS n FROM events WHERE account_id = $1", account_id
    )
    return int(row["n"]) if row else 0


async def alert_changes_after(account_id: int, sequence: int) -> list[AlertChanged]:
    """The account's alert events numbered after ``sequence``, in order, each with its alert (one statement).
    An event already pruned is not there to tell of (``alerts`` still has the alert's state)."""
    rows = await Sql(connections.get("default")).fetch(
        "SELECT e.public_id, e.type, e.sequence, e.data, e.created_at, a.id AS alert_id, a.kind, a.level"
        " FROM events e JOIN alerts a ON a.account_id = e.account_id"
        " AND (a.raised_event_id = e.id OR a.resolved_event_id = e.id)"
        " WHERE e.account_id = $1 AND e.sequence > $2 AND e.type IN ($3, $4, $5) ORDER BY e.sequence",
        account_id,
        sequence,
        *ALERT_TYPES,
    )
    changes = []
    for row in rows:
        data = json.loads(row["data"])
        occurred_at = as_datetime(row["created_at"])
        assert occurred_at is not None
        recovered = row["type"] == EventType.BALANCE_RECOVERED.value
        changes.append(
            AlertChanged(
                account_id,
                int(row["alert_id"]),
                str(row["type"]),
                str(row["public_id"]),
                int(row["sequence"]),
                int(row["level"] or 0),
                parse_credits(data["available"]),
                parse_credits(data["previous"]),
                occurred_at,
                str(row["kind"]) if recovered else None,
            )
        )
    return changes
