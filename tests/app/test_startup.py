"""Start-up refuses what it cannot serve safely (issue 9, points 6 and 14): unsafe production settings, and a
database that is unreachable, missing or not migrated. One line naming the setting to fix, a non-zero exit,
no traceback, and no server answering 500s meanwhile."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from creditline.app import create_app
from creditline.settings import MIN_SECRET_KEY_LENGTH, Settings
from tests.support.backends import MIGRATIONS
from tests.support.live import closed_port
from tests.support.tcp_proxy import running_proxy

KEY = "0123456789abcdefghijklmnopqrstuvwxyz"[:MIN_SECRET_KEY_LENGTH]  # all different characters
SANDBOX = (
    "the sandbox gateway grants credit for test card tokens: set CREDITLINE_GATEWAY=stripe (or legacy) with its keys,"
    " or CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION=1 for a demo"
)
NO_KEY = "CREDITLINE_SECRET_KEY must be a secret of at least 32 characters (it is empty)"
REFUSAL = "creditline: refusing to start with CREDITLINE_ENV=production: "
NOT_RANDOM = (
    "CREDITLINE_SECRET_KEY must be random, without spaces and of at least 10 different characters (e.g. the output"
    " of `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
)


def bare_env(**settings: str) -> dict[str, str]:
    """The environment without any CREDITLINE_* of the caller's, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CREDITLINE_")}
    return {**env, **settings}


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditline", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


# Point 6: production refuses unsafe settings.


@pytest.mark.parametrize(
    ("settings", "problems"),
    [
        ({}, [SANDBOX, NO_KEY]),
        ({"CREDITLINE_SECRET_KEY": KEY}, [SANDBOX]),
        ({"CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1"}, [NO_KEY]),
        (
            {"CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1", "CREDITLINE_SECRET_KEY": "short"},
            ["CREDITLINE_SECRET_KEY must be a secret of at least 32 characters (it has 5)"],
        ),
        (
            {"CREDITLINE_GATEWAY": "stripe", "CREDITLINE_SECRET_KEY": KEY},
            [
                "the stripe gateway needs CREDITLINE_STRIPE_SECRET_KEY",
                "the stripe gateway needs CREDITLINE_STRIPE_WEBHOOK_SECRET (its webhooks finish payments)",
            ],
        ),
        (
            {"CREDITLINE_GATEWAY": "stripe", "CREDITLINE_SECRET_KEY": KEY, "CREDITLINE_STRIPE_SECRET_KEY": "sk_x"},
            ["the stripe gateway needs CREDITLINE_STRIPE_WEBHOOK_SECRET (its webhooks finish payments)"],
        ),
        (
            {"CREDITLINE_GATEWAY": "legacy", "CREDITLINE_SECRET_KEY": KEY},
            ["the legacy gateway needs CREDITLINE_STRIPE_SECRET_KEY"],
        ),
        (
            {"CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1", "CREDITLINE_SECRET_KEY": " " * 32},
            [NOT_RANDOM],
        ),
        (
            {"CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1", "CREDITLINE_SECRET_KEY": "a" * 64},
            [NOT_RANDOM],
        ),
        (
            {"CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1", "CREDITLINE_SECRET_KEY": KEY[:16] + " " + KEY[16:]},
            [NOT_RANDOM],
        ),
        (
            {
                "CREDITLINE_GATEWAY": "stripe",
                "CREDITLINE_SECRET_KEY": KEY,
                "CREDITLINE_STRIPE_SECRET_KEY": " ",
                "CREDITLINE_STRIPE_WEBHOOK_SECRET": " ",
            },
            [
                "the stripe gateway needs CREDITLINE_STRIPE_SECRET_KEY",
                "the stripe gateway needs CREDITLINE_STRIPE_WEBHOOK_SECRET (its webhooks finish payments)",
            ],
        ),
        (
            {
                "CREDITLINE_GATEWAY": "stripe",
                "CREDITLINE_SECRET_KEY": KEY,
                "CREDITLINE_STRIPE_SECRET_KEY": "pk_live_x",
                "CREDITLINE_STRIPE_WEBHOOK_SECRET": "secret",
            },
            [
                "CREDITLINE_STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_... or rk_...)",
                "CREDITLINE_STRIPE_WEBHOOK_SECRET must be a Stripe webhook signing secret (whsec_...)",
            ],
        ),
    ],
)
def test_production_problems_name_every_unsafe_setting(settings: dict[str, str], problems: list[str]) -> None:
    parsed = Settings.from_env({"CREDITLINE_ENV": "production", **settings})
    assert parsed.problems() == problems
    assert parsed.refusal() == REFUSAL + "; ".join(problems)


