"""updateWebhookEndpoint: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound, ValidationError
from schema.webhooks import WebhookEndpoint


@strawberry.input(
    description="Change an endpoint: what is left out (or null) stays as it is. enabled: true on a DISABLED"
    " endpoint clears its disabledReason and failingSince. Admin tokens only."
)
class UpdateWebhookEndpointInput:
    endpoint_id: strawberry.ID
    url: str | None = strawberry.field(default=None, description="Checked as in createWebhookEndpoint")
    event_types: list[str] | None = strawberry.field(default=None, description="Empty: every type")
    organization_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="Only this organization's events; null: every event"
    )
    description: str | None = strawberry.field(default=strawberry.UNSET, description="null: none")
    enabled: bool | None = None


@strawberry.type
class UpdateWebhookEndpointSuccess:
    endpoint: WebhookEndpoint


UpdateWebhookEndpointResult = Annotated[
    UpdateWebhookEndpointSuccess | ValidationError | Forbidden | NotFound,
    strawberry.union("UpdateWebhookEndpointResult"),
]
