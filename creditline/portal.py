"""``POST /portal/session``: exchange the code of a portal link (``createPortalSession``) for a portal session.

Body ``{"code": "..."}``; the answer is ``{"token", "sessionId", "expiresAt", "idleTimeoutSeconds",
"accountId", "returnUrl"}``. The token is a bearer token of kind PORTAL for that one account
(models/portal.py). A code works once: a used, expired or unknown one is 401 and creates nothing; a
malformed body is 400. Rate limits and the body limit apply as on every route (creditline/app.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from creditline import json_body
from creditline.services import Services
from models import portal
from models.ids import encode_id

INVALID_CODE = "This sign-in link is invalid, was used already or has expired: ask for a new one"


def _error(message: str, code: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": code}}, status_code=status)


def portal_session(services: Services) -> Callable[[Request], Awaitable[Response]]:
    settings = services.settings

    async def endpoint(request: Request) -> Response:
        try:
            body = json_body.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _error('Send a JSON body: {"code": "..."}', "BAD_REQUEST", 400)
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not code:
            return _error('Send a JSON body: {"code": "..."}', "BAD_REQUEST", 400)
        if len(code) > portal.CODE_MAX_LENGTH or not code.isascii() or not code.isprintable():
            return _error(INVALID_CODE, "INVALID_CODE", 401)
        session = await portal.exchange(
            code,
            now=services.clock.now(),
            idle=timedelta(seconds=settings.portal_idle_seconds),
            lifetime=timedelta(seconds=settings.portal_session_max_seconds),
        )
        if session is None:
            return _error(INVALID_CODE, "INVALID_CODE", 401)
        return JSONResponse(
            {
                "token": session.token,
                "sessionId": encode_id("ApiToken", session.token_id),
                "expiresAt": session.expires_at.isoformat(),
                "idleTimeoutSeconds": session.idle_timeout_seconds,
                "accountId": encode_id("CreditAccount", session.account_id),
                "returnUrl": session.return_url,
            },
            headers={"cache-control": "no-store"},
        )

    return endpoint
