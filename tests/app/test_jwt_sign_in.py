"""JWT sign-in (issue 11, point 5): tokens of the platform's identity provider, signed with keys made here and
published as a JWKS by a real local server, authenticate as the user whose externalId is their ``sub``;
every malformed, forged or stale one is ``UNAUTHENTICATED``; the keys are fetched again on rotation, and a
flood of unknown kids does not hammer the provider."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from websockets.asyncio.client import ClientConnection

from creditline.app import CreditlineApp, create_app
from creditline.clock import Clock
from creditline.graphql import GraphQLEndpoint
from creditline.jwt_keys import JwksKeys, parse_jwks
from creditline.live import EXPIRED, TokenWatch
from creditline.settings import Settings
from models import ledger
from models.credits import MICRO
from models.tables import CreditAccount, TokenKind, User
from models.tokens import create_token
from resolvers.jwt_sign_in import JwtSignIn
from tests.support.backends import Backend
from tests.support.helpers import SPEND, Api, gid
from tests.support.jwks import AUDIENCE, ISSUER, JwksServer, KeyPair, claims, ec_key, rsa_key, serving
from tests.support.live import Live, connect, receive, serve
from tests.support.snapshots import snapshot

ME = "query { me { email credit { balance { total } } } }"
UNAUTHENTICATED = {
    "data": None,
    "errors": [
        {
            "message": "Send a valid token as 'Authorization: Bearer <token>'",
            "locations": [{"line": 1, "column": 9}],
            "path": ["me"],
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ],
}


class FakeMonotonic:
    """The key source's clock for its fetch intervals, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    async with serving(rsa_key("rsa-1"), ec_key("ec-1")) as server:
        yield server


def jwt_settings(settings: Settings, jwks: JwksServer, **more: Any) -> Settings:
    jwt: dict[str, Any] = {
        "jwt_jwks_url": jwks.url,
        "jwt_issuer": ISSUER,
        "jwt_audience": (AUDIENCE,),
        "jwt_algorithms": ("RS256", "ES256"),
    }
    return replace(settings, **{**jwt, **more})


