"""ASGI scopes for tests that drive the app directly, without a server in between."""

from __future__ import annotations

from typing import Any


def graphql_websocket_scope(client: tuple[str, int], extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """A graphql-transport-ws websocket to /graphql from ``client``; ``extensions`` are the server's (e.g.
    ``websocket.http.response``, for a refusal sent as an HTTP response), absent when ``None``."""
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"sec-websocket-protocol", b"graphql-transport-ws")],
        "subprotocols": ["graphql-transport-ws"],
        "client": client,
        "server": ("127.0.0.1", 80),
        "scheme": "ws",
        "state": {},
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope
