"""Malformed input on the plain routes (issue 9, point 7): invoice links, Stripe webhooks and the CSV exports
answer it with a 4xx that says what is wrong, before doing anything, and nothing changes. Each case here was
a 500 (or, on PostgreSQL, a 200 export cut after its header line) before."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from creditline.clock import Clock
from creditline.settings import Settings
from tests.support.backends import Backend, row_counts
from tests.support.helpers import SPEND, Api, gid
from tests.support.payments import TOP_UP, top_up
from tests.support.stripe_standin import WEBHOOK_SECRET, StripeStandIn, deliver, sign, stripe_api

# ------------------------------------------------------------------------------------------ invoice links


async def invoice_link(api: Api) -> tuple[str, str]:
    """A user with one paid top-up: their token and the signed link of its invoice."""
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("250", "t1", paymentToken="tok_visa"), token)
    links = await api.data("{ me { credit { invoices(first: 1) { edges { node { signedUrl } } } } } }", token=token)
    return token, links["me"]["credit"]["invoices"]["edges"][0]["node"]["signedUrl"]


EXPIRES = "This invoice link is malformed: expires must be a whole number of at most 12 digits"
SIGNATURE = "This invoice link is malformed: signature must be 64 lower-case hexadecimal characters"


@pytest.mark.parametrize(
    ("expires", "signature", "expected"),
    [
        pytest.param("١٧٦٩", None, EXPIRES, id="arabic-indic-digits"),
        pytest.param("²", None, EXPIRES, id="superscript-two"),
        pytest.param("9" * 5000, None, EXPIRES, id="5000-digits"),
        pytest.param("9" * 13, None, EXPIRES, id="13-digits"),
        pytest.param("-1", None, EXPIRES, id="negative"),
        pytest.param(" 1", None, EXPIRES, id="leading-space"),
        pytest.param("", None, EXPIRES, id="empty"),
        pytest.param(None, "é" * 64, SIGNATURE, id="non-ascii-signature"),
        pytest.param(None, "AB" * 32, SIGNATURE, id="upper-case-signature"),
        pytest.param(None, "ab", SIGNATURE, id="short-signature"),
    ],
)
async def test_a_malformed_invoice_link_is_a_400_that_names_the_part(
    api: Api, expires: str | None, signature: str | None, expected: str
) -> None:
    _, link = await invoice_link(api)
    path, _, query = link.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    before = await row_counts()

    response = await api.client.get(
        path,
        params={
            "expires": params["expires"] if expires is None else expires,
            "signature": signature or params["signature"],
        },
    )

    assert (response.status_code, response.text) == (400, expected)
    assert await row_counts() == before


async def test_the_valid_link_still_opens_and_a_wrong_signature_is_still_a_404(api: Api) -> None:
    _, link = await invoice_link(api)

    assert (await api.client.get(link)).status_code == 200
    wrong = await api.client.get(link[: -len("0" * 64)] + "0" * 64)
    assert (wrong.status_code, wrong.text) == (404, "This invoice link is invalid or has expired")


# ----------------------------------------------------------------------------------------------- webhooks


@pytest.fixture
async def stripe(db: Backend, clock: Clock, settings: Settings, stripe_standin: StripeStandIn) -> AsyncIterator[Api]:
    async with stripe_api(settings, stripe_standin, clock, "stripe") as api:
        yield api


async def paid_checkout(api: Api, standin: StripeStandIn) -> dict[str, Any]:
    """A PENDING top-up paid on Stripe's page, and the event Stripe would send for it."""
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("50", "t1"), token)
    return standin.event("checkout.session.completed", standin.pay("cs_test0001"))


def signed_bytes(payload: bytes, stamp: int) -> str:
    """A valid Stripe-Signature over raw bytes (the SDK's signer takes text only)."""
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


async def post_webhook(api: Api, payload: bytes, signature: str) -> Any:
    return await api.client.post("/webhooks/stripe", content=payload, headers={"stripe-signature": signature})


def with_session(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**event, "data": {"object": {**event["data"]["object"], **changes}}}


SIGNED_MALFORMED = [
    pytest.param(
        lambda event: {**event, "created": 10**30},
        "body has an integer out of range: at most 9007199254740992 in size",
        id="created-out-of-range",
    ),
    pytest.param(
        lambda event: with_session(event, amount_total=-(2**70)),
        "body has an integer out of range: at most 9007199254740992 in size",
        id="amount-out-of-range",
    ),
    pytest.param(
        lambda event: with_session(event, metadata="creditline_transaction=1"),
        "body has a metadata that is not a map of strings",
        id="metadata-a-string",
    ),
    pytest.param(
        lambda event: with_session(event, metadata=["1"]),
        "body has a metadata that is not a map of strings",
        id="metadata-a-list",
    ),
    pytest.param(
        lambda event: with_session(event, metadata={"creditline_transaction": 1}),
        "body has a metadata that is not a map of strings",
        id="metadata-value-a-number",
    ),
    pytest.param(
        lambda event: with_session(event, id="cs_\x00"), "body must not contain NUL characters", id="nul-in-id"
    ),
]


