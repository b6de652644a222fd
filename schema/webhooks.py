"""Webhook endpoints, their deliveries and the events they carry (README, Webhook endpoints). Admins only:
the root fields and mutations check the token (resolvers/webhooks.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import tables
from models.ids import encode_id
from models.tables import WebhookDeliveryStatus, WebhookEndpointStatus
from models.webhook_deliveries import ATTEMPT_LOG_KEEP
from models.webhooks import event_types_of, secret_hint
from resolvers.context import Context
from resolvers.pagination import keyset_page

strawberry.enum(WebhookEndpointStatus)
strawberry.enum(WebhookDeliveryStatus)


def _gid(type_name: str, pk: int | None) -> strawberry.ID | None:
    return None if pk is None else strawberry.ID(encode_id(type_name, pk))


@strawberry.type(description="Something that happened, as the platform is told of it (README, Webhook events).")
class WebhookEvent:
    id: str = strawberry.field(description="evt_...: the webhook-id of every delivery of it, for receivers to dedupe")
    type: str = strawberry.field(description="balance.low, payment.succeeded, ... (README, Webhook events)")
    created_at: datetime = strawberry.field(description="The body's timestamp")
    sequence: int | None = strawberry.field(
        description="The account's count of events, from 1 (a gap means a miss); null for deployment events"
    )
    account_id: strawberry.ID | None = strawberry.field(description="The CreditAccount it is about; null: none")
    organization_id: strawberry.ID | None = strawberry.field(description="The Organization of a pool's event")
    data: str = strawberry.field(description="The body's data, as JSON text (without sequence)")

    @classmethod
    def of(cls, row: Any) -> WebhookEvent:
        return cls(
            id=row.public_id,
            type=row.type,
            created_at=row.created_at,
            sequence=row.sequence,
            account_id=_gid("CreditAccount", row.account_id),
            organization_id=_gid("Organization", row.organization_id),
            data=row.data,
        )


@strawberry.type
class WebhookEventEdge:
    cursor: str
    node: WebhookEvent


@strawberry.type(description="Events, newest first")
class WebhookEventConnection:
    edges: list[WebhookEventEdge]
    page_info: relay.PageInfo


@strawberry.type(description="One try of a delivery: what the endpoint answered, or why there was no answer.")
class WebhookAttempt:
    attempt: int = strawberry.field(description="1 for the first try of a series (a redelivery starts one)")
    status_code: int | None = strawberry.field(description="The HTTP status answered; null: no answer")
    latency_ms: int | None
    response_body: str | None = strawberry.field(description="The start of the answer's body (1024 characters)")
    error: str | None = strawberry.field(description="Why it failed without an answer (timeout, refused address...)")
    started_at: datetime


@strawberry.type(description="One event to one endpoint: sent until the endpoint answers 2xx, with retries.")
class WebhookDelivery(relay.Node):
    id: relay.NodeID[int]
    status: WebhookDeliveryStatus = strawberry.field(
        description="PENDING (due at nextAttemptAt), SUCCEEDED, or FAILED (given up)"
    )
    attempts: int = strawberry.field(description="How many tries so far in this series (a redelivery restarts it at 0)")
    attempts_total: int = strawberry.field(
        description=f"How many tries in all, every series counted; attemptLog keeps the last {ATTEMPT_LOG_KEEP}"
    )
    last_status_code: int | None
    last_latency_ms: int | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = strawberry.field(description="When it is tried next, if PENDING")
    last_response: str | None = strawberry.field(description="The start of the last answer's body (1024 characters)")
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    event_pk: strawberry.Private[int]

    @strawberry.field(description="The event it carries")
    async def event(self, info: Info[Context, None]) -> WebhookEvent:
        row = await info.context.loaders.webhook_event.load(self.event_pk)
        assert row is not None, "a delivery goes with its event (ON DELETE CASCADE)"
        return WebhookEvent.of(row)

    @strawberry.field(
        description=f"The last {ATTEMPT_LOG_KEEP} tries (and the first of the current series, whose start the retry"
        " period counts from), first first; a redelivery starts a new series at attempt 1. attemptsTotal counts"
        " them all"
    )
    async def attempt_log(self, info: Info[Context, None]) -> list[WebhookAttempt]:
        return [
            WebhookAttempt(
                attempt=a.attempt,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                response_body=a.response_body,
                error=a.error,
                started_at=a.started_at,
            )
            for a in await info.context.loaders.webhook_attempts.load(self.id)
        ]

    @classmethod
    def of(cls, row: Any) -> WebhookDelivery:
        return cls(
            id=row.id,
            status=WebhookDeliveryStatus(row.status),
            attempts=row.attempts,
            attempts_total=row.attempts_total,
            last_status_code=row.last_status_code,
            last_latency_ms=row.last_latency_ms,
            last_attempt_at=row.last_attempt_at,
            next_attempt_at=row.next_attempt_at,
            last_response=row.last_response,
            last_error=row.last_error,
            delivered_at=row.delivered_at,
            created_at=row.created_at,
            event_pk=row.event_id,
        )


@strawberry.type(description="A URL of the platform's that is sent the events it asks for, signed (Standard Webhooks)")
class WebhookEndpoint(relay.Node):
    id: relay.NodeID[int]
    url: str
    description: str | None
    event_types: list[str] = strawberry.field(description="The types it is sent; empty: every type")
    organization_id: strawberry.ID | None = strawberry.field(description="Only this organization's events; null: all")
    status: WebhookEndpointStatus
    disabled_reason: str | None = strawberry.field(description="Why it is DISABLED (by an admin, or failing)")
    disabled_at: datetime | None
    failing_since: datetime | None = strawberry.field(description="Its first failure since its last success")
    secret_hint: str = strawberry.field(
        description="The start of its signing secret, to tell which one a receiver holds (the secret itself is"
        " shown once, by createWebhookEndpoint and rotateWebhookSecret)"
    )
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="After rotateWebhookSecret, deliveries are signed with the previous secret too until then;"
        " null once it has passed"
    )
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="Its deliveries, newest first (first: 1 to 100, default 20)")
    async def deliveries(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        status: WebhookDeliveryStatus | None = None,
    ) -> relay.Connection[WebhookDelivery]:
        query = tables.WebhookDelivery.filter(endpoint_id=self.id)
        if status is not None:
            query = query.filter(status=status)
        return await keyset_page(query, first, after, WebhookDelivery.of)

    @classmethod
    def of(cls, row: tables.WebhookEndpoint, now: datetime) -> WebhookEndpoint:
        grace = row.previous_secret_expires_at
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            event_types=event_types_of(row),
            organization_id=_gid("Organization", row.organization_id),
            status=WebhookEndpointStatus(row.status),
            disabled_reason=row.disabled_reason,
            disabled_at=row.disabled_at,
            failing_since=row.failing_since,
            secret_hint=secret_hint(row.secret),
            previous_secret_expires_at=grace if row.previous_secret and grace is not None and grace > now else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
