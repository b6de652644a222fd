"""Log lines: short, without secrets, and as JSON objects when ``CREDITLINE_LOG_FORMAT=json`` (issue 9,
point 10).

- A client's mistake (a syntax or validation error, a typed error raised for the caller) is one line at INFO,
  its message cut to ``MAX_VALUE_CHARS``: a megabyte-long variable does not land in the log.
- An unexpected failure keeps its traceback at ERROR, each line cut, and the request's variables cut and
  with secret-looking fields replaced.
- Whatever is written goes through ``redact``: bearer tokens, our ``clu_``/``cls_``/``cla_`` tokens,
  Stripe keys, webhook secrets and signatures, and card tokens never reach a log line.
- With ``CREDITLINE_ACCESS_LOG=1`` (the default under JSON) one line per request: request id, method, path,
  status, duration. Lines logged while a request runs carry its request id, method and path.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.types import ExecutionContext

MAX_VALUE_CHARS = 200
"""Longest input or message written as is; the rest is cut and its length said."""

log = logging.getLogger("creditline.graphql")
access = logging.getLogger("creditline.access")

_SECRETS = re.compile(
    r"(?i)(bearer\s+)(?!<)[^\s'\",]+"
    r"|\b(?:cl[usa]_|sk_live_|sk_test_|rk_live_|rk_test_|whsec_|tok_|pm_|seti_|pi_\w+_secret_)[A-Za-z0-9_\-]+"
    r"|(\bt=\d+,\s*v1=)[0-9a-f,v=\s]+"
)
_SECRET_KEYS = re.compile(
    r"(?i)authorization|token|secret|password|signature|payment_?method|card|cvc|api_?key|payload"
)
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")

request_context: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar(
    "creditline_request", default=None
)
"""(request id, method, path) of the request being handled."""


handshake_refused: contextvars.ContextVar[bool] = contextvars.ContextVar("creditline_handshake_refused", default=False)
"""Set by the rate limiter in the task of a websocket handshake it answered with 429."""


class RefusedHandshakeFilter(logging.Filter):
    """Drops uvicorn's (0.54) "ASGI callable returned without completing handshake." after a handshake the
    rate limiter refused on purpose with an HTTP response: under a flood it would be an ERROR per attempt.
    uvicorn logs it in the task that ran the app, so the refusal's context variable is still set there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (handshake_refused.get() and record.name == "uvicorn.error" and record.levelno == logging.ERROR)


def _keep_prefix(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2) or "") + "[redacted]"


def redact(text: str) -> str:
    return _SECRETS.sub(_keep_prefix, text)


def truncate(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} chars)"


def clean(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Cut, then redact: a value fit for a log line."""
    return redact(truncate(text, limit))


def scrub(value: Any, depth: int = 0) -> Any:
    """Variables fit for a log line: secret-looking fields replaced, long strings cut, deep nesting cut."""
    if depth > 4:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())
        out: dict[str, Any] = {
            str(k): "[redacted]" if _SECRET_KEYS.search(str(k)) else scrub(v, depth + 1) for k, v in items[:20]
        }
        if len(items) > 20:
            out["…"] = f"{len(items) - 20} more"
        return out
    if isinstance(value, list | tuple):
        listed = [scrub(v, depth + 1) for v in value[:10]]
        if len(value) > 10:
            listed.append(f"… {len(value) - 10} more")
        return listed
    if isinstance(value, str):
        return clean(value)
    return value


def is_client_error(error: GraphQLError) -> bool:
    """The caller's mistake: not an exception escaping a resolver. A value a scalar refused (a literal in
    the document: graphql-core keeps the scalar's exception) says so with its code."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return True
    return error.path is None and (error.extensions or {}).get("code") == "BAD_USER_INPUT"


class LoggedSchema(strawberry.Schema):
    """Strawberry's schema, logging errors as said above instead of a traceback with the raw input each."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        operation = execution_context.operation_name if execution_context else None
        for error in errors:
            code = (error.extensions or {}).get("code")
            where = ".".join(str(p) for p in error.path) if error.path else None
            if is_client_error(error):
                log.info(
                    "client error%s%s%s: %s",
                    f" [{code}]" if code else "",
                    f" in {clean(operation, 60)}" if operation else "",
                    f" at {where}" if where else "",
                    clean(error.message),
                )
                continue
            original = error.original_error
            assert original is not None
            trace = "".join(traceback.format_exception(original))
            variables = execution_context.variables if execution_context else None
            log.error(
                "unexpected error%s at %s: %s\nvariables: %s\n%s",
                f" in {clean(operation, 60)}" if operation else "",
                where,
                clean(str(original)),
                clean(json.dumps(scrub(variables), default=str), 2000),
                "\n".join(clean(line) for line in trace.splitlines()),
            )


class RedactingFormatter(logging.Formatter):
    """Text lines, redacted, with the request id when there is one; a traceback's lines cut."""

    def formatException(self, ei: Any) -> str:
        return "\n".join(clean(line) for line in super().formatException(ei).splitlines())

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        current = request_context.get()
        if current is not None and not getattr(record, "access", False):
            text = f"{text} [request {current[0]}]"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request's fields when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        current = request_context.get()
        if current is not None:
            entry["request_id"], entry["method"], entry["path"] = current
        for name in ("request_id", "method", "path", "status", "duration_ms", "client"):
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = "\n".join(clean(line) for line in self.formatException(record.exc_info).splitlines())
        return json.dumps(entry, default=str)


def log_config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server: ours and uvicorn's loggers, one handler, one format."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"()": RedactingFormatter, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
        "filters": ["refused_handshake"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"refused_handshake": {"()": RefusedHandshakeFilter}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": "WARNING"},  # ours replaces it (RequestLogMiddleware)
        },
    }


class RequestLogMiddleware:
    """One line per HTTP request, and the request's id on every line logged while it runs.

    The id is the client's ``X-Request-ID`` when it is a plain token of up to 64 characters, else a new one;
    it is sent back in ``x-request-id``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
                request_id = value.decode()
                break
        if not request_id:
            request_id = secrets.token_hex(8)
        method, path = scope["method"], truncate(scope["path"], 200)
        token = request_context.set((request_id, method, path))
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", request_id.encode())

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            client = scope.get("client")
            access.info(
                "%s %s %d %.2fms",
                method,
                path,
                status or 500,
                duration_ms,
                extra={
                    "access": True,
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status or 500,
                    "duration_ms": duration_ms,
                    "client": client[0] if client else None,
                },
            )
            request_context.reset(token)
