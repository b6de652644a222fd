"""Webhook endpoints for admins (README, Webhook endpoints): the secret shown once, rotation with a grace
period, disabling, deleting with the deliveries, redelivery under the same webhook-id, and the delivery log.
Bad input is in test_mutation_inputs, who may call what in test_access_matrix."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from creditline.app import build_services
from creditline.settings import Settings
from creditline.webhooks.worker import DeliveryWorker
from models.ids import encode_id
from models.outbox import EventType
from models.tables import (
    IdempotencyRecord,
    Organization,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEndpointStatus,
)
from tests.support.backends import T0, row_counts
from tests.support.helpers import Api
from tests.support.snapshots import changed, snapshot
from tests.support.webhook_receiver import Receiver, receiving
from tests.support.webhooks import DELIVERY_FIELDS, ENDPOINT_FIELDS, delivery, endpoint, event

ISO = "2026-01-15T12:00:00+00:00"
SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{43}=")
PLAIN_ERRORS = "... on Error { __typename message }"
ERRORS = PLAIN_ERRORS + " ... on ValidationError { field }"
ERRORS_WITH_KEY = ERRORS + " ... on IdempotencyConflict { idempotencyKey }"

CREATE = f"""
mutation($input: CreateWebhookEndpointInput!) {{
  createWebhookEndpoint(input: $input) {{
    __typename ... on CreateWebhookEndpointSuccess {{ secret endpoint {{ {ENDPOINT_FIELDS} }} }} {ERRORS_WITH_KEY}
  }}
}}
"""
UPDATE = f"""
mutation($input: UpdateWebhookEndpointInput!) {{
  updateWebhookEndpoint(input: $input) {{
    __typename ... on UpdateWebhookEndpointSuccess {{ endpoint {{ {ENDPOINT_FIELDS} }} }} {ERRORS}
  }}
}}
"""
ROTATE = f"""
mutation($input: RotateWebhookSecretInput!) {{
  rotateWebhookSecret(input: $input) {{
    __typename ... on RotateWebhookSecretSuccess {{ secret endpoint {{ {ENDPOINT_FIELDS} }} }} {ERRORS_WITH_KEY}
  }}
}}
"""
DISABLE = f"""
mutation($input: DisableWebhookEndpointInput!) {{
  disableWebhookEndpoint(input: $input) {{
    __typename ... on DisableWebhookEndpointSuccess {{ endpoint {{ {ENDPOINT_FIELDS} }} }} {PLAIN_ERRORS}
  }}
}}
"""
DELETE = f"""
mutation($input: DeleteWebhookEndpointInput!) {{
  deleteWebhookEndpoint(input: $input) {{
    __typename ... on DeleteWebhookEndpointSuccess {{ endpoint {{ id url }} }} {PLAIN_ERRORS}
  }}
}}
"""
REDELIVER = f"""
mutation($input: RedeliverWebhookEventInput!) {{
  redeliverWebhookEvent(input: $input) {{
    __typename ... on RedeliverWebhookEventSuccess {{ delivery {{ {DELIVERY_FIELDS} }} }} {ERRORS}
  }}
}}
"""
ENDPOINTS = f"{{ webhookEndpoints(first: 10) {{ edges {{ node {{ {ENDPOINT_FIELDS} }} }} }} }}"
LOG = f"""
query($id: ID!, $status: WebhookDeliveryStatus) {{
  webhookEndpoint(id: $id) {{
    url deliveries(first: 10, status: $status) {{ edges {{ node {{ {DELIVERY_FIELDS} }} }} pageInfo {{ hasNextPage }} }}
  }}
}}
"""
EVENTS = """
query($type: String, $accountId: ID) {
  webhookEvents(first: 10, type: $type, accountId: $accountId) {
    edges { node { id type sequence accountId } } pageInfo { hasNextPage }
  }
}
"""


def shown(row: WebhookEndpoint, **changes: Any) -> dict[str, Any]:
    """The endpoint as the API shows it, fresh from createWebhookEndpoint, with ``changes``."""
    return {
        "id": encode_id("WebhookEndpoint", row.id),
        "url": row.url,
        "description": row.description,
        "eventTypes": row.event_types.split(),
        "organizationId": None,
        "status": "ENABLED",
        "disabledReason": None,
        "disabledAt": None,
        "failingSince": None,
        "secretHint": row.secret[:10] + "…",
        "previousSecretExpiresAt": None,
        "createdAt": ISO,
        "updatedAt": ISO,
        **changes,
    }


@pytest.fixture
async def admin(api: Api) -> str:
    return await api.admin()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


class Highest(random.Random):
    """Full jitter drawing its upper bound every time: the schedule's ceilings, exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def run(api: Api, document: str, input: dict[str, Any], token: str) -> Any:
    data = await api.data(document, {"input": input}, token)
    return next(iter(data.values()))


