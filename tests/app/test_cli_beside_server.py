"""The command line beside a running server on the same database (issue 11, point 4; README, Command line).

A real ``creditline serve`` process serves spends over HTTP while ``creditline`` commands run as processes
of their own: on SQLite every transaction takes the database's write lock (``BEGIN IMMEDIATE``), so the
commands' writes never interleave with a spend's, and nothing is lost or counted twice; the audit stays
clean. A second server is refused (tests/app/test_cli.py), so is a migration under a live server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.ids import encode_id
from tests.support.backends import scratch_postgres
from tests.support.processes import served

SPENDS = 240
CONCURRENCY = 24
SPEND = (
    "mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename"
    " ... on SpendCreditsSuccess { usageEvent { id } } } }"
)
GRANT = (
    "mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { __typename"
    " ... on GrantCreditsSuccess { lot { id } } } }"
)
BALANCE = "query($id: ID!) { node(id: $id) { ... on User { credit { balance { total } } } } }"
ADA = encode_id("User", 1)


@dataclass
class Done:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def cli(env: dict[str, str], *args: str) -> Done:
    done = subprocess.run(
        [sys.executable, "-m", "creditline", *args], env=env, capture_output=True, text=True, timeout=120
    )
    return Done(args, done.returncode, done.stdout, done.stderr)


async def acli(env: dict[str, str], *args: str) -> Done:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "creditline",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Done(args, proc.returncode, out.decode(), err.decode())


def last_line(done: Done) -> str:
    return done.stdout.splitlines()[-1]


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/beside.sqlite3"
        return
    # Small pools: a server and nine commands at once, on a PostgreSQL other test runs share.
    async with scratch_postgres("creditline_cli", "minsize=1&maxsize=5") as url:
        yield url


def environment(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CREDITLINE_DATABASE_URL": database_url,
        "CREDITLINE_SIGNUP_BONUS_CREDITS": "100",
        "CREDITLINE_SWEEP_INTERVAL_SECONDS": "1",  # the server's own sweeper runs beside the CLI's sweep
        **extra,
    }


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return environment(f"sqlite://{tmp_path}/beside.sqlite3", CREDITLINE_DB_STATEMENT_TIMEOUT_MS="700")


def sqlite_file(env: dict[str, str]) -> str:
    return env["CREDITLINE_DATABASE_URL"].removeprefix("sqlite://")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]


@contextlib.contextmanager
def start_server(env: dict[str, str]) -> Iterator[Server]:
    with served(env, ready="/readyz") as (url, proc):
        yield Server(url, proc)


def prepared(env: dict[str, str]) -> str:
    """Migrate, create ada (user 1) and return a service token that spends for her."""
    assert cli(env, "migrate").returncode == 0
    assert cli(env, "user", "create", "ada@example.com").returncode == 0
    made = cli(env, "token", "create", "--service", "agent", "--scope", "usage:write")
    assert made.returncode == 0, made.stderr
    return last_line(made)


async def graphql(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"authorization": f"Bearer {token}"}
    )
    body: dict[str, Any] = response.json()
    return body


def spend_input(key: str) -> dict[str, Any]:
    return {
        "input": {"userId": ADA, "agentId": "storm", "activity": "answer", "credits": "0.01", "idempotencyKey": key}
    }


async def spend_storm(client: httpx.AsyncClient, token: str, keys: list[str]) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str) -> dict[str, Any]:
        async with gate:
            return await graphql(client, token, SPEND, spend_input(key))

    return await asyncio.gather(*(one(key) for key in keys))


async def test_writing_commands_beside_a_server_under_a_spend_storm(database_url: str) -> None:
    # The subject is exactness beside the commands, not latency: on a loaded machine 24 spends queued on one
    # account's lock outwaited the default 5 s bounds and were answered SERVICE_UNAVAILABLE.
    env = environment(
        database_url, CREDITLINE_DB_ACQUIRE_TIMEOUT_SECONDS="60", CREDITLINE_DB_STATEMENT_TIMEOUT_MS="60000"
    )
    agent = prepared(env)
    with start_server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            keys = [f"storm-{i}" for i in range(SPENDS)]

            async def commands() -> list[Done]:
                await asyncio.sleep(0.5)  # the storm is under way
                return await asyncio.gather(
                    acli(env, "user", "create", "bob@example.com"),
                    acli(env, "user", "create", "cy@example.com"),
                    acli(env, "token", "create", "--admin", "--name", "ops"),
                    acli(env, "token", "create", "--service", "second", "--scope", "usage:write"),
                    acli(env, "token", "create", "--user", "ada@example.com"),
                    acli(env, "sweep"),
                    acli(env, "audit"),
                    acli(env, "migrate"),
                    acli(env, "demo"),
                )

            answers, done = await asyncio.gather(spend_storm(client, agent, keys), commands())
            assert [a["data"]["spendCredits"]["__typename"] for a in answers] == ["SpendCreditsSuccess"] * SPENDS
            events = {a["data"]["spendCredits"]["usageEvent"]["id"] for a in answers}
            assert len(events) == SPENDS
            by_command = {" ".join(d.args[:2]): d for d in done}
            for d in done:
                assert (d.args, d.returncode, d.stderr) == (d.args, 0, ""), d
            created = sorted(
                d.stdout for d in done if d.args[:2] == ("user", "create")
            )  # ids in the order the commands won the write lock
            assert [re.sub(r"VXNlcjo\w+=*", "ID", line) for line in created] == [
                "user bob@example.com created: ID\n",
                "user cy@example.com created: ID\n",
            ]
            assert by_command["migrate"].stdout == "nothing to migrate: every migration is applied\n"
            assert re.fullmatch(r"audit: [1-5] accounts checked, 0 problems\n", by_command["audit"].stdout)
            assert by_command["sweep"].stdout.startswith("sweep: 0 lots expired, 0 holds released,")
            assert "Demo data created" in by_command["demo"].stdout

            # The tokens the commands made work against the running server at once.
            admin = last_line(next(d for d in done if "--admin" in d.args))
            second = last_line(next(d for d in done if "second" in d.args))
            user = last_line(next(d for d in done if "--user" in d.args))
            granted = await graphql(
                client,
                admin,
                GRANT,
                {
                    "input": {
                        "accountId": encode_id("CreditAccount", 1),
                        "credits": "7",
                        "kind": "PAID",
                        "idempotencyKey": "g1",
                    }
                },
            )
            assert granted["data"]["grantCredits"]["__typename"] == "GrantCreditsSuccess"
            extra = await graphql(client, second, SPEND, spend_input("after-1"))
            assert extra["data"]["spendCredits"]["__typename"] == "SpendCreditsSuccess"
            me = await graphql(client, user, "{ me { email } }", {})
            assert me == {"data": {"me": {"email": "ada@example.com"}}}

            # Replays are answered from their key: nothing is counted twice.
            replays = await spend_storm(client, agent, keys[:40])
            assert [r["data"]["spendCredits"]["usageEvent"]["id"] for r in replays] == [
                a["data"]["spendCredits"]["usageEvent"]["id"] for a in answers[:40]
            ]
            balance = await graphql(client, admin, BALANCE, {"id": ADA})
            # 100 of bonus, 7 granted, 241 spends of 0.01.
            assert balance == {"data": {"node": {"credit": {"balance": {"total": "104.59"}}}}}
        audit = cli(env, "audit")
        assert (audit.returncode, audit.stdout) == (0, "audit: 4 accounts checked, 0 problems\n")


async def test_a_frozen_writer_makes_commands_say_busy_and_spends_unavailable(sqlite_env: dict[str, str]) -> None:
    # Another process holds SQLite's write lock past the busy timeout (700 ms here), as a frozen server would.
    agent = prepared(sqlite_env)
    with start_server(sqlite_env) as server:
        holder = sqlite3.connect(sqlite_file(sqlite_env), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            busy = (
                f"creditline: the SQLite database {sqlite_file(sqlite_env)} is busy: another process held its write"
                " lock for more than 700 ms (CREDITLINE_DB_STATEMENT_TIMEOUT_MS); try again\n"
            )
            for args in (("user", "create", "bob@example.com"), ("token", "create", "--admin")):
                refused = cli(sqlite_env, *args)
                assert (refused.returncode, refused.stdout, refused.stderr) == (75, "", busy)
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                unavailable = await graphql(client, agent, SPEND, spend_input("k1"))
                assert unavailable["data"] is None
                assert [e["extensions"]["code"] for e in unavailable["errors"]] == ["SERVICE_UNAVAILABLE"]
                holder.execute("ROLLBACK")
                # Once the lock is free the same key spends, once; the refused commands changed nothing.
                spent = await graphql(client, agent, SPEND, spend_input("k1"))
                assert spent["data"]["spendCredits"]["__typename"] == "SpendCreditsSuccess"
        finally:
            holder.close()
        counts = sqlite3.connect(sqlite_file(sqlite_env)).execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM api_tokens),"
            " (SELECT count(*) FROM usage_events)"
        )
        assert counts.fetchone() == (1, 1, 1)
        assert cli(sqlite_env, "user", "create", "bob@example.com").returncode == 0
        audit = cli(sqlite_env, "audit")
        assert (audit.returncode, audit.stdout) == (0, "audit: 2 accounts checked, 0 problems\n")


async def test_a_spend_that_waited_for_another_process_commit_goes_through(sqlite_env: dict[str, str]) -> None:
    # The interleaving a deferred BEGIN loses: the spend reads the account, another process commits a write,
    # then the spend writes from a stale snapshot and SQLite refuses it (SQLITE_BUSY_SNAPSHOT, no waiting).
    # The server's transactions begin IMMEDIATE: the spend waits for the commit before reading anything.
    env = {**sqlite_env, "CREDITLINE_DB_STATEMENT_TIMEOUT_MS": "10000"}
    agent = prepared(env)
    with start_server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            for attempt in range(3):
                other = sqlite3.connect(sqlite_file(env), isolation_level=None)
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE users SET email = email")
                spend = asyncio.ensure_future(graphql(client, agent, SPEND, spend_input(f"k{attempt}")))
                await asyncio.sleep(0.5)
                assert not spend.done()
                other.execute("COMMIT")
                other.close()
                answer = await spend
                assert answer["data"]["spendCredits"]["__typename"] == "SpendCreditsSuccess", answer
        audit = cli(env, "audit")
        assert (audit.returncode, audit.stdout) == (0, "audit: 1 accounts checked, 0 problems\n")


async def test_a_writer_killed_mid_transaction_loses_nothing_of_the_server(sqlite_env: dict[str, str]) -> None:
    env = {**sqlite_env, "CREDITLINE_DB_STATEMENT_TIMEOUT_MS": "10000"}
    agent = prepared(env)
    with start_server(env) as server:
        # A command killed -9 half-way through its transaction: its write is never committed, and its lock
        # dies with it, so the spends that waited for it go through.
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "c.execute('UPDATE credit_accounts SET balance = balance + 1000000000')\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            sqlite_file(env),
            stdout=asyncio.subprocess.PIPE,
        )
        assert writer.stdout is not None
        assert await writer.stdout.readline() == b"locked\n"
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            storm = asyncio.ensure_future(spend_storm(client, agent, [f"k{i}" for i in range(30)]))
            await asyncio.sleep(1)
            assert not storm.done()  # the spends wait for the write lock
            writer.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(writer.wait(), 10) == -signal.SIGKILL
            answers = await storm
            assert [a["data"]["spendCredits"]["__typename"] for a in answers] == ["SpendCreditsSuccess"] * 30
        made = cli(env, "token", "create", "--admin")
        assert made.returncode == 0, made.stderr
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            balance = await graphql(client, last_line(made), BALANCE, {"id": ADA})
        assert balance == {"data": {"node": {"credit": {"balance": {"total": "99.7"}}}}}
        audit = cli(env, "audit")
        assert (audit.returncode, audit.stdout) == (0, "audit: 1 accounts checked, 0 problems\n")


def test_migrate_beside_a_server_applies_nothing(sqlite_env: dict[str, str]) -> None:
    prepared(sqlite_env)
    with start_server(sqlite_env):
        up_to_date = cli(sqlite_env, "migrate")
        assert (up_to_date.returncode, up_to_date.stdout, up_to_date.stderr) == (
            0,
            "nothing to migrate: every migration is applied\n",
            "",
        )
        # The last migration looks pending (its record gone): applying it under the live server is refused.
        database = sqlite3.connect(sqlite_file(sqlite_env), isolation_level=None)
        (last,) = database.execute("SELECT name FROM tortoise_migrations ORDER BY id DESC LIMIT 1").fetchone()
        database.execute("DELETE FROM tortoise_migrations WHERE name = ?", (last,))
        before = database.execute("SELECT count(*) FROM tortoise_migrations").fetchone()
        refused = cli(sqlite_env, "migrate")
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            2,
            "",
            f"creditline: 1 migration(s) to apply (models.{last}), but a Creditline server (or another"
            f" `creditline migrate`) is running on the SQLite database {sqlite_file(sqlite_env)}: stop it,"
            " migrate, then start it again\n",
        )
        assert database.execute("SELECT count(*) FROM tortoise_migrations").fetchone() == before
        database.close()


def test_a_row_a_concurrent_command_inserted_first_is_a_clear_refusal(sqlite_env: dict[str, str]) -> None:
    # Two `user create` of one email at once: both checked before either inserted (forced here by a check
    # that finds nothing); the second insert breaks the unique index, and says so in one line.
    prepared(sqlite_env)
    raced = subprocess.run(
        [
            sys.executable,
            "-c",
            "import creditline.cli, models.tables\n"
            "async def nobody(**_): return False\n"
            "models.tables.User.exists = nobody\n"
            "creditline.cli.main(['user', 'create', 'ada@example.com'])\n",
        ],
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (raced.returncode, raced.stdout, raced.stderr) == (
        1,
        "",
        "creditline: another command made the same change at the same moment (UNIQUE constraint failed:"
        " users.email): run it again\n",
    )
    users = sqlite3.connect(sqlite_file(sqlite_env)).execute("SELECT email FROM users").fetchall()
    assert users == [("ada@example.com",)]
