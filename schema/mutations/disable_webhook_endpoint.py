"""disableWebhookEndpoint: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound
from schema.webhooks import WebhookEndpoint


@strawberry.input(
    description="Stop sending to an endpoint (updateWebhookEndpoint with enabled: true starts again). Its"
    " pending deliveries wait. Disabling a disabled endpoint changes nothing. Admin tokens only."
)
class DisableWebhookEndpointInput:
    endpoint_id: strawberry.ID


@strawberry.type
class DisableWebhookEndpointSuccess:
    endpoint: WebhookEndpoint


DisableWebhookEndpointResult = Annotated[
    DisableWebhookEndpointSuccess | Forbidden | NotFound, strawberry.union("DisableWebhookEndpointResult")
]