@pytest.fixture
async def app_api(db: Backend, clock: Clock, settings: Settings, idp: JwksServer) -> AsyncIterator[Api]:
    app_settings = jwt_settings(settings, idp)
    app = create_app(app_settings, clock=clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(client, app, clock, app_settings)
    await jwks_keys(app).aclose()


def sign_in(app: Any) -> JwtSignIn:
    found = app.state.auth.jwt
    assert isinstance(found, JwtSignIn)
    return found


def jwks_keys(app: Any) -> JwksKeys:
    keys = sign_in(app).keys
    assert isinstance(keys, JwksKeys)
    return keys


async def platform_user(clock: Clock, sub: str = "idp-user-1", email: str = "ada@example.com") -> int:
    """A user the platform provisioned with its id ``sub``, with 10 free credits."""
    user_id = await ledger.create_user(
        email, signup_bonus=10 * MICRO, bonus_lifetime=timedelta(days=30), now=clock.now()
    )
    await User.filter(id=user_id).update(external_id=sub)
    return user_id


CREATE_TOKEN = """
mutation Create($input: CreateApiTokenInput!) {
  createApiToken(input: $input) {
    __typename
    ... on CreateApiTokenSuccess { apiToken { expiresAt } }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
"""


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -------------------------------------------------------------------------------------------- accepted


async def test_a_valid_rs256_or_es256_token_signs_in_as_the_user_whose_external_id_is_its_sub(
    app_api: Api, idp: JwksServer
) -> None:
    await platform_user(app_api.clock)
    for key in idp.keys:
        token = key.sign(claims(app_api.clock.now()))
        assert await app_api.data(ME, token=token) == {
            "me": {"email": "ada@example.com", "credit": {"balance": {"total": "10"}}}
        }
    assert idp.fetches == 1  # both kids came in the first fetch


async def test_leeway_admits_a_token_that_expired_or_starts_within_it(app_api: Api, idp: JwksServer) -> None:
    await platform_user(app_api.clock)
    rsa = idp.keys[0]
    now = app_api.clock.now()
    expired_20s_ago = claims(now, iat=int(now.timestamp()) - 100, exp=int(now.timestamp()) - 20)
    starts_in_20s = claims(now, nbf=int(now.timestamp()) + 20, iat=int(now.timestamp()) + 20)
    for body in (expired_20s_ago, starts_in_20s):
        assert (await app_api.data(ME, token=rsa.sign(body)))["me"]["email"] == "ada@example.com"


# -------------------------------------------------------------------------------------------- refused


def refused_tokens(idp: JwksServer, api: Api) -> dict[str, str]:
    rsa, ec = idp.keys
    now = api.clock.now()
    ts = int(now.timestamp())
    valid = rsa.sign(claims(now))
    head, body, signature = valid.split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    forged_body = b64({**claims(now), "sub": "idp-admin"})
    public_pem = rsa.public_pem.encode()
    hs_header = b64({"alg": "HS256", "typ": "JWT", "kid": rsa.kid})
    hs_body = b64(claims(now))
    hmac_signed = _hmac_signed(f"{hs_header}.{hs_body}", public_pem)
    return {
        "expired beyond the leeway": rsa.sign(claims(now, iat=ts - 3600, exp=ts - 31)),
        "wrong audience": rsa.sign(claims(now, aud="another-service")),
        "wrong issuer": rsa.sign(claims(now, iss="https://evil.example.com/")),
        "unknown kid": KeyPair("rsa-unknown", "RS256", rsa_key("x").private).sign(claims(now)),
        "signed by another key with a known kid": KeyPair(rsa.kid, "RS256", rsa_key("x").private).sign(claims(now)),
        "tampered signature": f"{head}.{body}.{flipped}",
        "tampered claims": f"{head}.{forged_body}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': rsa.kid})}.{b64(claims(now))}.",
        "alg None with a signature": f"{b64({'alg': 'None', 'kid': rsa.kid})}.{b64(claims(now))}.{signature}",
        "HS256 signed with the public key as the secret": hmac_signed,
        "RS256 header on the EC key's kid": KeyPair(ec.kid, "RS256", rsa.private).sign(claims(now)),
        "ES256 header on the RSA key's kid": KeyPair(rsa.kid, "ES256", ec.private).sign(claims(now)),
        "RS384, not allowed": KeyPair(rsa.kid, "RS384", rsa.private).sign(claims(now)),
        "missing sub": rsa.sign(claims(now, sub=None)),
        "missing exp": rsa.sign(claims(now, exp=None)),
        "exp not a number": rsa.sign(claims(now, exp="tomorrow")),
        "empty sub": rsa.sign(claims(now, sub="")),
        "unknown sub": rsa.sign(claims(now, sub="nobody-here")),
        "nbf beyond the leeway": rsa.sign(claims(now, nbf=ts + 31)),
        "iat beyond the leeway": rsa.sign(claims(now, iat=ts + 31)),
        "not a JWT at all": "a.b.c",
        "garbage segments": "eyJhbGciOiJSUzI1NiJ9.!!!.???",
    }


def _hmac_signed(signing_input: str, secret: bytes) -> str:
    """The classic confusion: an HS256 signature whose secret is the RSA public key (anyone can fetch it)."""
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(digest)}"


REASONS = {
    "expired beyond the leeway": "expired",
    "wrong audience": "claims: Audience doesn't match",
    "wrong issuer": "claims: Invalid issuer",
    "unknown kid": "no RS256 key with kid 'rsa-unknown'",
    "signed by another key with a known kid": "signature: Signature verification failed",
    "tampered signature": "signature: Signature verification failed",
    "tampered claims": "signature: Signature verification failed",
    "alg none": "algorithm 'none' is not allowed",
    "alg None with a signature": "algorithm 'None' is not allowed",
    "HS256 signed with the public key as the secret": "algorithm 'HS256' is not allowed",
    "RS256 header on the EC key's kid": "no RS256 key with kid 'ec-1'",
    "ES256 header on the RSA key's kid": "no ES256 key with kid 'rsa-1'",
    "RS384, not allowed": "algorithm 'RS384' is not allowed",
    "missing sub": 'claims: Token is missing the "sub" claim',
    "missing exp": 'claims: Token is missing the "exp" claim',
    "exp not a number": "exp is not a number",
    "empty sub": "sub must be 1 to 255 characters",
    "unknown sub": None,  # a valid token: no user has that externalId
    "nbf beyond the leeway": "not yet valid (nbf)",
    "iat beyond the leeway": "issued in the future (iat)",
    "not a JWT at all": "malformed: Invalid header padding",
    "garbage segments": "malformed: Invalid payload padding",
}


