from __future__ import annotations

from strawberry.types import Info

from models import webhooks
from resolvers.context import Context
from resolvers.permissions import require_admin
from resolvers.webhooks import ENDPOINT_NOT_FOUND, endpoint_row
from schema.errors import NotFound
from schema.mutations.delete_webhook_endpoint import (
    DeleteWebhookEndpointInput,
    DeleteWebhookEndpointResult,
    DeleteWebhookEndpointSuccess,
)
from schema.webhooks import WebhookEndpoint


async def delete_webhook_endpoint(
    info: Info[Context, None], input: DeleteWebhookEndpointInput
) -> DeleteWebhookEndpointResult:
    if denied := require_admin(info):
        return denied
    found = await endpoint_row(input.endpoint_id)
    if isinstance(found, NotFound):
        return found
    row = await webhooks.delete_endpoint(found.id)
    if row is None:
        return NotFound(message=ENDPOINT_NOT_FOUND)
    return DeleteWebhookEndpointSuccess(endpoint=WebhookEndpoint.of(row, info.context.now()))
