"""The command line (README, Command line) on a SQLite file, with a real uvicorn server for the end-to-end check."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import free_port
from tests.support.processes import cli, served


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/cli.sqlite3",
        "CREDITLINE_SIGNUP_BONUS_CREDITS": "5",
    }


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    assert cli(env, "migrate").returncode == 0
    with served(env, output=subprocess.PIPE) as running:
        yield running


def graphql(url: str, token: str, query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, object] = json.loads(response.read())
        return body


def test_migrate_user_token_audit(env: dict[str, str]) -> None:
    assert cli(env, "migrate").stdout == "migrations applied\n"
    created = cli(env, "user", "create", "Ada@Example.com")
    assert (created.returncode, created.stdout) == (0, "user ada@example.com created: VXNlcjox\n")
    duplicate = cli(env, "user", "create", "ada@example.com")
    assert (duplicate.returncode, duplicate.stderr) == (
        1,
        "creditline: a user with email ada@example.com exists already\n",
    )
    with_id = cli(env, "user", "create", "bob@example.com", "--external-id", "cus_bob")
    assert (with_id.returncode, with_id.stdout) == (0, "user bob@example.com created: VXNlcjoy\n")
    taken = cli(env, "user", "create", "cy@example.com", "--external-id", "cus_bob")
    assert (taken.returncode, taken.stderr) == (1, "creditline: a user with external id 'cus_bob' exists already\n")
    blank = cli(env, "user", "create", "cy@example.com", "--external-id", " ")
    assert (blank.returncode, blank.stderr) == (2, "creditline: --external-id must be 1 to 255 characters\n")

    for args, prefix in (
        (("--user", "ada@example.com"), "clu_"),
        (("--service", "runner", "--scope", "usage:write"), "cls_"),
        (("--admin",), "cla_"),
    ):
        made = cli(env, "token", "create", *args)
        assert made.returncode == 0, made.stderr
        last = made.stdout.splitlines()[-1]
        assert last[: len(prefix)] == prefix
        assert len(last) == len(prefix) + 43

    no_scope = cli(env, "token", "create", "--service", "runner")
    assert (no_scope.returncode, no_scope.stderr) == (
        2,
        "creditline: a service token needs at least one --scope (e.g. usage:write)\n",
    )
    database = env["CREDITLINE_DATABASE_URL"].removeprefix("sqlite://")
    tokens_before = sqlite3.connect(database).execute("SELECT count(*) FROM api_tokens").fetchone()
    unknown = cli(env, "token", "create", "--service", "runner", "--scope", "usage:write", "--scope", "billing")
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (
        2,
        "",
        "creditline: unknown scope 'billing': the valid scopes are balance:read, billing:read, limits:write,"
        " portal:write, usage:write\n",
    )
    assert sqlite3.connect(database).execute("SELECT count(*) FROM api_tokens").fetchone() == tokens_before
    stored = sqlite3.connect(database).execute("SELECT email, external_id FROM users ORDER BY id").fetchall()
    assert stored == [("ada@example.com", None), ("bob@example.com", "cus_bob")]
    readers = cli(env, "token", "create", "--service", "reader", "--scope", "balance:read", "--scope", "billing:read")
    assert readers.returncode == 0, readers.stderr
    audit = cli(env, "audit")
    assert (audit.returncode, audit.stdout) == (0, "audit: 2 accounts checked, 0 problems\n")
    sweep = cli(env, "sweep")
    assert (sweep.returncode, sweep.stdout) == (
        0,
        "sweep: 0 lots expired, 0 holds released, 0 pending payments reconciled, 0 subscription payments charged,"
        " 0 auto top-ups charged\n",
    )


def test_cli_writes_beside_the_server_and_a_second_sqlite_server_is_refused(
    env: dict[str, str], server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, _ = server
    # Short writing commands run beside the server (each transaction takes SQLite's write lock briefly).
    created = cli(env, "user", "create", "bob@example.com")
    assert (created.returncode, created.stdout, created.stderr) == (0, "user bob@example.com created: VXNlcjox\n", "")
    second = subprocess.run(
        [sys.executable, "-m", "creditline", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    database = env["CREDITLINE_DATABASE_URL"].removeprefix("sqlite://")
    assert (second.returncode, second.stderr.splitlines()[-1]) == (
        1,
        f"creditline: Another Creditline server (or `creditline migrate`) is already running on the SQLite"
        f" database {database}. A SQLite deployment is a single server process: stop the other one, or use"
        " PostgreSQL (CREDITLINE_DATABASE_URL=postgresql://...) to run several.",
    )
    assert cli(env, "audit").returncode == 0


def test_demo_creates_user_and_working_tokens_once(env: dict[str, str]) -> None:
    assert cli(env, "migrate").returncode == 0
    first = cli(env, "demo")
    assert first.returncode == 0
    tokens = {line.split()[0]: line.split()[2] for line in first.stdout.splitlines() if " token " in line}
    assert set(tokens) == {"user", "agent", "admin"}
    again = cli(env, "demo")
    assert again.stdout.startswith("demo data exists already")

    with served(env) as (url, _):
        # The demo data spent from the signup bonus (tests/app/test_cli_demo.py).
        before: Any = graphql(url, tokens["user"], "{ me { email credit { balance { free paid } } } }")
        balance = before["data"]["me"]["credit"]["balance"]
        assert before["data"]["me"]["email"] == "demo@creditline.local"
        free = str(Decimal(balance["free"]) - Decimal("1.5"))
        spent = graphql(
            url,
            tokens["agent"],
            'mutation { spendCredits(input: {userId: "VXNlcjox", agentId: "demo", activity: "answer",'
            ' credits: "1.5", idempotencyKey: "k"}) { __typename ... on SpendCreditsSuccess { balance { free } } } }',
        )
        assert spent == {"data": {"spendCredits": {"__typename": "SpendCreditsSuccess", "balance": {"free": free}}}}
        me = graphql(url, tokens["user"], "{ me { credit { balance { free paid } } } }")
        assert me == {"data": {"me": {"credit": {"balance": {"free": free, "paid": balance["paid"]}}}}}


LIST_HEADER = ["id", "global id", "kind", "name", "scopes", "prefix", "created", "last used", "expires", "revoked"]
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def token_table(env: dict[str, str]) -> list[list[str]]:
    listed = cli(env, "token", "list")
    assert (listed.returncode, listed.stderr) == (0, "")
    return [re.split(r" {2,}", line) for line in listed.stdout.splitlines()]


def test_token_list_revoke_and_expiry(env: dict[str, str]) -> None:
    assert cli(env, "migrate").returncode == 0
    assert cli(env, "user", "create", "ada@example.com").returncode == 0
    made = [
        cli(env, "token", "create", "--user", "ada@example.com", "--expires-in", "30"),
        cli(env, "token", "create", "--service", "runner", "--scope", "usage:write", "--scope", "balance:read"),
        cli(env, "token", "create", "--admin", "--name", "ops", "--expires-at", "2099-01-31T00:00:00+01:00"),
    ]
    assert [m.returncode for m in made] == [0, 0, 0], [m.stderr for m in made]
    secrets = [m.stdout.splitlines()[-1] for m in made]
    database = env["CREDITLINE_DATABASE_URL"].removeprefix("sqlite://")
    count = "SELECT count(*) FROM api_tokens"
    before = sqlite3.connect(database).execute(count).fetchone()
    for args, message in (
        (("--user", "ada@example.com", "--expires-in", "0"), "--expires-in must be a positive number of days, got 0"),
        (
            ("--admin", "--expires-at", "2020-01-01T00:00:00Z"),
            "--expires-at must be in the future, got 2020-01-01T00:00:00Z",
        ),
        (
            ("--admin", "--expires-at", "next week"),
            "--expires-at must be a date and time like 2027-01-31T00:00:00Z, got 'next week'",
        ),
        (
            ("--admin", "--expires-at", "2099-01-01T00:00:00"),
            "--expires-at needs a time zone, e.g. 2099-01-01T00:00:00Z",
        ),
        (("--user", "ada@example.com", "--scope", "usage:write"), "--scope is for service tokens only"),
        (
            ("--service", "runner\u202egnp.exe", "--scope", "usage:write"),
            "--service must contain only printable characters: U+202E is an invisible or bidirectional"
            " formatting character",
        ),
        (
            ("--admin", "--name", "ops\u200b"),
            "--name must contain only printable characters: U+200B is an invisible or bidirectional"
            " formatting character",
        ),
        (("--admin", "--name", "   "), "--name must be 1 to 200 characters"),
    ):
        refused = cli(env, "token", "create", *args)
        assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", f"creditline: {message}\n")
    assert sqlite3.connect(database).execute(count).fetchone() == before

    table = token_table(env)
    listed = cli(env, "token", "list").stdout
    for secret in secrets:
        assert secret not in listed
        assert secret[:13] not in listed
    assert table[0] == LIST_HEADER
    rows = [dict(zip(LIST_HEADER, row, strict=True)) for row in table[1:]]
    created = [row.pop("created") for row in rows]
    assert all(INSTANT.fullmatch(when) for when in created), created
    user_expiry = datetime.fromisoformat(rows[0].pop("expires"))
    assert user_expiry - datetime.fromisoformat(created[0]) == timedelta(days=30)
    assert rows == [
        {
            "id": "1",
            "global id": "QXBpVG9rZW46MQ==",
            "kind": "USER",
            "name": "ada@example.com",
            "scopes": "-",
            "prefix": secrets[0][:12],
            "last used": "-",
            "revoked": "-",
        },
        {
            "id": "2",
            "global id": "QXBpVG9rZW46Mg==",
            "kind": "SERVICE",
            "name": "runner",
            "scopes": "balance:read,usage:write",
            "prefix": secrets[1][:12],
            "last used": "-",
            "expires": "-",
            "revoked": "-",
        },
        {
            "id": "3",
            "global id": "QXBpVG9rZW46Mw==",
            "kind": "ADMIN",
            "name": "ops",
            "scopes": "-",
            "prefix": secrets[2][:12],
            "last used": "-",
            "expires": "2099-01-30T23:00:00Z",
            "revoked": "-",
        },
    ]

    revoke = [
        cli(env, "token", "revoke", "1"),
        cli(env, "token", "revoke", "QXBpVG9rZW46Mg=="),
        cli(env, "token", "revoke", "1"),
    ]
    assert [(r.returncode, r.stdout) for r in revoke] == [
        (0, "token 1 (USER ada@example.com) revoked\n"),
        (0, "token 2 (SERVICE runner) revoked\n"),
        (0, "token 1 (USER ada@example.com) was revoked already\n"),
    ]
    for unknown in ("99", "garbage", "VXNlcjox"):
        missing = cli(env, "token", "revoke", unknown)
        assert (missing.returncode, missing.stderr) == (1, f"creditline: no token with id {unknown}\n")
    revoked = [row[-1] for row in token_table(env)[1:]]
    assert [bool(INSTANT.fullmatch(cell)) for cell in revoked] == [True, True, False]
    assert revoked[2] == "-"


def test_the_command_line_imports_no_application_until_a_command_needs_it() -> None:
    """Every ``creditline`` command imported the GraphQL application, uvicorn and billing: 0.8 s before a
    ``token create`` ran its first statement. Only ``serve``, ``sweep``, ``webhooks`` and ``demo`` need them."""
    heavy = ("creditline.app", "strawberry", "graphql", "starlette", "uvicorn", "billing", "stripe", "creditline.demo")
    probe = f"import sys, creditline.cli; print([m for m in {heavy!r} if m in sys.modules])"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
