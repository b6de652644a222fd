"""Processor events as stored (table webhook_events): once by their id, before they are handled, and marked
processed once after. What an event means is billing's (billing/webhook_events.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise import connections

from models.sql import Sql, as_datetime


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back to be processed again: its payload as the processor sent it."""

    id: str
    type: str
    payload: str
    created_at: datetime | None


async def store(event_id: str, gateway: str, event_type: str, payload: str, created: datetime, now: datetime) -> bool:
    """Store an event unless its id is stored already; returns whether it is new."""
    stored = await Sql(connections.get("default")).fetch(
        "INSERT INTO webhook_events (id, gateway, type, payload, created_at, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING id",
        event_id,
        gateway,
        event_type,
        payload,
        created,
        now,
    )
    return bool(stored)


async def processed_at(event_id: str) -> datetime | None:
    """When the stored event was marked processed; None if it was not (or is not stored)."""
    row = await Sql(connections.get("default")).fetchrow(
        "SELECT processed_at FROM webhook_events WHERE id = $1", event_id
    )
    return None if row is None else as_datetime(row["processed_at"])


async def mark_processed(event_id: str, now: datetime) -> None:
    """Mark the event processed, unless it was already (the first mark stays)."""
    await Sql(connections.get("default")).execute(
        "UPDATE webhook_events SET processed_at = $1 WHERE id = $2 AND processed_at IS NULL", now, event_id
    )


async def unprocessed_since(since: datetime) -> list[StoredEvent]:
    """The events received from ``since`` on and not processed yet, oldest first."""
    rows = await Sql(connections.get("default")).fetch(
        "SELECT id, type, payload, created_at FROM webhook_events"
        " WHERE processed_at IS NULL AND received_at >= $1 ORDER BY created_at, id",
        since,
    )
    return [StoredEvent(row["id"], row["type"], row["payload"], as_datetime(row["created_at"])) for row in rows]