async def test_every_bad_token_is_unauthenticated_for_its_reason_and_changes_nothing(
    app_api: Api, idp: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    await platform_user(app_api.clock)
    tokens = refused_tokens(idp, app_api)
    before = await snapshot()
    answers, reasons = {}, {}
    for name, token in tokens.items():
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="creditline.jwt"):
            answers[name] = await app_api.post(ME, token=token)
        refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("JWT refused: ")]
        reasons[name] = refusals[0].removeprefix("JWT refused: ") if refusals else None
    assert answers == dict.fromkeys(tokens, UNAUTHENTICATED)
    assert reasons == REASONS
    assert await snapshot() == before
    assert idp.fetches == 1


async def test_an_rsa_key_never_verifies_an_hmac_signature_even_if_hs256_were_allowed(
    db: Backend, clock: Clock, settings: Settings, idp: JwksServer
) -> None:
    """Settings refuse HS* at start; below them, a key is used only with an algorithm of its own type."""
    await platform_user(clock)
    unsafe = jwt_settings(settings, idp, jwt_algorithms=("RS256", "HS256"))
    assert unsafe.jwt_problems()  # refused at start (see below); built by hand here
    keys = JwksKeys(idp.url, refresh_seconds=30, max_age_seconds=3600)
    try:
        sign_in = JwtSignIn(unsafe, keys, clock.now)
        rsa = idp.keys[0]
        header = b64({"alg": "HS256", "typ": "JWT", "kid": rsa.kid})
        forged = _hmac_signed(f"{header}.{b64(claims(clock.now()))}", rsa.public_pem.encode())
        assert await sign_in.authenticate(forged) is None
        assert (await sign_in.authenticate(rsa.sign(claims(clock.now())))) is not None
    finally:
        await keys.aclose()


# --------------------------------------------------------------------------------------- the JWKS itself


async def test_a_new_kid_refreshes_the_keys_once_and_a_flood_of_unknown_kids_stays_bounded(
    app_api: Api, idp: JwksServer
) -> None:
    await platform_user(app_api.clock)
    keys = jwks_keys(app_api.app)
    keys.monotonic = tick = FakeMonotonic()
    rsa = idp.keys[0]
    now = app_api.clock.now()
    assert (await app_api.data(ME, token=rsa.sign(claims(now))))["me"]["email"] == "ada@example.com"
    assert idp.fetches == 1

    # The provider rotates: a new key appears, tokens signed with it arrive (after the refresh interval).
    rotated = rsa_key("rsa-2")
    idp.keys.append(rotated)
    tick.now += 31
    for _ in range(5):
        assert (await app_api.data(ME, token=rotated.sign(claims(now))))["me"]["email"] == "ada@example.com"
    assert idp.fetches == 2

    # 200 tokens with made-up kids, 50 of them at once, within one interval: no more fetches.
    flood = [KeyPair(f"made-up-{n}", "RS256", rsa.private).sign(claims(now)) for n in range(200)]
    for start in range(0, 200, 50):
        answers = await asyncio.gather(*(app_api.post(ME, token=token) for token in flood[start : start + 50]))
        assert answers == [UNAUTHENTICATED] * 50
    assert idp.fetches == 2
    # The next interval allows one more, however many arrive at once.
    tick.now += 31
    answers = await asyncio.gather(*(app_api.post(ME, token=token) for token in flood[:50]))
    assert answers == [UNAUTHENTICATED] * 50
    assert idp.fetches == 3
    # Known kids never fetch.
    for _ in range(3):
        assert (await app_api.data(ME, token=rsa.sign(claims(now))))["me"]["email"] == "ada@example.com"
    assert idp.fetches == 3


