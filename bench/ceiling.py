"""The raw-SQL ceiling: the writes of one spend, straight through the driver, with the app's concurrency.

No HTTP, no GraphQL, no ORM: ``concurrency`` asyncio workers each run spends back to back for the given
time, one transaction per spend, with the statement sequence of ``models.ledger.spend()``:

    BEGIN
    lock the account row (joined to the caller's idempotency record and the account's auto top-up, which
        the bench accounts do not have; FOR UPDATE OF a on PostgreSQL)
    SELECT the live lots
    UPDATE the lot taken from
    INSERT usage_events RETURNING id
    INSERT usage_allocations
    INSERT ... ON CONFLICT DO UPDATE usage_rollups (the hour's report rollups: activity, agent, member;
        a spend with an agent run adds the run's row to the same statement, and the bench's have none)
    INSERT ledger_entries
    UPDATE credit_accounts (balance, held, version)
    INSERT idempotency_records ... ON CONFLICT DO NOTHING RETURNING id
    COMMIT

Beside it the *minimal* ceiling (``minimal=True``), the least a spend can be and still keep the books:

    BEGIN
    lock the account row (SELECT ... FOR UPDATE on PostgreSQL)
    SELECT its live lots
    UPDATE the one lot taken from
    INSERT usage_events RETURNING id
    INSERT ledger_entries
    UPDATE credit_accounts (balance, version)
    COMMIT

(no idempotency record, no allocations, no rollups, no auto top-up or limits read with the lock).

Balances move exactly as the ledger moves them (lot remaining, account balance and version, the ledger
row's balance_after and version), so ``creditline audit`` still passes afterwards. PostgreSQL uses an
asyncpg pool of one connection per worker, opened before the timed runs; SQLite one aiosqlite connection serialized by a
lock, with the pragmas the app sets (WAL journal, foreign keys on, default synchronous, a busy timeout) and
its ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg

from bench.config import ACTIVITY, AGENT_ID, SPEND_CREDITS, SPEND_MICRO
from models.ledger import ROLL_UP_USAGE
from models.tables import CreditKind, LedgerEntryType

SCOPE = "service:bench-ceiling"

LOCK_ACCOUNT = (
    "SELECT a.id, a.balance, a.held, a.version, i.operation AS idem_operation, i.request_hash AS idem_hash,"
    " i.response AS idem_response, t.enabled AS atu_enabled, t.threshold AS atu_threshold,"
    " t.pending_transaction_id AS atu_pending, t.next_attempt_at AS atu_next FROM credit_accounts a"
    " LEFT JOIN idempotency_records i ON i.scope = $2 AND i.key = $3"
    " LEFT JOIN auto_top_ups t ON t.account_id = a.id WHERE a.user_id = $1"
)
LIVE_LOTS = (
    "SELECT id, kind, remaining, expires_at, granted_at FROM credit_lots"
    " WHERE account_id = $1 AND status = 'ACTIVE' AND remaining > 0"
)
TAKE_FROM_LOT = (
    "UPDATE credit_lots SET remaining = remaining - $1,"
    " status = CASE WHEN remaining - $2 = 0 THEN 'DEPLETED' ELSE status END WHERE id = $3"
)
INSERT_USAGE = (
    "INSERT INTO usage_events (account_id, user_id, organization_id, hold_id, agent_id, activity,"
    " quantity, credits, free_credits, paid_credits, occurred_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id"
)
INSERT_ALLOCATION = "INSERT INTO usage_allocations (usage_event_id, lot_id, kind, amount) VALUES ($1, $2, $3, $4)"
INSERT_LEDGER = (
    "INSERT INTO ledger_entries (account_id, entry_type, amount, free_amount, paid_amount, held_delta,"
    " balance_after, held_after, version, lot_id, usage_event_id, hold_id, reason, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
ROLL_UP = ROLL_UP_USAGE  # the very statement the ledger runs for a spend without a run: one row per dimension
SAVE_ACCOUNT = "UPDATE credit_accounts SET balance = $1, held = $2, version = $3 WHERE id = $4"
STORE_KEY = (
    "INSERT INTO idempotency_records (scope, key, operation, request_hash, response, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING RETURNING id"
)


MINIMAL_LOCK = "SELECT id, balance, held, version FROM credit_accounts WHERE user_id = $1"
MINIMAL_LOTS = LIVE_LOTS
MINIMAL_TAKE = "UPDATE credit_lots SET remaining = remaining - $1 WHERE id = $2"
MINIMAL_SAVE = "UPDATE credit_accounts SET balance = $1, version = $2 WHERE id = $3"
MINIMAL_STATEMENTS = (MINIMAL_LOCK, MINIMAL_LOTS, MINIMAL_TAKE, INSERT_USAGE, INSERT_LEDGER, MINIMAL_SAVE)

STATEMENTS = (
    LOCK_ACCOUNT,
    LIVE_LOTS,
    TAKE_FROM_LOT,
    INSERT_USAGE,
    INSERT_ALLOCATION,
    ROLL_UP,
    INSERT_LEDGER,
    SAVE_ACCOUNT,
    STORE_KEY,
)
_PLACEHOLDER = re.compile(r"\$(\d+)")


def qmark(sql: str) -> tuple[str, tuple[int, ...]]:
    """A ``$n`` statement for SQLite: its ``?`` text, and the argument indexes in the order ``?`` binds them."""
    return _PLACEHOLDER.sub("?", sql), tuple(int(n) - 1 for n in _PLACEHOLDER.findall(sql))


@dataclass(frozen=True)
class Statements:
    """The statements of a spend in one dialect."""

    lock_account: str
    live_lots: str
    take_from_lot: str
    insert_usage: str
    insert_allocation: str
    roll_up: str
    insert_ledger: str
    save_account: str
    store_key: str

    @classmethod
    def postgres(cls) -> Statements:
        lock_account, *rest = STATEMENTS
        return cls(lock_account + " FOR UPDATE OF a", *rest)

    @classmethod
    def sqlite(cls) -> Statements:
        """No row lock: SQLite has one writer at a time already."""
        return cls(*(qmark(sql)[0] for sql in STATEMENTS))


@dataclass(frozen=True)
class MinimalStatements:
    """The statements of the minimal spend in one dialect."""

    lock_account: str
    live_lots: str
    take_from_lot: str
    insert_usage: str
    insert_ledger: str
    save_account: str

    @classmethod
    def postgres(cls) -> MinimalStatements:
        lock_account, *rest = MINIMAL_STATEMENTS
        return cls(lock_account + " FOR UPDATE", *rest)

    @classmethod
    def sqlite(cls) -> MinimalStatements:
        return cls(*(qmark(sql)[0] for sql in MINIMAL_STATEMENTS))


Fetch = Callable[..., Awaitable[Sequence[Any]]]
"""``fetch(sql, *args)``: the rows of a statement."""


@dataclass(frozen=True)
class CeilingRun:
    spends: int
    seconds: float

    @property
    def spends_per_second(self) -> float:
        return self.spends / self.seconds if self.seconds else 0.0


def _order(lot: Any) -> tuple[int, int, str, str, int]:
    # The ledger's order: FREE first, soonest expiry first (none last), then the oldest grant, the lowest id.
    expires = lot["expires_at"]
    return (
        0 if lot["kind"] == CreditKind.FREE else 1,
        1 if expires is None else 0,
        str(expires or ""),
        str(lot["granted_at"]),
        int(lot["id"]),
    )


async def _append_spend(
    fetch: Fetch, insert_ledger: str, account: Any, free: int, paid: int, usage_event_id: int, now: datetime
) -> tuple[int, int, int]:
    """Append the SPEND ledger row of ``SPEND_MICRO`` (``free`` + ``paid``); returns the account's balance,
    held credit and version after it, for the caller's update of the account."""
    balance = int(account["balance"]) - SPEND_MICRO
    held = int(account["held"])
    version = int(account["version"]) + 1
    await fetch(
        insert_ledger,
        account["id"],
        LedgerEntryType.SPEND.value,
        -SPEND_MICRO,
        -free,
        -paid,
        0,
        balance,
        held,
        version,
        None,
        usage_event_id,
        None,
        None,
        now,
    )
    return balance, held, version


async def spend_once(fetch: Fetch, sql: Statements, user_id: int, key: str) -> None:
    """One spend of ``SPEND_MICRO`` for ``user_id``: the statements of ``ledger.spend()``, inside the caller's
    transaction."""
    now = datetime.now(UTC)
    request = {"user": user_id, "organization": None, "agent": AGENT_ID, "activity": ACTIVITY}
    request |= {"credits": SPEND_CREDITS, "quantity": None}
    fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    rows = await fetch(sql.lock_account, user_id, SCOPE, key)
    if not rows or rows[0]["idem_hash"] is not None:
        raise RuntimeError(f"no account for user {user_id}, or key {key} used before")
    account = rows[0]
    account_id = account["id"]
    lots = await fetch(sql.live_lots, account_id)  # the bench's lots expire in 30 days: all of them are live
    free_before = sum(int(lot["remaining"]) for lot in lots if lot["kind"] == CreditKind.FREE)
    paid_before = sum(int(lot["remaining"]) for lot in lots) - free_before
    taken: list[tuple[Any, int]] = []
    left = SPEND_MICRO
    for lot in sorted(lots, key=_order):
        if left == 0:
            break
        take = min(left, int(lot["remaining"]))
        taken.append((lot, take))
        left -= take
    if left:
        raise RuntimeError(f"the account of user {user_id} ran out of credit")
    free = paid = 0
    for lot, take in taken:
        await fetch(sql.take_from_lot, take, take, lot["id"])
        if lot["kind"] == CreditKind.FREE:
            free += take
        else:
            paid += take
    inserted = await fetch(
        sql.insert_usage, account_id, user_id, None, None, AGENT_ID, ACTIVITY, None, SPEND_MICRO, free, paid, now
    )
    usage_event_id = inserted[0]["id"]
    for lot, take in taken:
        await fetch(sql.insert_allocation, usage_event_id, lot["id"], lot["kind"], take)
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    await fetch(sql.roll_up, account_id, 0, ACTIVITY, AGENT_ID, str(user_id), hour, SPEND_MICRO, free, paid)
    balance, held, version = await _append_spend(fetch, sql.insert_ledger, account, free, paid, usage_event_id, now)
    await fetch(sql.save_account, balance, held, version, account_id)
    response = {
        "usage_event_id": usage_event_id,
        "credits": SPEND_MICRO,
        "free": free,
        "paid": paid,
        "balance": {"free": free_before - free, "paid": paid_before - paid, "held": held},
    }
    stored = await fetch(
        sql.store_key, SCOPE, key, "spendCredits", fingerprint, json.dumps(response, separators=(",", ":")), now
    )
    if not stored:
        raise RuntimeError(f"idempotency key {key} stored twice")