async def test_create_answers_the_secret_once_and_then_only_its_hint(api: Api, admin: str) -> None:
    org = await Organization.create(name="Acme", created_at=T0)
    result = await run(
        api,
        CREATE,
        {
            "url": "https://hooks.example.com/in",
            "eventTypes": ["balance.low", "payment.failed", "balance.low"],
            "organizationId": encode_id("Organization", org.id),
            "description": "billing service",
        },
        admin,
    )

    row = await WebhookEndpoint.get()
    secret = result["secret"]
    assert SECRET.fullmatch(secret), secret
    assert result == {
        "__typename": "CreateWebhookEndpointSuccess",
        "secret": row.secret,
        "endpoint": shown(
            row,
            eventTypes=["balance.low", "payment.failed"],
            organizationId=encode_id("Organization", org.id),
            description="billing service",
        ),
    }
    # The secret is one the receivers' library takes: what it signs, it verifies.
    hook, sent_at = Webhook(secret), datetime.now(UTC)  # verify checks the timestamp against the wall clock
    signature = hook.sign("evt_1", sent_at, '{"type":"balance.low"}')
    assert hook.verify('{"type":"balance.low"}', {
        "webhook-id": "evt_1", "webhook-timestamp": str(int(sent_at.timestamp())), "webhook-signature": signature,
    }, json_parse=False) is None  # fmt: skip
    listed = await api.post(ENDPOINTS, token=admin)
    assert listed["data"]["webhookEndpoints"]["edges"] == [{"node": result["endpoint"]}]
    assert secret[6:] not in str(listed)


async def test_a_replayed_create_answers_the_same_and_a_different_one_under_the_key_conflicts(
    api: Api, admin: str
) -> None:
    input = {"url": "https://hooks.example.com/in", "idempotencyKey": "hook-1"}
    first = await run(api, CREATE, input, admin)
    again = await run(api, CREATE, input, admin)
    before = await snapshot()

    other = await run(api, CREATE, {**input, "url": "https://hooks.example.com/other"}, admin)

    assert again == first
    assert await WebhookEndpoint.all().count() == 1
    assert other == {
        "__typename": "IdempotencyConflict",
        "message": "This idempotencyKey was already used with a different request",
        "idempotencyKey": "hook-1",
    }
    assert changed(before, await snapshot()) == set()


async def test_a_create_replayed_after_a_rotation_answers_the_secret_that_signs_now(api: Api, admin: str) -> None:
    """The key's record keeps no secret: a replay answers the endpoint's current one, never a dead copy."""
    input = {"url": "https://hooks.example.com/in", "idempotencyKey": "hook-1"}
    first = await run(api, CREATE, input, admin)
    row = await WebhookEndpoint.get()
    rotated = await run(api, ROTATE, {"endpointId": encode_id("WebhookEndpoint", row.id)}, admin)

    again = await run(api, CREATE, input, admin)

    assert rotated["secret"] != first["secret"]
    assert again == {**first, "secret": rotated["secret"], "endpoint": again["endpoint"]}
    assert again["secret"] == (await WebhookEndpoint.get()).secret
    assert all(first["secret"] not in (r.response or "") for r in await IdempotencyRecord.all())


async def test_a_deployment_has_at_most_20_endpoints(api: Api, admin: str) -> None:
    for n in range(20):
        await endpoint(T0, url=f"https://hooks.example.com/{n}")
    before = await row_counts()

    result = await run(api, CREATE, {"url": "https://hooks.example.com/21"}, admin)

    assert result == {
        "__typename": "ValidationError",
        "message": "A deployment has at most 20 webhook endpoints: delete one first",
        "field": None,
    }
    assert await row_counts() == before


