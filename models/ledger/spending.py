"""Spends: take credit from the lots in the spend order (the part an overdraft covers beyond them is owed),
record the usage and its rollups, keep the spend limits (see docs/rules.md, "Spend order", "Refusal whole",
"Spend limits", "Overdraft" and "Budgets"), and queue an auto top-up when the spend leaves the available
balance below the threshold ("Auto top-up queueing").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from models.balance import Balance
from models.ledger import alerts, limit_events, limits
from models.ledger.auto_top_up import Terms, _queue_auto_top_up
from models.ledger.entries import (
    LEDGER_INTO,
    PENDING_COUNTS,
    SAVE_ACCOUNT,
    USAGE_EVENT_COLUMN,
    _change,
    _entry,
)
from models.ledger.errors import (
    IdempotencyKey,
    InsufficientCreditsError,
    LedgerError,
    SpendPausedError,
    SpendResult,
    UsageRecorded,
)
from models.ledger.locking import AccountSelector, _raise_if_refused, _read_stored, _refuse, _Replay
from models.ledger.lots import TAKE_FROM_LOT, _open, take
from models.limit_rules import counter_upsert
from models.sql import Sql, ThreadSql
from models.tables import LedgerEntryType

ROLL_UP_INTO = (
    "INSERT INTO usage_rollups (account_id, organization_key, dimension, key, bucket, events, credits,"
    " free_credits, paid_credits)"
)
_ROLL_UP_ROWS = (
    ROLL_UP_INTO + " VALUES ($1, $2, 'ACTIVITY', $3, $6, 1, $7, $8, $9),"
    " ($1, $2, 'AGENT', $4, $6, 1, $7, $8, $9), ($1, $2, 'MEMBER', $5, $6, 1, $7, $8, $9)"
)
ROLL_UP_SUMS = (
    " ON CONFLICT (account_id, dimension, bucket, key, organization_key) DO UPDATE SET"
    " events = usage_rollups.events + excluded.events, credits = usage_rollups.credits + excluded.credits,"
    " free_credits = usage_rollups.free_credits + excluded.free_credits,"
    " paid_credits = usage_rollups.paid_credits + excluded.paid_credits"
)
ROLL_UP_USAGE = _ROLL_UP_ROWS + ROLL_UP_SUMS
"""The hour's rollups of one usage event without a run (``bench/ceiling.py`` runs the same statement)."""
ROLL_UP_RUN_USAGE = _ROLL_UP_ROWS + ", ($1, $2, 'RUN', $10, $6, 1, $7, $8, $9)" + ROLL_UP_SUMS
"""The same with a fourth row, the run's (``$10``). Usage without a run has no RUN row: a report by run
counts it as the hour's ACTIVITY total less its runs' (models/reports.py), so a spend without a run costs what
it did, and the events recorded before runs existed need no backfill."""


USAGE_INTO = (
    "INSERT INTO usage_events (account_id, user_id, organization_id, hold_id, agent_id, activity,"
    " quantity, credits, free_credits, paid_credits, owed_credits, occurred_at, run_id, token_id)"
)
ALLOCATIONS_INTO = "INSERT INTO usage_allocations (usage_event_id, lot_id, kind, amount)"


def rollup_hour(now: datetime) -> datetime:
    """The hourly bucket of the rollups a usage event at ``now`` counts in."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _insert_usage(
    sql: Sql,
    *,
    account_id: int,
    user_id: int,
    organization_id: int | None,
    hold_id: int | None,
    agent_id: str,
    activity: str,
    quantity: int | None,
    credits: int,
    free: int,
    paid: int,
    allocations: list[tuple[dict[str, Any], int]],
    now: datetime,
    run_id: str | None = None,
    token_id: int | None = None,
) -> int:
    """Record a usage event of ``credits``: ``free`` and ``paid`` from the lots, the rest owed (overdraft)."""
    row = await sql.fetchrow(
        USAGE_INTO + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        account_id,
        user_id,
        organization_id,
        hold_id,
        agent_id,
        activity,
        quantity,
        credits,
        free,
        paid,
        credits - free - paid,
        now,
        run_id,
        token_id,
    )
    assert row is not None
    usage_event_id = int(row["id"])
    values: list[Any] = []
    placeholders = []
    for n, (lot, amount) in enumerate(allocations):
        base = n * 4
        placeholders.append(f"(${base + 1}, ${base + 2}, ${base + 3}, ${base + 4})")
        values += [usage_event_id, lot["id"], lot["kind"], amount]
    if placeholders:
        await sql.execute(
            ALLOCATIONS_INTO + " VALUES " + ", ".join(placeholders),
            *values,
        )
    # Reports read these hourly rollups, never the raw events: one row per dimension, in one round trip.
    await sql.execute(
        ROLL_UP_USAGE if run_id is None else ROLL_UP_RUN_USAGE,
        account_id,
        organization_id or 0,
        activity,
        agent_id,
        str(user_id),
        rollup_hour(now),
        credits,
        free,
        paid,
        *(() if run_id is None else (run_id,)),
    )
    return usage_event_id


@dataclass(frozen=True, slots=True)
class _Usage:
    """A usage event to record, but its split (``free``, ``paid``: known once the lots are taken)."""

    account_id: int
    user_id: int
    organization_id: int | None
    hold_id: int | None
    agent_id: str
    activity: str
    quantity: int | None
    credits: int
    run_id: str | None
    token_id: int | None

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Args:
    """The arguments of a statement being written: each call adds one and returns its placeholder."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