async def minimal_spend_once(fetch: Fetch, sql: MinimalStatements, user_id: int) -> None:
    """The minimal spend of ``SPEND_MICRO`` for ``user_id`` (see the module's docstring), inside the caller's
    transaction: lock, lots, take from the first lot that covers it, usage event, ledger row, balance."""
    now = datetime.now(UTC)
    rows = await fetch(sql.lock_account, user_id)
    if not rows:
        raise RuntimeError(f"no account for user {user_id}")
    account = rows[0]
    account_id = account["id"]
    lots = await fetch(sql.live_lots, account_id)
    lot = next((lot for lot in sorted(lots, key=_order) if int(lot["remaining"]) >= SPEND_MICRO), None)
    if lot is None:
        raise RuntimeError(f"the account of user {user_id} has no lot covering a spend")
    await fetch(sql.take_from_lot, SPEND_MICRO, lot["id"])
    free, paid = (SPEND_MICRO, 0) if lot["kind"] == CreditKind.FREE else (0, SPEND_MICRO)
    inserted = await fetch(
        sql.insert_usage, account_id, user_id, None, None, AGENT_ID, ACTIVITY, None, SPEND_MICRO, free, paid, now
    )
    balance, held, version = await _append_spend(fetch, sql.insert_ledger, account, free, paid, inserted[0]["id"], now)
    await fetch(sql.save_account, balance, version, account_id)


async def _drive(
    concurrency: int, seconds: float, user_ids: list[int], one: Callable[[int, str], Awaitable[None]]
) -> CeilingRun:
    """``concurrency`` workers running spends for random users until ``seconds`` have passed."""
    tag = "ceiling-" + secrets.token_hex(4)
    counter = 0
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal counter, done
        while time.perf_counter() < deadline:
            counter += 1
            await one(random.choice(user_ids), f"{tag}-{counter}")
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return CeilingRun(done, time.perf_counter() - start)


