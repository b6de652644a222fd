"""createWebhookEndpoint: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, IdempotencyConflict, NotFound, ValidationError
from schema.webhooks import WebhookEndpoint


@strawberry.input(
    description="Register a URL to be sent events, signed as Standard Webhooks. Admin tokens only; at most 20"
    " endpoints per deployment."
)
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="Absolute http(s) URL, at most 2000 characters, no credentials; https in production; not a"
        " private, loopback or link-local address unless CREDITLINE_WEBHOOK_ALLOW_PRIVATE"
    )
    event_types: list[str] = strawberry.field(
        default_factory=list, description="The event types to send (README, Webhook events); empty: every type"
    )
    organization_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only this organization's events; null: every event"
    )
    description: str | None = strawberry.field(default=None, description="To tell it apart: up to 500 characters")
    idempotency_key: str | None = strawberry.field(
        default=None, description="The same request again with the same key answers the first one (and its secret)"
    )


@strawberry.type
class CreateWebhookEndpointSuccess:
    secret: str = strawberry.field(
        description="The signing secret (whsec_...): shown this once; the endpoint shows only its secretHint"
    )
    endpoint: WebhookEndpoint


CreateWebhookEndpointResult = Annotated[
    CreateWebhookEndpointSuccess | ValidationError | IdempotencyConflict | Forbidden | NotFound,
    strawberry.union("CreateWebhookEndpointResult"),
]
