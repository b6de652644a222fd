"""deleteWebhookEndpoint: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound
from schema.webhooks import WebhookEndpoint


@strawberry.input(
    description="Delete an endpoint with its deliveries and their log: a pending delivery is never sent. Admin"
    " tokens only."
)
class DeleteWebhookEndpointInput:
    endpoint_id: strawberry.ID


@strawberry.type
class DeleteWebhookEndpointSuccess:
    endpoint: WebhookEndpoint = strawberry.field(description="The endpoint as it was")


DeleteWebhookEndpointResult = Annotated[
    DeleteWebhookEndpointSuccess | Forbidden | NotFound, strawberry.union("DeleteWebhookEndpointResult")
]
