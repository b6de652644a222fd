from __future__ import annotations

from strawberry.types import Info

from models import webhooks
from models.ledger import IdempotencyKey
from resolvers.context import Context
from resolvers.mutations._common import conflict
from resolvers.permissions import principal, require_admin
from resolvers.validation import check_key
from resolvers.webhooks import ENDPOINT_NOT_FOUND, endpoint_row
from schema.errors import IdempotencyConflict, NotFound
from schema.mutations.rotate_webhook_secret import (
    RotateWebhookSecretInput,
    RotateWebhookSecretResult,
    RotateWebhookSecretSuccess,
)
from schema.webhooks import WebhookEndpoint

SUPERSEDED = (
    "This idempotencyKey's rotation was superseded by a later one: its secret no longer signs."
    " Rotate again with a new idempotencyKey"
)


async def rotate_webhook_secret(
    info: Info[Context, None], input: RotateWebhookSecretInput
) -> RotateWebhookSecretResult:
    """A new secret, answered this once; the old one signs too for the grace period."""
    if denied := require_admin(info):
        return denied
    key = input.idempotency_key
    if key is not None and (invalid := check_key(key)):
        return invalid
    found = await endpoint_row(input.endpoint_id)
    if isinstance(found, NotFound):
        return found
    idem = None
    if key is not None:
        idem = IdempotencyKey.for_request(
            principal(info).idempotency_scope, key, "rotateWebhookSecret", {"endpoint": found.id}
        )
    now = info.context.now()
    grace = info.context.services.settings.webhook_secret_grace_seconds
    try:
        rotated = await webhooks.rotate_secret(found.id, now, grace, idem)
    except webhooks.RotationSupersededError:
        assert key is not None
        return IdempotencyConflict(message=SUPERSEDED, idempotency_key=key)
    except webhooks.IdempotencyConflictError:
        assert key is not None
        return conflict(key)
    if rotated is None:  # deleted meanwhile
        return NotFound(message=ENDPOINT_NOT_FOUND)
    return RotateWebhookSecretSuccess(secret=rotated.secret, endpoint=WebhookEndpoint.of(rotated.endpoint, now))
