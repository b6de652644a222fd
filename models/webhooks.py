"""Webhook endpoints and their deliveries, as the admin API manages them (README, Webhook endpoints).

Sending, retrying and disabling a failing endpoint are the delivery worker's (``creditline/webhooks``); here
are the rows an admin creates and changes, the secrets, and a redelivery: putting one event's delivery back
to PENDING, due now, under the same ``webhook-id`` (the event's ``public_id``)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.ledger import IdempotencyKey
from models.outbox import EventType, note_written
from models.sql import Sql
from models.tables import (
    IdempotencyRecord,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointStatus,
)

MAX_ENDPOINTS = 20
"""Endpoints per deployment: a platform registers one or a few; each event costs a delivery per endpoint."""
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Standard Webhooks secrets are ``whsec_`` and the base64 of 24 to 64 random bytes; 32 is 256 bits."""
HINT_LENGTH = len(SECRET_PREFIX) + 4
ADMIN_DISABLED = "Disabled by an admin"
_CREATE_LOCK = 0x7765_6268_6F6F_6B73  # "webhooks": the transaction lock that serializes createWebhookEndpoint


class TooManyEndpointsError(Exception):
    """The deployment has ``MAX_ENDPOINTS`` endpoints already."""


class IdempotencyConflictError(Exception):
    """The idempotency key was used before for a different request."""


class RotationSupersededError(IdempotencyConflictError):
    """A replayed ``rotateWebhookSecret`` key whose secret is no longer the endpoint's: a later rotation
    replaced it. The record keeps only the secret's sha256, so it cannot be answered again."""