_LOTS_TAKEN = (
    "UPDATE credit_lots AS l SET remaining = l.remaining - v.taken,"
    " status = CASE WHEN l.remaining - v.taken = 0 THEN 'DEPLETED' ELSE l.status END"
    " FROM unnest({ids}, {taken}) AS v(id, taken) WHERE l.id = v.id"
)
_RECORD_INTO = "INSERT INTO idempotency_records (scope, key, operation, request_hash, response, created_at)"
_USAGE_ID = "(SELECT id FROM used)"


async def _write_folded(
    sql: Sql,
    account: dict[str, Any],
    usage: _Usage,
    allocations: list[tuple[dict[str, Any], int]],
    ledger_row: list[Any],
    idem: IdempotencyKey,
    response: tuple[str, str],
    now: datetime,
    *,
    also: tuple[str, list[Any]] | None = None,
) -> int:
    """Every write of a spend (or capture) on PostgreSQL in one data-modifying statement, whose sub-statements
    chain the usage event's id (``RETURNING``): the lots taken (``allocations``), the usage event, its
    allocations and rollups, the ledger row (``ledger_row``, from ``entries._entry``: its usage event id is
    the new one's), the limit counters waiting on the row (``entries.defer_counts``), the account's row, and
    the idempotency record, whose response is ``response``'s two parts around the usage event's id. ``also``:
    one more sub-statement (its text with ``{0}``, ``{1}``... for its arguments' placeholders).

    Returns the new usage event's id. Raises ``_Replay`` when a concurrent request stored the key first (the
    caller's transaction rolls it all back), as ``locking._store_response`` does; then fires the balance
    alerts the change crossed (``alerts.saved``: no statement unless one is crossed)."""
    arg = _Args()
    parts = []
    if allocations:
        ids = arg([int(lot["id"]) for lot, _ in allocations], "::bigint[]")
        taken = arg([amount for _, amount in allocations], "::bigint[]")
        kinds = arg([str(lot["kind"]) for lot, _ in allocations], "::text[]")
        parts.append(f"taken AS ({_LOTS_TAKEN.format(ids=ids, taken=taken)})")
    free, paid = -int(ledger_row[3]), -int(ledger_row[4])
    owed = usage.credits - free - paid
    row_values = (
        usage.account_id, usage.user_id, usage.organization_id, usage.hold_id, usage.agent_id, usage.activity,
        usage.quantity, usage.credits, free, paid, owed, now, usage.run_id, usage.token_id,
    )  # fmt: skip
    parts.append(f"used AS ({USAGE_INTO} VALUES ({', '.join(arg(v) for v in row_values)}) RETURNING id)")
    if allocations:
        parts.append(
            f"allocated AS ({ALLOCATIONS_INTO} SELECT {_USAGE_ID}, v.lot, v.kind, v.amount"
            f" FROM unnest({ids}, {kinds}, {taken}) AS v(lot, kind, amount))"
        )
    keys = [("ACTIVITY", usage.activity), ("AGENT", usage.agent_id), ("MEMBER", str(usage.user_id))]
    if usage.run_id is not None:
        keys.append(("RUN", usage.run_id))
    at, organization, hour = arg(usage.account_id), arg(usage.organization_id or 0), arg(rollup_hour(now))
    sums = f"1, {arg(usage.credits)}, {arg(free)}, {arg(paid)}"
    rows = ", ".join(f"({at}, {organization}, '{dimension}', {arg(key)}, {hour}, {sums})" for dimension, key in keys)
    parts.append(f"rolled AS ({ROLL_UP_INTO} VALUES {rows}{ROLL_UP_SUMS})")
    marks = [_USAGE_ID if n == USAGE_EVENT_COLUMN else arg(v) for n, v in enumerate(ledger_row)]
    parts.append(f"entered AS ({LEDGER_INTO} VALUES ({', '.join(marks)}))")
    counts: dict[tuple[int, str, int], int] = account.pop(PENDING_COUNTS, {})
    if counts:
        upsert, values = counter_upsert(counts, first=len(arg.values) + 1)
        arg.values += values
        parts.append(f"counted AS ({upsert})")
    if also is not None:
        text, values = also
        parts.append(text.format(*(arg(value) for value in values)))
    head, tail = response
    response_text = f"{arg(head, '::text')} || {_USAGE_ID}::text || {arg(tail, '::text')}"
    parts.append(
        f"recorded AS ({_RECORD_INTO} VALUES ({arg(idem.scope)}, {arg(idem.key)}, {arg(idem.operation)},"
        f" {arg(idem.fingerprint)}, {response_text}, {arg(now)}) ON CONFLICT (scope, key) DO NOTHING RETURNING id)"
    )
    saved = ", ".join(f"{column} = {arg(int(account[column]))}" for column in ("balance", "held", "owed", "version"))
    written = await sql.fetchrow(
        f"WITH {', '.join(parts)} UPDATE credit_accounts SET {saved} WHERE id = {arg(int(account['id']))}"
        f" RETURNING {_USAGE_ID} AS usage_event_id, (SELECT id FROM recorded) AS recorded",
        *arg.values,
    )
    assert written is not None
    if written["recorded"] is None:
        raise _Replay({})
    await alerts.saved(sql, account)  # balance.low/depleted/recovered: no statement unless a level is crossed
    return int(written["usage_event_id"])


