"""Portal sessions (issue 11, point 6): ``createPortalSession`` mints a single-use, short-lived code for one
account; ``POST /portal/session`` exchanges it once for a PORTAL token that reads that account and pays for
it, and nothing else; the session expires and can be ended."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from creditline.app import create_app
from creditline.clock import Clock
from creditline.settings import Settings
from models import organizations, portal
from models.ids import encode_id
from models.tables import ApiToken, CreditAccount, PortalCode, TokenKind
from models.tokens import digest
from tests.support.backends import T0, Backend
from tests.support.helpers import Api, gid
from tests.support.snapshots import changed, snapshot

CREATE = """
mutation($input: CreatePortalSessionInput!) {
  createPortalSession(input: $input) {
    __typename
    ... on CreatePortalSessionSuccess { url code expiresAt accountId }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
"""
BALANCE = "{ me { email credit { id balance { total free paid } } } }"
TOP_UP = """
mutation($key: String!) {
  topUp(input: {credits: "10", paymentToken: "tok_visa", idempotencyKey: $key}) {
    __typename ... on TopUpSuccess { transaction { status credits } } ... on Error { message }
  }
}
"""
SPEND = """
mutation($user: ID!) {
  spendCredits(input: {userId: $user, agentId: "a", activity: "answer", credits: "1", idempotencyKey: "s"}) {
    __typename ... on Error { message }
  }
}
"""
REVOKE = """
mutation($id: ID) {
  revokePortalSession(input: {sessionId: $id}) {
    __typename
    ... on RevokePortalSessionSuccess { sessionId revokedAt }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
"""


async def create_session(api: Api, token: str, **input: Any) -> Any:
    return (await api.data(CREATE, {"input": input}, token))["createPortalSession"]


async def exchange(api: Api, code: str) -> httpx.Response:
    return await api.client.post("/portal/session", json={"code": code})


async def open_session(api: Api, admin: str, **input: Any) -> dict[str, Any]:
    created = await create_session(api, admin, **input)
    assert created["__typename"] == "CreatePortalSessionSuccess", created
    response = await exchange(api, created["code"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_platform_opens_my_credit_for_its_user_who_tops_up_but_cannot_spend(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=5)
    admin = await api.admin()
    account = await CreditAccount.get(user_id=user_id)

    created = await create_session(api, admin, userId=gid("User", user_id), returnUrl="https://platform.example/app")

    code = created["code"]
    assert created == {
        "__typename": "CreatePortalSessionSuccess",
        "url": f"http://test/my-credit/?code={code}",
        "code": code,
        "expiresAt": "2026-01-15T12:10:00+00:00",
        "accountId": gid("CreditAccount", account.id),
    }
    assert parse_qs(urlsplit(created["url"]).query) == {"code": [code]}
    stored = await PortalCode.get(account_id=account.id)
    assert (stored.code_hash, stored.created_by, stored.used_at) == (digest(code), "admin:ops", None)
    assert code not in json.dumps(await PortalCode.all().values(), default=str)

    response = await exchange(api, code)

    assert response.status_code == 200, response.text
    body = response.json()
    token = await ApiToken.get(token_hash=digest(body["token"]))
    assert body == {
        "token": body["token"],
        "sessionId": gid("ApiToken", token.id),
        "expiresAt": "2026-01-16T00:00:00+00:00",
        "idleTimeoutSeconds": 3600,
        "accountId": gid("CreditAccount", account.id),
        "returnUrl": "https://platform.example/app",
    }
    assert response.headers["cache-control"] == "no-store"
    assert body["token"].startswith("clp_")
    assert (token.kind, token.account_id, token.user_id, token.scopes, token.idle_timeout_seconds) == (
        TokenKind.PORTAL,
        account.id,
        None,
        "",
        3600,
    )
    session = body["token"]
    assert await api.data(BALANCE, token=session) == {
        "me": {
            "email": "ada@example.com",
            "credit": {"id": gid("CreditAccount", account.id), "balance": {"total": "5", "free": "5", "paid": "0"}},
        }
    }
    topped = await api.data(TOP_UP, {"key": "t1"}, session)
    assert topped == {"topUp": {"__typename": "TopUpSuccess", "transaction": {"status": "SUCCEEDED", "credits": "10"}}}
    before = await snapshot()
    spent = await api.data(SPEND, {"user": gid("User", user_id)}, session)
    assert spent == {
        "spendCredits": {
            "__typename": "Forbidden",
            "message": "This needs a service token with the 'usage:write' scope, or an admin token",
        }
    }
    assert changed(before, await snapshot()) == set()
    assert (await api.data(BALANCE, token=session))["me"]["credit"]["balance"] == {
        "total": "15",
        "free": "5",
        "paid": "10",
    }


async def test_an_organization_pool_session_reads_the_pool_and_me_is_forbidden(api: Api) -> None:
    owner_id, _ = await api.user("owner@example.com", bonus=0)
    admin = await api.admin()
    org = await organizations.create("Acme", owner_id, api.clock.now())
    org.external_id = "acme-1"
    await org.save()
    pool = await organizations.enable_pool(org.id, api.clock.now())

    body = await open_session(api, admin, externalOrganizationId="acme-1")

    assert body["accountId"] == gid("CreditAccount", pool.id)
    session = body["token"]
    me = await api.post("{ me { email } }", token=session)
    assert me == {
        "data": None,
        "errors": [
            {
                "message": "`me` is a user: this portal session is for an organization's credit pool; read it with"
                " node(id: accountId)",
                "locations": [{"line": 1, "column": 3}],
                "path": ["me"],
                "extensions": {"code": "FORBIDDEN"},
            }
        ],
    }
    read = await api.data(
        "query($id: ID!) { node(id: $id) { ... on CreditAccount { balance { total } } } }",
        {"id": body["accountId"]},
        session,
    )
    assert read == {"node": {"balance": {"total": "0"}}}
    topped = await api.data(TOP_UP, {"key": "t1"}, session)
    assert topped["topUp"]["__typename"] == "TopUpSuccess"
    assert (await CreditAccount.get(id=pool.id)).balance == 10_000_000
    owner_account = await CreditAccount.get(user_id=owner_id)
    assert owner_account.balance == 0


async def test_a_code_works_once(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com")
    admin = await api.admin()
    created = await create_session(api, admin, userId=gid("User", user_id))
    assert (await exchange(api, created["code"])).status_code == 200
    before = await snapshot()

    again = await exchange(api, created["code"])

    assert (again.status_code, again.json()) == (
        401,
        {
            "error": {
                "message": "This sign-in link is invalid, was used already or has expired: ask for a new one",
                "code": "INVALID_CODE",
            }
        },
    )
    assert changed(before, await snapshot()) == set()


async def test_a_code_expires_after_ten_minutes(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com")
    admin = await api.admin()
    early = await create_session(api, admin, userId=gid("User", user_id))
    late = await create_session(api, admin, userId=gid("User", user_id))

    api.clock.advance(timedelta(minutes=10) - timedelta(seconds=1))
    assert (await exchange(api, early["code"])).status_code == 200
    api.clock.advance(timedelta(seconds=1))
    before = await snapshot()
    expired = await exchange(api, late["code"])

    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "INVALID_CODE")
    assert changed(before, await snapshot()) == set()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[" * 1100 + b"]" * 1100, 400),  # deeper than the parser recurses
        (b'{"code": ' + b"9" * 5000 + b"}", 400),  # an integer longer than Python converts
        (b"[]", 400),
        (b"{}", 400),
        (b'{"code": 12}', 400),
        (b'{"code": ""}', 400),
        (b'{"code": "no-such-code"}', 401),
        (json.dumps({"code": "x" * 101}).encode(), 401),
        (json.dumps({"code": "caf\u00e9"}).encode(), 401),
        (b'{"code": "\\u0000"}', 401),
    ],
)
async def test_a_bad_exchange_is_refused_with_json_and_changes_nothing(api: Api, body: bytes, status: int) -> None:
    user_id, _ = await api.user("ada@example.com")
    await create_session(api, await api.admin(), userId=gid("User", user_id))
    before = await snapshot()

    response = await api.client.post("/portal/session", content=body, headers={"content-type": "application/json"})

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == ("BAD_REQUEST" if status == 400 else "INVALID_CODE")
    assert changed(before, await snapshot()) == set()


async def test_two_exchanges_at_once_open_one_session(api: Api, db: Backend) -> None:
    user_id, _ = await api.user("ada@example.com")
    admin = await api.admin()
    codes = [(await create_session(api, admin, userId=gid("User", user_id)))["code"] for _ in range(5)]

    for code in codes:
        first, second = await asyncio.gather(exchange(api, code), exchange(api, code))
        assert sorted([first.status_code, second.status_code]) == [200, 401]

    assert await ApiToken.filter(kind=TokenKind.PORTAL).count() == 5
    assert await PortalCode.filter(used_at=None).count() == 0


async def test_a_session_ends_at_its_absolute_expiry(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com")
    session = (await open_session(api, await api.admin(), userId=gid("User", user_id)))["token"]

    # Used every 48 minutes, the session outlives its 1-hour idle timeout, up to its 12 hours.
    for _ in range(14):
        api.clock.advance(timedelta(minutes=48))
        assert (await api.data(BALANCE, token=session))["me"]["email"] == "ada@example.com"
    api.clock.advance(timedelta(minutes=48) - timedelta(seconds=1))  # 12 hours less a second since it opened
    assert (await api.data(BALANCE, token=session))["me"]["email"] == "ada@example.com"
    api.clock.advance(timedelta(seconds=1))
    expired = await api.post(BALANCE, token=session)

    assert expired["data"] is None
    assert [(e["message"], e["extensions"]) for e in expired["errors"]] == [
        ("Send a valid token as 'Authorization: Bearer <token>'", {"code": "UNAUTHENTICATED"})
    ]


async def test_a_session_unused_for_an_hour_ends(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com")
    session = (await open_session(api, await api.admin(), userId=gid("User", user_id)))["token"]
    api.clock.advance(timedelta(minutes=30))
    assert (await api.data(BALANCE, token=session))["me"]["email"] == "ada@example.com"

    api.clock.advance(timedelta(hours=1) - timedelta(seconds=1))  # idle for an hour less a second: still open
    assert (await api.data(BALANCE, token=session))["me"]["email"] == "ada@example.com"
    api.clock.advance(timedelta(hours=1))
    idle = await api.post(BALANCE, token=session)

    assert idle["data"] is None
    assert [(e["message"], e["extensions"]) for e in idle["errors"]] == [
        ("Send a valid token as 'Authorization: Bearer <token>'", {"code": "UNAUTHENTICATED"})
    ]


async def test_the_session_signs_out_and_an_admin_or_portal_writer_ends_any_session(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com")
    admin = await api.admin()
    writer = await api.service("platform", scopes=("portal:write",))
    first = await open_session(api, writer, userId=gid("User", user_id))
    second = await open_session(api, writer, userId=gid("User", user_id))
    third = await open_session(api, writer, userId=gid("User", user_id))
    spender = await api.service()
    before = await snapshot()

    # Another session, a user and a spending service may not end it; a token that is no portal session is
    # unknown here; a portal session must name none but itself.
    refused = [
        (await api.data(REVOKE, {"id": second["sessionId"]}, first["token"]))["revokePortalSession"],
        (await api.data(REVOKE, {"id": second["sessionId"]}, user_token))["revokePortalSession"],
        (await api.data(REVOKE, {"id": second["sessionId"]}, spender))["revokePortalSession"],
        (await api.data(REVOKE, {"id": None}, admin))["revokePortalSession"],
    ]
    service_token = await ApiToken.get(kind=TokenKind.SERVICE, name="platform")
    not_a_session = await api.data(REVOKE, {"id": gid("ApiToken", service_token.id)}, admin)
    assert [r["__typename"] for r in refused] == ["Forbidden", "Forbidden", "Forbidden", "ValidationError"]
    assert refused[0]["message"] == (
        "A portal session may end itself only: ending another needs an admin token or a service token with the"
        " 'portal:write' scope"
    )
    assert refused[3] == {
        "__typename": "ValidationError",
        "message": "Give sessionId: this token is not a portal session",
        "field": "sessionId",
    }
    anonymous = await api.post(REVOKE, {"id": second["sessionId"]})
    assert anonymous["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert not_a_session == {
        "revokePortalSession": {"__typename": "NotFound", "message": "No portal session has this id"}
    }
    assert changed(before, await snapshot()) == set()

    signed_out = (await api.data(REVOKE, {"id": None}, first["token"]))["revokePortalSession"]
    by_admin = (await api.data(REVOKE, {"id": second["sessionId"]}, admin))["revokePortalSession"]
    by_writer = (await api.data(REVOKE, {"id": third["sessionId"]}, writer))["revokePortalSession"]
    again = (await api.data(REVOKE, {"id": third["sessionId"]}, admin))["revokePortalSession"]

    assert [signed_out["sessionId"], by_admin["sessionId"], by_writer["sessionId"]] == [
        first["sessionId"],
        second["sessionId"],
        third["sessionId"],
    ]
    assert (
        again
        == by_writer
        == {
            "__typename": "RevokePortalSessionSuccess",
            "sessionId": third["sessionId"],
            "revokedAt": "2026-01-15T12:00:00+00:00",
        }
    )
    for ended in (first, second, third):
        answer = await api.post(BALANCE, token=ended["token"])
        assert answer["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert (await api.data(BALANCE, token=user_token))["me"]["email"] == "ada@example.com"


def _user_gid(pk: int) -> str:
    return gid("User", pk)


async def test_bad_input_to_create_portal_session_is_typed_and_changes_nothing(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com")
    owner_id, _ = await api.user("owner@example.com")
    org = await organizations.create("No pool", owner_id, api.clock.now())
    admin = await api.admin()
    spender = await api.service()
    account = await CreditAccount.get(user_id=user_id)
    whose = "accountId, userId, externalUserId, organizationId or externalOrganizationId"
    cases: list[tuple[str | None, dict[str, Any], dict[str, Any]]] = [
        (admin, {}, {"__typename": "ValidationError", "message": f"Give exactly one of {whose}", "field": "accountId"}),
        (
            admin,
            {"userId": _user_gid(user_id), "accountId": gid("CreditAccount", account.id)},
            {"__typename": "ValidationError", "message": f"Give exactly one of {whose}", "field": "accountId"},
        ),
        (admin, {"accountId": gid("User", user_id)}, {"__typename": "NotFound", "message": "Credit account not found"}),
        (admin, {"userId": _user_gid(999)}, {"__typename": "NotFound", "message": "User not found"}),
        (
            admin,
            {"externalUserId": "nobody"},
            {"__typename": "NotFound", "message": "No user has externalId 'nobody'"},
        ),
        (
            admin,
            {"externalUserId": "bad\u200bid"},
            {
                "__typename": "ValidationError",
                "message": "externalUserId must contain only printable characters: U+200B is an invisible or"
                " bidirectional formatting character",
                "field": "externalUserId",
            },
        ),
        (
            admin,
            {"organizationId": gid("Organization", org.id)},
            {"__typename": "NotFound", "message": "The organization has no credit pool (enableCreditPool)"},
        ),
        (
            admin,
            {"userId": _user_gid(user_id), "returnUrl": "javascript:alert(1)"},
            {
                "__typename": "ValidationError",
                "message": "returnUrl must be an absolute http or https URL",
                "field": "returnUrl",
            },
        ),
        *[
            (
                admin,
                {"userId": _user_gid(user_id), "returnUrl": url},
                {
                    "__typename": "ValidationError",
                    "message": "returnUrl must be an absolute http or https URL",
                    "field": "returnUrl",
                },
            )
            for url in ("http://[::1", "https://x:99999999/", "https://x:port/", "https://:443/")
        ],
        *[
            (
                admin,
                {"userId": _user_gid(user_id), "returnUrl": url},
                {
                    "__typename": "ValidationError",
                    "message": "returnUrl must not contain a user name or password",
                    "field": "returnUrl",
                },
            )
            for url in ("https://user:pass@evil.com", "https://platform.example@evil.com/app")
        ],
        (
            admin,
            {"userId": _user_gid(user_id), "returnUrl": "/relative"},
            {
                "__typename": "ValidationError",
                "message": "returnUrl must be an absolute http or https URL",
                "field": "returnUrl",
            },
        ),
        (
            admin,
            {"userId": _user_gid(user_id), "returnUrl": "https://x.example/" + "a" * 2000},
            {
                "__typename": "ValidationError",
                "message": "returnUrl must be 1 to 2000 characters",
                "field": "returnUrl",
            },
        ),
        (
            user_token,
            {"userId": _user_gid(user_id)},
            {
                "__typename": "Forbidden",
                "message": "This needs a service token with the 'portal:write' scope, or an admin token",
            },
        ),
        (
            spender,
            {"userId": _user_gid(user_id)},
            {
                "__typename": "Forbidden",
                "message": "This needs a service token with the 'portal:write' scope, or an admin token",
            },
        ),
    ]
    for token, input, expected in cases:
        before = await snapshot()
        assert token is not None
        got = await create_session(api, token, **input)
        assert got == expected, input
        assert changed(before, await snapshot()) == set(), input
    anonymous = await api.post(CREATE, {"input": {"userId": _user_gid(user_id)}})
    assert anonymous["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert await PortalCode.all().count() == 0


async def test_the_link_is_on_the_public_url_when_it_is_set(db: Backend, clock: Clock, settings: Settings) -> None:
    public = replace(settings, public_url="https://billing.example.com")
    app = create_app(public, clock=clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000") as client:
        api = Api(client, app, clock, public)
        user_id, _ = await api.user("ada@example.com")
        created = await create_session(api, await api.admin(), userId=gid("User", user_id))
    assert created["url"] == f"https://billing.example.com/my-credit/?code={created['code']}"


async def test_exchanges_are_rate_limited_like_other_anonymous_requests(
    db: Backend, clock: Clock, settings: Settings
) -> None:
    limited = replace(settings, rate_limit=True, rate_limit_anonymous_burst=2, rate_limit_anonymous_per_second=0.001)
    app = create_app(limited, clock=clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        answers = [(await client.post("/portal/session", json={"code": f"guess-{n}"})).status_code for n in range(3)]
    assert answers == [401, 401, 429]


async def test_a_portal_code_is_stored_as_a_digest_with_its_lifetime(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com")
    account = await CreditAccount.get(user_id=user_id)
    code, row = await portal.mint_code(
        account.id, created_by="cli:demo", now=T0, lifetime=timedelta(seconds=90), return_url=None
    )
    assert (row.code_hash, row.expires_at, row.created_by) == (digest(code), T0 + timedelta(seconds=90), "cli:demo")
    assert portal.portal_link("http://127.0.0.1:8000/", code) == f"http://127.0.0.1:8000/my-credit/?code={code}"
    assert encode_id("CreditAccount", account.id) == gid("CreditAccount", account.id)


async def test_a_session_exports_and_prints_its_own_account_only(api: Api) -> None:
    ada, _ = await api.user("ada@example.com")
    eve, _ = await api.user("eve@example.com")
    admin = await api.admin()
    session = (await open_session(api, admin, userId=gid("User", ada)))["token"]
    assert (await api.data(TOP_UP, {"key": "t1"}, session))["topUp"]["__typename"] == "TopUpSuccess"
    own = gid("CreditAccount", (await CreditAccount.get(user_id=ada)).id)
    other = gid("CreditAccount", (await CreditAccount.get(user_id=eve)).id)
    invoices = await api.data("{ me { credit { invoices(first: 1) { edges { node { id } } } } } }", token=session)
    invoice = invoices["me"]["credit"]["invoices"]["edges"][0]["node"]["id"]
    headers = {"authorization": f"Bearer {session}"}

    answers = {
        path: (await api.client.get(path, headers=headers)).status_code
        for path in (
            f"/exports/usage.csv?account={own}",
            f"/exports/transactions.csv?account={own}",
            f"/invoices/{invoice}",
            f"/exports/usage.csv?account={other}",
            f"/exports/transactions.csv?account={other}",
        )
    }

    assert list(answers.values()) == [200, 200, 200, 403, 403]
