from __future__ import annotations

from strawberry.types import Info

from models import webhooks
from resolvers.context import Context
from resolvers.permissions import require_admin
from resolvers.webhooks import ENDPOINT_NOT_FOUND, endpoint_row
from schema.errors import NotFound
from schema.mutations.disable_webhook_endpoint import (
    DisableWebhookEndpointInput,
    DisableWebhookEndpointResult,
    DisableWebhookEndpointSuccess,
)
from schema.webhooks import WebhookEndpoint


async def disable_webhook_endpoint(
    info: Info[Context, None], input: DisableWebhookEndpointInput
) -> DisableWebhookEndpointResult:
    if denied := require_admin(info):
        return denied
    found = await endpoint_row(input.endpoint_id)
    if isinstance(found, NotFound):
        return found
    now = info.context.now()
    row = await webhooks.disable_endpoint(found.id, now)
    if row is None:
        return NotFound(message=ENDPOINT_NOT_FOUND)
    return DisableWebhookEndpointSuccess(endpoint=WebhookEndpoint.of(row, now))
