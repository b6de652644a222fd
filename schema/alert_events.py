"""What ``alertRaised`` sends: an alert raised or resolved by a committed change (after commit)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models.ledger.alerts import AlertChanged
from schema.alerts import Alert, AlertStatus
from schema.scalars import Credits
from schema.types import CreditAccount


@strawberry.type(description="An alert raised (balance.low, balance.depleted) or resolved (balance.recovered)")
class AlertEvent:
    account: CreditAccount
    type: str = strawberry.field(description="balance.low, balance.depleted or balance.recovered")
    event_id: str = strawberry.field(description="The event's webhook-id, as webhooks deliver it")
    sequence: int = strawberry.field(description="The event's number among the account's events")
    level: Credits = strawberry.field(description="The level crossed (0: depletion)")
    available: Credits = strawberry.field(description="Available credit after the change")
    previous: Credits = strawberry.field(description="Available credit before the change")
    alert: Alert = strawberry.field(description="The alert raised, or the one resolved")
    occurred_at: datetime

    @classmethod
    def of(cls, change: AlertChanged) -> AlertEvent:
        resolved = change.resolved_kind is not None
        alert = Alert(
            id=change.alert_id,
            kind=change.resolved_kind or change.event_type,
            level=Credits(change.level),
            status=AlertStatus.RESOLVED if resolved else AlertStatus.OPEN,
            opened_at=change.occurred_at,  # of a resolved alert: read `alerts` for when it opened
            resolved_at=change.occurred_at if resolved else None,
            raised_event_id=None if resolved else change.event_id,
            resolved_event_id=change.event_id if resolved else None,
        )
        return cls(
            account=CreditAccount(id=change.account_id),
            type=change.event_type,
            event_id=change.event_id,
            sequence=change.sequence,
            level=Credits(change.level),
            available=Credits(change.available),
            previous=Credits(change.previous),
            alert=alert,
            occurred_at=change.occurred_at,
        )