async def test_update_changes_what_is_given_and_enabling_clears_the_failure(api: Api, admin: str) -> None:
    row = await endpoint(T0, event_types="balance.low")
    await WebhookEndpoint.filter(id=row.id).update(
        status=WebhookEndpointStatus.DISABLED,
        disabled_reason="Failing for 72 hours",
        disabled_at=T0,
        failing_since=T0 - timedelta(hours=72),
        description="kept",
    )
    api.clock.freeze(T0 + timedelta(hours=1))
    later = "2026-01-15T13:00:00+00:00"
    gid = encode_id("WebhookEndpoint", row.id)

    renamed = await run(api, UPDATE, {"endpointId": gid, "url": "https://hooks.example.com/v2"}, admin)
    enabled = await run(api, UPDATE, {"endpointId": gid, "enabled": True, "eventTypes": []}, admin)
    cleared = await run(api, UPDATE, {"endpointId": gid, "description": None}, admin)

    assert renamed == {
        "__typename": "UpdateWebhookEndpointSuccess",
        "endpoint": shown(
            row,
            url="https://hooks.example.com/v2",
            description="kept",
            status="DISABLED",
            disabledReason="Failing for 72 hours",
            disabledAt=ISO,
            failingSince="2026-01-12T12:00:00+00:00",
            updatedAt=later,
        ),
    }
    assert enabled["endpoint"] == shown(
        row, url="https://hooks.example.com/v2", description="kept", eventTypes=[], updatedAt=later
    )
    assert cleared["endpoint"] == shown(row, url="https://hooks.example.com/v2", eventTypes=[], updatedAt=later)


async def test_rotate_answers_the_new_secret_once_and_the_old_one_signs_for_the_grace_period(
    api: Api, admin: str, settings: Settings
) -> None:
    row = await endpoint(T0)
    gid = encode_id("WebhookEndpoint", row.id)
    input = {"endpointId": gid, "idempotencyKey": "rotate-1"}

    rotated = await run(api, ROTATE, input, admin)
    replayed = await run(api, ROTATE, input, admin)

    stored = await WebhookEndpoint.get(id=row.id)
    assert SECRET.fullmatch(rotated["secret"])
    assert rotated["secret"] != row.secret
    assert (stored.secret, stored.previous_secret) == (rotated["secret"], row.secret)
    expires = T0 + timedelta(seconds=settings.webhook_secret_grace_seconds)
    assert stored.previous_secret_expires_at == expires
    assert rotated == {
        "__typename": "RotateWebhookSecretSuccess",
        "secret": rotated["secret"],
        "endpoint": shown(stored, previousSecretExpiresAt="2026-01-16T12:00:00+00:00"),
    }
    assert replayed == rotated  # the same secret, not a third one
    api.clock.freeze(expires)
    listed = await api.data(ENDPOINTS, token=admin)
    assert listed["webhookEndpoints"]["edges"][0]["node"]["previousSecretExpiresAt"] is None


async def test_disable_says_why_and_a_second_disable_changes_nothing(api: Api, admin: str) -> None:
    row = await endpoint(T0)
    gid = encode_id("WebhookEndpoint", row.id)

    first = await run(api, DISABLE, {"endpointId": gid}, admin)
    api.clock.freeze(T0 + timedelta(minutes=1))
    second = await run(api, DISABLE, {"endpointId": gid}, admin)

    expected = shown(row, status="DISABLED", disabledReason="Disabled by an admin", disabledAt=ISO)
    assert first == second == {"__typename": "DisableWebhookEndpointSuccess", "endpoint": expected}


async def test_delete_removes_the_endpoint_with_its_deliveries_and_their_attempts(api: Api, admin: str) -> None:
    gone, kept = await endpoint(T0), await endpoint(T0, url="https://hooks.example.com/kept")
    first, second = await event(T0), await event(T0)
    await delivery(gone, first, T0, WebhookDeliveryStatus.SUCCEEDED, answers=(500, 200))
    await delivery(gone, second, T0)  # pending: never sent now
    await delivery(kept, first, T0, WebhookDeliveryStatus.SUCCEEDED, answers=(200,))
    gid = encode_id("WebhookEndpoint", gone.id)

    result = await run(api, DELETE, {"endpointId": gid}, admin)
    again = await run(api, DELETE, {"endpointId": gid}, admin)

    assert result == {
        "__typename": "DeleteWebhookEndpointSuccess",
        "endpoint": {"id": gid, "url": "https://hooks.example.com/in"},
    }
    assert again == {"__typename": "NotFound", "message": "Webhook endpoint not found"}
    assert [d.endpoint_id for d in await WebhookDelivery.all()] == [kept.id]
    assert await WebhookAttempt.all().count() == 1
    assert await OutboxEvent.all().count() == 2  # the events stay, for the other endpoints
    assert (await api.data(LOG, {"id": gid}, admin)) == {"webhookEndpoint": None}