@pytest.mark.parametrize(("change", "expected"), SIGNED_MALFORMED)
async def test_a_signed_event_of_the_wrong_shape_is_a_400_and_is_not_stored(
    stripe: Api, stripe_standin: StripeStandIn, change: Any, expected: str
) -> None:
    event = change(await paid_checkout(stripe, stripe_standin))
    before = await row_counts()

    response = await deliver(stripe, event)

    assert (response.status_code, response.text) == (400, expected)
    assert await row_counts() == before
    assert before["webhook_events"] == 0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b'{"id": "evt_\xff\xfe"}', "body is not UTF-8 (invalid byte at offset 12)", id="not-utf8"),
        pytest.param(b'{"id": "evt_1", "created": NaN}', "body is not JSON: NaN is not a number", id="nan"),
        pytest.param(b'{"id": "evt_1", "amount": 1e400}', "body has a number out of range", id="infinite"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "body nests deeper than 32 levels", id="deep-nesting"),
        pytest.param(
            b'{"id": "\\ud800"}', "body must be valid Unicode: it contains a lone surrogate (U+D800)", id="surrogate"
        ),
        pytest.param(b"[]", "body must be a JSON object", id="not-an-object"),
        pytest.param(b"{", "body is not JSON", id="truncated"),
    ],
)
async def test_a_body_that_is_not_a_json_object_of_text_is_a_400(
    stripe: Api, stripe_standin: StripeStandIn, payload: bytes, expected: str
) -> None:
    await paid_checkout(stripe, stripe_standin)
    before = await row_counts()

    response = await post_webhook(stripe, payload, signed_bytes(payload, int(stripe.clock.now().timestamp())))

    assert (response.status_code, response.text) == (400, expected)
    assert await row_counts() == before


HEADER_LENGTH = "Stripe-Signature must be at most 1024 ASCII characters"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("t=١٢٣,v1=ab", HEADER_LENGTH, id="non-ascii-digits"),
        pytest.param("t=1,v1=" + "a" * 2000, HEADER_LENGTH, id="too-long"),
        pytest.param(
            "t=" + "9" * 5000,
            HEADER_LENGTH,
            id="5000-digit-timestamp",
        ),
        pytest.param(
            "t=9999999999999,v1=ab",
            "Stripe-Signature timestamp must be a whole number of at most 12 digits",
            id="13-digit-timestamp",
        ),
        pytest.param("t=1=2,v1=ab", "Stripe-Signature must be comma-separated key=value parts", id="two-equals"),
        pytest.param("t=1;v1=ab", "Stripe-Signature must be comma-separated key=value parts", id="semicolon"),
    ],
)
async def test_an_odd_signature_header_is_a_400(
    stripe: Api, stripe_standin: StripeStandIn, header: str, expected: str
) -> None:
    event = await paid_checkout(stripe, stripe_standin)
    before = await row_counts()

    response = await stripe.client.post(
        "/webhooks/stripe", content=json.dumps(event).encode(), headers=[(b"stripe-signature", header.encode())]
    )

    assert (response.status_code, response.text) == (400, expected)
    assert await row_counts() == before


async def test_a_well_formed_event_is_still_received(stripe: Api, stripe_standin: StripeStandIn) -> None:
    event = await paid_checkout(stripe, stripe_standin)
    payload = json.dumps(event)

    response = await post_webhook(stripe, payload.encode(), sign(payload, int(stripe.clock.now().timestamp())))

    assert response.json() == {"received": event["id"], "outcome": "processed"}


# --------------------------------------------------------------------------------------------- CSV exports


