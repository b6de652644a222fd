"""Batches of spends (``spendCreditsBatch``): each spend is what ``spending.spend`` makes of it, decided in
input order over the state the batch's earlier spends of its account left, in one transaction that writes
them all with a handful of multi-row statements.

How it runs (see docs/rules.md, "Batches"):
- The batch's accounts are locked in one statement, in ascending id (so two batches over the same accounts
  take their locks in the same order and never wait for each other in a cycle; a single spend locks one).
- Then, under the locks, one statement reads the batch's idempotency records, one the accounts' live lots,
  one their active holds (only when one of them holds credit), and one per distinct spender the spend limits
  of an account that has any (``limits.standing``).
- Every spend is then decided in Python (``spending.decide``: limits, budgets, breakers, then the available
  credit and the overdraft), its lots taken in the spend order (``lots.take``): a refusal changes nothing but
  its idempotency record (and a breaker's trip); a success moves the locked row as ``entries._append`` does.
  What a crossing writes (a limit's or a balance alert's event) is written when it is crossed, as for a single
  spend: no statement when nothing is crossed.
- The writes follow in bulk: usage events, their allocations, rollups, lots, limit counters, ledger rows,
  accounts and idempotency records, one statement each (SQLite: ``executemany`` for the row updates).

A key recorded meanwhile by a concurrent request (PostgreSQL) shows in the records' insert: the batch rolls
back and runs again, and then reads it as a replay. The records are inserted in the order of their keys, so two
batches sharing keys on different accounts wait for each other's keys in one order, never in a cycle; a
deadlock the database reports all the same runs the batch again as well.

A key used twice in one batch is decided by its first use in input order (whatever the accounts): a later use
with the same input is its replay, with other input an ``IdempotencyConflict``, as two spends one after the
other would be.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from tortoise.transactions import in_transaction

from models.balance import Balance, account_balance, is_live
from models.ledger import alerts, limit_events, limits
from models.ledger.auto_top_up import Terms, _queue_auto_top_up
from models.ledger.entries import LEDGER_INTO, SAVE_ACCOUNT
from models.ledger.errors import (
    BalanceChange,
    Event,
    IdempotencyConflictError,
    IdempotencyKey,
    InsufficientCreditsError,
    LedgerError,
    LimitWarning,
    NotFoundError,
    SpendPausedError,
    SpendResult,
)
from models.ledger.locking import (
    _ACCOUNT_COLUMNS,
    _AUTO_TOP_UP_COLUMNS,
    AccountSelector,
    _refusal_json,
    _stored_response,
)
from models.ledger.lots import take
from models.ledger.spending import (
    ALLOCATIONS_INTO,
    ROLL_UP_INTO,
    ROLL_UP_SUMS,
    USAGE_INTO,
    _spend_json,
    _spend_replay,
    _usage,
    decide,
    rollup_hour,
    spent_from,
)
from models.sql import Sql, as_datetime
from models.tables import LedgerEntryType

_RETRIES = 5
"""How many times a batch runs again after a concurrent request recorded one of its keys first."""

_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps(response, separators=(",", ":"))``, with one encoder for every response of the batch."""


@dataclass(slots=True)
class BatchSpend:
    """One spend of a batch: the arguments of ``spending.spend``. Not frozen: a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__`` (2 us for these ten, 0.35 us plain), for every event."""

    account: AccountSelector
    user_id: int
    organization_id: int | None
    agent_id: str
    activity: str
    credits: int
    quantity: int | None
    idem: IdempotencyKey
    run_id: str | None = None
    token_id: int | None = None