async def _write_in_thread(
    sql: Sql,
    account: dict[str, Any],
    usage: _Usage,
    allocations: list[tuple[dict[str, Any], int]],
    ledger_row: list[Any],
    idem: IdempotencyKey,
    response: tuple[str, str],
    now: datetime,
) -> int:
    """``_write_folded`` on SQLite, which has no data-modifying CTE: the same writes as statements of their
    own (those of ``_take_from_lots``, ``_insert_usage``, ``entries._append``, ``entries._save_account`` and
    ``locking._store_response``), all run on the connection's thread in one hop (``Sql.in_writer_thread``)."""
    free, paid = -int(ledger_row[3]), -int(ledger_row[4])
    owed = usage.credits - free - paid
    usage_row = (
        usage.account_id, usage.user_id, usage.organization_id, usage.hold_id, usage.agent_id, usage.activity,
        usage.quantity, usage.credits, free, paid, owed, now, usage.run_id, usage.token_id,
    )  # fmt: skip
    marks = ", ".join(f"(${n * 4 + 1}, ${n * 4 + 2}, ${n * 4 + 3}, ${n * 4 + 4})" for n in range(len(allocations)))
    allocated = f"{ALLOCATIONS_INTO} VALUES {marks}"
    rolled = ROLL_UP_USAGE if usage.run_id is None else ROLL_UP_RUN_USAGE
    rollup: tuple[Any, ...] = (
        usage.account_id, usage.organization_id or 0, usage.activity, usage.agent_id, str(usage.user_id)
    )  # fmt: skip
    rollup += (rollup_hour(now), usage.credits, free, paid, *(() if usage.run_id is None else (usage.run_id,)))
    counts: dict[tuple[int, str, int], int] = account.pop(PENDING_COUNTS, {})
    upsert, counted = counter_upsert(counts) if counts else ("", [])
    saved = (account["balance"], account["held"], account["owed"], account["version"], account["id"])
    head, tail = response
    statements = [TAKE_FROM_LOT] * len(allocations) + [_INSERT_USAGE]
    statements += [allocated] * bool(allocations) + [rolled, _APPEND] + [upsert] * bool(counts)
    statements += [SAVE_ACCOUNT, _RECORD]

    def steps(run: ThreadSql) -> tuple[int, bool]:
        for lot, taken in allocations:
            run.fetch(TAKE_FROM_LOT, taken, taken, lot["id"])
        usage_event_id = int(run.fetch(_INSERT_USAGE, *usage_row)[0][0])
        if allocations:
            taken_from = [(usage_event_id, lot["id"], lot["kind"], taken) for lot, taken in allocations]
            run.fetch(allocated, *(v for row in taken_from for v in row))
        run.fetch(rolled, *rollup)
        entry = list(ledger_row)
        entry[USAGE_EVENT_COLUMN] = usage_event_id
        run.fetch(_APPEND, *entry)
        if counts:
            run.fetch(upsert, *counted)
        run.fetch(SAVE_ACCOUNT, *saved)
        text = f"{head}{usage_event_id}{tail}"
        recorded = run.fetch(_RECORD, idem.scope, idem.key, idem.operation, idem.fingerprint, text, now)
        return usage_event_id, bool(recorded)

    usage_event_id, recorded = await sql.in_writer_thread(statements, steps)
    if not recorded:  # not on SQLite, whose one writer holds the lock: as ``locking._store_response`` does
        raise _Replay({})
    await alerts.saved(sql, account)  # balance.low/depleted/recovered: no statement unless a level is crossed
    return usage_event_id


