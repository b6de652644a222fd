"""Webhook endpoints for admins (README, Webhook endpoints): the root queries, and the input checks the
endpoint mutations share. The URL rules are models/webhook_urls.py's, which the delivery worker applies
again to every address a host resolves to."""

from __future__ import annotations

import strawberry
from strawberry import relay
from strawberry.types import Info

from models import tables
from models.ids import decode_any, decode_id, encode_id
from models.outbox import EventType
from models.tables import Organization, OutboxEvent
from models.webhook_urls import check_url
from models.webhooks import MAX_ENDPOINTS, known_event_types
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.pagination import cursor_id, keyset_page, page_size
from resolvers.permissions import principal
from resolvers.validation import check_optional_text
from schema.errors import NotFound, ValidationError
from schema.webhooks import WebhookEndpoint, WebhookEvent, WebhookEventConnection, WebhookEventEdge

ADMINS_ONLY = "Webhook endpoints and events need an admin token"
ENDPOINT_NOT_FOUND = "Webhook endpoint not found"
MAX_DESCRIPTION = 500
MAX_PUBLIC_ID = 40
TOO_MANY = f"A deployment has at most {MAX_ENDPOINTS} webhook endpoints: delete one first"


def _require_admin(info: Info[Context, None]) -> None:
    if not principal(info).is_admin:
        raise ForbiddenError(ADMINS_ONLY)


def check_endpoint_url(info: Info[Context, None], url: str) -> ValidationError | None:
    settings = info.context.services.settings
    problem = check_url(url, production=settings.production, allow_private=settings.webhook_allow_private)
    return None if problem is None else ValidationError(message=problem, field="url")


def check_event_types(event_types: list[str]) -> ValidationError | None:
    """Each a known type (the message lists them); none at all means every type."""
    if unknown := sorted({t for t in event_types if t not in EventType.__members__.values()}):
        shown = ", ".join(repr(t[:64]) for t in unknown[:5])
        return ValidationError(
            message=f"Unknown event types {shown}: give some of {', '.join(known_event_types())}",
            field="eventTypes",
        )
    return None


def check_description(description: str | None) -> ValidationError | None:
    return check_optional_text(description, "description", MAX_DESCRIPTION)


async def organization_of(organization_id: str | None) -> int | ValidationError | None:
    """The organization's key (``None`` for none given), or why there is none."""
    if organization_id is None:
        return None
    pk = decode_id(organization_id, "Organization")
    if pk is None or not await Organization.exists(id=pk):
        return ValidationError(message="organizationId names no organization", field="organizationId")
    return pk


async def endpoint_row(endpoint_id: str) -> tables.WebhookEndpoint | NotFound:
    pk = decode_id(endpoint_id, "WebhookEndpoint")
    row = None if pk is None else await tables.WebhookEndpoint.filter(id=pk).first()
    return NotFound(message=ENDPOINT_NOT_FOUND) if row is None else row


async def webhook_endpoints(
    info: Info[Context, None], first: int | None = None, after: str | None = None
) -> relay.Connection[WebhookEndpoint]:
    _require_admin(info)
    now = info.context.now()
    return await keyset_page(
        tables.WebhookEndpoint.all(), first, after, lambda row: WebhookEndpoint.of(row, now), plain_rows=False
    )


async def webhook_endpoint(info: Info[Context, None], id: strawberry.ID) -> WebhookEndpoint | None:
    _require_admin(info)
    decoded = decode_any(id)
    if decoded is None or decoded[0] != "WebhookEndpoint":
        return None
    row = await tables.WebhookEndpoint.filter(id=decoded[1]).first()
    return None if row is None else WebhookEndpoint.of(row, info.context.now())


async def webhook_events(
    info: Info[Context, None],
    first: int | None = None,
    after: str | None = None,
    type: str | None = None,
    account_id: strawberry.ID | None = None,
) -> WebhookEventConnection:
    """Events still kept (CREDITLINE_EVENT_RETENTION_DAYS), newest first: what a platform may have missed and
    redeliver with redeliverWebhookEvent."""
    _require_admin(info)
    limit = page_size(first)
    start = cursor_id(after)
    query = OutboxEvent.all()
    if type is not None:
        if type not in EventType.__members__.values():
            raise ClientError(f"type must be one of {', '.join(known_event_types())}", "BAD_FILTER")
        query = query.filter(type=type)
    if account_id is not None:
        account = decode_id(account_id, "CreditAccount")
        if account is None:
            raise ClientError("accountId is not a CreditAccount ID", "BAD_FILTER")
        query = query.filter(account_id=account)
    if start is not None:
        query = query.filter(id__lt=start)
    rows = await query.order_by("-id").limit(limit + 1)
    edges = [WebhookEventEdge(cursor=encode_id("cursor", row.id), node=WebhookEvent.of(row)) for row in rows[:limit]]
    return WebhookEventConnection(
        edges=edges,
        page_info=relay.PageInfo(
            has_next_page=len(rows) > limit,
            has_previous_page=start is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