@pytest.mark.parametrize(
    "settings",
    [
        {"CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION": "1", "CREDITLINE_SECRET_KEY": KEY},
        {"CREDITLINE_GATEWAY": "legacy", "CREDITLINE_SECRET_KEY": KEY, "CREDITLINE_STRIPE_SECRET_KEY": "sk_x"},
        {
            "CREDITLINE_GATEWAY": "stripe",
            "CREDITLINE_SECRET_KEY": KEY,
            "CREDITLINE_STRIPE_SECRET_KEY": "sk_x",
            "CREDITLINE_STRIPE_WEBHOOK_SECRET": "whsec_x",
        },
    ],
)
def test_safe_production_settings_have_no_problem(settings: dict[str, str]) -> None:
    assert Settings.from_env({"CREDITLINE_ENV": "production", **settings}).problems() == []


@pytest.mark.parametrize("value", ["Production", "prod", " production", "production ", "staging"])
def test_an_environment_other_than_development_or_production_stops_start_up(value: str) -> None:
    # Read as development, it would serve introspection, GraphiQL and the sandbox where production was meant.
    with pytest.raises(SystemExit) as refused:
        Settings.from_env({"CREDITLINE_ENV": value})
    assert str(refused.value) == f"CREDITLINE_ENV must be development or production, got {value!r}"


PUBLISHABLE_REFUSAL = (
    "CREDITLINE_STRIPE_PUBLISHABLE_KEY must be a Stripe publishable key (pk_...): it is sent to browsers"
)


@pytest.mark.parametrize("value", ["sk_test_123", "rk_live_abc", "whsec_x", "pub_123", "PK_test_1"])
def test_a_publishable_key_not_of_the_pk_form_stops_start_up_without_echoing_it(value: str) -> None:
    # It is sent to every browser that opens the page: a secret key in this setting would be published.
    with pytest.raises(SystemExit) as refused:
        Settings.from_env({"CREDITLINE_STRIPE_PUBLISHABLE_KEY": value})
    assert str(refused.value) == PUBLISHABLE_REFUSAL
    assert value not in str(refused.value)


def test_a_publishable_key_is_read_trimmed_and_may_be_unset() -> None:
    assert Settings.from_env({"CREDITLINE_STRIPE_PUBLISHABLE_KEY": " pk_test_abc "}).stripe_publishable_key == (
        "pk_test_abc"
    )
    assert Settings.from_env({}).stripe_publishable_key == ""


def test_a_secret_key_as_publishable_key_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    done = cli(
        bare_env(
            CREDITLINE_STRIPE_PUBLISHABLE_KEY="sk_test_secret",
            CREDITLINE_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3",
        ),
        "serve",
    )
    assert (done.returncode, done.stderr) == (1, PUBLISHABLE_REFUSAL + "\n")


