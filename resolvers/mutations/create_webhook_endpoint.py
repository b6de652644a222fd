from __future__ import annotations

from strawberry.types import Info

from models import webhooks
from models.ledger import IdempotencyKey
from resolvers.context import Context
from resolvers.mutations._common import conflict
from resolvers.permissions import principal, require_admin
from resolvers.validation import check_key, first_error
from resolvers.webhooks import (
    TOO_MANY,
    check_description,
    check_endpoint_url,
    check_event_types,
    organization_of,
)
from schema.errors import ValidationError
from schema.mutations.create_webhook_endpoint import (
    CreateWebhookEndpointInput,
    CreateWebhookEndpointResult,
    CreateWebhookEndpointSuccess,
)
from schema.webhooks import WebhookEndpoint


async def create_webhook_endpoint(
    info: Info[Context, None], input: CreateWebhookEndpointInput
) -> CreateWebhookEndpointResult:
    """Register an endpoint and answer its secret, this once (a replay of the idempotency key: again)."""
    if denied := require_admin(info):
        return denied
    if invalid := first_error(
        check_endpoint_url(info, input.url),
        check_event_types(input.event_types),
        check_description(input.description),
        None if input.idempotency_key is None else check_key(input.idempotency_key),
    ):
        return invalid
    organization = await organization_of(input.organization_id)
    if isinstance(organization, ValidationError):
        return organization
    idem = None
    if input.idempotency_key is not None:
        request = {
            "url": input.url,
            "eventTypes": input.event_types,
            "organizationId": organization,
            "description": input.description,
        }
        idem = IdempotencyKey.for_request(
            principal(info).idempotency_scope, input.idempotency_key, "createWebhookEndpoint", request
        )
    now = info.context.now()
    try:
        created = await webhooks.create_endpoint(
            input.url, input.event_types, organization, input.description, now, idem
        )
    except webhooks.TooManyEndpointsError:
        return ValidationError(message=TOO_MANY, field=None)
    except webhooks.IdempotencyConflictError:
        assert input.idempotency_key is not None
        return conflict(input.idempotency_key)
    return CreateWebhookEndpointSuccess(secret=created.secret, endpoint=WebhookEndpoint.of(created.endpoint, now))