async def exports_world(api: Api) -> tuple[str, dict[str, str]]:
    """A user who spent twice (so an export has rows) and their token header."""
    user_id, token = await api.user("ada@example.com")
    service = await api.service()
    for key in ("s1", "s2"):
        spend = {"userId": gid("User", user_id), "agentId": "agent-1", "activity": "answer", "credits": "1"}
        spent = await api.data(SPEND, {"input": {**spend, "idempotencyKey": key}}, service)
        assert spent["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    return gid("CreditAccount", 1), {"authorization": f"Bearer {token}"}


RANGE = "{} must be between 1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z"
ISO = "{} must be an ISO 8601 date and time, e.g. 2026-01-31T00:00:00Z"
EXPORT_CASES = [
    pytest.param({"from": "0001-01-01T00:00:00+14:00"}, RANGE.format("from"), id="year-1-ahead-of-utc"),
    pytest.param({"to": "9999-12-31T23:59:59-14:00"}, RANGE.format("to"), id="year-9999-behind-utc"),
    pytest.param({"from": "0001-01-01T00:00:00Z"}, RANGE.format("from"), id="year-1"),
    pytest.param({"to": "9999-06-01T00:00:00Z"}, RANGE.format("to"), id="late-9999"),
    pytest.param({"from": "1969-12-31T23:59:59Z"}, RANGE.format("from"), id="before-1970"),
    pytest.param({"from": "10000-01-01T00:00:00Z"}, ISO.format("from"), id="year-10000"),
    pytest.param({"from": "٢٠٢٦-01-01T00:00:00Z"}, ISO.format("from"), id="arabic-indic-year"),
    pytest.param({"from": "2026-01-01T00:00:00" + "0" * 100}, ISO.format("from"), id="over-long"),
    pytest.param(
        {"from": "2026-01-01T00:00:00"}, "from must include a time zone, e.g. 2026-01-31T00:00:00Z", id="no-zone"
    ),
]
USAGE_ONLY_CASES = [
    pytest.param({"agentId": "agent\x00-1"}, "agentId must not contain control characters", id="nul-in-agent"),
    pytest.param(
        {"activity": "ans\u200bwer"},
        "activity must contain only printable characters: U+200B is an invisible or bidirectional formatting character",
        id="zero-width-in-activity",
    ),
    pytest.param({"agentId": "a" * 201}, "agentId must be 1 to 200 characters", id="over-long-agent"),
]


@pytest.mark.parametrize("path", ["/exports/usage.csv", "/exports/transactions.csv"])
@pytest.mark.parametrize(("params", "expected"), EXPORT_CASES)
async def test_a_malformed_export_filter_is_a_400_before_the_csv_starts(
    api: Api, path: str, params: dict[str, str], expected: str
) -> None:
    account, headers = await exports_world(api)
    before = await row_counts()

    response = await api.client.get(path, params={"account": account, **params}, headers=headers)

    assert (response.status_code, response.text) == (400, expected)
    assert await row_counts() == before


@pytest.mark.parametrize(("params", "expected"), USAGE_ONLY_CASES)
async def test_a_malformed_usage_export_identifier_is_a_400(api: Api, params: dict[str, str], expected: str) -> None:
    account, headers = await exports_world(api)

    response = await api.client.get("/exports/usage.csv", params={"account": account, **params}, headers=headers)

    assert (response.status_code, response.text) == (400, expected)


async def test_an_export_at_the_edges_of_the_range_is_whole(api: Api) -> None:
    account, headers = await exports_world(api)

    response = await api.client.get(
        "/exports/usage.csv",
        params={"account": account, "from": "1970-01-01T00:00:00Z", "to": "9999-01-01T00:00:00Z"},
        headers=headers,
    )

    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0].startswith("id,occurred_at,")
    assert [line.split(",")[5:8] for line in lines[1:]] == [["agent-1", "answer", "1"]] * 2


DEEP = "[" * 1100 + "]" * 1100
"""Nested deeper than the JSON parser recurses (2.2 KB)."""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(DEEP, id="the-body"),
        pytest.param('{"query": "{ me { id } }", "variables": {"v": ' + DEEP + "}}", id="in-variables"),
        pytest.param('{"query": "{ me { id } }", "variables": {"v": ' + "9" * 5000 + "}}", id="an-integer-too-long"),
    ],
)
async def test_json_nested_deeper_than_the_parser_goes_is_a_400_like_any_malformed_json(
    api: Api, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = await api.user("ada@example.com")
    before = await row_counts()

    response = await api.client.post(
        "/graphql",
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )

    assert (response.status_code, response.text) == (400, "Unable to parse request body as JSON")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert await row_counts() == before


async def test_a_client_that_leaves_in_the_middle_of_its_body_is_one_info_line_not_an_error(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    before = await row_counts()
    arrived: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return arrived.pop(0) if arrived else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), (b"content-length", b"1000")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    with caplog.at_level(logging.INFO):
        await api.app(scope, receive, send)

    assert sent == []  # nobody is left to answer
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "client disconnected before sending its whole body: POST /graphql" in [
        r.getMessage() for r in caplog.records
    ]
    assert await row_counts() == before
