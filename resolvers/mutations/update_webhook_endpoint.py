from __future__ import annotations

import strawberry
from strawberry.types import Info

from models import webhooks
from resolvers.context import Context
from resolvers.permissions import require_admin
from resolvers.validation import first_error
from resolvers.webhooks import (
    ENDPOINT_NOT_FOUND,
    check_description,
    check_endpoint_url,
    check_event_types,
    endpoint_row,
    organization_of,
)
from schema.errors import NotFound, ValidationError
from schema.mutations.update_webhook_endpoint import (
    UpdateWebhookEndpointInput,
    UpdateWebhookEndpointResult,
    UpdateWebhookEndpointSuccess,
)
from schema.webhooks import WebhookEndpoint


async def update_webhook_endpoint(
    info: Info[Context, None], input: UpdateWebhookEndpointInput
) -> UpdateWebhookEndpointResult:
    if denied := require_admin(info):
        return denied
    found = await endpoint_row(input.endpoint_id)
    if isinstance(found, NotFound):
        return found
    description_given = input.description is not strawberry.UNSET
    if invalid := first_error(
        None if input.url is None else check_endpoint_url(info, input.url),
        None if input.event_types is None else check_event_types(input.event_types),
        check_description(input.description) if description_given else None,
    ):
        return invalid
    organization: int | None = webhooks.UNSET
    if input.organization_id is not strawberry.UNSET:
        named = await organization_of(input.organization_id)
        if isinstance(named, ValidationError):
            return named
        organization = named
    now = info.context.now()
    row = await webhooks.update_endpoint(
        found.id,
        now,
        url=input.url,
        event_types=input.event_types,
        organization_id=organization,
        description=input.description if description_given else webhooks.UNSET,
        enabled=input.enabled,
    )
    if row is None:  # deleted meanwhile
        return NotFound(message=ENDPOINT_NOT_FOUND)
    return UpdateWebhookEndpointSuccess(endpoint=WebhookEndpoint.of(row, now))
