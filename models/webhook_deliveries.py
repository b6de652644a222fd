"""Webhook deliveries: the statements of the delivery worker (``creditline/webhooks``), which does the network.

The life of a delivery:

1. ``fan_out``: an event not dispatched yet gets one PENDING delivery per enabled endpoint that wants it (its
   types, its organization, created no later than the event), due at once; then the event is dispatched.
2. ``claim_due``: a worker takes due deliveries by moving ``next_attempt_at`` a lease into the future and
   counting the attempt, and commits; it sends outside any transaction. A worker killed mid-send leaves the
   delivery due again once the lease runs out (at least once, always with the same ``webhook-id``).
3. ``record_outcome``: the attempt is logged; a 2xx makes the delivery SUCCEEDED; anything else schedules the
   next attempt (exponential back-off, full jitter) until ``retry_period`` after the first attempt of the
   series, then FAILED. An endpoint failing without a success for ``retry_period`` is disabled, its pending
   deliveries FAILED, and a ``webhook_endpoint.disabled`` event emitted, in the same transaction.

``leased_until`` is set by the claim and cleared by the recording: while it is in the future an attempt is under
way, and a redelivery (``models.webhooks.redeliver``) waits for it instead of sending the event again at once.

Rows another process is claiming are skipped (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer),
so any number of processes share the work and none sends the same delivery twice at once. Redelivery (the
admin API) puts a delivery back as PENDING with ``next_attempt_at`` = now and ``attempts`` = 0: a new series.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from models.ids import encode_id
from models.outbox import PRUNABLE, EventType, emit, prune
from models.sql import Sql, as_datetime

FAN_OUT_BATCH = 500
INSERT_BATCH = 1000
"""Deliveries inserted per statement by a fan-out (5 parameters each)."""
RECORD_BATCH = 500
"""Outcomes recorded per statement (7 to 9 parameters each: far under either database's limit)."""
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(hours=6)
BACKOFF_FLOOR = timedelta(seconds=1)
"""Full jitter draws from [0, ceiling]: a retry sooner than a second would only hammer a receiver that is down."""
RESPONSE_LIMIT = 1024
ATTEMPT_LOG_KEEP = 20
"""Tries a delivery's log keeps: the last 20 (and the first of its current series); ``attempts_total`` counts
them all. A delivery retried for three days is tried about 35 times, and a redelivery starts another series."""
ERROR_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt, with what sending it needs."""

    delivery_id: int
    attempt: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    """The endpoint's secret, and its previous one while that is still valid: each signs."""
    event_public_id: str
    event_type: str
    event_created_at: datetime
    sequence: int | None
    data: dict[str, Any]
    leased_until: datetime | None = None
    """When the claim runs out: a worker that could not start the request by then less its timeout leaves it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: ``status_code`` when the receiver answered, ``error`` when it did not (or the URL
    was refused before any request)."""

    status_code: int | None
    latency_ms: int | None
    response_body: str | None
    error: str | None
    started_at: datetime

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record_outcome`` decided (``disabled_event_id``: it disabled the endpoint and emitted this):
    ``status`` is the delivery's, ``STALE`` when a later attempt decides, ``GONE`` when its endpoint was deleted."""

    status: str
    next_attempt_at: datetime | None
    disabled_event_id: int | None


def wants(event_types: str, organization_id: int | None, event_type: str, event_organization_id: int | None) -> bool:
    """Whether an endpoint with these filters is sent an event: every type when ``event_types`` is empty, else
    the listed ones; an endpoint of an organization only hears that organization's events."""
    if event_types.strip() and event_type not in event_types.split():
        return False
    return organization_id is None or organization_id == event_organization_id


@dataclass(frozen=True, slots=True)
class FannedOut:
    """What a fan-out did: how many events it dispatched, and the deliveries it claimed at once."""

    dispatched: int
    claimed: list[Claimed]


async def fan_out(now: datetime, batch: int = FAN_OUT_BATCH) -> int:
    """Make the deliveries of up to ``batch`` undispatched events, all PENDING and due now; returns how many
    events it dispatched (``fan_out_and_claim`` claiming none)."""
    return (await fan_out_and_claim(now, timedelta(0), 0, 0, {}, batch)).dispatched


async def fan_out_and_claim(
    now: datetime,
    lease: timedelta,
    limit: int,
    per_endpoint: int,
    busy: dict[int, int],
    batch: int = FAN_OUT_BATCH,
    caps: dict[int, int] | None = None,
) -> FannedOut:
    """Make the deliveries of up to ``batch`` undispatched events, oldest first, in one transaction, and claim
    (as ``claim_due`` would, within ``limit`` and ``per_endpoint`` or ``caps`` counting ``busy``) those there is
    room for:
    they are inserted already leased, with their first attempt counted, so a fresh event costs no claim of its
    own. The others are PENDING and due now. Events another process is fanning out are skipped; the unique
    ``(endpoint_id, event_id)`` makes any overlap harmless (a delivery that existed already is not claimed
    here). Call again while ``dispatched`` is ``batch``.

    Without an undispatched event this costs one read outside any transaction (on SQLite, where every
    transaction takes the one write lock, it does not wait for the spends')."""
    probe = Sql(connections.get("default"))
    if not await probe.fetch("SELECT id FROM events WHERE dispatched_at IS NULL LIMIT 1"):
        return FannedOut(0, [])
    async with in_transaction() as conn:
        sql = Sql(conn)
        events = await sql.fetch(
            "SELECT id, public_id, type, organization_id, sequence, data, created_at FROM events"
            f" WHERE dispatched_at IS NULL ORDER BY id LIMIT {int(batch)}" + sql.for_update(skip_locked=True)
        )
        if not events:
            return FannedOut(0, [])
        endpoints = await sql.fetch(
            "SELECT id, event_types, organization_id, created_at, url, secret, previous_secret,"
            " previous_secret_expires_at FROM webhook_endpoints WHERE status = 'ENABLED'"
        )
        until = now + lease
        taken: dict[int, int] = dict(busy)
        room = limit
        rows: list[tuple[Any, ...]] = []
        for event in events:
            created_at = as_datetime(event["created_at"])
            assert created_at is not None
            for endpoint in endpoints:
                endpoint_created = as_datetime(endpoint["created_at"])
                if endpoint_created is not None and endpoint_created > created_at:
                    continue  # an endpoint hears what happens from its creation on
                if not wants(
                    endpoint["event_types"] or "", endpoint["organization_id"], event["type"], event["organization_id"]
                ):
                    continue
                endpoint_id = int(endpoint["id"])
                if room > 0 and taken.get(endpoint_id, 0) < (caps or {}).get(endpoint_id, per_endpoint):
                    room -= 1
                    taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
                    rows.append((endpoint_id, int(event["id"]), 1, until, until))
                else:
                    rows.append((endpoint_id, int(event["id"]), 0, now, None))
        inserted: list[dict[str, Any]] = []
        for start in range(0, len(rows), INSERT_BATCH):
            values, args = _values(
                sql, rows[start : start + INSERT_BATCH], ("bigint", "bigint", "int", "timestamptz", "timestamptz"), 2
            )
            inserted += await sql.fetch(
                f"WITH v(endpoint_id, event_id, attempts, next_at, leased_until) AS (VALUES {values})"
                " INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts, attempts_total,"
                " next_attempt_at, leased_until, created_at) SELECT v.endpoint_id, v.event_id, 'PENDING', v.attempts,"
                " 0, v.next_at,"
                f" v.leased_until, {'$1::timestamptz' if sql.postgres else '$1'} FROM v WHERE true"
                " ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING id, endpoint_id, event_id, attempts",
                now,
                *args,
            )
        ids = [int(e["id"]) for e in events]
        marks = ", ".join(f"${n}" for n in range(2, len(ids) + 2))
        await sql.execute(f"UPDATE events SET dispatched_at = $1 WHERE id IN ({marks})", now, *ids)
    by_event = {int(e["id"]): e for e in events}
    by_endpoint = {int(e["id"]): e for e in endpoints}
    claimed = [
        _claimed(int(row["id"]), 1, by_endpoint[int(row["endpoint_id"])], by_event[int(row["event_id"])], now, until)
        for row in inserted
        if int(row["attempts"]) == 1
    ]
    claimed.sort(key=lambda c: c.delivery_id)
    return FannedOut(len(events), claimed)


def _claimed(
    delivery_id: int, attempt: int, endpoint: dict[str, Any], event: dict[str, Any], now: datetime, until: datetime
) -> Claimed:
    """A claimed delivery, from its endpoint's columns (``endpoint_id``, else ``id``; ``url``, the secrets) and
    its event's (``public_id``, ``type``, ``created_at``, ``sequence``, ``data``)."""
    secrets = [str(endpoint["secret"])]
    previous_expires = as_datetime(endpoint["previous_secret_expires_at"])
    if endpoint["previous_secret"] and (previous_expires is None or previous_expires > now):
        secrets.append(str(endpoint["previous_secret"]))
    created_at = as_datetime(event["created_at"])
    assert created_at is not None
    return Claimed(
        delivery_id=delivery_id,
        attempt=attempt,
        endpoint_id=int(endpoint["endpoint_id"] if "endpoint_id" in endpoint else endpoint["id"]),
        url=str(endpoint["url"]),
        secrets=tuple(secrets),
        event_public_id=str(event["public_id"]),
        event_type=str(event["type"]),
        event_created_at=created_at,
        sequence=None if event["sequence"] is None else int(event["sequence"]),
        data=json.loads(event["data"]),
        leased_until=until,
    )


async def claim_due(
    now: datetime,
    lease: timedelta,
    limit: int,
    per_endpoint: int,
    busy: dict[int, int],
    caps: dict[int, int] | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries, at most ``per_endpoint`` in flight per endpoint (``caps``: another
    number for some endpoints) counting the ``busy`` ones (endpoint id: deliveries this worker is sending now),
    so that one slow endpoint cannot take every slot. Each claimed delivery is due again only after ``lease``,
    and its attempt is counted.

    Rows are read (and, on PostgreSQL, locked) only of endpoints with room, and at most as many as the
    enabled endpoints have room for: locking a thousand rows to claim a few had cost more than the sends.
    With nothing due this is one read outside any transaction (no SQLite write lock)."""
    if limit <= 0:
        return []
    probe = Sql(connections.get("default"))
    if not await probe.fetch(
        "SELECT id FROM webhook_deliveries WHERE status = 'PENDING' AND next_attempt_at <= $1 LIMIT 1", now
    ):
        return []
    caps = caps or {}
    full = sorted(e for e, n in busy.items() if n >= caps.get(e, per_endpoint))
    # What the enabled endpoints can take beyond per_endpoint each (their caps), less what is in flight here.
    beyond = sum(c - per_endpoint for c in caps.values()) - sum(
        min(n, caps.get(e, per_endpoint)) for e, n in busy.items()
    )
    async with in_transaction() as conn:
        sql = Sql(conn)
        skip = ""
        if full:
            skip = " AND d.endpoint_id NOT IN (" + ", ".join(f"${n}" for n in range(5, len(full) + 5)) + ")"
        room = "COUNT(*) * $2 + $3"  # what the enabled endpoints can take, less what this worker has in flight
        rows = await sql.fetch(
            "SELECT d.id, d.attempts, d.endpoint_id FROM webhook_deliveries d"
            " WHERE d.status = 'PENDING' AND d.next_attempt_at <= $1 AND EXISTS (SELECT 1 FROM webhook_endpoints w"
            f" WHERE w.id = d.endpoint_id AND w.status = 'ENABLED'){skip}"  # a disabled endpoint is sent nothing
            f" ORDER BY d.next_attempt_at, d.id LIMIT (SELECT CASE WHEN {room} < 0 THEN 0 WHEN {room} < $4"
            f" THEN {room} ELSE $4 END FROM webhook_endpoints WHERE status = 'ENABLED')"
            + sql.for_update(of="d", skip_locked=True),
            now,
            per_endpoint,
            beyond,
            limit,
            *full,
        )
        taken: dict[int, int] = dict(busy)
        chosen: list[int] = []
        for row in rows:
            endpoint_id = int(row["endpoint_id"])
            if taken.get(endpoint_id, 0) >= caps.get(endpoint_id, per_endpoint):
                continue  # left due (only row-locked until this commit), for a later pass or another process
            taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
            chosen.append(int(row["id"]))
            if len(chosen) >= limit:
                break
        if not chosen:
            return []
        marks = ", ".join(f"${n}" for n in range(2, len(chosen) + 2))
        claimed = await sql.fetch(
            "UPDATE webhook_deliveries SET next_attempt_at = $1, leased_until = $1, attempts = attempts + 1"
            f" WHERE id IN ({marks})"
            " RETURNING id, attempts, endpoint_id, event_id",
            now + lease,
            *chosen,
        )
        details = await sql.fetch(
            "SELECT d.id, d.endpoint_id, e.public_id, e.type, e.created_at, e.sequence, e.data, w.url, w.secret,"
            " w.previous_secret, w.previous_secret_expires_at FROM webhook_deliveries d"
            " JOIN events e ON e.id = d.event_id JOIN webhook_endpoints w ON w.id = d.endpoint_id"
            f" WHERE d.id IN ({', '.join(f'${n}' for n in range(1, len(chosen) + 1))})",
            *chosen,
        )
    by_id = {int(d["id"]): d for d in details}
    result = [
        _claimed(int(row["id"]), int(row["attempts"]), by_id[int(row["id"])], by_id[int(row["id"])], now, now + lease)
        for row in claimed
    ]
    result.sort(key=lambda c: c.delivery_id)
    return result


async def release_claims(claims: list[Claimed], now: datetime) -> int:
    """Give back claims never sent (a worker stopping): each delivery due again at ``now``, unleased, its attempt
    uncounted, unless another claim or a redelivery has taken it since (its attempt count moved on). Returns
    how many it gave back."""
    if not claims:
        return 0
    async with in_transaction() as conn:
        sql = Sql(conn)
        released = 0
        for claim in claims:
            rows = await sql.fetch(
                "UPDATE webhook_deliveries SET next_attempt_at = $1, leased_until = NULL, attempts = attempts - 1"
                " WHERE id = $2 AND attempts = $3 AND status = 'PENDING' AND leased_until IS NOT NULL RETURNING id",
                now,
                claim.delivery_id,
                claim.attempt,
            )
            released += len(rows)
    return released


def backoff_ceiling(attempt: int) -> timedelta:
    """The longest wait after the ``attempt``-th failure: 10 s, 20 s, 40 s... doubling up to 6 hours."""
    doubled: timedelta = BACKOFF_BASE * (2 ** min(max(attempt - 1, 0), 20))
    return min(BACKOFF_CAP, doubled)


def next_attempt_at(now: datetime, attempt: int, deadline: datetime, rng: random.Random) -> datetime:
    """When to try again after the ``attempt``-th failure: a wait drawn uniformly from [0, ceiling] (full
    jitter, so that receivers coming back are not hit by every sender at once), at least a second, and never
    past ``deadline`` (the last try is at the end of the retry period)."""
    ceiling = backoff_ceiling(attempt).total_seconds()
    wait = max(BACKOFF_FLOOR, timedelta(seconds=rng.uniform(0.0, ceiling)))
    return min(now + wait, deadline)


async def record_outcome(
    claimed: Claimed, outcome: Outcome, now: datetime, retry_period: timedelta, rng: random.Random
) -> Recorded:
    """Log the attempt and decide the delivery's state (and, after ``retry_period`` of failures without a
    success, the endpoint's), in one transaction. An attempt whose lease ran out while it was sending (another
    claim counted a later attempt) is logged but decides nothing: the later attempt will."""
    return (await record_outcomes([(claimed, outcome)], now, retry_period, rng))[0]


async def record_outcomes(
    outcomes: list[tuple[Claimed, Outcome]], now: datetime, retry_period: timedelta, rng: random.Random
) -> list[Recorded]:
    """``record_outcome`` for several attempts in one transaction, set-based: one multi-row INSERT of the
    attempts, one UPDATE of the delivered ones, and for failures one read of their series' starts and one
    UPDATE; then one UPDATE of the endpoints' ``failing_since`` per kind of change. A batch costs the same
    few statements whatever its size, which is what lets one process deliver a thousand a second."""
    if not outcomes:
        return []
    async with in_transaction() as conn:
        sql = Sql(conn)
        results: list[Recorded | None] = [None] * len(outcomes)
        for start in range(0, len(outcomes), RECORD_BATCH):
            chunk = outcomes[start : start + RECORD_BATCH]
            for n, recorded in enumerate(await _record_chunk(sql, chunk, now, retry_period, rng)):
                results[start + n] = recorded
    return [r for r in results if r is not None]


def _values(sql: Sql, rows: list[tuple[Any, ...]], types: tuple[str, ...], first: int = 1) -> tuple[str, list[Any]]:
    """``(VALUES ...)`` rows of ``$n`` placeholders from ``first`` on, cast on PostgreSQL (whose parameters in a
    VALUES list have no type otherwise), with their arguments flattened."""
    parts: list[str] = []
    args: list[Any] = []
    n = first
    for row in rows:
        marks = []
        for value, kind in zip(row, types, strict=True):
            marks.append(f"${n}::{kind}" if sql.postgres else f"${n}")
            args.append(value)
            n += 1
        parts.append("(" + ", ".join(marks) + ")")
    return ", ".join(parts), args


_ATTEMPT_TYPES = ("bigint", "int", "int", "int", "text", "text", "timestamptz")
_LAST_TYPES = ("bigint", "int", "text", "timestamptz", "timestamptz", "int", "int", "text", "text")
_LAST_COLUMNS = "id, attempts, status, next_at, started_at, status_code, latency_ms, body, error"


async def _record_chunk(
    sql: Sql, outcomes: list[tuple[Claimed, Outcome]], now: datetime, retry_period: timedelta, rng: random.Random
) -> list[Recorded]:
    """Record the outcomes whose endpoint still exists; those of an endpoint deleted while they were being sent
    are dropped (``GONE``): its deliveries and attempts are gone with it, and logging an attempt of a deleted
    delivery would violate the foreign key and abort the whole batch, losing the other endpoints' outcomes
    (sent again after their lease, a duplicate). On PostgreSQL the endpoints are held ``FOR KEY SHARE`` until
    the commit: a delete (which locks its endpoint first, ``models.webhooks.delete_endpoint``) waits for this
    recording, or this recording for the delete, and then sees the endpoint gone; a key-share lock does not
    conflict with the ``failing_since`` updates other processes' recordings make."""
    endpoint_ids = sorted({c.endpoint_id for c, _ in outcomes})
    marks = ", ".join(f"${n}" for n in range(1, len(endpoint_ids) + 1))
    lock = " FOR KEY SHARE" if sql.postgres else ""  # SQLite has one writer: the delete is before or after
    rows = await sql.fetch(
        f"SELECT id, failing_since FROM webhook_endpoints WHERE id IN ({marks}){lock}", *endpoint_ids
    )
    existing = {int(row["id"]) for row in rows}
    failing = {int(row["id"]) for row in rows if row["failing_since"] is not None}
    kept = [pair for pair in outcomes if pair[0].endpoint_id in existing]
    recorded = iter(await _record_existing(sql, kept, now, retry_period, rng, failing) if kept else [])
    return [next(recorded) if c.endpoint_id in existing else Recorded("GONE", None, None) for c, _ in outcomes]


async def _record_existing(
    sql: Sql,
    outcomes: list[tuple[Claimed, Outcome]],
    now: datetime,
    retry_period: timedelta,
    rng: random.Random,
    failing: set[int],
) -> list[Recorded]:
    trimmed = [
        (
            None if o.response_body is None else o.response_body[:RESPONSE_LIMIT],
            None if o.error is None else o.error[:ERROR_LIMIT],
        )
        for _, o in outcomes
    ]
    values, args = _values(
        sql,
        [
            (c.delivery_id, c.attempt, o.status_code, o.latency_ms, body, error, o.started_at)
            for (c, o), (body, error) in zip(outcomes, trimmed, strict=True)
        ],
        _ATTEMPT_TYPES,
    )
    columns = "delivery_id, attempt, status_code, latency_ms, response_body, error, started_at"
    await sql.execute(  # a delivery pruned meanwhile (its event past retention) logs nothing
        f"WITH v({columns}) AS (VALUES {values}) INSERT INTO webhook_attempts ({columns}) SELECT {columns} FROM v"
        " WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = v.delivery_id)",
        *args,
    )
    failed = [n for n, (_, o) in enumerate(outcomes) if not o.succeeded]
    series_start: dict[int, datetime] = {}
    if failed:
        ids = sorted({outcomes[n][0].delivery_id for n in failed})
        marks = ", ".join(f"${n}" for n in range(1, len(ids) + 1))
        for row in await sql.fetch(
            "SELECT delivery_id, MAX(started_at) AS started_at FROM webhook_attempts WHERE attempt = 1"
            f" AND delivery_id IN ({marks}) GROUP BY delivery_id",
            *ids,
        ):
            started = as_datetime(row["started_at"])
            if started is not None:
                series_start[int(row["delivery_id"])] = started
    decided: list[tuple[str, datetime | None]] = []
    rows: list[tuple[Any, ...]] = []
    for (claimed, outcome), (body, error) in zip(outcomes, trimmed, strict=True):
        if outcome.succeeded:
            status, next_at = "SUCCEEDED", None
        else:
            deadline = series_start.get(claimed.delivery_id, outcome.started_at) + retry_period
            if now >= deadline:
                status, next_at = "FAILED", None
            else:
                status, next_at = "PENDING", next_attempt_at(now, claimed.attempt, deadline, rng)
        decided.append((status, next_at))
        rows.append(
            (
                claimed.delivery_id,
                claimed.attempt,
                status,
                next_at,
                outcome.started_at,
                outcome.status_code,
                outcome.latency_ms,
                body,
                error,
            )
        )
    values, args = _values(sql, rows, _LAST_TYPES, first=2)
    delivered_at = "$1::timestamptz" if sql.postgres else "$1"
    updated = [
        row
        for row in await sql.fetch(
            f"WITH v({_LAST_COLUMNS}) AS (VALUES {values}) UPDATE webhook_deliveries SET status = v.status,"
            " next_attempt_at = v.next_at, leased_until = NULL, last_attempt_at = v.started_at,"
            " attempts_total = webhook_deliveries.attempts_total + 1,"
            " last_status_code = v.status_code,"
            " last_latency_ms = v.latency_ms, last_response = v.body, last_error = v.error,"
            f" delivered_at = CASE WHEN v.status = 'SUCCEEDED' THEN {delivered_at}"
            " ELSE webhook_deliveries.delivered_at END"
            " FROM v WHERE webhook_deliveries.id = v.id AND webhook_deliveries.status = 'PENDING'"
            " AND webhook_deliveries.attempts = v.attempts"
            " RETURNING webhook_deliveries.id, webhook_deliveries.attempts, webhook_deliveries.attempts_total",
            now,
            *args,
        )
    ]
    changed = {(int(row["id"]), int(row["attempts"])) for row in updated}
    await _trim_log(sql, sorted({int(row["id"]) for row in updated if int(row["attempts_total"]) > ATTEMPT_LOG_KEEP}))
    disabled = await _failing_since(sql, outcomes, now, retry_period, failing)
    results: list[Recorded] = []
    told: set[int] = set()
    for (claimed, _), (status, next_at) in zip(outcomes, decided, strict=True):
        fresh = (claimed.delivery_id, claimed.attempt) in changed
        if status == "SUCCEEDED":
            results.append(Recorded("SUCCEEDED" if fresh else "STALE", None, None))
            continue
        disabled_event = None
        if claimed.endpoint_id in disabled and claimed.endpoint_id not in told:
            told.add(claimed.endpoint_id)  # the event's id goes to the first of its failures
            disabled_event = disabled[claimed.endpoint_id]
        if not fresh:
            results.append(Recorded("STALE", None, disabled_event))
        elif claimed.endpoint_id in disabled:
            results.append(Recorded("FAILED", None, disabled_event))
        else:
            results.append(Recorded(status, next_at, None))
    return results


async def _trim_log(sql: Sql, delivery_ids: list[int]) -> None:
    """Drop from these deliveries' logs every try but the last ``ATTEMPT_LOG_KEEP`` and the first of the current
    series (the retry period counts from its start). Only deliveries tried more than that many times are
    passed: nearly every batch has none, and costs no statement."""
    if not delivery_ids:
        return
    marks = ", ".join(f"${n}" for n in range(1, len(delivery_ids) + 1))
    await sql.execute(
        f"DELETE FROM webhook_attempts WHERE delivery_id IN ({marks}) AND id NOT IN (SELECT k.id FROM"
        " webhook_attempts k WHERE k.delivery_id = webhook_attempts.delivery_id"
        f" ORDER BY k.id DESC LIMIT {ATTEMPT_LOG_KEEP})"
        " AND id <> (SELECT COALESCE(MAX(f.id), 0) FROM webhook_attempts f"
        " WHERE f.delivery_id = webhook_attempts.delivery_id AND f.attempt = 1)",
        *delivery_ids,
    )


async def _failing_since(
    sql: Sql, outcomes: list[tuple[Claimed, Outcome]], now: datetime, retry_period: timedelta, failing: set[int]
) -> dict[int, int]:
    """Set each endpoint's ``failing_since`` as recording the outcomes one after another would have: a
    success clears it, a failure sets it when it is not set. Then disable the endpoints that failed for the
    whole retry period (``_disable_if_failing``); returns, for each endpoint it disabled, the emitted event's
    id."""
    restarted: dict[int, datetime] = {}
    """Endpoints whose last success in the batch was followed by a failure: failing since that failure."""
    started: dict[int, datetime] = {}
    """Endpoints with failures and no success in the batch: failing since the first, unless already failing."""
    last_success: dict[int, int] = {}
    for n, (claimed, outcome) in enumerate(outcomes):
        if outcome.succeeded:
            last_success[claimed.endpoint_id] = n
    for n, (claimed, outcome) in enumerate(outcomes):
        endpoint = claimed.endpoint_id
        if outcome.succeeded:
            continue
        if endpoint not in last_success:
            started.setdefault(endpoint, outcome.started_at)
        elif n > last_success[endpoint]:
            restarted.setdefault(endpoint, outcome.started_at)
    # Only those failing when the batch began (read under the key-share lock): clearing the others would be a
    # statement that changes nothing, in nearly every batch.
    cleared = [e for e in last_success if e not in restarted and e in failing]
    if cleared:
        marks = ", ".join(f"${n}" for n in range(1, len(cleared) + 1))
        await sql.execute(
            f"UPDATE webhook_endpoints SET failing_since = NULL WHERE id IN ({marks}) AND failing_since IS NOT NULL",
            *cleared,
        )
    for guard, changes in (("", restarted), (" AND failing_since IS NULL", started)):
        if changes:
            values, args = _values(sql, list(changes.items()), ("bigint", "timestamptz"))
            await sql.execute(
                f"WITH v(id, at) AS (VALUES {values}) UPDATE webhook_endpoints SET failing_since = v.at FROM v"
                f" WHERE webhook_endpoints.id = v.id{guard}",
                *args,
            )
    disabled: dict[int, int] = {}
    for endpoint in sorted({*restarted, *started}):
        event_id = await _disable_if_failing(sql, endpoint, now, retry_period)
        if event_id is not None:
            disabled[endpoint] = event_id
    return disabled


async def _disable_if_failing(sql: Sql, endpoint_id: int, now: datetime, retry_period: timedelta) -> int | None:
    """Disable the endpoint if it has failed without a success since ``retry_period`` ago: its pending
    deliveries fail, and the other endpoints hear of it. The guarded UPDATE disables it once, whichever
    process gets there first. Returns the emitted event's id."""
    hours = retry_period.total_seconds() / 3600
    reason = f"Every delivery failed for {hours:g} hours"
    row = await sql.fetchrow(
        "UPDATE webhook_endpoints SET status = 'DISABLED', disabled_reason = $1, disabled_at = $2, updated_at = $2"
        " WHERE id = $3 AND status = 'ENABLED' AND failing_since IS NOT NULL AND failing_since <= $4"
        " RETURNING id, url, organization_id",
        reason,
        now,
        endpoint_id,
        now - retry_period,
    )
    if row is None:
        return None
    await sql.execute(
        "UPDATE webhook_deliveries SET status = 'FAILED', next_attempt_at = NULL WHERE endpoint_id = $1"
        " AND status = 'PENDING'",
        endpoint_id,
    )
    event = await emit(
        sql,
        EventType.WEBHOOK_ENDPOINT_DISABLED,
        {"endpoint": {"id": encode_id("WebhookEndpoint", endpoint_id), "url": str(row["url"])}, "reason": reason},
        now,
        account_id=None,
        organization_id=row["organization_id"],
    )
    return event.id


async def prune_before(before: datetime) -> int:
    """Delete events older than ``before`` (``models.outbox.prune``) and, by cascade, their deliveries and
    attempts (both databases enforce the foreign keys: SQLite with ``PRAGMA foreign_keys=ON``, which Tortoise
    sets). Returns how many events went."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        if sql.postgres:
            return await prune(sql, before)
        # SQLite's count of changes includes the rows the cascade deleted: count the events themselves first.
        row = await sql.fetchrow("SELECT COUNT(*) AS n FROM events WHERE " + PRUNABLE, before)
        await prune(sql, before)
        return int(row["n"]) if row else 0