Outcome = SpendResult | LedgerError
"""What a spend of a batch came to: its result (``replayed`` for a key recorded before), or its refusal."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    outcomes: tuple[Outcome, ...]
    """One per spend, in input order."""
    changes: tuple[Event, ...]
    """To publish after commit: one balance event per account changed (covering all its changes), the usage
    events and the alerts raised."""
    queued_top_ups: tuple[int, ...] = ()


class _Recorded(Exception):
    """A key of the batch was recorded by a concurrent request: roll back and run again."""


@dataclass(slots=True)
class _Account:
    """A locked account and what the batch did to it so far."""

    row: dict[str, Any]
    lots: list[dict[str, Any]]
    balance: Balance
    version: int
    """The version it was locked at."""
    standing: dict[limits.Who, tuple[limits.Standing, ...]] = field(default_factory=dict)
    counted: dict[tuple[int, str], int] = field(default_factory=dict)
    """Credits this batch counted against a limit: (limit id, '') in its window, (limit id, run) per run."""
    tripped: dict[int, SpendPausedError] = field(default_factory=dict)
    spends: int = 0
    delta: int = 0


@dataclass(slots=True)
class _Applied:
    """A spend decided and taken, to write: its slot in the writes, and its result but the usage event id."""

    slot: int
    free: int
    paid: int
    balance: Balance
    warnings: tuple[LimitWarning, ...]


@dataclass(slots=True)
class _Writes:
    usage: list[tuple[Any, ...]] = field(default_factory=list)
    allocations: list[list[tuple[int, str, int]]] = field(default_factory=list)
    ledger: list[list[Any]] = field(default_factory=list)
    """A spend's ledger row, with its usage event's slot in ``usage`` as its ``usage_event_id`` until inserted."""
    lots: dict[int, int] = field(default_factory=dict)
    counters: dict[tuple[int, str, int], int] = field(default_factory=dict)
    rollups: dict[tuple[int, int, str, str, datetime], list[int]] = field(default_factory=dict)
    records: list[tuple[IdempotencyKey, dict[str, Any] | int]] = field(default_factory=list)
    """Keys to record with their response: a refusal's, or the index of a success (its response once its
    usage event has an id)."""


async def spend_batch(spends: Sequence[BatchSpend], *, now: datetime, auto_top_up: Terms | None = None) -> BatchResult:
    """Apply ``spends`` in input order (each refused, replayed or applied on its own), in one transaction."""
    if not spends:
        return BatchResult((), ())
    for attempt in range(_RETRIES):
        try:
            return await _run(spends, now, auto_top_up)
        except _Recorded:
            if attempt == _RETRIES - 1:
                raise IdempotencyConflictError() from None
        except Exception as error:
            if not _deadlocked(error) or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _deadlocked(error: BaseException) -> bool:
    """Whether PostgreSQL chose this transaction as a deadlock's victim (SQLSTATE 40P01), however wrapped."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if getattr(seen, "sqlstate", None) == "40P01":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@lru_cache(maxsize=64)
