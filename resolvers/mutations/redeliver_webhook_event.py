from __future__ import annotations

from strawberry.types import Info

from models import webhooks
from models.tables import OutboxEvent, WebhookEndpointStatus
from resolvers.context import Context
from resolvers.permissions import require_admin
from resolvers.webhooks import MAX_PUBLIC_ID, endpoint_row
from schema.errors import NotFound, ValidationError
from schema.mutations.redeliver_webhook_event import (
    RedeliverWebhookEventInput,
    RedeliverWebhookEventResult,
    RedeliverWebhookEventSuccess,
)
from schema.webhooks import WebhookDelivery


async def redeliver_webhook_event(
    info: Info[Context, None], input: RedeliverWebhookEventInput
) -> RedeliverWebhookEventResult:
    """The delivery back to PENDING, due now. Safe to repeat: a second call resets the same delivery again."""
    if denied := require_admin(info):
        return denied
    endpoint = await endpoint_row(input.endpoint_id)
    if isinstance(endpoint, NotFound):
        return endpoint
    if endpoint.status is WebhookEndpointStatus.DISABLED:
        return ValidationError(
            message="The endpoint is DISABLED: enable it with updateWebhookEndpoint first", field="endpointId"
        )
    event = None
    if len(input.event_id) <= MAX_PUBLIC_ID:
        event = await OutboxEvent.filter(public_id=input.event_id).first()
    if event is None:
        return NotFound(message="Event not found (events are kept for CREDITLINE_EVENT_RETENTION_DAYS)")
    try:
        delivery = await webhooks.redeliver(endpoint, event, info.context.now())
    except webhooks.EventNotWantedError:
        return ValidationError(
            message=f"The endpoint does not take this event ({event.type}, or another organization's)",
            field="eventId",
        )
    return RedeliverWebhookEventSuccess(delivery=WebhookDelivery.of(delivery))
