"""rotateWebhookSecret: its input, success, errors and result."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.errors import Forbidden, IdempotencyConflict, NotFound, ValidationError
from schema.webhooks import WebhookEndpoint


@strawberry.input(
    description="Give an endpoint a new signing secret. The old one keeps signing (beside the new one) for"
    " CREDITLINE_WEBHOOK_SECRET_GRACE_SECONDS, so receivers switch without a gap. Admin tokens only."
)
class RotateWebhookSecretInput:
    endpoint_id: strawberry.ID
    idempotency_key: str | None = strawberry.field(
        default=None, description="The same request again with the same key answers the first rotation's secret"
    )


@strawberry.type
class RotateWebhookSecretSuccess:
    secret: str = strawberry.field(description="The new signing secret (whsec_...): shown this once")
    endpoint: WebhookEndpoint


RotateWebhookSecretResult = Annotated[
    RotateWebhookSecretSuccess | ValidationError | IdempotencyConflict | Forbidden | NotFound,
    strawberry.union("RotateWebhookSecretResult"),
]