class EventNotWantedError(Exception):
    """The endpoint does not take this event (its types or its organization), and never had a delivery of it."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_hint(secret: str) -> str:
    """The start of a secret, to tell which one a receiver holds: 24 bits of it, useless for signing."""
    return secret[:HINT_LENGTH] + "…"


def event_types_of(row: WebhookEndpoint) -> list[str]:
    return row.event_types.split()


def wants(row: WebhookEndpoint, event: OutboxEvent) -> bool:
    """Whether the endpoint takes the event: one of its types (none: every type) and, if it names an
    organization, an event of that organization."""
    types = event_types_of(row)
    if types and event.type not in types:
        return False
    return row.organization_id is None or row.organization_id == event.organization_id


@dataclass(frozen=True, slots=True)
class Created:
    endpoint: WebhookEndpoint
    secret: str
    replayed: bool = False


async def _replay(idem: IdempotencyKey, conn: Any = None) -> dict[str, Any] | None:
    record = await IdempotencyRecord.filter(scope=idem.scope, key=idem.key).using_db(conn).first()
    if record is None:
        return None
    if record.operation != idem.operation or record.request_hash != idem.fingerprint or record.response is None:
        raise IdempotencyConflictError()
    stored: dict[str, Any] = json.loads(record.response)
    return stored


async def _replayed(idem: IdempotencyKey | None, conn: Any = None) -> Created | None:
    """The answer stored under ``idem``; ``None`` if it has none. The secret answered is the endpoint's current
    one: the record keeps no secret (a copy that would outlive a rotation, readable by anyone who can read the
    table). A key whose endpoint was deleted since is a conflict: it named something that is gone. One read of
    the record decides both, so a create committing in between cannot make a replay look like a conflict."""
    stored = None if idem is None else await _replay(idem, conn)
    if stored is None:
        return None
    row = await WebhookEndpoint.filter(id=stored["endpoint"]).using_db(conn).first()
    if row is None:
        raise IdempotencyConflictError()
    return Created(row, row.secret, replayed=True)


async def create_endpoint(
    url: str,
    event_types: list[str],
    organization_id: int | None,
    description: str | None,
    now: datetime,
    idem: IdempotencyKey | None = None,
) -> Created:
    """A new ENABLED endpoint with a new secret. A replay of ``idem`` answers the first creation (and its
    secret); a replay after the endpoint was deleted is a conflict (the key named something that is gone)."""
    if (replayed := await _replayed(idem)) is not None:
        return replayed
    secret = new_secret()
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            if sql.postgres:  # creates one at a time, so that two at once cannot pass the limit together
                await sql.execute("SELECT pg_advisory_xact_lock($1)", _CREATE_LOCK)
            # Again under the lock (SQLite: in the one write transaction): a call with the same key that
            # created while this one waited is replayed, never answered with the limit its endpoint reached.
            if idem is not None and (replayed := await _replayed(idem, conn)) is not None:
                return replayed
            if await WebhookEndpoint.all().using_db(conn).count() >= MAX_ENDPOINTS:
                raise TooManyEndpointsError()
            row = await WebhookEndpoint.create(
                url=url,
                event_types=" ".join(dict.fromkeys(event_types)),
                organization_id=organization_id,
                description=description,
                secret=secret,
                status=WebhookEndpointStatus.ENABLED,
                created_at=now,
                updated_at=now,
                using_db=conn,
            )
            if idem is not None:
                await _store(conn, idem, {"endpoint": row.id}, now)
    except IntegrityError:  # a concurrent request with the same key stored its answer first
        assert idem is not None
        if (replayed := await _replayed(idem)) is None:
            raise IdempotencyConflictError() from None
        return replayed
    return Created(row, secret)


async def _store(conn: Any, idem: IdempotencyKey, response: dict[str, Any], now: datetime) -> None:
    await IdempotencyRecord.create(
        scope=idem.scope,
        key=idem.key,
        operation=idem.operation,
        request_hash=idem.fingerprint,
        response=json.dumps(response, separators=(",", ":")),
        created_at=now,
        using_db=conn,
    )


UNSET: Any = object()


async def update_endpoint(
    endpoint_id: int,
    now: datetime,
    *,
    url: str | None = None,
    event_types: list[str] | None = None,
    organization_id: int | None = UNSET,
    description: str | None = UNSET,
    enabled: bool | None = None,
) -> WebhookEndpoint | None:
    """Change what is given (``UNSET``/``None``: unchanged). Enabling a DISABLED endpoint clears why and since
    when it was disabled, and its ``failing_since``: it starts again with a clean record."""
    async with in_transaction() as conn:
        row = await WebhookEndpoint.filter(id=endpoint_id).using_db(conn).select_for_update().first()
        if row is None:
            return None
        if url is not None:
            row.url = url
        if event_types is not None:
            row.event_types = " ".join(dict.fromkeys(event_types))
        if organization_id is not UNSET:
            row.organization_id = organization_id
        if description is not UNSET:
            row.description = description
        if enabled is True and row.status is not WebhookEndpointStatus.ENABLED:
            row.status = WebhookEndpointStatus.ENABLED
            row.disabled_reason = row.disabled_at = row.failing_since = None
        elif enabled is False and row.status is not WebhookEndpointStatus.DISABLED:
            _disable(row, now, ADMIN_DISABLED)
        row.updated_at = now
        await row.save(using_db=conn)
    return row


def _disable(row: WebhookEndpoint, now: datetime, reason: str) -> None:
    row.status = WebhookEndpointStatus.DISABLED
    row.disabled_reason = reason
    row.disabled_at = now


async def disable_endpoint(endpoint_id: int, now: datetime) -> WebhookEndpoint | None:
    """DISABLED with ``ADMIN_DISABLED`` as the reason; an endpoint disabled already keeps its first reason.
    Its pending deliveries stay PENDING: the worker sends to ENABLED endpoints only, so they go out if it is
    enabled again (or are given up when their retry period ends)."""
    async with in_transaction() as conn:
        row = await WebhookEndpoint.filter(id=endpoint_id).using_db(conn).select_for_update().first()
        if row is None:
            return None
        if row.status is not WebhookEndpointStatus.DISABLED:
            _disable(row, now, ADMIN_DISABLED)
            row.updated_at = now
            await row.save(using_db=conn)
    return row


async def delete_endpoint(endpoint_id: int) -> WebhookEndpoint | None:
    """Delete the endpoint and, with it (ON DELETE CASCADE), its deliveries and their attempts: a pending
    delivery is never sent. Returns the row as it was."""
    async with in_transaction() as conn:
        row = await WebhookEndpoint.filter(id=endpoint_id).using_db(conn).select_for_update().first()
        if row is None:
            return None
        deliveries = WebhookDelivery.filter(endpoint_id=endpoint_id).using_db(conn).values_list("id", flat=True)
        await WebhookAttempt.filter(delivery_id__in=await deliveries).using_db(conn).delete()
        await WebhookDelivery.filter(endpoint_id=endpoint_id).using_db(conn).delete()
        await WebhookEndpoint.filter(id=endpoint_id).using_db(conn).delete()
    return row


async def rotate_secret(
    endpoint_id: int, now: datetime, grace_seconds: int, idem: IdempotencyKey | None = None
) -> Created | None:
    """A new secret; the current one becomes ``previous_secret`` and still signs for ``grace_seconds`` (the
    worker signs with both meanwhile), so receivers can switch without a gap. A replay of ``idem`` answers
    the first rotation's secret and rotates nothing, while it is still the endpoint's secret; once a later
    rotation has replaced it, ``RotationSupersededError``. The record keeps the secret's sha256, not the
    secret (as ``_replayed`` has it): enough to tell it is still the one, useless to sign with."""
    if (replayed := await _rotation_replayed(idem, endpoint_id)) is not None:
        return replayed
    secret = new_secret()
    try:
        async with in_transaction() as conn:
            row = await WebhookEndpoint.filter(id=endpoint_id).using_db(conn).select_for_update().first()
            if row is None:
                return None
            row.previous_secret = row.secret
            row.previous_secret_expires_at = now + timedelta(seconds=grace_seconds)
            row.secret = secret
            row.updated_at = now
            await row.save(using_db=conn)
            if idem is not None:
                await _store(conn, idem, {"endpoint": row.id, "secret_sha256": _digest(secret)}, now)
    except IntegrityError:
        assert idem is not None
        if (replayed := await _rotation_replayed(idem, endpoint_id)) is None:
            raise IdempotencyConflictError() from None
        return replayed
    return Created(row, secret)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _rotation_replayed(idem: IdempotencyKey | None, endpoint_id: int) -> Created | None:
    """A rotation's replay: the secret it made, if that is still the endpoint's (a record written before the
    digest was kept answers the current one, as it did)."""
    replayed = await _replayed(idem)
    if replayed is None:
        return None
    if replayed.endpoint.id != endpoint_id:
        raise IdempotencyConflictError()
    assert idem is not None
    stored = await _replay(idem)
    digest = None if stored is None else stored.get("secret_sha256")
    if digest is not None and digest != _digest(replayed.secret):
        raise RotationSupersededError()
    return replayed


_UPSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts, attempts_total, next_attempt_at,"
    " created_at) VALUES ($1, $2, 'PENDING', 0, 0, $3, $3) ON CONFLICT (endpoint_id, event_id)"
    " DO UPDATE SET status = 'PENDING', attempts = 0, delivered_at = NULL, next_attempt_at = CASE WHEN"
    " webhook_deliveries.leased_until > $3 THEN webhook_deliveries.leased_until ELSE $3 END RETURNING id"
)


async def redeliver(endpoint: WebhookEndpoint, event: OutboxEvent, now: datetime) -> WebhookDelivery:
    """The event's delivery to the endpoint, back to PENDING and due now, as a new retry series: ``attempts``
    goes back to 0, so the next attempt is logged as attempt 1 and the worker measures the retry period from
    it (not from the first attempt of the old series, days ago, which would fail it after one try). The old
    series' attempts stay in the log, before the new ones (it is in the order they were made), as long as they
    are among its last ``ATTEMPT_LOG_KEEP`` (``attempts_total`` counts on across series). An endpoint
    that never had a delivery of it gets one if it takes the event (``wants``), else ``EventNotWantedError``.
    The ``webhook-id`` stays the event's ``public_id``. One upsert:
    a delivery the worker's fan-out makes meanwhile is the one reset.

    An attempt under way (claimed, ``leased_until`` still ahead, not recorded yet) is not doubled: the new series
    is due when that claim runs out (at most 4 × the send timeout + 5 s), and the attempt's own outcome, recorded
    for an older series, is logged and decides nothing. Sending the event again at once would put two requests
    with the same ``webhook-id`` in flight together, which receivers that dedupe after processing cannot
    tell apart."""
    had = await WebhookDelivery.exists(endpoint_id=endpoint.id, event_id=event.id)
    if not had and not wants(endpoint, event):
        raise EventNotWantedError()
    async with in_transaction() as conn:
        row = await Sql(conn).fetchrow(_UPSERT_DELIVERY, endpoint.id, event.id, now)
    assert row is not None
    note_written()  # due now: the request's end wakes the workers
    return await WebhookDelivery.get(id=row["id"])


def known_event_types() -> list[str]:
    return [t.value for t in EventType]
