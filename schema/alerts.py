"""Balance alerts as the API shows them (models/ledger/alerts.py fires them; README, "Balance alerts")."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry import relay

from models import tables
from schema.scalars import Credits


@strawberry.enum(description="OPEN until the balance recovers (or its level is removed), then RESOLVED")
class AlertStatus(Enum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


@strawberry.type(description="A condition of an account that a person should know of, from the event that raised it")
class Alert(relay.Node):
    id: relay.NodeID[int]
    kind: str = strawberry.field(description="The type of the event that raised it: balance.low or balance.depleted")
    level: Credits = strawberry.field(description="The level crossed (0 for balance.depleted)")
    status: AlertStatus
    opened_at: datetime
    resolved_at: datetime | None
    raised_event_id: str | None = strawberry.field(
        description="The webhook-id of the event that raised it (null once that event is pruned)"
    )
    resolved_event_id: str | None = strawberry.field(
        description="The webhook-id of the balance.recovered event that resolved it (null: unresolved, or resolved"
        " because its level was removed)"
    )

    raised_pk: strawberry.Private[int | None] = None
    resolved_pk: strawberry.Private[int | None] = None

    @classmethod
    def of(cls, row: tables.Alert) -> Alert:
        """Without the events' webhook-ids: ``with_event_ids`` reads those of a page in one query."""
        return cls(
            id=int(row.id),
            kind=row.kind,
            level=Credits(int(row.level or 0)),
            status=AlertStatus(str(row.status)),
            opened_at=row.opened_at,
            resolved_at=row.resolved_at,
            raised_event_id=None,
            resolved_event_id=None,
            raised_pk=row.raised_event_id,
            resolved_pk=row.resolved_event_id,
        )


async def with_event_ids(page: relay.Connection[Alert]) -> relay.Connection[Alert]:
    """Fill in the webhook-ids of the events a page of alerts names, in one query."""
    await fill_event_ids([edge.node for edge in page.edges])
    return page


async def fill_event_ids(nodes: list[Alert]) -> None:
    """Fill in the webhook-ids of the events these alerts name, in one query (none when they name none)."""
    pks = {pk for node in nodes for pk in (node.raised_pk, node.resolved_pk) if pk is not None}
    if pks:
        found = dict(await tables.OutboxEvent.filter(id__in=pks).values_list("id", "public_id"))
        for node in nodes:
            node.raised_event_id = found.get(node.raised_pk or 0)
            node.resolved_event_id = found.get(node.resolved_pk or 0)


@strawberry.type(description="The balance-alert levels in force for an account")
class AlertLevels:
    levels: list[Credits] = strawberry.field(description="Highest first; empty: no balance.low alerts")
    is_default: bool = strawberry.field(
        description="The deployment's default (CREDITLINE_DEFAULT_LOW_BALANCE_CREDITS): the account set none"
    )