_INSERT_USAGE = USAGE_INTO + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id"
_APPEND = LEDGER_INTO + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
_RECORD = _RECORD_INTO + " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING RETURNING id"


_NO_ID = '"usage_event_id":0'


def _around_id(response: dict[str, Any]) -> tuple[str, str]:
    """A response to store whose ``usage_event_id`` is 0, as ``locking._store_response`` stores it (the same
    text, byte for byte), in two parts around that id: for ``_write_folded`` to join with the new event's."""
    text = json.dumps(response, separators=(",", ":"))
    head, found, tail = text.partition(_NO_ID)
    assert found
    assert _NO_ID not in tail
    assert response["usage_event_id"] == 0
    return head + '"usage_event_id":', tail


async def _refusal(
    sql: Sql,
    row: dict[str, Any],
    account: AccountSelector,
    before: Balance,
    organization_id: int | None,
    user_id: int,
    credits: int,
    idem: IdempotencyKey,
    now: datetime,
    *,
    agent_id: str | None = None,
    run_id: str | None = None,
    token_id: int | None = None,
    hold: bool = False,
) -> tuple[limits.Applied, LedgerError | None]:
    """Why a new spend or hold (``hold``) of ``credits`` is refused (the spend limits that apply, a pool
    member's budget among them, then the available credit), stored under the caller's key so a replay is
    refused the same way; and the limits it passed, for its success to count and report.

    ``row`` is the locked account. A velocity breaker the operation would take past its amount trips here, in
    the transaction that stores the refusal; the refusal carries the trip's balance event (``changes``)."""
    who = limits.Who(user_id, agent_id, token_id, run_id)
    standing = await limits.standing(sql, row, who, now)
    pool = row.get("organization_id") is not None
    verdict = decide(standing, who, before, credits, hold=hold, pool=pool, now=now)
    applied = limits.Applied(standing, who, verdict.warnings)
    if isinstance(verdict.refusal, InsufficientCreditsError):
        return applied, await _refuse(sql, idem, verdict.refusal, now)
    if verdict.refusal is not None:
        if verdict.trips is not None:
            assert isinstance(verdict.refusal, SpendPausedError)
            await limits.trip(sql, row, verdict.refusal, before, now)
        await limit_events.refused(sql, row, standing, verdict.refusal, credits, pool=pool, now=now)
        return applied, await _refuse(sql, idem, verdict.refusal, now)
    await limit_events.crossed(sql, row, standing, credits, pool=pool, now=now)  # no statement if none crossed
    return applied, None


def decide(
    standing: tuple[limits.Standing, ...],
    who: limits.Who,
    before: Balance,
    credits: int,
    *,
    hold: bool,
    pool: bool,
    now: datetime,
) -> limits.Verdict:
    """Whether a new spend or hold of ``credits`` may go on (no statement): the spend limits that apply, a
    pool member's budget among them, then the available credit (``before``), which may go down to
    -overdraft, not below. A batch decides each of its spends with this, over the state its earlier ones
    left (models/ledger/batch.py)."""
    verdict = limits.judge(standing, credits, who, hold=hold, pool=pool, now=now)
    if verdict.refusal is None and credits > before.spendable:
        return limits.Verdict(InsufficientCreditsError(before.available, credits), None, verdict.warnings)
    return verdict


def spent_from(before: Balance, free: int, paid: int, owed: int) -> Balance:
    """The balance a spend leaves: ``free`` and ``paid`` taken from the lots, ``owed`` borrowed."""
    return Balance(
        free=before.free - free,
        paid=before.paid - paid,
        held=before.held,
        owed=before.owed + owed,
        overdraft=before.overdraft,
    )