@pytest.mark.parametrize("status", [WebhookDeliveryStatus.SUCCEEDED, WebhookDeliveryStatus.FAILED])
async def test_redeliver_puts_the_delivery_back_to_pending_now_as_a_new_series_under_the_same_event_id(
    api: Api, admin: str, status: WebhookDeliveryStatus
) -> None:
    row = await endpoint(T0)
    user_id, _ = await api.user("ada@example.com")
    sent = await event(T0, account_id=user_id, sequence=1)
    answers = (200,) if status is WebhookDeliveryStatus.SUCCEEDED else (500, None)
    await delivery(row, sent, T0, status, answers=answers)
    api.clock.freeze(T0 + timedelta(days=1))

    result = await run(
        api, REDELIVER, {"endpointId": encode_id("WebhookEndpoint", row.id), "eventId": sent.public_id}, admin
    )

    before = {
        "status": status.value,
        "attempts": 0,  # a new retry series: the next try is attempt 1 again
        "lastStatusCode": answers[-1],
        "lastLatencyMs": 40,
        "lastAttemptAt": f"2026-01-15T12:00:0{len(answers) - 1}+00:00",
        "lastResponse": "ok" if answers[-1] == 200 else None,
        "lastError": None if answers[-1] == 200 else "timed out after 10 s",
    }
    assert result == {
        "__typename": "RedeliverWebhookEventSuccess",
        "delivery": {
            **before,
            "status": "PENDING",
            "nextAttemptAt": "2026-01-16T12:00:00+00:00",
            "deliveredAt": None,
            "event": {
                "id": sent.public_id,
                "type": "balance.low",
                "createdAt": ISO,
                "sequence": 1,
                "accountId": encode_id("CreditAccount", user_id),
                "organizationId": None,
                "data": '{"level":"5"}',
            },
            "attemptLog": [
                {
                    "attempt": n,
                    "statusCode": code,
                    "latencyMs": 40 if code else 10_000,
                    "responseBody": None if code is None else ("ok" if code == 200 else "boom"),
                    "error": None if code else "timed out after 10 s",
                    "startedAt": f"2026-01-15T12:00:0{n - 1}+00:00",
                }
                for n, code in enumerate(answers, start=1)
            ],
        },
    }
    assert await WebhookDelivery.all().count() == 1


async def test_a_redelivered_old_event_is_retried_from_the_redelivery_until_it_arrives(
    api: Api, admin: str, receiver: Receiver
) -> None:
    """Its first series began 4 days ago, past the 72 h retry period: the new series counts from the redelivery,
    so one failure schedules a retry instead of failing it."""
    row = await endpoint(T0, url=receiver.url)
    user_id, _ = await api.user("ada@example.com")
    sent = await event(T0, account_id=user_id, sequence=1)
    await delivery(row, sent, T0, WebhookDeliveryStatus.FAILED, answers=(500, None))
    api.clock.freeze(T0 + timedelta(days=4))
    gid = encode_id("WebhookEndpoint", row.id)
    worker = DeliveryWorker(
        build_services(Settings(database_url="unused", webhook_allow_private=True), api.clock), rng=Highest()
    )
    try:
        redelivered = await run(api, REDELIVER, {"endpointId": gid, "eventId": sent.public_id}, admin)
        assert redelivered["delivery"]["attempts"] == 0
        receiver.status = 503
        assert await worker.run_once() == 1
        retried = await WebhookDelivery.get(id=row.id)
        assert (retried.status, retried.attempts) == (WebhookDeliveryStatus.PENDING, 1)
        assert retried.next_attempt_at == api.clock.now() + timedelta(seconds=10)

        receiver.status = 200
        api.clock.advance(timedelta(seconds=10))
        assert await worker.run_once() == 1
    finally:
        await worker.close()

    log = await api.data(LOG, {"id": gid}, admin)
    (node,) = [edge["node"] for edge in log["webhookEndpoint"]["deliveries"]["edges"]]
    assert (node["status"], node["attempts"], node["deliveredAt"]) == ("SUCCEEDED", 2, "2026-01-19T12:00:10+00:00")
    assert [(a["attempt"], a["statusCode"], a["startedAt"]) for a in node["attemptLog"]] == [
        (1, 500, "2026-01-15T12:00:00+00:00"),
        (2, None, "2026-01-15T12:00:01+00:00"),
        (1, 503, "2026-01-19T12:00:00+00:00"),
        (2, 200, "2026-01-19T12:00:10+00:00"),
    ]
    assert receiver.ids() == [sent.public_id, sent.public_id]


