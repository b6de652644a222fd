"""The boundary checks (resolvers/boundary.py), alone and as GraphQL clients meet them.

Properties (hypothesis, fixed seed): each validator accepts exactly the valid values, as a rule stated here
independently of its code, and raises nothing but ``InputError`` whatever it is given. Then the examples of
issue 9 through the API, on both databases: lone surrogates, NUL, invisible and bidirectional characters,
over-long text and emails, dates outside what the databases and Python hold, malformed cursors and ids; each
gets a typed error and changes nothing."""

from __future__ import annotations

import contextlib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.tables import CreditLot
from resolvers import boundary
from tests.support.bad_input import DATETIME_RANGE, GRANT, SPEND_INPUT, World, post, without_locations
from tests.support.bad_input import world as world
from tests.support.helpers import SPEND, gid

PROPERTIES = settings(
    derandomize=True, database=None, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Any code point, lone surrogates included, with the characters that matter drawn often.
SPECIAL = ["\x00", "\t", "\n", "\x7f", "\x85", "\xa0", " ", "\u2028", "\ue000", *map(chr, sorted(boundary.INVISIBLE))]
characters = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.integers(min_value=0xD800, max_value=0xDFFF).map(chr),
    st.sampled_from(SPECIAL),
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),
)
texts = st.text(characters, max_size=40)
anything = st.one_of(texts, st.none(), st.integers(), st.floats(), st.binary(max_size=8), st.lists(st.integers()))


def printable(char: str) -> bool:
    """Printable as an identifier allows: a space, or a character that is no control, format, surrogate,
    private-use, unassigned, line or paragraph separator, nor a space other than U+0020."""
    category = unicodedata.category(char)
    return char == " " or not (category.startswith("C") or category in ("Zl", "Zp", "Zs"))


def refused(check: Any, *args: Any, **kwargs: Any) -> boundary.InputError | None:
    try:
        check(*args, **kwargs)
    except boundary.InputError as exc:
        return exc
    return None


@PROPERTIES
@given(texts, st.integers(min_value=1, max_value=20))
def test_identifier_accepts_exactly_short_printable_text(value: str, max_length: int) -> None:
    valid = bool(value.strip()) and len(value) <= max_length and all(printable(char) for char in value)

    error = refused(boundary.identifier, value, "agentId", max_length)

    assert (error is None) == valid, (value, error)
    if error is None:
        assert boundary.identifier(value, "agentId", max_length) == value
    else:
        assert error.field == "agentId"
        assert error.message.startswith("agentId must ")


@PROPERTIES
@given(texts)
def test_a_key_may_be_spaces_alone_but_nothing_invisible(value: str) -> None:
    valid = 1 <= len(value) <= 255 and all(printable(char) for char in value)

    assert (refused(boundary.key, value) is None) == valid, value


@pytest.mark.parametrize("code", sorted(boundary.INVISIBLE))
def test_every_zero_width_and_bidirectional_control_is_refused_in_identifiers(code: int) -> None:
    error = refused(boundary.identifier, f"agent{chr(code)}1", "activity", 100)

    assert error is not None
    assert error.message == (
        f"activity must contain only printable characters: U+{code:04X} is an invisible or bidirectional"
        " formatting character"
    )


@PROPERTIES
@given(texts, st.integers(min_value=1, max_value=20))
def test_free_text_accepts_any_script_but_no_controls_or_lone_surrogates(value: str, max_length: int) -> None:
    clean = all(unicodedata.category(char) not in ("Cc", "Cs") for char in value)
    valid = bool(value.strip()) and len(value) <= max_length and clean

    assert (refused(boundary.text, value, "name", max_length) is None) == valid, value
    assert (refused(boundary.optional_text, value, "reason", max_length) is None) == (
        len(value) <= max_length and clean
    )