async def refreshed(keys: JwksKeys, idp: JwksServer, fetches: int) -> None:
    """Wait for the background refresh to have fetched the JWKS for the ``fetches``-th time, and be done."""
    for _ in range(200):
        if idp.fetches == fetches and keys.refreshing is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{idp.fetches} fetches, refreshing: {keys.refreshing}")


async def test_a_failed_refresh_keeps_the_keys_and_old_keys_are_fetched_again(
    app_api: Api, idp: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    await platform_user(app_api.clock)
    keys = jwks_keys(app_api.app)
    keys.monotonic = tick = FakeMonotonic()
    rsa, ec = idp.keys
    now = app_api.clock.now()
    assert (await app_api.data(ME, token=rsa.sign(claims(now))))["me"]["email"] == "ada@example.com"

    idp.status = 503
    tick.now += 3601  # the keys are old: fetched again in the background, which fails
    assert (await app_api.data(ME, token=rsa.sign(claims(now))))["me"]["email"] == "ada@example.com"
    await refreshed(keys, idp, 2)
    assert "fetching the keys at" in caplog.text
    assert "keeping the 2 known" in caplog.text
    assert (await app_api.data(ME, token=ec.sign(claims(now))))["me"]["email"] == "ada@example.com"
    assert keys.refreshing is None  # not again within the refresh interval

    # The provider is back and has removed the EC key: once the keys are fetched again, it no longer works.
    idp.status = 200
    idp.keys.remove(ec)
    tick.now += 31
    assert (await app_api.data(ME, token=ec.sign(claims(now))))["me"]["email"] == "ada@example.com"
    await refreshed(keys, idp, 3)
    assert await app_api.post(ME, token=ec.sign(claims(now))) == UNAUTHENTICATED
    assert idp.fetches == 3


async def test_a_jwks_keeps_only_signature_keys_of_allowed_kinds() -> None:
    rsa, ec = rsa_key("rsa-1"), ec_key("ec-1")
    document = {
        "keys": [
            rsa.jwk(),
            {**ec.jwk(), "alg": "ES256"},
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},  # a shared secret: never
            {**rsa.jwk(), "kid": "enc", "use": "enc"},
            {**rsa.jwk(), "kid": "hs", "alg": "HS256"},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            "not a key",
        ]
    }
    parsed = parse_jwks(document)
    assert [(key.kid, key.algorithm) for key in parsed] == [("rsa-1", None), ("ec-1", "ES256")]
    assert isinstance(parsed[0].key, RSAPublicKey)
    assert isinstance(parsed[1].key, EllipticCurvePublicKey)
    assert parsed[1].key.curve.name == "secp256r1"
    with pytest.raises(ValueError, match="not a JWKS"):
        parse_jwks({"nothing": []})


# ---------------------------------------------------------------------------------- users on first sight


