"""redeliverWebhookEvent: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound, ValidationError
from schema.webhooks import WebhookDelivery


@strawberry.input(
    description="Send an event to an endpoint again: its delivery goes back to PENDING, due now, with the same"
    " webhook-id (the event's id), so a receiver that had it dedupes it; while an attempt is under way, due when"
    " that attempt's claim runs out (nextAttemptAt), never sent beside it. An endpoint that never had the event"
    " is given a delivery if it takes the event's type (and organization). Admin tokens only."
)
class RedeliverWebhookEventInput:
    endpoint_id: strawberry.ID
    event_id: str = strawberry.field(description="The event's id (evt_...), as in webhookEvents or webhook-id")


@strawberry.type
class RedeliverWebhookEventSuccess:
    delivery: WebhookDelivery


RedeliverWebhookEventResult = Annotated[
    RedeliverWebhookEventSuccess | ValidationError | Forbidden | NotFound,
    strawberry.union("RedeliverWebhookEventResult"),
]
