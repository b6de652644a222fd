"""The command line (README, Command line) on a SQLite file, with a real uvicorn server for the end-to-end check."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/cli.sqlite3",
        "CREDITLINE_SIGNUP_BONUS_CREDITS": "5",
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditline", *args], env=env, capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    assert cli(env, "migrate").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not start")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


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
        "creditline: unknown scope 'billing': the valid scopes are balance:read, billing:read, usage:write\n",
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


def test_served_api_spends_and_a_second_sqlite_writer_is_refused(
    env: dict[str, str], server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, _ = server
    # The server holds the SQLite writer lock: CLI writes and a second server are refused, clearly.
    refused = cli(env, "user", "create", "bob@example.com")
    assert refused.returncode == 2
    assert "Another Creditline process is already writing to the SQLite database" in refused.stderr
    second = subprocess.run(
        [sys.executable, "-m", "creditline", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "A SQLite deployment is a single process" in second.stderr
    # Reading is allowed beside the server.
    assert cli(env, "audit").returncode == 0


def test_demo_creates_user_and_working_tokens_once(env: dict[str, str]) -> None:
    assert cli(env, "migrate").returncode == 0
    first = cli(env, "demo")
    assert first.returncode == 0
    tokens = {line.split()[0]: line.split()[2] for line in first.stdout.splitlines() if " token " in line}
    assert set(tokens) == {"user", "agent", "admin"}
    again = cli(env, "demo")
    assert again.stdout.startswith("demo data exists already")

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        spent = graphql(
            url,
            tokens["agent"],
            'mutation { spendCredits(input: {userId: "VXNlcjox", agentId: "demo", activity: "answer",'
            ' credits: "1.5", idempotencyKey: "k"}) { __typename ... on SpendCreditsSuccess { balance { total } } } }',
        )
        assert spent == {"data": {"spendCredits": {"__typename": "SpendCreditsSuccess", "balance": {"total": "3.5"}}}}
        me = graphql(url, tokens["user"], "{ me { email credit { balance { free } } } }")
        assert me == {"data": {"me": {"email": "demo@creditline.local", "credit": {"balance": {"free": "3.5"}}}}}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