@pytest.fixture
async def creating_api(db: Backend, clock: Clock, settings: Settings, idp: JwksServer) -> AsyncIterator[Api]:
    app_settings = jwt_settings(settings, idp, jwt_create_users=True, signup_bonus=25 * MICRO)
    app = create_app(app_settings, clock=clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(client, app, clock, app_settings)
    await jwks_keys(app).aclose()


async def test_first_requests_at_once_create_exactly_one_user_with_the_signup_bonus(
    creating_api: Api, idp: JwksServer
) -> None:
    now = creating_api.clock.now()
    token = idp.keys[0].sign(claims(now, sub="idp-new", email="New.User@Example.com"))
    others = [idp.keys[1].sign(claims(now, sub="idp-new", email="new.user@example.com", jti=str(n))) for n in range(7)]
    answers = await asyncio.gather(*(creating_api.post(ME, token=t) for t in [token, *others]))
    me = {"me": {"email": "new.user@example.com", "credit": {"balance": {"total": "25"}}}}
    assert answers == [{"data": me}] * 8
    users = await User.all().values("email", "external_id")
    assert users == [{"email": "new.user@example.com", "external_id": "idp-new"}]
    assert await CreditAccount.all().count() == 1
    # Signing in again finds the same user.
    assert await creating_api.data(ME, token=token) == me


async def test_no_user_is_created_without_a_usable_email_nor_over_another_users_email(
    creating_api: Api, idp: JwksServer
) -> None:
    await platform_user(creating_api.clock, sub="idp-ada", email="ada@example.com")
    now = creating_api.clock.now()
    rsa = idp.keys[0]
    before = await snapshot()
    refused = [
        rsa.sign(claims(now, sub="idp-no-email", email=None)),
        rsa.sign(claims(now, sub="idp-bad-email", email="not an email")),
        *[
            rsa.sign(claims(now, sub=f"idp-unverified-{n}", email=f"eve{n}@example.com", email_verified=verified))
            for n, verified in enumerate(
                [False, "false", "False", "FALSE", 0, 1, 0.0, "", "yes", "1", " true", [True], {"v": True}]
            )
        ],
        rsa.sign(claims(now, sub="idp-takeover", email="ADA@example.com")),  # Ada's email, another sub
        # Look-alikes that lower() or NFKC would fold into ASCII letters (one of them into Ada's address).
        rsa.sign(claims(now, sub="idp-fullwidth", email="\uff41da@example.com")),
        rsa.sign(claims(now, sub="idp-ligature", email="ada@exam\ufb01le.com")),
        rsa.sign(claims(now, sub="idp-kelvin", email="\u212aate@example.com")),
    ]
    assert [await creating_api.post(ME, token=token) for token in refused] == [UNAUTHENTICATED] * 19
    assert await snapshot() == before


async def test_a_user_is_created_when_email_verified_is_absent_true_or_true_in_any_case(
    creating_api: Api, idp: JwksServer
) -> None:
    now = creating_api.clock.now()
    accepted: list[object] = [None, True, "true", "True", "TRUE"]  # None: claims() leaves the claim out
    for n, verified in enumerate(accepted):
        token = idp.keys[0].sign(claims(now, sub=f"idp-{n}", email=f"user{n}@example.com", email_verified=verified))
        assert await creating_api.data(ME, token=token) == {
            "me": {"email": f"user{n}@example.com", "credit": {"balance": {"total": "25"}}}
        }
    users = await User.all().order_by("id").values("external_id")
    assert users == [{"external_id": f"idp-{n}"} for n in range(len(accepted))]


async def test_a_jwt_makes_api_tokens_that_expire_with_it_at_the_latest(app_api: Api, idp: JwksServer) -> None:
    await platform_user(app_api.clock)
    now = app_api.clock.now()
    token = idp.keys[0].sign(claims(now, lifetime=600))
    latest = (now + timedelta(seconds=600 + 30)).isoformat()  # exp plus the 30-second leeway
    body = await app_api.data(CREATE_TOKEN, {"input": {"kind": "USER", "name": "cli"}}, token)
    assert body["createApiToken"]["apiToken"]["expiresAt"] == latest
    before = await snapshot()
    later = (now + timedelta(days=1)).isoformat()
    body = await app_api.data(CREATE_TOKEN, {"input": {"kind": "USER", "name": "cli", "expiresAt": later}}, token)
    assert body["createApiToken"] == {
        "__typename": "ValidationError",
        "message": "A token cannot outlive the token that makes it: expiresAt must be at or before"
        f" {latest.replace('+00:00', 'Z')}",
        "field": "expiresAt",
    }
    assert await snapshot() == before


# -------------------------------------------------------------------------------------------- the cache


async def test_a_cached_sign_in_never_outlives_the_tokens_expiry(
    db: Backend, clock: Clock, settings: Settings, idp: JwksServer
) -> None:
    await platform_user(clock)
    app_settings = jwt_settings(settings, idp, token_cache_seconds=600, jwt_leeway_seconds=5)
    app = create_app(app_settings, clock=clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        api = Api(client, app, clock, app_settings)
        token = idp.keys[0].sign(claims(clock.now(), lifetime=60))
        assert (await api.data(ME, token=token))["me"]["email"] == "ada@example.com"
        principal = await sign_in(app).authenticate(token)
        assert principal is not None
        assert (principal.kind.value, principal.token_id, principal.revocable) == ("USER", 0, False)
        assert principal.expires_at == clock.now() + timedelta(seconds=65)  # exp and the leeway
        clock.advance(timedelta(seconds=64))
        assert (await api.data(ME, token=token))["me"]["email"] == "ada@example.com"
        clock.advance(timedelta(seconds=1))
        assert await api.post(ME, token=token) == UNAUTHENTICATED
        assert idp.fetches == 1
    await jwks_keys(app).aclose()


# ---------------------------------------------------------------------------------- other configurations


async def test_with_jwt_sign_in_off_a_jwt_is_just_an_unknown_token(api: Api) -> None:
    await platform_user(api.clock)
    token = rsa_key("rsa-1").sign(claims(api.clock.now()))
    assert await api.post(ME, token=token) == UNAUTHENTICATED


async def test_one_pem_public_key_instead_of_a_jwks(db: Backend, clock: Clock, settings: Settings) -> None:
    await platform_user(clock)
    key = ec_key("any")
    pem = key.public_pem.replace("\n", "\\n")  # as an environment file often carries it
    env = {
        "CREDITLINE_JWT_PUBLIC_KEY": pem,
        "CREDITLINE_JWT_ISSUER": ISSUER,
        "CREDITLINE_JWT_AUDIENCE": f"other, {AUDIENCE}",
        "CREDITLINE_JWT_ALGORITHMS": "ES256",
    }
    parsed = Settings.from_env(env)
    assert (parsed.jwt_audience, parsed.jwt_algorithms, parsed.jwt_leeway_seconds) == (
        ("other", AUDIENCE),
        ("ES256",),
        30,
    )
    app_settings = replace(
        settings, **{name: getattr(parsed, name) for name in ("jwt_public_key", "jwt_issuer", "jwt_audience")}
    )
    app = create_app(replace(app_settings, jwt_algorithms=("ES256",)), clock=clock, manage_database=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        api = Api(client, app, clock, app_settings)
        assert (await api.data(ME, token=key.sign(claims(clock.now()))))["me"]["email"] == "ada@example.com"
        another = ec_key("any")
        assert await api.post(ME, token=another.sign(claims(clock.now()))) == UNAUTHENTICATED


REFUSAL = "creditline: refusing to start: "
ON = {"CREDITLINE_JWT_JWKS_URL": "https://idp.example.com/jwks.json"}
BOTH = {"CREDITLINE_JWT_ISSUER": ISSUER, "CREDITLINE_JWT_AUDIENCE": AUDIENCE}
NEEDS_ISSUER = "JWT sign-in needs CREDITLINE_JWT_ISSUER (the iss its tokens must carry)"
NEEDS_AUDIENCE = "JWT sign-in needs CREDITLINE_JWT_AUDIENCE (the aud its tokens must carry)"
ALGORITHMS = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, ES256K, EdDSA"


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        (ON, [NEEDS_ISSUER, NEEDS_AUDIENCE]),
        ({**ON, "CREDITLINE_JWT_ISSUER": ISSUER}, [NEEDS_AUDIENCE]),
        ({"CREDITLINE_JWT_PUBLIC_KEY": "pem", "CREDITLINE_JWT_AUDIENCE": AUDIENCE}, [NEEDS_ISSUER]),
        (
            {**ON, **BOTH, "CREDITLINE_JWT_ALGORITHMS": "RS256,HS256,none"},
            [
                f"CREDITLINE_JWT_ALGORITHMS may not name HS256, none: only the key-pair algorithms {ALGORITHMS}"
                " (never none, never HS*: its secret would be the public key)"
            ],
        ),
        (
            {**ON, **BOTH, "CREDITLINE_JWT_PUBLIC_KEY": "pem"},
            ["set one of CREDITLINE_JWT_JWKS_URL and CREDITLINE_JWT_PUBLIC_KEY, not both"],
        ),
        (
            {**BOTH, "CREDITLINE_JWT_JWKS_URL": "http://idp.example.com/jwks.json"},
            ["CREDITLINE_JWT_JWKS_URL must be an https:// URL (http:// only for a loopback host)"],
        ),
        (
            {**ON, **BOTH, "CREDITLINE_JWT_CREATE_USERS": "1", "CREDITLINE_JWT_EMAIL_CLAIM": " "},
            ["CREDITLINE_JWT_CREATE_USERS needs CREDITLINE_JWT_EMAIL_CLAIM (the claim of the email)"],
        ),
    ],
)
def test_jwt_settings_that_cannot_work_safely_refuse_to_start(env: dict[str, str], problems: list[str]) -> None:
    parsed = Settings.from_env(env)
    assert parsed.jwt_problems() == problems
    assert parsed.refusal() == REFUSAL + "; ".join(problems)
    with pytest.raises(SystemExit, match=r"^creditline: refusing to start: "):
        create_app(parsed, manage_database=False)


@pytest.mark.parametrize(
    "env",
    [
        {**ON, **BOTH},
        {**BOTH, "CREDITLINE_JWT_JWKS_URL": "http://127.0.0.1:9000/jwks"},
        {"CREDITLINE_JWT_ISSUER": ISSUER},  # off: no keys, nothing to check
    ],
)
def test_jwt_settings_that_work_start(env: dict[str, str]) -> None:
    assert Settings.from_env(env).refusal() is None


def test_a_public_key_that_is_no_pem_or_fits_no_allowed_algorithm_refuses_to_start() -> None:
    base = replace(Settings(database_url="unused"), jwt_issuer=ISSUER, jwt_audience=(AUDIENCE,))
    with pytest.raises(SystemExit, match=r"^CREDITLINE_JWT_PUBLIC_KEY is not a PEM public key"):
        create_app(replace(base, jwt_public_key="-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"))
    with pytest.raises(
        SystemExit, match=r"^CREDITLINE_JWT_PUBLIC_KEY cannot verify any of CREDITLINE_JWT_ALGORITHMS \(RS256\)$"
    ):
        create_app(replace(base, jwt_public_key=ec_key("x").public_pem))


# ------------------------------------------------------------------------------------------- websockets

WATCH = "subscription { balanceChanged { reason balance { total } } }"
EXPIRED_END = {
    "id": "1",
    "type": "next",
    "payload": {
        "data": None,
        "errors": [{"message": EXPIRED, "extensions": {"code": "UNAUTHENTICATED"}}],
    },
}


@contextlib.asynccontextmanager
async def live_server(settings: Settings, clock: Clock, idp: JwksServer, **more: Any) -> AsyncIterator[Live]:
    async with serve(jwt_settings(settings, idp, ws_init_timeout_seconds=1, **more), clock) as server:
        yield server


async def spend(live: Live, user_id: int, key: str) -> None:
    variables = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "1",
            "idempotencyKey": key,
        }
    }
    data = await live.api.data(SPEND, variables, await live.api.service())
    assert data["spendCredits"]["__typename"] == "SpendCreditsSuccess"


