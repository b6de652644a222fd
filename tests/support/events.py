"""Reading the outbox in tests: the events written, as (type, data) in the order they were written."""

from __future__ import annotations

import json
from typing import Any

from models.ids import encode_id
from models.ledger import BalanceChange, Event
from models.tables import OutboxEvent
from tests.support.readme_events import undocumented


async def emitted(*types: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of ``types`` (all when none is given), oldest first. Each must be as the README's example
    payload of its type documents it (``readme_events.undocumented``): every test that reads the outbox so
    holds the README to what the code emits."""
    query = OutboxEvent.all() if not types else OutboxEvent.filter(type__in=list(types))
    events = [(row.type, json.loads(row.data)) for row in await query.order_by("id")]
    drift = [p for event_type, data in events for p in undocumented(event_type, data)]
    assert not drift, drift
    return events


def account_data(account_id: int, user_id: int | None, organization_id: int | None = None) -> dict[str, Any]:
    """``data.account`` as the README documents it."""
    return {
        "id": encode_id("CreditAccount", account_id),
        "userId": None if user_id is None else encode_id("User", user_id),
        "organizationId": None if organization_id is None else encode_id("Organization", organization_id),
    }


def balance_changes(changes: tuple[Event, ...]) -> list[BalanceChange]:
    """``changes`` when they are all balance changes (no alert, no usage), as such; fails otherwise."""
    assert all(isinstance(c, BalanceChange) for c in changes), changes
    return [c for c in changes if isinstance(c, BalanceChange)]
