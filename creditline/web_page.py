"""The My Credit page at /my-credit/ and the offline GraphiQL, from the build of ``web/`` (README, My Credit page).

The build (``npm --prefix web run build``, or ``make web``) writes ``index.html`` (the page, a single-page app),
``graphiql.html`` and hashed ``assets/``. Every path under /my-credit/ that is no file of the build answers
``index.html`` (the page routes itself), never cached; assets are named by their content's hash, so they are
cached for a year. Without a build the page says how to make one (503), and /graphql keeps strawberry's GraphiQL.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from creditline.settings import Settings

PAGE_PATH = "/my-credit/"
ASSETS = "assets"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
STRIPE_JS = "https://js.stripe.com"
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>My Credit page not built</title></head>
<body><h1>The My Credit page is not built</h1>
<p>This server found no build of the page in <code>{dist}</code>. The API works without it.</p>
<p>Build it with Node.js 20 or newer: <code>make web</code> (or <code>npm --prefix web ci &amp;&amp;
npm --prefix web run build</code>), then reload. <code>make run</code> builds it when Node.js is installed.</p>
</body></html>
"""


def same_origin_websockets(request: Request) -> str:
    """``ws://`` and ``wss://`` of the host the browser asked for: browsers differ on whether ``'self'`` covers
    websockets. A Host header that is no host name (it would write into the header) adds nothing."""
    host = request.headers.get("host", "")
    return f" ws://{host} wss://{host}" if _HOST.match(host) else ""


class WebPage:
    """The routes of /my-credit/ and the GraphiQL page that /graphql serves in development."""

    def __init__(self, settings: Settings) -> None:
        self.dist = Path(settings.web_dist)
        self.frame_ancestors = " ".join(settings.frame_ancestors)
        self.stripe_js = settings.gateway == "legacy"  # the only gateway whose cards are entered with Stripe.js

    def page_policy(self, request: Request) -> str:
        """Scripts, styles and connections of this origin only (Stripe.js too on the legacy gateway)."""
        script, connect, frame = "'self'", f"'self'{same_origin_websockets(request)}", "'none'"
        if self.stripe_js:
            script, connect, frame = f"{script} {STRIPE_JS}", f"{connect} https://api.stripe.com", STRIPE_JS
        return (
            f"default-src 'self'; script-src {script}; style-src 'self'; img-src 'self' data:; font-src 'self';"
            f" connect-src {connect}; frame-src {frame}; object-src 'none'; base-uri 'none'; form-action 'self';"
            f" frame-ancestors {self.frame_ancestors}"
        )

    def graphiql_policy(self, request: Request) -> str:
        """GraphiQL's editors set inline styles and may run web workers; it is never framed."""
        return (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
            f" font-src 'self' data:; connect-src 'self'{same_origin_websockets(request)}; worker-src 'self' blob:;"
            " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )

    def headers(self, policy: str, cache: str) -> dict[str, str]:
        headers = {
            "content-security-policy": policy,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": cache,
        }
        if self.frame_ancestors == "'none'":
            headers["x-frame-options"] = "DENY"  # for browsers without frame-ancestors
        return headers

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/my-credit", self.redirect),
            Route("/billing", self.billing_return),
            Route("/my-credit/assets/{path:path}", self.asset),
            Route("/my-credit/{path:path}", self.page),
        ]

    async def redirect(self, request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{request.scope.get('root_path', '')}{PAGE_PATH}{query}", status_code=308)

    async def billing_return(self, request: Request) -> Response:
        """Where Stripe sends people back after Checkout and its customer portal (``CREDITLINE_PUBLIC_URL/billing``,
        billing/checkout.py): the page's Billing tab, which shows the payment until its webhook completes it."""
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{request.scope.get('root_path', '')}{PAGE_PATH}billing{query}", status_code=307)

    async def asset(self, request: Request) -> Response:
        """A hashed file of the build; a missing one is 404, never the page (a script tag would run HTML)."""
        found = self._file(self.dist / ASSETS, request.path_params["path"])
        if found is None:
            return PlainTextResponse("Not Found", status_code=404, headers={"x-content-type-options": "nosniff"})
        return self._send(found, {"x-content-type-options": "nosniff", "cache-control": IMMUTABLE})

    async def page(self, request: Request) -> Response:
        """index.html for every path of the page (its own router reads the path); a file of the build at the
        top (a favicon) is that file, revalidated on every use since its name carries no hash."""
        path = request.path_params["path"]
        if path and path not in ("index.html", "graphiql.html"):
            found = self._file(self.dist, path)
            if found is not None:
                return self._send(found, self.headers(self.page_policy(request), NO_CACHE))
        index = self.dist / "index.html"
        if not index.is_file():
            return HTMLResponse(
                NOT_BUILT.format(dist=html.escape(str(self.dist))),
                status_code=503,
                headers=self.headers(self.page_policy(request), "no-store"),
            )
        return self._send(index, self.headers(self.page_policy(request), NO_CACHE))

    def graphiql(self, request: Request) -> Response | None:
        """The offline GraphiQL of the build, or ``None`` without one (strawberry's page then)."""
        page = self.dist / "graphiql.html"
        if not page.is_file():
            return None
        return self._send(page, self.headers(self.graphiql_policy(request), NO_CACHE))

    def _file(self, root: Path, relative: str) -> Path | None:
        """``relative`` inside ``root`` when it is a file there: no ``..``, no hidden file, no link out."""
        parts = relative.split("/")
        if not relative or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            return None
        try:
            candidate = (root / relative).resolve()
            inside = candidate.is_relative_to(root.resolve())
        except (OSError, ValueError):
            return None
        return candidate if inside and candidate.is_file() else None

    def _send(self, path: Path, headers: dict[str, str]) -> Response:
        media_type = _TYPES.get(path.suffix.lower())
        if path.suffix.lower() == ".html":
            media_type = "text/html; charset=utf-8"
        return FileResponse(path, media_type=media_type or "application/octet-stream", headers=headers)