async def watch(live: Live, token: str) -> ClientConnection:
    ws = await connect(live, token)
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
    assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
    return ws


async def test_a_socket_whose_jwt_expires_has_its_subscriptions_ended_when_it_does(
    db: Backend, settings: Settings, idp: JwksServer
) -> None:
    """A real clock and a token of 2 s: the expiry's timer ends it (the periodic re-check is 30 s away)."""
    clock = Clock()
    user_id = await platform_user(clock)
    async with live_server(settings, clock, idp, token_recheck_seconds=30, jwt_leeway_seconds=0) as live:
        rsa = idp.keys[0]
        short = rsa.sign(claims(clock.now(), lifetime=2))
        lasting = rsa.sign(claims(clock.now(), lifetime=3600, jti="lasting"))
        started = asyncio.get_running_loop().time()
        ending, staying = await watch(live, short), await watch(live, lasting)
        try:
            assert await receive(ending) == EXPIRED_END
            assert await receive(ending) == {"id": "1", "type": "complete"}
            assert 0.5 < asyncio.get_running_loop().time() - started < 6  # exp is a whole second: 1-2 s away
            # The socket stays open, and refuses whatever is sent on it with the expired token.
            await ending.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": WATCH}}))
            assert await receive(ending) == {
                "id": "2",
                "type": "error",
                "payload": [{"message": EXPIRED, "extensions": {"code": "UNAUTHENTICATED"}}],
            }
            # The other token's subscription goes on.
            await spend(live, user_id, "after-expiry")
            event = (await receive(staying))["payload"]["data"]["balanceChanged"]
            assert event == {"reason": "SPEND", "balance": {"total": "9"}}
        finally:
            await ending.close()
            await staying.close()


