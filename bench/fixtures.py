"""Scratch databases: create, migrate and seed them, count and audit what the runs wrote, drop them."""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from tortoise import connections
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.transactions import in_transaction

from bench.config import AGENT_ID, SERVICE_NAME, SIGNUP_BONUS
from creditline import db
from creditline.clock import Clock
from models import ledger, limits
from models.limit_rules import LimitSpec
from models.sql import Sql
from models.tables import ApiToken, LimitScope, LimitWindow, TokenKind
from models.tokens import create_token


@dataclass(frozen=True)
class Seeded:
    user_ids: list[int]
    """Primary keys of the bench users (each has one account with one large FREE lot)."""
    token: str
    """A service token with scope usage:write."""


@dataclass(frozen=True)
class AuditOutcome:
    accounts: int
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class SeededSubscribers:
    user_ids: list[int]
    """Primary keys of the users, each with one account with one large FREE lot."""
    user_tokens: list[str]
    """A user token for each of ``user_ids`` (the same order)."""
    account_ids: list[int]
    """The account of each of ``user_ids`` (the same order)."""
    token: str
    """A service token with scope usage:write."""


class PostgresUnavailable(Exception):
    pass


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def create_postgres_database(admin_url: str) -> str:
    """Create ``creditline_bench_<random>`` next to ``admin_url``'s database; return its URL."""
    name = f"creditline_bench_{secrets.token_hex(4)}"
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise PostgresUnavailable(f"{type(exc).__name__}: {exc}") from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def drop_postgres_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _init(url: str) -> None:
    # Tortoise caches each model's INSERT statement by connection name, not by dialect: forget the SQLite
    # ones before the same process talks to PostgreSQL.
    EXECUTOR_CACHE.clear()
    await db.init_db(url)


async def migrate_and_seed(url: str, accounts: int) -> Seeded:
    """Apply the migrations, then create the users (through the ledger, in one transaction) and a token."""
    EXECUTOR_CACHE.clear()
    await db.migrate(url)
    await db.close_db()
    await _init(url)
    try:
        now = Clock().now()
        user_ids = []
        async with in_transaction():
            for n in range(accounts):
                user_ids.append(
                    await ledger.create_user(
                        f"bench{n}@bench.local",
                        signup_bonus=SIGNUP_BONUS,
                        bonus_lifetime=timedelta(days=30),
                        now=now,
                    )
                )
        token = await create_token(TokenKind.SERVICE, name=SERVICE_NAME, scopes=("usage:write",), now=now)
    finally:
        await db.close_db()
    return Seeded(user_ids, token)


async def seed_subscribers(url: str, users: int) -> SeededSubscribers:
    """``migrate_and_seed``, then a user token for every user (in one transaction)."""
    seeded = await migrate_and_seed(url, users)
    await _init(url)
    try:
        now = Clock().now()
        async with in_transaction():
            tokens = [
                await create_token(TokenKind.USER, name=f"bench{n}@bench.local", user_id=user_id, now=now)
                for n, user_id in enumerate(seeded.user_ids)
            ]
        rows = await Sql(connections.get("default")).fetch("SELECT id, user_id FROM credit_accounts")
        account_of = {int(row["user_id"]): int(row["id"]) for row in rows}
    finally:
        await db.close_db()
    return SeededSubscribers(seeded.user_ids, tokens, [account_of[u] for u in seeded.user_ids], seeded.token)


async def set_three_limits(url: str, user_ids: list[int] | None = None) -> int:
    """Give every bench account (or only those of ``user_ids``) three limits that apply to every bench spend
    and never refuse one: the account's month, the bench agent's day, and the bench token's last 24 hours
    (each with a warning threshold, so the warnings are computed too). Returns how many were set."""
    await _init(url)
    try:
        now = Clock().now()
        token = await ApiToken.get(name=SERVICE_NAME)
        specs = (
            LimitSpec(LimitScope.ACCOUNT, SIGNUP_BONUS, LimitWindow.MONTH, warn_percent=80),
            LimitSpec(LimitScope.AGENT, SIGNUP_BONUS, LimitWindow.DAY, agent_id=AGENT_ID, warn_percent=80),
            LimitSpec(
                LimitScope.TOKEN, SIGNUP_BONUS, LimitWindow.ROLLING_HOURS, 24, token_id=token.id, warn_percent=80
            ),
        )
        rows = await Sql(connections.get("default")).fetch("SELECT id, user_id FROM credit_accounts")
        if user_ids is not None:
            wanted = set(user_ids)
            rows = [row for row in rows if int(row["user_id"]) in wanted]
        for row in rows:
            for spec in specs:
                await limits.set_limit(int(row["id"]), spec, now)
        return len(rows) * len(specs)
    finally:
        await db.close_db()


async def set_alert_levels(url: str, levels: str | None, user_ids: list[int] | None = None) -> int:
    """Give every bench account (or only those of ``user_ids``) the balance-alert levels ``levels`` (stored
    form: comma-separated micro-credits; ``None``: none, the deployment default of 0). Returns how many
    accounts."""
    await _init(url)
    try:
        sql = Sql(connections.get("default"))
        if user_ids is None:
            return await sql.execute("UPDATE credit_accounts SET alert_levels = $1", levels)
        changed = 0
        for user_id in user_ids:
            changed += await sql.execute(
                "UPDATE credit_accounts SET alert_levels = $1 WHERE user_id = $2", levels, user_id
            )
        return changed
    finally:
        await db.close_db()


async def count_alert_events(url: str) -> int:
    await _init(url)
    try:
        row = await Sql(connections.get("default")).fetchrow("SELECT COUNT(*) AS n FROM events")
        assert row is not None
        return int(row["n"])
    finally:
        await db.close_db()


async def count_usage_events(url: str) -> int:
    await _init(url)
    try:
        row = await Sql(connections.get("default")).fetchrow("SELECT COUNT(*) AS n FROM usage_events")
        assert row is not None
        return int(row["n"])
    finally:
        await db.close_db()


async def run_audit(url: str) -> AuditOutcome:
    """``creditline audit``: cached balance = Σ lot remaining = Σ ledger amounts, for every account."""
    await _init(url)
    try:
        findings = await ledger.audit()
        row = await Sql(connections.get("default")).fetchrow("SELECT COUNT(*) AS n FROM credit_accounts")
        assert row is not None
        return AuditOutcome(int(row["n"]), [f"account {f.account_id}: {f.problem}" for f in findings])
    finally:
        await db.close_db()


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="creditline-bench-")