class Lowest(random.Random):
    """Full jitter drawing 0 every time: every retry after the floor of a second."""

    def uniform(self, a: float, b: float) -> float:
        return a


TRIES = """
query($id: ID!) {
  webhookEndpoint(id: $id) { deliveries(first: 1) { edges { node { attempts attemptsTotal attemptLog { attempt } } } } }
}
"""


async def test_the_log_keeps_the_last_20_tries_and_the_first_of_the_series_and_counts_them_all(
    api: Api, admin: str, receiver: Receiver
) -> None:
    row = await endpoint(T0, url=receiver.url)
    user_id, _ = await api.user("ada@example.com")
    sent = await event(T0, account_id=user_id, sequence=1)
    gid = encode_id("WebhookEndpoint", row.id)
    worker = DeliveryWorker(
        build_services(Settings(database_url="unused", webhook_allow_private=True), api.clock), rng=Lowest()
    )

    async def tries() -> tuple[int, int, list[int]]:
        log = await api.data(TRIES, {"id": gid}, admin)
        (node,) = [edge["node"] for edge in log["webhookEndpoint"]["deliveries"]["edges"]]
        return node["attempts"], node["attemptsTotal"], [a["attempt"] for a in node["attemptLog"]]

    receiver.status = 503
    try:
        for _ in range(23):
            assert await worker.run_once() == 1
            api.clock.advance(timedelta(seconds=1))
        # the series' first try (the retry period counts from it) and the last 20
        assert await tries() == (23, 23, [1, *range(4, 24)])
        redelivered = await run(api, REDELIVER, {"endpointId": gid, "eventId": sent.public_id}, admin)
        assert redelivered["__typename"] == "RedeliverWebhookEventSuccess"
        assert await worker.run_once() == 1
        api.clock.advance(timedelta(seconds=1))
        assert await worker.run_once() == 1
    finally:
        await worker.close()

    # the new series' first try is among the last 20: the old series' first is no longer kept
    assert await tries() == (2, 25, [*range(6, 24), 1, 2])
    assert await WebhookAttempt.filter(delivery__endpoint_id=row.id).count() == 20
    assert len(receiver.ids()) == 25


async def test_redeliver_makes_the_delivery_an_endpoint_never_had_only_if_it_takes_the_event(
    api: Api, admin: str
) -> None:
    wants_all = await endpoint(T0)
    low_only = await endpoint(T0, url="https://hooks.example.com/low", event_types="balance.low")
    paid = await event(T0, type=EventType.PAYMENT_SUCCEEDED)

    made = await run(
        api, REDELIVER, {"endpointId": encode_id("WebhookEndpoint", wants_all.id), "eventId": paid.public_id}, admin
    )
    before = await snapshot()
    refused = await run(
        api, REDELIVER, {"endpointId": encode_id("WebhookEndpoint", low_only.id), "eventId": paid.public_id}, admin
    )

    assert made["delivery"]["status"] == "PENDING"
    assert made["delivery"]["attempts"] == 0
    assert made["delivery"]["nextAttemptAt"] == ISO
    assert made["delivery"]["event"]["id"] == paid.public_id
    assert refused == {
        "__typename": "ValidationError",
        "message": "The endpoint does not take this event (payment.succeeded, or another organization's)",
        "field": "eventId",
    }
    assert changed(before, await snapshot()) == set()