async def test_a_moved_clock_ends_an_expired_sockets_subscriptions_and_revocation_checks_leave_jwts_alone(
    db: Backend, clock: Clock, settings: Settings, idp: JwksServer
) -> None:
    """The frozen test clock: the periodic re-check (1 s here) finds the JWT has no token row to be revoked,
    and ends the subscription once the clock passes its exp and the leeway."""
    user_id = await platform_user(clock)
    async with live_server(settings, clock, idp, token_recheck_seconds=1, jwt_leeway_seconds=5) as live:
        ws = await watch(live, idp.keys[1].sign(claims(clock.now(), lifetime=60)))
        try:
            await asyncio.sleep(1.5)  # a round of revocation checks: the JWT's subscription goes on
            await spend(live, user_id, "before-expiry")
            assert (await receive(ws))["payload"]["data"]["balanceChanged"] == {
                "reason": "SPEND",
                "balance": {"total": "9"},
            }
            clock.advance(timedelta(seconds=64))
            await asyncio.sleep(1.5)
            await spend(live, user_id, "within-the-leeway")
            assert (await receive(ws))["payload"]["data"]["balanceChanged"]["balance"] == {"total": "8"}
            clock.advance(timedelta(seconds=1))
            assert await receive(ws) == EXPIRED_END  # within a round of checks
            assert await receive(ws) == {"id": "1", "type": "complete"}
            assert len(token_watch(live).expiries) == 0
        finally:
            await ws.close()