def test_an_unknown_environment_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    done = cli(
        bare_env(CREDITLINE_ENV="Production", CREDITLINE_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3"), "serve"
    )
    assert (done.returncode, done.stderr) == (1, "CREDITLINE_ENV must be development or production, got 'Production'\n")


def test_development_is_not_held_to_production_rules() -> None:
    assert Settings.from_env({}).problems() == []
    assert Settings.from_env({}).refusal() is None


def test_create_app_refuses_unsafe_production_settings_for_any_asgi_server() -> None:
    with pytest.raises(SystemExit) as refused:
        create_app(Settings(env="production", database_url="unused"))
    assert str(refused.value) == REFUSAL + f"{SANDBOX}; {NO_KEY}"


def test_serve_refuses_unsafe_production_settings_in_one_line(tmp_path: Path) -> None:
    env = bare_env(CREDITLINE_ENV="production", CREDITLINE_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3")
    served = cli(env, "serve", "--port", str(closed_port()))
    assert (served.returncode, served.stdout, served.stderr) == (1, "", REFUSAL + f"{SANDBOX}; {NO_KEY}\n")

    stripe = cli({**env, "CREDITLINE_GATEWAY": "stripe", "CREDITLINE_SECRET_KEY": KEY}, "serve")
    assert (stripe.returncode, stripe.stderr) == (
        1,
        REFUSAL + "the stripe gateway needs CREDITLINE_STRIPE_SECRET_KEY; the stripe gateway needs"
        " CREDITLINE_STRIPE_WEBHOOK_SECRET (its webhooks finish payments)\n",
    )


def test_serve_starts_in_production_with_safe_settings(tmp_path: Path) -> None:
    env = bare_env(
        CREDITLINE_ENV="production",
        CREDITLINE_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3",
        CREDITLINE_ALLOW_SANDBOX_IN_PRODUCTION="1",
        CREDITLINE_SECRET_KEY=KEY,
    )
    assert cli(env, "migrate").returncode == 0
    port = closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# Point 14: a database that cannot be used.


@pytest.mark.parametrize("command", ["serve", "migrate", "audit"])
def test_unreachable_postgres_is_one_line_naming_the_setting(command: str) -> None:
    port = closed_port()
    env = bare_env(CREDITLINE_DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/creditline")
    result = cli(env, command)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"creditline: CREDITLINE_DATABASE_URL: cannot use the database at postgresql://postgres:***@127.0.0.1:{port}"
        f"/creditline: [Errno 111] Connect call failed ('127.0.0.1', {port})\n",
    )


@pytest.mark.parametrize("command", ["serve", "migrate", "audit"])
def test_sqlite_in_a_missing_directory_is_one_line_naming_the_setting(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-directory"
    result = cli(bare_env(CREDITLINE_DATABASE_URL=f"sqlite://{missing}/db.sqlite3"), command)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"creditline: CREDITLINE_DATABASE_URL: the directory of the SQLite database {missing}/db.sqlite3 does not"
        f" exist ({missing})\n",
    )
    assert not missing.exists()


@pytest.mark.parametrize("command", ["serve", "audit"])
def test_a_database_not_migrated_is_refused_until_migrate(tmp_path: Path, command: str) -> None:
    env = bare_env(CREDITLINE_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3")
    result = cli(env, command)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"creditline: the database needs {len(MIGRATIONS)} migration(s) ({', '.join(MIGRATIONS)}):"
        " run `creditline migrate`\n",
    )
    assert cli(env, "migrate").stdout == "migrations applied\n"
    assert cli(env, "audit").stdout == "audit: 0 accounts checked, 0 problems\n"


async def test_a_frozen_database_fails_the_command_within_the_acquire_timeout() -> None:
    # The proxy accepts connections and never forwards a byte: a database host that stopped answering.
    async with running_proxy("127.0.0.1", closed_port()) as proxy:
        proxy.freeze()
        env = bare_env(
            CREDITLINE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{proxy.port}/creditline",
            CREDITLINE_DB_ACQUIRE_TIMEOUT_SECONDS="1",
        )
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "creditline",
            "audit",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        elapsed = time.monotonic() - started
    assert (process.returncode, stdout, stderr.decode()) == (
        1,
        b"",
        f"creditline: CREDITLINE_DATABASE_URL: cannot use the database at postgresql://postgres@127.0.0.1:{proxy.port}"
        "/creditline: it did not answer in time\n",
    )
    assert elapsed < 10  # interpreter start-up (~2 s) and the 1 s bound, not asyncpg's default 60 s


def test_settings_of_the_bounds_are_read_and_checked() -> None:
    parsed = Settings.from_env(
        {
            "CREDITLINE_DB_ACQUIRE_TIMEOUT_SECONDS": "0.5",
            "CREDITLINE_DB_STATEMENT_TIMEOUT_MS": "2500",
            "CREDITLINE_READINESS_TIMEOUT_SECONDS": "1",
        }
    )
    assert (parsed.db_acquire_timeout_seconds, parsed.db_statement_timeout_ms, parsed.readiness_timeout_seconds) == (
        0.5,
        2500,
        1.0,
    )
    with pytest.raises(SystemExit) as refused:
        Settings.from_env({"CREDITLINE_DB_ACQUIRE_TIMEOUT_SECONDS": "0"})
    assert str(refused.value) == "CREDITLINE_DB_ACQUIRE_TIMEOUT_SECONDS must be a positive number, got '0'"