async def test_the_delivery_log_is_newest_first_with_attempts_and_filters_by_status(api: Api, admin: str) -> None:
    row = await endpoint(T0)
    first, second = await event(T0), await event(T0, type=EventType.BALANCE_DEPLETED)
    await delivery(row, first, T0, WebhookDeliveryStatus.SUCCEEDED, answers=(503, 200))
    await delivery(row, second, T0, WebhookDeliveryStatus.PENDING, answers=(None,))
    gid = encode_id("WebhookEndpoint", row.id)

    everything = await api.data(LOG, {"id": gid}, admin)
    succeeded = await api.data(LOG, {"id": gid, "status": "SUCCEEDED"}, admin)

    nodes = [edge["node"] for edge in everything["webhookEndpoint"]["deliveries"]["edges"]]
    assert [(n["event"]["type"], n["status"], n["attempts"]) for n in nodes] == [
        ("balance.depleted", "PENDING", 1),
        ("balance.low", "SUCCEEDED", 2),
    ]
    assert nodes[0] | {"event": None} == {
        "status": "PENDING",
        "attempts": 1,
        "lastStatusCode": None,
        "lastLatencyMs": 40,
        "lastAttemptAt": ISO,
        "nextAttemptAt": "2026-01-15T12:05:00+00:00",
        "lastResponse": None,
        "lastError": "timed out after 10 s",
        "deliveredAt": None,
        "event": None,
        "attemptLog": [
            {"attempt": 1, "statusCode": None, "latencyMs": 10_000, "responseBody": None,
             "error": "timed out after 10 s", "startedAt": ISO},
        ],
    }  # fmt: skip
    assert [a["statusCode"] for a in nodes[1]["attemptLog"]] == [503, 200]
    assert nodes[1]["deliveredAt"] == "2026-01-15T12:00:01+00:00"
    assert [e["node"]["event"]["id"] for e in succeeded["webhookEndpoint"]["deliveries"]["edges"]] == [first.public_id]


async def test_webhook_events_lists_newest_first_by_type_and_by_account(api: Api, admin: str) -> None:
    user_id, _ = await api.user("ada@example.com")
    low = await event(T0, account_id=user_id, sequence=1)
    depleted = await event(T0, account_id=user_id, sequence=2, type=EventType.BALANCE_DEPLETED)
    deployment = await event(T0, type=EventType.WEBHOOK_ENDPOINT_DISABLED)
    account = encode_id("CreditAccount", user_id)

    everything = await api.data(EVENTS, {}, admin)
    lows = await api.data(EVENTS, {"type": "balance.low"}, admin)
    of_account = await api.data(EVENTS, {"accountId": account}, admin)

    def ids(data: Any) -> list[str]:
        return [edge["node"]["id"] for edge in data["webhookEvents"]["edges"]]

    assert ids(everything) == [deployment.public_id, depleted.public_id, low.public_id]
    assert everything["webhookEvents"]["edges"][1]["node"] == {
        "id": depleted.public_id,
        "type": "balance.depleted",
        "sequence": 2,
        "accountId": account,
    }
    assert ids(lows) == [low.public_id]
    assert ids(of_account) == [depleted.public_id, low.public_id]


async def test_creates_at_once_never_pass_the_limit_together(api: Api, admin: str) -> None:
    for n in range(18):
        await endpoint(T0, url=f"https://hooks.example.com/{n}")

    results = await asyncio.gather(
        *(run(api, CREATE, {"url": f"https://hooks.example.com/new-{n}"}, admin) for n in range(6))
    )

    assert sorted(r["__typename"] for r in results) == ["CreateWebhookEndpointSuccess"] * 2 + ["ValidationError"] * 4
    assert await WebhookEndpoint.all().count() == 20


async def test_creates_at_once_with_one_key_make_one_endpoint_and_answer_it_to_all(api: Api, admin: str) -> None:
    input = {"url": "https://hooks.example.com/in", "idempotencyKey": "hook-at-once"}

    results = await asyncio.gather(*(run(api, CREATE, input, admin) for _ in range(4)))

    row = await WebhookEndpoint.get()
    assert [r["secret"] for r in results] == [row.secret] * 4
    assert [r["endpoint"]["id"] for r in results] == [encode_id("WebhookEndpoint", row.id)] * 4


async def test_one_key_sent_at_once_with_other_creates_is_answered_its_endpoint_never_the_limit(
    api: Api, admin: str
) -> None:
    keyed = {"url": "https://hooks.example.com/keyed", "idempotencyKey": "hook-crowded"}
    calls = [run(api, CREATE, keyed, admin) for _ in range(10)]
    calls += [run(api, CREATE, {"url": f"https://hooks.example.com/other-{n}"}, admin) for n in range(30)]

    results = await asyncio.gather(*calls)

    assert await WebhookEndpoint.all().count() == 20
    row = await WebhookEndpoint.get_or_none(url="https://hooks.example.com/keyed")
    keyed_answers = [(r["__typename"], r.get("endpoint", {}).get("id")) for r in results[:10]]
    if row is None:  # the others took every place first: each call with the key was refused the same way
        assert keyed_answers == [("ValidationError", None)] * 10
    else:
        assert keyed_answers == [("CreateWebhookEndpointSuccess", encode_id("WebhookEndpoint", row.id))] * 10
    assert sorted(r["__typename"] for r in results[10:]).count("CreateWebhookEndpointSuccess") == 20 - (row is not None)