def token_watch(live: Live) -> TokenWatch:
    app = live.api.app
    assert isinstance(app, CreditlineApp)
    assert isinstance(app.graphql, GraphQLEndpoint)
    return app.graphql.token_watch


async def test_an_api_token_with_an_expiry_has_its_subscriptions_ended_the_same_way(
    db: Backend, clock: Clock, settings: Settings, idp: JwksServer
) -> None:
    user_id = await platform_user(clock)
    token = await create_token(
        TokenKind.USER, name="laptop", user_id=user_id, now=clock.now(), expires_at=clock.now() + timedelta(minutes=5)
    )
    async with live_server(settings, clock, idp, token_recheck_seconds=1) as live:
        ws = await watch(live, token)
        try:
            clock.advance(timedelta(minutes=5))
            assert await receive(ws) == EXPIRED_END
            assert await receive(ws) == {"id": "1", "type": "complete"}
        finally:
            await ws.close()


async def test_a_token_without_kid_is_verified_only_when_the_jwks_leaves_no_choice(clock: Clock) -> None:
    settings = Settings(database_url="unused", jwt_issuer=ISSUER, jwt_audience=(AUDIENCE,))
    only, other = rsa_key("only"), rsa_key("other")
    same_key_named = KeyPair("named", "RS256", only.private)
    body = claims(clock.now())
    token = jwt.encode(body, only.private, algorithm="RS256")  # no kid in its header
    assert "kid" not in jwt.get_unverified_header(token)
    # One key: it. Two: neither, though one of them signed it (a kid says which).
    for served, verified in (((only,), True), ((same_key_named, other), False)):
        async with serving(*served) as idp:
            keys = JwksKeys(idp.url, refresh_seconds=30, max_age_seconds=3600)
            try:
                found = await JwtSignIn(settings, keys, clock.now).verify(token)
                assert (found is not None) is verified
            finally:
                await keys.aclose()


def test_jwt_numbers_and_flags_are_read_strictly() -> None:
    with pytest.raises(
        SystemExit, match=r"^CREDITLINE_JWT_LEEWAY_SECONDS must be 0 or a positive whole number, got -1$"
    ):
        Settings.from_env({"CREDITLINE_JWT_LEEWAY_SECONDS": "-1"})
    with pytest.raises(SystemExit, match=r"^CREDITLINE_JWT_CREATE_USERS must be 1 or 0, got 'maybe'$"):
        Settings.from_env({"CREDITLINE_JWT_CREATE_USERS": "maybe"})
    parsed = Settings.from_env({"CREDITLINE_JWT_LEEWAY_SECONDS": "0", "CREDITLINE_JWT_CREATE_USERS": "1"})
    assert (parsed.jwt_leeway_seconds, parsed.jwt_create_users, parsed.jwt_algorithms) == (0, True, ("RS256",))