def _marks(rows: int, width: int) -> str:
    """The VALUES of ``rows`` rows of ``width`` parameters (a batch's inserts repeat the same few shapes)."""
    return ", ".join("(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(rows))


def _in(values: Sequence[Any], first: int = 1) -> str:
    return "(" + ", ".join(f"${first + n}" for n in range(len(values))) + ")"


async def _insert(sql: Sql, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> list[dict[str, Any]]:
    """A multi-row INSERT (``head`` up to VALUES), in as few statements as the parameter limits allow (one
    for up to 2,000 rows of 15 columns)."""
    found: list[dict[str, Any]] = []
    if not rows:
        return found
    width = len(rows[0])
    size = max(1, 30000 // width)  # both databases take 32,766 parameters or more
    for n in range(0, len(rows), size):
        chunk = rows[n : n + size]
        found += await sql.fetch(f"{head} VALUES {_marks(len(chunk), width)}{tail}", *chain.from_iterable(chunk))
    return found


async def _lock(sql: Sql, selectors: set[AccountSelector]) -> dict[AccountSelector, dict[str, Any]]:
    """Lock the accounts of ``selectors`` in one statement, in ascending id, with their auto top-up columns."""
    args: list[Any] = []
    where = []
    for column in ("id", "user_id", "organization_id"):
        values = sorted(v for c, v in selectors if c == column)
        if values:
            where.append(f"a.{column} IN {_in(values, len(args) + 1)}")
            args += values
    rows = await sql.fetch(
        f"SELECT {_ACCOUNT_COLUMNS}, {_AUTO_TOP_UP_COLUMNS} FROM credit_accounts a"
        f" LEFT JOIN auto_top_ups t ON t.account_id = a.id WHERE {' OR '.join(where)} ORDER BY a.id"
        + sql.for_update(of="a"),
        *args,
    )
    found: dict[AccountSelector, dict[str, Any]] = {}
    for row in rows:
        for column in ("id", "user_id", "organization_id"):
            selector: Any = (column, row[column])
            if row[column] is not None and selector in selectors:
                found.setdefault(selector, row)
    return found


async def _records(sql: Sql, keys: list[IdempotencyKey]) -> dict[tuple[str, str], dict[str, Any]]:
    """The records stored under the batch's keys, read under the locks (so final for their accounts)."""
    by_scope: dict[str, set[str]] = {}
    for idem in keys:
        by_scope.setdefault(idem.scope, set()).add(idem.key)
    args: list[Any] = []
    where = []
    for scope, names in by_scope.items():
        where.append(f"(scope = ${len(args) + 1} AND key IN {_in(sorted(names), len(args) + 2)})")
        args += [scope, *sorted(names)]
    rows = await sql.fetch(
        "SELECT scope, key, operation, request_hash, response FROM idempotency_records WHERE " + " OR ".join(where),
        *args,
    )
    return {(str(r["scope"]), str(r["key"])): r for r in rows}


async def _open(sql: Sql, rows: list[dict[str, Any]], now: datetime) -> dict[int, _Account]:
    """The live lots and balance of each locked account: one statement, and one more if any holds credit."""
    accounts = {int(row["id"]): row for row in rows}
    ids = sorted(accounts)
    lots: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for lot in await sql.fetch(
        "SELECT account_id, id, kind, remaining, expires_at, granted_at FROM credit_lots"
        f" WHERE account_id IN {_in(ids)} AND status = 'ACTIVE' AND remaining > 0",
        *ids,
    ):
        lots[int(lot["account_id"])].append(lot)
    held = dict.fromkeys(ids, 0)
    holding = [i for i in ids if int(accounts[i]["held"])]
    if holding:
        for hold in await sql.fetch(
            f"SELECT account_id, amount, expires_at FROM holds WHERE account_id IN {_in(holding)}"
            " AND status = 'ACTIVE'",
            *holding,
        ):
            if is_live(as_datetime(hold["expires_at"]), now):
                held[int(hold["account_id"])] += int(hold["amount"])
    return {
        i: _Account(
            accounts[i], lots[i], account_balance(lots[i], held[i], accounts[i], now), int(accounts[i]["version"])
        )
        for i in ids
    }


def _as_left(account: _Account, standing: tuple[limits.Standing, ...], who: limits.Who) -> tuple[limits.Standing, ...]:
    """The limits as the batch's earlier spends of the account left them: what they counted, what they tripped."""
    out = []
    for s in standing:
        s = replace(
            s,
            spent=s.spent + account.counted.get((s.limit.id, ""), 0),
            run_spent=s.run_spent + (0 if who.run_id is None else account.counted.get((s.limit.id, who.run_id), 0)),
        )
        tripped = account.tripped.get(s.limit.id)
        if tripped is not None:
            s = replace(s, paused=True, tripped_at=tripped.tripped_at, paused_until=tripped.paused_until)
        out.append(s)
    return tuple(out)


async def _decide(
    sql: Sql, account: _Account, s: BatchSpend, n: int, writes: _Writes, now: datetime
) -> Outcome | _Applied:
    """Decide one new spend over the state the batch left its account in, as ``spending._refusal`` does, and
    take it (in the rows: ``_write`` writes it). What a refusal or a crossing writes is written now."""
    row = account.row
    who = limits.Who(s.user_id, s.agent_id, s.token_id, s.run_id)
    if who not in account.standing:
        account.standing[who] = await limits.standing(sql, row, who, now)
    standing = _as_left(account, account.standing[who], who)
    pool = row.get("organization_id") is not None
    before = account.balance
    verdict = decide(standing, who, before, s.credits, hold=False, pool=pool, now=now)
    refusal = verdict.refusal
    if refusal is not None:
        if verdict.trips is not None:
            assert isinstance(refusal, SpendPausedError)
            await limits.trip(sql, row, refusal, before, now)
            account.tripped[refusal.limit.id] = refusal
        if not isinstance(refusal, InsufficientCreditsError):
            await limit_events.refused(sql, row, standing, refusal, s.credits, pool=pool, now=now)
        if isinstance(refusal, SpendPausedError):
            refusal.changes = ()  # the trip's: the batch's balance event of the account covers it
        writes.records.append((s.idem, _refusal_json(refusal)))
        return refusal
    await limit_events.crossed(sql, row, standing, s.credits, pool=pool, now=now)  # no statement if none crossed
    for counter in limits.counted_rows(standing, s.run_id):
        writes.counters[counter] = writes.counters.get(counter, 0) + s.credits
        limit_run = (counter[0], counter[1])
        account.counted[limit_run] = account.counted.get(limit_run, 0) + s.credits
    allocations, free, paid, owed = take(account.lots, s.credits, now, before)
    for lot, taken in allocations:
        writes.lots[int(lot["id"])] = writes.lots.get(int(lot["id"]), 0) + taken
    was = alerts.available_of(row)
    row["balance"] = int(row["balance"]) - free - paid
    row["owed"] = int(row["owed"]) + owed
    row["version"] = int(row["version"]) + 1
    account.balance = spent_from(before, free, paid, owed)
    account.spends += 1
    account.delta -= free + paid
    slot = len(writes.usage)
    account_id = int(row["id"])
    writes.usage.append(
        (account_id, s.user_id, s.organization_id, None, s.agent_id, s.activity, s.quantity, s.credits, free, paid,
         owed, now, s.run_id, s.token_id)
    )  # fmt: skip
    writes.allocations.append([(int(lot["id"]), str(lot["kind"]), taken) for lot, taken in allocations])
    writes.ledger.append(
        [account_id, LedgerEntryType.SPEND.value, -(free + paid), -free, -paid, 0, owed, row["balance"], row["held"],
         row["version"], None, slot, None, None, now]
    )  # fmt: skip
    keys = [("ACTIVITY", s.activity), ("AGENT", s.agent_id), ("MEMBER", str(s.user_id))]
    if s.run_id is not None:
        keys.append(("RUN", s.run_id))
    hour = rollup_hour(now)
    for dimension, key in keys:
        sums = writes.rollups.setdefault((account_id, s.organization_id or 0, dimension, key, hour), [0] * 4)
        sums[0] += 1
        sums[1] += s.credits
        sums[2] += free
        sums[3] += paid
    writes.records.append((s.idem, n))
    await alerts.check(sql, row, was, now)  # no statement unless the spend crosses a level
    return _Applied(slot, free, paid, account.balance, verdict.warnings)


def _replayed(idem: IdempotencyKey, record: dict[str, Any]) -> Outcome:
    try:
        return _spend_replay(_stored_response(idem, record["operation"], record["request_hash"], record["response"]))
    except LedgerError as refusal:
        return refusal


def _again(first: Outcome, fingerprint: bool) -> Outcome:
    """A key the batch used before: the first spend's outcome, replayed (another request: a conflict)."""
    if not fingerprint:
        return IdempotencyConflictError()
    if isinstance(first, SpendResult):
        return replace(first, replayed=True, changes=(), queued_top_up=None)
    return first


async def _write(sql: Sql, writes: _Writes, accounts: list[_Account]) -> list[int]:
    """Write what the batch's spends took, in one statement per table; the usage events' ids, by slot."""
    inserted = await _insert(sql, USAGE_INTO, writes.usage, " RETURNING id")
    ids = sorted(int(r["id"]) for r in inserted)  # one statement's ids rise in the order of its rows
    assert len(ids) == len(writes.usage)
    await _insert(
        sql,
        ALLOCATIONS_INTO,
        [
            (ids[slot], lot, kind, amount)
            for slot, taken in enumerate(writes.allocations)
            for lot, kind, amount in taken
        ],
    )
    for entry in writes.ledger:
        entry[11] = ids[entry[11]]
    await _insert(sql, LEDGER_INTO, writes.ledger)
    await _insert(
        sql,
        ROLL_UP_INTO,
        [(*key, *sums) for key, sums in writes.rollups.items()],
        ROLL_UP_SUMS,
    )
    await limits.add_counts(sql, writes.counters)
    lots = sorted(writes.lots.items())
    if sql.postgres:
        await sql.execute(
            "UPDATE credit_lots AS l SET remaining = l.remaining - v.taken,"
            " status = CASE WHEN l.remaining - v.taken = 0 THEN 'DEPLETED' ELSE l.status END"
            " FROM unnest($1::bigint[], $2::bigint[]) AS v(id, taken) WHERE l.id = v.id",
            [lot for lot, _ in lots],
            [taken for _, taken in lots],
        )
    elif lots:
        await sql.execute_many(
            "UPDATE credit_lots SET remaining = remaining - $1,"
            " status = CASE WHEN remaining - $1 = 0 THEN 'DEPLETED' ELSE status END WHERE id = $2",
            [(taken, lot) for lot, taken in lots],
        )
    rows = [a.row for a in accounts]
    if sql.postgres:
        await sql.execute(
            "UPDATE credit_accounts AS a SET balance = v.balance, held = v.held, owed = v.owed, version = v.version"
            " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])"
            " AS v(id, balance, held, owed, version) WHERE a.id = v.id",
            *([int(r[c]) for r in rows] for c in ("id", "balance", "held", "owed", "version")),
        )
    else:
        await sql.execute_many(
            SAVE_ACCOUNT, [(r["balance"], r["held"], r["owed"], r["version"], r["id"]) for r in rows]
        )
    return ids


async def _record(sql: Sql, writes: _Writes, outcomes: list[Outcome | None], now: datetime) -> None:
    """Store every new key's response in one statement; a key a concurrent request stored first runs the batch
    again (``_Recorded``), to answer it as a replay."""
    rows = []
    for idem, response in writes.records:
        if isinstance(response, int):
            result = outcomes[response]
            assert isinstance(result, SpendResult)
            response = _spend_json(result)
        text = _COMPACT.encode(response)
        rows.append((idem.scope, idem.key, idem.operation, idem.fingerprint, text, now))
    if not rows:
        return
    rows.sort(key=lambda r: (r[0], r[1]))  # one order of keys for every batch: no cycle between two
    stored = await _insert(
        sql,
        "INSERT INTO idempotency_records (scope, key, operation, request_hash, response, created_at)",
        rows,
        " ON CONFLICT (scope, key) DO NOTHING RETURNING id",
    )
    if len(stored) != len(rows):
        raise _Recorded()


async def _run(spends: Sequence[BatchSpend], now: datetime, terms: Terms | None) -> BatchResult:
    outcomes: list[Outcome | None] = [None] * len(spends)
    changes: list[Event] = []
    queued: list[int] = []
    async with in_transaction() as conn:
        sql = Sql(conn)
        locked = await _lock(sql, {s.account for s in spends})
        todo = []
        for n, s in enumerate(spends):
            if s.account in locked:
                todo.append(n)
            else:
                outcomes[n] = NotFoundError("Credit account")
        if not todo:
            return BatchResult(tuple(o for o in outcomes if o is not None), ())
        stored = await _records(sql, [spends[n].idem for n in todo])
        accounts = await _open(sql, list({int(r["id"]): r for r in locked.values()}.values()), now)
        writes = _Writes()
        applied: dict[int, tuple[_Account, _Applied]] = {}
        first: dict[tuple[str, str], int] = {}
        for n in todo:  # a key's first use in input order decides it, whatever the accounts
            first.setdefault((spends[n].idem.scope, spends[n].idem.key), n)
        again: list[tuple[int, int]] = []
        # Each account's spends in input order; the accounts in the order of their locks.
        for n in sorted(todo, key=lambda n: (int(locked[spends[n].account]["id"]), n)):
            s = spends[n]
            name = (s.idem.scope, s.idem.key)
            if first[name] != n:  # a key used twice in one batch: the later is the first's replay
                again.append((n, first[name]))
                continue
            record = stored.get(name)
            if record is not None:
                outcomes[n] = _replayed(s.idem, record)
                continue
            account = accounts[int(locked[s.account]["id"])]
            outcome = await _decide(sql, account, s, n, writes, now)
            if isinstance(outcome, _Applied):
                applied[n] = (account, outcome)
            else:
                outcomes[n] = outcome
        changed = [a for a in accounts.values() if int(a.row["version"]) != a.version]
        ids = await _write(sql, writes, [a for a in changed if a.spends]) if writes.usage else []
        for n, (account, done) in applied.items():
            s = spends[n]
            result = SpendResult(ids[done.slot], s.credits, done.free, done.paid, done.balance, warnings=done.warnings)
            outcomes[n] = result
            changes += _usage(
                s.organization_id, result.usage_event_id, account.row, s.user_id, s.agent_id, s.activity, s.credits,
                result, now, s.run_id,
            )  # fmt: skip
        await _record(sql, writes, outcomes, now)
        for account in changed:
            changes.append(_batch_change(account, now))
            changes += alerts.taken(account.row)
            if account.spends:
                top_up = await _queue_auto_top_up(sql, account.row, account.balance, terms, now)
                if top_up is not None:
                    queued.append(top_up)
    for n, was in again:
        first_outcome = outcomes[was]
        assert first_outcome is not None
        same = spends[n].idem.fingerprint == spends[was].idem.fingerprint
        outcomes[n] = _again(first_outcome, same and spends[n].idem.operation == spends[was].idem.operation)
    final = tuple(o for o in outcomes if o is not None)
    assert len(final) == len(spends)
    return BatchResult(final, tuple(changes), tuple(queued))


def _batch_change(account: _Account, now: datetime) -> BalanceChange:
    """The account's one balance event for the batch: its last version, covering every change since the lock."""
    row = account.row
    version = int(row["version"])
    return BalanceChange(
        int(row["id"]),
        version,
        account.delta,
        "SPEND" if account.spends else limits.TRIPPED,
        account.balance,
        now,
        changes=version - account.version,
    )