WEBHOOK_NODE = (
    "query($id: ID!) { node(id: $id) { __typename ... on WebhookEndpoint { id url status }"
    " ... on WebhookDelivery { id deliveryStatus: status attempts event { id type } } } }"
)


async def test_node_reads_endpoints_and_deliveries_for_admins_only(api: Api, admin: str) -> None:
    row = await endpoint(T0)
    user_id, user_token = await api.user("ada@example.com")
    service = await api.service()
    sent = await event(T0, account_id=user_id, sequence=1)
    made = await delivery(row, sent, T0, WebhookDeliveryStatus.SUCCEEDED, answers=(200,))
    endpoint_id, delivery_id = encode_id("WebhookEndpoint", row.id), encode_id("WebhookDelivery", made.id)

    assert (await api.data(WEBHOOK_NODE, {"id": endpoint_id}, admin))["node"] == {
        "__typename": "WebhookEndpoint",
        "id": endpoint_id,
        "url": "https://hooks.example.com/in",
        "status": "ENABLED",
    }
    assert (await api.data(WEBHOOK_NODE, {"id": delivery_id}, admin))["node"] == {
        "__typename": "WebhookDelivery",
        "id": delivery_id,
        "deliveryStatus": "SUCCEEDED",
        "attempts": 1,
        "event": {"id": sent.public_id, "type": "balance.low"},
    }
    for other in (user_token, service):  # webhookEndpoints is FORBIDDEN to them; node answers null
        for gid_ in (endpoint_id, delivery_id):
            assert (await api.data(WEBHOOK_NODE, {"id": gid_}, other))["node"] is None
    for missing in (encode_id("WebhookEndpoint", 999), encode_id("WebhookDelivery", 999)):
        assert (await api.data(WEBHOOK_NODE, {"id": missing}, admin))["node"] is None


@pytest.mark.parametrize(
    "url", ["http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:8391/ok", "http://\u2113ocalhost/"]
)
async def test_a_host_the_sender_cannot_encode_is_refused_at_registration(api: Api, admin: str, url: str) -> None:
    before = await snapshot()

    result = await run(api, CREATE, {"url": url}, admin)

    assert result == {
        "__typename": "ValidationError",
        "message": "url's host is not a valid IDNA 2008 host name (the form webhooks are sent to)",
        "field": "url",
    }
    assert changed(before, await snapshot()) == set()


async def test_a_replayed_rotation_answers_its_own_secret_or_a_conflict_once_a_later_one_replaced_it(
    api: Api, admin: str
) -> None:
    """A replay answered the endpoint's current secret, which a later rotation (another key) had made: a client
    retrying after a timeout stored a secret its call never produced."""
    row = await endpoint(T0)
    gid = encode_id("WebhookEndpoint", row.id)
    first = await run(api, ROTATE, {"endpointId": gid, "idempotencyKey": "rot-a"}, admin)
    assert await run(api, ROTATE, {"endpointId": gid, "idempotencyKey": "rot-a"}, admin) == first
    second = await run(api, ROTATE, {"endpointId": gid, "idempotencyKey": "rot-b"}, admin)
    assert second["secret"] != first["secret"]
    before = await snapshot()

    again = await run(api, ROTATE, {"endpointId": gid, "idempotencyKey": "rot-a"}, admin)

    assert again == {
        "__typename": "IdempotencyConflict",
        "message": "This idempotencyKey's rotation was superseded by a later one: its secret no longer signs."
        " Rotate again with a new idempotencyKey",
        "idempotencyKey": "rot-a",
    }
    assert changed(before, await snapshot()) == set()
    assert (await WebhookEndpoint.get(id=row.id)).secret == second["secret"]
    assert await run(api, ROTATE, {"endpointId": gid, "idempotencyKey": "rot-b"}, admin) == second
    records = [r.response or "" for r in await IdempotencyRecord.all()]
    assert all(first["secret"] not in r and second["secret"] not in r for r in records)  # digests only
