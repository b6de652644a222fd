"""Log lines are short, carry no secret, and are JSON objects on request (issue 9, point 10)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import resolvers.queries
from creditline.app import create_app
from creditline.logs import JsonFormatter, RedactingFormatter, redact, scrub
from creditline.settings import Settings
from tests.support.helpers import Api

HUGE = "a" * 1_000_000


def lines_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("creditline", "strawberry"))]


async def test_a_client_error_is_one_short_info_line_without_the_input(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    name = HUGE[:30_000]  # a field name as long as a document may be (CREDITLINE_MAX_QUERY_BYTES)
    with caplog.at_level(logging.DEBUG):
        response = await api.client.post("/graphql", json={"query": "{ " + name + " }"})
    assert response.status_code == 200
    assert response.json()["errors"][0]["message"] == f"Cannot query field '{name}' on type 'Query'."
    records = lines_of(caplog)
    assert [(r.name, r.levelname) for r in records] == [("creditline.graphql", "INFO")]
    line = records[0].getMessage()
    assert line == f"client error: Cannot query field '{name[:180]}… (30038 chars)"
    assert "\n" not in line
    assert len(line) < 300
    assert records[0].exc_info is None
    assert name[:300] not in caplog.text


async def test_a_typed_error_is_logged_without_traceback_or_token(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    token = await api.service()
    with caplog.at_level(logging.DEBUG):
        body = await api.post("{ me { email } }", token=token)
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    records = lines_of(caplog)
    assert [(r.levelname, r.getMessage()) for r in records] == [
        (
            "INFO",
            "client error [FORBIDDEN] at me: `me` needs a user token; this token belongs to a service or an admin",
        )
    ]
    assert records[0].exc_info is None
    assert token not in caplog.text


async def test_an_unexpected_error_keeps_its_traceback_with_inputs_cut_and_secrets_out(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = await api.user("ada@example.com")

    def broken(info: Any) -> Any:
        raise RuntimeError("boom " + HUGE)

    monkeypatch.setattr(resolvers.queries, "principal", broken)
    variables = {"note": HUGE, "paymentToken": "tok_visa", "nested": {"authorization": f"Bearer {token}"}}
    with caplog.at_level(logging.DEBUG):
        response = await api.client.post(
            "/graphql",
            json={"query": "query Mine { me { email } }", "variables": variables},
            headers={"authorization": f"Bearer {token}"},
        )
    assert response.json()["errors"][0]["message"] == "Unexpected error."
    records = lines_of(caplog)
    assert [(r.name, r.levelname) for r in records] == [("creditline.graphql", "ERROR")]
    text = records[0].getMessage()
    assert text.startswith("unexpected error in Mine at me: boom aaaa")
    assert "Traceback (most recent call last):" in text
    assert 'in broken\n    raise RuntimeError("boom " + HUGE)' in text
    assert '"paymentToken": "[redacted]"' in text
    assert '"nested": {"authorization": "[redacted]"}' in text
    assert len(text) < 10_000
    assert HUGE[:300] not in caplog.text
    assert token not in caplog.text
    assert "tok_visa" not in caplog.text


def test_redaction_of_what_looks_like_a_secret() -> None:
    assert redact("Authorization: Bearer clu_abc-DEF_123 sent") == "Authorization: Bearer [redacted] sent"
    assert redact("Send 'Authorization: Bearer <token>'") == "Send 'Authorization: Bearer <token>'"
    assert redact('{"authorization": "Bearer x.y-z"}') == '{"authorization": "Bearer [redacted]"}'
    assert redact("token cls_xyz and cla_q1") == "token [redacted] and [redacted]"
    assert redact("keys sk_live_abc whsec_def rk_test_g") == "keys [redacted] [redacted] [redacted]"
    assert redact("card tok_visa then pm_1Abc") == "card [redacted] then [redacted]"
    assert (
        redact("Stripe-Signature: t=1700000000,v1=deadbeef,v0=cafe") == "Stripe-Signature: t=1700000000,v1=[redacted]"
    )
    assert scrub({"authorization": "x", "connection_init": {"payload": {"a": 1}}, "ok": "b" * 300}) == {
        "authorization": "[redacted]",
        "connection_init": {"payload": "[redacted]"},
        "ok": "b" * 200 + "… (300 chars)",
    }


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The server's JSON format on the root logger, into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def test_json_lines_one_per_request_with_its_id_and_no_token(api: Api, json_lines: io.StringIO) -> None:
    _, token = await api.user("ada@example.com")
    settings = Settings(database_url="unused", token_cache_seconds=0, log_format="json", access_log=True)
    app = create_app(settings, clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        ok = await http.post(
            "/graphql", json={"query": "{ me { email } }"}, headers={"authorization": f"Bearer {token}"}
        )
        bad = await http.post(
            "/graphql",
            json={"query": "{ nope }"},
            headers={"authorization": f"Bearer {token}", "x-request-id": "req-42"},
        )
    assert ok.status_code == 200
    assert len(ok.headers["x-request-id"]) == 16
    assert bad.headers["x-request-id"] == "req-42"
    entries = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert token not in json_lines.getvalue()
    access = [e for e in entries if e["logger"] == "creditline.access"]
    assert [(e["method"], e["path"], e["status"], e["request_id"]) for e in access] == [
        ("POST", "/graphql", 200, ok.headers["x-request-id"]),
        ("POST", "/graphql", 200, "req-42"),
    ]
    for entry in access:
        assert set(entry) == {
            "time",
            "level",
            "logger",
            "message",
            "request_id",
            "method",
            "path",
            "status",
            "duration_ms",
            "client",
        }
        assert entry["level"] == "INFO"
        assert entry["duration_ms"] >= 0
    [error] = [e for e in entries if e["logger"] == "creditline.graphql"]
    assert error["level"] == "INFO"
    assert error["message"].startswith("client error: Cannot query field 'nope' on type 'Query'.")
    assert (error["request_id"], error["method"], error["path"]) == ("req-42", "POST", "/graphql")


def test_text_lines_are_redacted_too() -> None:
    formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("creditline.x", logging.WARNING, __file__, 1, "got %s", ("Bearer clu_secret",), None)
    assert formatter.format(record) == "WARNING creditline.x: got Bearer [redacted]"
    try:
        raise ValueError("bad " + HUGE)
    except ValueError:
        failed = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception", (), sys.exc_info())
    text = formatter.format(failed)
    assert text.startswith("ERROR uvicorn.error: Exception\nTraceback (most recent call last):\n")
    assert text.endswith("ValueError: bad " + "a" * 184 + "… (1000016 chars)")
    for line in (JsonFormatter().format(failed), JsonFormatter().format(record)):
        assert len(line) < 2000
        json.loads(line)


def test_settings_read_the_log_format() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({}).access_log is False
    json_settings = Settings.from_env({"CREDITLINE_LOG_FORMAT": "JSON"})
    assert (json_settings.log_format, json_settings.access_log) == ("json", True)
    assert Settings.from_env({"CREDITLINE_LOG_FORMAT": "json", "CREDITLINE_ACCESS_LOG": "0"}).access_log is False
    with pytest.raises(SystemExit, match="CREDITLINE_LOG_FORMAT must be text or json, got 'xml'"):
        Settings.from_env({"CREDITLINE_LOG_FORMAT": "xml"})
