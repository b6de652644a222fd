"""Rows of the webhook tables made directly, standing for what the emitters and the delivery worker write."""

from __future__ import annotations

from datetime import datetime, timedelta

from models.outbox import EventType, new_public_id
from models.tables import (
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from models.webhooks import new_secret

ENDPOINT_FIELDS = (
    "id url description eventTypes organizationId status disabledReason disabledAt failingSince secretHint"
    " previousSecretExpiresAt createdAt updatedAt"
)
DELIVERY_FIELDS = (
    "status attempts lastStatusCode lastLatencyMs lastAttemptAt nextAttemptAt lastResponse lastError deliveredAt"
    " event { id type createdAt sequence accountId organizationId data }"
    " attemptLog { attempt statusCode latencyMs responseBody error startedAt }"
)


async def event(
    now: datetime,
    *,
    account_id: int | None = None,
    sequence: int | None = None,
    type: EventType = EventType.BALANCE_LOW,
    organization_id: int | None = None,
    data: str = '{"level":"5"}',
) -> OutboxEvent:
    return await OutboxEvent.create(
        public_id=new_public_id(),
        type=type.value,
        account_id=account_id,
        organization_id=organization_id,
        sequence=sequence,
        data=data,
        created_at=now,
    )


async def endpoint(now: datetime, url: str = "https://hooks.example.com/in", event_types: str = "") -> WebhookEndpoint:
    return await WebhookEndpoint.create(
        url=url, event_types=event_types, secret=new_secret(), created_at=now, updated_at=now
    )


async def delivery(
    endpoint: WebhookEndpoint,
    event: OutboxEvent,
    now: datetime,
    status: WebhookDeliveryStatus = WebhookDeliveryStatus.PENDING,
    answers: tuple[int | None, ...] = (),
) -> WebhookDelivery:
    """A delivery tried once per answer (a status code, or None for no answer: a timeout), a second apart."""
    row = await WebhookDelivery.create(
        endpoint=endpoint,
        event=event,
        status=status,
        attempts=len(answers),
        attempts_total=len(answers),
        next_attempt_at=None if status is not WebhookDeliveryStatus.PENDING else now + timedelta(minutes=5),
        last_attempt_at=now + timedelta(seconds=len(answers) - 1) if answers else None,
        last_status_code=answers[-1] if answers else None,
        last_latency_ms=40 if answers else None,
        last_response=("ok" if answers[-1] == 200 else "boom") if answers and answers[-1] is not None else None,
        last_error="timed out after 10 s" if answers and answers[-1] is None else None,
        delivered_at=now + timedelta(seconds=len(answers) - 1) if status is WebhookDeliveryStatus.SUCCEEDED else None,
        created_at=now,
    )
    for n, code in enumerate(answers, start=1):
        await WebhookAttempt.create(
            delivery=row,
            attempt=n,
            status_code=code,
            latency_ms=40 if code is not None else 10_000,
            response_body=None if code is None else ("ok" if code == 200 else "boom"),
            error="timed out after 10 s" if code is None else None,
            started_at=now + timedelta(seconds=n - 1),
        )
    return row