async def spend(
    account: AccountSelector,
    *,
    user_id: int,
    organization_id: int | None,
    agent_id: str,
    activity: str,
    credits: int,
    quantity: int | None,
    idem: IdempotencyKey,
    now: datetime,
    auto_top_up: Terms | None = None,
    run_id: str | None = None,
    token_id: int | None = None,
) -> SpendResult:
    """Spend ``credits`` micro-credits from an account, FREE first. Refuses an overspend whole.

    ``run_id`` is the agent run the spend belongs to, ``token_id`` the API token spending (None: no token row).

    With ``auto_top_up`` terms, a spend that leaves the available balance below the account's auto top-up
    threshold queues the top-up in its own transaction (``queued_top_up``)."""
    assert credits > 0
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            fold = limits.Fold(limits.Who(user_id, agent_id, token_id, run_id), now)
            row, lots, before = await _open(sql, account, idem, now, fold)
            applied, refusal = await _refusal(
                sql,
                row,
                account,
                before,
                organization_id,
                user_id,
                credits,
                idem,
                now,
                agent_id=agent_id,
                run_id=run_id,
                token_id=token_id,
            )
            if refusal is None:
                limits.count_with_save(row, applied.standing, run_id, credits)
                usage = _Usage(
                    account_id=int(row["id"]),
                    user_id=user_id,
                    organization_id=organization_id,
                    hold_id=None,
                    agent_id=agent_id,
                    activity=activity,
                    quantity=quantity,
                    credits=credits,
                    run_id=run_id,
                    token_id=token_id,
                )
                allocations, free, paid, owed = take(lots, credits, now, before)
                after = spent_from(before, free, paid, owed)
                result = SpendResult(0, credits, free, paid, after, warnings=applied.warnings)
                ledger_row = _entry(
                    row,
                    LedgerEntryType.SPEND,
                    amount=-(free + paid),
                    free_amount=-free,
                    paid_amount=-paid,
                    owed_delta=owed,
                    now=now,
                )
                write = _write_folded if sql.postgres else _write_in_thread
                usage_event_id = await write(
                    sql, row, usage, allocations, ledger_row, idem, _around_id(_spend_json(result)), now
                )
                result = replace(result, usage_event_id=usage_event_id)
                queued = await _queue_auto_top_up(sql, row, after, auto_top_up, now)
    except _Replay as replay:
        return _spend_replay(replay.response or await _read_stored(idem))
    if refusal is not None:
        raise refusal
    return SpendResult(
        result.usage_event_id,
        credits,
        result.free_credits,
        result.paid_credits,
        result.balance,
        changes=(
            _change(row, -(result.free_credits + result.paid_credits), "SPEND", result.balance, now),
            *_usage(
                organization_id, result.usage_event_id, row, user_id, agent_id, activity, credits, result, now, run_id
            ),
            *alerts.taken(row),
        ),
        queued_top_up=queued,
        warnings=result.warnings,
    )


def _usage(
    organization_id: int | None,
    usage_event_id: int | None,
    account: dict[str, Any],
    user_id: int,
    agent_id: str,
    activity: str,
    credits: int,
    split: SpendResult,
    now: datetime,
    run_id: str | None = None,
) -> tuple[UsageRecorded, ...]:
    if organization_id is None or usage_event_id is None:
        return ()
    return (
        UsageRecorded(
            organization_id,
            usage_event_id,
            int(account["id"]),
            user_id,
            agent_id,
            activity,
            credits,
            split.free_credits,
            split.paid_credits,
            now,
            run_id,
        ),
    )


def _spend_json(result: SpendResult) -> dict[str, Any]:
    return {
        "usage_event_id": result.usage_event_id,
        "credits": result.credits,
        "free": result.free_credits,
        "paid": result.paid_credits,
        "balance": result.balance.to_json(),
        **({"warnings": limits.warnings_json(result.warnings)} if result.warnings else {}),
    }


def _spend_replay(stored: dict[str, Any]) -> SpendResult:
    _raise_if_refused(stored)
    return SpendResult(
        int(stored["usage_event_id"]),
        int(stored["credits"]),
        int(stored["free"]),
        int(stored["paid"]),
        Balance.from_json(stored["balance"]),
        replayed=True,
        warnings=limits.warnings_of(stored.get("warnings", [])),
    )