# -------------------------------------------------------------------------------------------- PostgreSQL


Ceiling = Callable[[list[int], float, bool], Awaitable[CeilingRun]]
"""``ceiling(user_ids, seconds, minimal)``: one timed run of spends for random users of ``user_ids``, the minimal
spend with ``minimal``, the app's statements without."""


@asynccontextmanager
async def postgres_ceiling(url: str, concurrency: int) -> AsyncIterator[Ceiling]:
    """asyncpg, a pool of ``concurrency`` connections opened once for every run the block makes (so a run
    never waits for connections, and the bench holds no more than it drives); ``fetch`` for row-returning
    statements, ``execute`` for the rest (as Tortoise does)."""
    sql = Statements.postgres()
    small = MinimalStatements.postgres()
    no_rows = {sql.take_from_lot, sql.insert_allocation, sql.insert_ledger, sql.save_account}
    no_rows |= {small.take_from_lot, small.insert_ledger, small.save_account}
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    try:

        async def ceiling(user_ids: list[int], seconds: float, minimal: bool) -> CeilingRun:
            async def one(user_id: int, key: str) -> None:
                async with pool.acquire() as conn, conn.transaction():

                    async def fetch(statement: str, *args: Any) -> Sequence[Any]:
                        if statement in no_rows:
                            await conn.execute(statement, *args)
                            return ()
                        rows: Sequence[Any] = await conn.fetch(statement, *args)
                        return rows

                    if minimal:
                        await minimal_spend_once(fetch, small, user_id)
                    else:
                        await spend_once(fetch, sql, user_id, key)

            return await _drive(concurrency, seconds, user_ids, one)

        yield ceiling
    finally:
        await pool.close()


async def run_postgres(
    url: str, user_ids: list[int], seconds: float, concurrency: int, *, minimal: bool = False
) -> CeilingRun:
    """One run of ``postgres_ceiling``."""
    async with postgres_ceiling(url, concurrency) as ceiling:
        return await ceiling(user_ids, seconds, minimal)


# ------------------------------------------------------------------------------------------------ SQLite

SQLITE_PRAGMAS = {"journal_mode": "WAL", "journal_size_limit": 16384, "foreign_keys": "ON", "busy_timeout": 5000}


@asynccontextmanager
async def sqlite_ceiling(path: str, concurrency: int) -> AsyncIterator[Ceiling]:
    """One aiosqlite connection (autocommit mode, explicit BEGIN IMMEDIATE/COMMIT) serialized by a lock, as in
    the app, opened once for every run the block makes."""
    sql = Statements.sqlite()
    small = MinimalStatements.sqlite()
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        for pragma, value in SQLITE_PRAGMAS.items():
            await conn.execute_fetchall(f"PRAGMA {pragma}={value}")
        lock = asyncio.Lock()

        order = dict(qmark(sql) for sql in (*STATEMENTS, *MINIMAL_STATEMENTS))

        async def fetch(statement: str, *args: Any) -> Sequence[Any]:
            return list(await conn.execute_fetchall(statement, [args[i] for i in order[statement]]))

        async def ceiling(user_ids: list[int], seconds: float, minimal: bool) -> CeilingRun:
            async def one(user_id: int, key: str) -> None:
                async with lock:
                    await conn.execute_fetchall("BEGIN IMMEDIATE")  # as the app's transactions begin
                    try:
                        if minimal:
                            await minimal_spend_once(fetch, small, user_id)
                        else:
                            await spend_once(fetch, sql, user_id, key)
                    except BaseException:
                        await conn.rollback()
                        raise
                    await conn.commit()

            return await _drive(concurrency, seconds, user_ids, one)

        yield ceiling
    finally:
        await conn.close()


async def run_sqlite(
    path: str, user_ids: list[int], seconds: float, concurrency: int, *, minimal: bool = False
) -> CeilingRun:
    """One run of ``sqlite_ceiling``."""
    async with sqlite_ceiling(path, concurrency) as ceiling:
        return await ceiling(user_ids, seconds, minimal)
