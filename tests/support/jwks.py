"""An identity provider for the JWT sign-in tests: key pairs made here (RSA, EC), tokens signed with them, and
its JWKS served over HTTP by a real local server (uvicorn on a free port) that counts its fetches."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.live import free_port

ISSUER = "https://idp.example.com/"
AUDIENCE = "creditline"


@dataclass
class KeyPair:
    kid: str
    algorithm: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = json.loads(RSAAlgorithm.to_jwk(public))
        else:
            data = json.loads(ECAlgorithm.to_jwk(public))
        return {**data, "kid": self.kid, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header})


def rsa_key(kid: str) -> KeyPair:
    return KeyPair(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> KeyPair:
    return KeyPair(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(now: datetime, sub: str | None = "idp-user-1", lifetime: float = 3600, **more: Any) -> dict[str, Any]:
    """What the identity provider puts in a token issued at ``now``; ``more`` adds or (with None) removes."""
    issued = int(now.timestamp())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": issued,
        "exp": issued + lifetime,
        "email": f"{sub}@example.com",
    }
    base.update(more)
    return {name: value for name, value in base.items() if value is not None}


@dataclass
class JwksServer:
    """Serves ``{"keys": [...]}`` of ``keys`` at ``url``; ``status`` other than 200 makes it fail."""

    keys: list[KeyPair] = field(default_factory=list)
    fetches: int = 0
    status: int = 200
    url: str = ""

    async def handle(self, request: Request) -> Response:
        self.fetches += 1
        if self.status != 200:
            return JSONResponse({"error": "unavailable"}, status_code=self.status)
        return JSONResponse({"keys": [key.jwk() for key in self.keys]})


@contextlib.asynccontextmanager
async def serving(*keys: KeyPair) -> AsyncIterator[JwksServer]:
    jwks = JwksServer(list(keys))
    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks.handle)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    jwks.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield jwks
    finally:
        server.should_exit = True
        await task