@PROPERTIES
@given(texts)
def test_storable_text_refuses_only_nul_and_lone_surrogates(value: str) -> None:
    valid = "\x00" not in value and all(unicodedata.category(char) != "Cs" for char in value)

    assert (refused(boundary.storable, value, "body") is None) == valid, value


local_parts = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789._+-"), min_size=1, max_size=64)
labels = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=20)
emails = st.builds(
    lambda local, names: f"{local}@{'.'.join(names)}", local_parts, st.lists(labels, min_size=2, max_size=4)
)


@PROPERTIES
@given(emails, st.booleans())
def test_an_email_of_the_usual_shape_is_accepted_lower_cased(email: str, shout: bool) -> None:
    given_email = email.upper() if shout else email
    error = refused(boundary.email, given_email)

    assert (error is None) == (len(email) <= 254), (email, error)
    if error is None:
        assert boundary.email(f"  {given_email} ") == email


LOOK_ALIKE = "email must not contain characters that read as others (such as fullwidth letters)"


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("a" * 243 + "@example.com", "email must be 1 to 254 characters"),
        ("a" * 65 + "@example.com", "email must be an email address such as ada@example.com"),
        ("ada@localhost", "email must be an email address such as ada@example.com"),
        ("ada@@example.com", "email must be an email address such as ada@example.com"),
        ("ada example@example.com", "email must be an email address such as ada@example.com"),
        ("ada@exam\u200bple.com", "email must be an email address such as ada@example.com"),
        ("ada\x00@example.com", "email must not contain control characters"),
        ("\ud800@example.com", "email must be valid Unicode: it contains a lone surrogate (U+D800)"),
        ("", "email must be 1 to 254 characters"),
        # Characters that lower() or NFKC turn into ASCII letters: kate@... must stay Kate's alone.
        ("\u212aate@x.io", LOOK_ALIKE),  # KELVIN SIGN: lower() is "k"
        ("\uff4bate@x.io", LOOK_ALIKE),  # FULLWIDTH K
        ("\u0130nfo@x.io", LOOK_ALIKE),  # I WITH DOT ABOVE: lower() is "i" and a combining dot
        ("kate@x.\u2139o", LOOK_ALIKE),  # INFORMATION SOURCE: NFKC is "i"
    ],
)
def test_malformed_emails_are_refused_with_the_reason(email: str, message: str) -> None:
    error = refused(boundary.email, email)

    assert error is not None
    assert error.message == message


def test_letters_beyond_ascii_are_lower_cased_as_themselves() -> None:
    assert boundary.email("\u00c9mile@Exemple.fr") == "\u00e9mile@exemple.fr"
    assert boundary.email("\u0391da@example.com") == "\u03b1da@example.com"  # Greek, not Latin "a"


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def in_range_utc(value: datetime) -> bool:
    """Whether ``value`` names an instant from 1970 to 9999-01-01 UTC, computed without conversion."""
    offset = value.utcoffset()
    assert offset is not None
    naive = value.replace(tzinfo=None)
    lowest, highest = boundary.EARLIEST.replace(tzinfo=None), boundary.LATEST.replace(tzinfo=None)
    return lowest + offset <= naive <= highest + offset


@PROPERTIES
@given(st.datetimes(timezones=st.one_of(st.none(), offsets, st.just(UTC))))
def test_a_timestamp_is_accepted_exactly_with_a_zone_and_between_1970_and_9999(value: datetime) -> None:
    valid = value.tzinfo is not None and in_range_utc(value)

    error = refused(boundary.timestamp, value, "expiresAt")

    assert (error is None) == valid, (value, error)
    if value.tzinfo is None:
        assert error is not None
        assert error.message == "expiresAt must include a time zone, e.g. 2026-01-31T00:00:00Z"


@PROPERTIES
@given(st.one_of(texts, st.datetimes(timezones=offsets).map(datetime.isoformat)))
def test_a_parsed_timestamp_is_in_range_or_refused(value: str) -> None:
    error = refused(boundary.parse_timestamp, value, "from")

    if error is None:
        parsed = boundary.parse_timestamp(value, "from")
        assert parsed.tzinfo is not None
        assert boundary.EARLIEST <= parsed <= boundary.LATEST
    else:
        assert error.field == "from"


@PROPERTIES
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=offsets))
def test_every_instant_in_range_round_trips_through_its_iso_text(value: datetime) -> None:
    assert boundary.parse_timestamp(value.isoformat(), "to") == value


@PROPERTIES
@given(st.one_of(st.integers(min_value=0, max_value=10**12 - 1).map(str), texts))
def test_digits_accept_exactly_ascii_digit_strings(value: str) -> None:
    valid = 1 <= len(value) <= 12 and all(char in "0123456789" for char in value)

    error = refused(boundary.digits, value, "expires", 12)

    assert (error is None) == valid, value
    if valid:
        assert boundary.digits(value, "expires", 12) == int(value)


@PROPERTIES
@given(st.binary(max_size=40))
def test_utf8_decodes_or_names_the_offset(body: bytes) -> None:
    try:
        expected: str | None = body.decode()
    except UnicodeDecodeError as exc:
        expected, start = None, exc.start
    error = refused(boundary.utf8, body)

    assert (error is None) == (expected is not None)
    if error is not None:
        assert error.message == f"body is not UTF-8 (invalid byte at offset {start})"


@PROPERTIES
@given(anything)
def test_no_validator_raises_anything_but_its_own_error(value: Any) -> None:
    checks = [
        lambda: boundary.identifier(value, "f", 10),
        lambda: boundary.key(value),
        lambda: boundary.text(value, "f", 10),
        lambda: boundary.optional_text(value, "f", 10),
        lambda: boundary.storable(value, "f"),
        lambda: boundary.email(value),
        lambda: boundary.timestamp(value, "f"),
        lambda: boundary.parse_timestamp(value, "f"),
        lambda: boundary.integer(value, "f", 1, 100),
        lambda: boundary.digits(value, "f", 12),
        lambda: boundary.hex_digest(value, "f", 64),
    ]
    for check in checks:
        with contextlib.suppress(boundary.InputError):
            check()


@PROPERTIES
@given(st.one_of(st.integers(), st.booleans(), texts))
def test_integer_accepts_exactly_ints_in_range(value: Any) -> None:
    valid = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100

    assert (refused(boundary.integer, value, "first", 1, 100) is None) == valid


# ------------------------------------------------------------------------------------------- through GraphQL


def validation(message: str, field: str | None) -> dict[str, Any]:
    return {"__typename": "ValidationError", "message": message, "field": field}


SURROGATE = "\ud83d"
"""The first half of an emoji, alone."""


def surrogate(field: str) -> dict[str, Any]:
    return validation(f"{field} must be valid Unicode: it contains a lone surrogate (U+D83D)", field)


def invisible(field: str, code: int) -> dict[str, Any]:
    return validation(
        f"{field} must contain only printable characters: U+{code:04X} is an invisible or bidirectional"
        " formatting character",
        field,
    )


HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename ... on ValidationError { message field } } }"""
CREATE_ORG = """mutation($name: String!) { createOrganization(input: {name: $name}) {
  __typename ... on ValidationError { message field } } }"""
ADD_MEMBER = """mutation($email: String!, $org: ID! = "T3JnYW5pemF0aW9uOjE=") {
  addMember(input: {organizationId: $org, email: $email, roles: [MEMBER]}) {
  __typename ... on ValidationError { message field } ... on Error { message } } }"""
TOP_UP = """mutation($token: String!) { topUp(input: {credits: "50", paymentToken: $token, idempotencyKey: "t-1"}) {
  __typename ... on ValidationError { message field } } }"""
ADD_CARD = """mutation($token: String!) { addPaymentMethod(input: {token: $token}) {
  __typename ... on ValidationError { message field } } }"""
SUBSCRIBE = """mutation($plan: String!) { subscribe(input: {planId: $plan, idempotencyKey: "s-1"}) {
  __typename ... on ValidationError { message field } } }"""
REFUND = """mutation($reason: String, $txn: ID! = "VHJhbnNhY3Rpb246MQ==") {
  refundPayment(input: {transactionId: $txn, reason: $reason, idempotencyKey: "r-1"}) {
  __typename ... on ValidationError { message field } } }"""

MUTATION_CASES = [
    # (document, variables, caller, result field, expected)
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "agentId": f"agent{SURROGATE}", "idempotencyKey": "k"}},
                 "service", "spendCredits", surrogate("agentId"), id="spend-surrogate-agent"),
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "activity": SURROGATE, "idempotencyKey": "k"}},
                 "service", "spendCredits", surrogate("activity"), id="spend-surrogate-activity"),
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "idempotencyKey": f"k{SURROGATE}"}},
                 "service", "spendCredits", surrogate("idempotencyKey"), id="spend-surrogate-key"),
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "agentId": "support\u200bbot", "idempotencyKey": "k"}},
                 "service", "spendCredits", invisible("agentId", 0x200B), id="spend-zero-width-agent"),
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "activity": "\u202eanswer", "idempotencyKey": "k"}},
                 "service", "spendCredits", invisible("activity", 0x202E), id="spend-bidi-override-activity"),
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "idempotencyKey": "\ufeffk"}},
                 "service", "spendCredits", invisible("idempotencyKey", 0xFEFF), id="spend-bom-in-key"),
    pytest.param(SPEND, {"input": {**SPEND_INPUT, "agentId": "agent\x85", "idempotencyKey": "k"}},
                 "service", "spendCredits", validation("agentId must not contain control characters", "agentId"),
                 id="spend-c1-control-agent"),
    pytest.param(HOLD, {"input": {**SPEND_INPUT, "agentId": "a\u2066b\u2069", "idempotencyKey": "k"}},
                 "service", "holdCredits", invisible("agentId", 0x2066), id="hold-isolate-agent"),
    pytest.param(GRANT, {"input": {"accountId": gid("CreditAccount", 1), "credits": "1", "kind": "FREE",
                                   "reason": f"promo{SURROGATE}", "idempotencyKey": "g"}},
                 "admin", "grantCredits", surrogate("reason"), id="grant-surrogate-reason"),
    pytest.param(CREATE_ORG, {"name": f"Acme{SURROGATE}"}, "user", "createOrganization", surrogate("name"),
                 id="organization-surrogate-name"),
    pytest.param(CREATE_ORG, {"name": "Acme\x00"}, "user", "createOrganization",
                 validation("name must not contain control characters", "name"), id="organization-nul-name"),
    pytest.param(CREATE_ORG, {"name": "A" * 201}, "user", "createOrganization",
                 validation("name must be 1 to 200 characters", "name"), id="organization-over-long-name"),
    pytest.param(ADD_MEMBER, {"email": "b" * 243 + "@example.com"}, "admin", "addMember",
                 validation("email must be 1 to 254 characters", "email"), id="member-over-long-email"),
    pytest.param(ADD_MEMBER, {"email": f"bob{SURROGATE}@example.com"}, "admin", "addMember", surrogate("email"),
                 id="member-surrogate-email"),
    pytest.param(ADD_MEMBER, {"email": "bob\x00@example.com"}, "admin", "addMember",
                 validation("email must not contain control characters", "email"), id="member-nul-email"),
    pytest.param(TOP_UP, {"token": f"tok_visa{SURROGATE}"}, "user", "topUp", surrogate("paymentToken"),
                 id="top-up-surrogate-token"),
    pytest.param(ADD_CARD, {"token": "tok_\u200bvisa"}, "user", "addPaymentMethod", invisible("token", 0x200B),
                 id="card-zero-width-token"),
    pytest.param(SUBSCRIBE, {"plan": f"pro{SURROGATE}"}, "user", "subscribe", surrogate("planId"),
                 id="subscribe-surrogate-plan"),
    pytest.param(REFUND, {"reason": SURROGATE}, "admin", "refundPayment", surrogate("reason"),
                 id="refund-surrogate-reason"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "variables", "caller", "field", "expected"), MUTATION_CASES)
async def test_malformed_strings_in_mutations_are_a_validation_error_and_change_nothing(
    world: World, document: str, variables: dict[str, Any], caller: str, field: str, expected: dict[str, Any]
) -> None:
    before = await world.state()

    body = await post(world.api, document, variables, getattr(world, caller))

    assert body == {"data": {field: expected}}
    assert await world.state() == before


@pytest.mark.parametrize(
    "expires_at",
    ["9999-12-31T23:59:59-14:00", "9999-06-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z"],
)
async def test_a_grant_expiring_outside_the_range_is_refused_and_the_account_stays_readable(
    world: World, expires_at: str
) -> None:
    """9999-12-31T23:59:59-14:00 was granted, then could never be read back: every later read of the account's
    lots failed with "Unexpected error"."""
    before = await world.state()
    variables = {
        "input": {
            "accountId": gid("CreditAccount", 1),
            "credits": "1",
            "kind": "FREE",
            "expiresAt": expires_at,
            "idempotencyKey": "g",
        }
    }

    body = await post(world.api, GRANT, variables, world.admin)

    assert body["data"] is None
    assert [error["message"] for error in body["errors"]] == [
        f"Variable '$input' has invalid value at .expiresAt: Value cannot represent a DateTime:"
        f' "{expires_at}". {DATETIME_RANGE}.'
    ]
    assert await world.state() == before
    assert await CreditLot.filter(account_id=1).count() == 1


async def test_a_grant_at_the_last_instant_in_range_is_accepted_and_read_back(world: World) -> None:
    variables = {
        "input": {
            "accountId": gid("CreditAccount", 1),
            "credits": "1",
            "kind": "FREE",
            "expiresAt": "9999-01-01T00:00:00Z",
            "idempotencyKey": "g",
        }
    }

    body = await post(world.api, GRANT, variables, world.admin)

    assert body == {"data": {"grantCredits": {"__typename": "GrantCreditsSuccess"}}}
    balance, _ = await world.state()
    lots = [edge["node"] for edge in balance["me"]["credit"]["lots"]["edges"]]
    assert {"amount": "1", "expiresAt": "9999-01-01T00:00:00+00:00"} in lots


USAGE = "query($filter: UsageFilter) { me { credit { usage(first: 5, filter: $filter) { edges { node { id } } } } } }"
TRANSACTIONS = (
    "query($filter: TransactionFilter) { me { credit { transactions(first: 5, filter: $filter) {"
    " edges { node { id } } } } } }"
)
REPORT = """query($input: UsageReportInput!) { me { credit { usageReport(input: $input) {
  __typename ... on ValidationError { message field } } } } }"""


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"agentId": f"agent{SURROGATE}"}, "agentId must be valid Unicode: it contains a lone surrogate (U+D83D)"),
        ({"activity": "ans\x00wer"}, "activity must not contain control characters"),
        ({"agentId": "a\u200fb"}, "agentId must contain only printable characters: U+200F is an invisible or"
         " bidirectional formatting character"),
        ({"agentId": "a" * 201}, "agentId must be 1 to 200 characters"),
    ],
)  # fmt: skip
async def test_malformed_usage_filters_are_a_bad_filter_error(
    world: World, filter: dict[str, str], message: str
) -> None:
    body = await post(world.api, USAGE, {"filter": filter}, world.user)

    assert without_locations(body) == {
        "data": None,
        "errors": [{"message": message, "path": ["me", "credit", "usage"], "extensions": {"code": "BAD_FILTER"}}],
    }


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1900-01-01T00:00:00Z"])
@pytest.mark.parametrize(("document", "name"), [(USAGE, "UsageFilter"), (TRANSACTIONS, "TransactionFilter")])
async def test_filter_dates_outside_the_range_are_refused_before_any_query(
    world: World, moment: str, document: str, name: str
) -> None:
    body = await post(world.api, document, {"filter": {"from": moment}}, world.user)

    assert [error["message"] for error in body["errors"]] == [
        f"Variable '$filter' has invalid value at .from: Value cannot represent a DateTime: \"{moment}\"."
        f" {DATETIME_RANGE}."
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # These three were "Unexpected error": the conversion to the report's time zone overflowed.
        ({"to": "9999-12-31T23:00:00Z", "timeZone": "Pacific/Kiritimati"}, "top-level"),
        ({"from": "0001-01-01T00:00:00Z", "timeZone": "Pacific/Honolulu"}, "top-level"),
        ({"from": "9999-12-31T23:00:00-14:00"}, "top-level"),
        ({"timeZone": "UTC\x00"}, validation("timeZone must not contain control characters", "timeZone")),
        ({"timeZone": "Europe/" + "x" * 100}, validation("timeZone must be 1 to 64 characters", "timeZone")),
        ({"timeZone": f"UTC{SURROGATE}"}, surrogate("timeZone")),
    ],
)
async def test_malformed_report_inputs_are_refused(world: World, changes: dict[str, str], expected: Any) -> None:
    report = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "granularity": "DAY", **changes}

    body = await post(world.api, REPORT, {"input": report}, world.user)

    if expected == "top-level":
        moment = changes.get("to") or changes["from"]
        field = "to" if "to" in changes else "from"
        assert [error["message"] for error in body["errors"]] == [
            f"Variable '$input' has invalid value at .{field}: Value cannot represent a DateTime: \"{moment}\"."
            f" {DATETIME_RANGE}."
        ]
    else:
        assert body == {"data": {"me": {"credit": {"usageReport": expected}}}}


LOTS = "query($after: String) { me { credit { lots(first: 5, after: $after) { edges { node { id } } } } } }"
NODE = "query($id: ID!) { node(id: $id) { id } }"


@pytest.mark.parametrize(
    "after",
    [SURROGATE, "\x00", "Y3Vyc29yOjE=" * 1000, gid("User", 1), gid("cursor", 10**19), "not base64!"],
    ids=["surrogate", "nul", "over-long", "a-user-id", "out-of-range", "not-base64"],
)
async def test_a_malformed_cursor_is_a_bad_pagination_error(world: World, after: str) -> None:
    body = await post(world.api, LOTS, {"after": after}, world.user)

    assert without_locations(body) == {
        "data": None,
        "errors": [
            {
                "message": "after is not a cursor from this connection",
                "path": ["me", "credit", "lots"],
                "extensions": {"code": "BAD_PAGINATION"},
            }
        ],
    }


@pytest.mark.parametrize(
    "node_id",
    [SURROGATE, "\x00", gid("User", 1) * 1000, gid("User", 10**19), gid("Nothing", 1), "VXNlcjotMQ=="],
    ids=["surrogate", "nul", "over-long", "out-of-range", "unknown-type", "negative"],
)
async def test_a_malformed_node_id_is_null(world: World, node_id: str) -> None:
    assert await post(world.api, NODE, {"id": node_id}, world.user) == {"data": {"node": None}}


async def test_credits_of_5000_digits_are_refused_by_length(world: World) -> None:
    before = await world.state()

    body = await post(world.api, SPEND, {"input": {**SPEND_INPUT, "credits": "1" * 5000, "idempotencyKey": "k"}},
                      world.service)  # fmt: skip

    [error] = body["errors"]
    assert error["message"].startswith(
        "Variable '$input' has invalid value at .credits: Expected value of type 'Credits', but encountered error"
        " 'Credits must be at most 32 characters, got 5000'"
    )
    assert await world.state() == before
