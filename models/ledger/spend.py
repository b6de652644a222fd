"""Ledger operations: every change to a balance is one transaction that appends ledger rows.

Rules (DESIGN 3-4):
- A spend takes FREE before PAID; within a kind the soonest expiry first (no expiry last), then the oldest
  grant, then the lowest id. A spend larger than the available balance is refused whole.
- An account's row is locked (PostgreSQL ``FOR UPDATE``; SQLite has a single writer) before anything of it
  is read, so concurrent operations on one account behave as some serial order.
- The idempotency record is written in the same transaction as the effect, so a replayed key returns the
  first result and never moves credit twice. A refusal is stored under its key too (the transaction then
  commits the record alone), so a replay is refused the same way instead of being evaluated again.
- The record is read in the statement that takes the lock, which answers an ordinary replay in that one
  round trip. That read is not proof of absence on PostgreSQL: a statement that waited for the lock sees
  the locked row as the holder left it, but every other row (the record the holder just stored) as it was
  when the statement began. So every answer, success or refusal, is given only once ``_store_response``
  has inserted the record: its unique insert sees every committed record, and a conflict rolls the work
  back and answers with the stored response instead.
- Nothing is published from here: operations return the balance changes they committed and the caller
  publishes them after the transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from tortoise.transactions import in_transaction

from models.balance import Balance, balance_from_lots, is_live
from models.credits import MAX_MICRO
from models.sql import Sql, as_datetime
from models.tables import CreditKind, HoldStatus, LedgerEntryType, LotSource, LotStatus

if TYPE_CHECKING:
    from models.auto_top_up import Terms

# ----------------------------------------------------------------------------------------------- results


class LedgerError(Exception):
    """A refusal that the API reports as a typed error."""


class InsufficientCreditsError(LedgerError):
    def __init__(self, available: int, required: int) -> None:
        super().__init__("Not enough credit available for this operation")
        self.available = available
        self.required = required


class IdempotencyConflictError(LedgerError):
    def __init__(self) -> None:
        super().__init__("This idempotency key was already used with a different request")


class NotFoundError(LedgerError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class BudgetExceededError(LedgerError):
    """A shared-pool spend or hold would take the member past their monthly budget: what they spent this
    month, plus what their active holds on the pool set aside, plus ``required``."""

    def __init__(self, limit: int, spent: int, required: int, held: int = 0) -> None:
        super().__init__("This would exceed the member's monthly budget in this organization")
        self.limit = limit
        self.spent = spent
        self.required = required
        self.held = held


class HoldNotActiveError(LedgerError):
    """The hold was captured, released or timed out already."""

    def __init__(self, status: str) -> None:
        super().__init__(f"The hold is {status.lower().replace('_', ' ')}, not active")
        self.status = status


class BalanceLimitError(LedgerError):
    """A grant would take the balance past what an account may hold."""

    def __init__(self, limit: int) -> None:
        super().__init__("This grant would take the balance over the maximum an account may hold")
        self.limit = limit


class ExceedsHoldError(LedgerError):
    def __init__(self, amount: int) -> None:
        super().__init__("Cannot capture more than the hold set aside")
        self.amount = amount


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """One committed change of an account, to publish after the transaction."""

    account_id: int
    version: int
    delta: int
    reason: str
    balance: Balance
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRecorded:
    """A usage event inside an organization, to publish after the transaction."""

    organization_id: int
    usage_event_id: int
    account_id: int
    user_id: int
    agent_id: str
    activity: str
    credits: int
    free_credits: int
    paid_credits: int
    occurred_at: datetime


Event = BalanceChange | UsageRecorded
"""What ledger operations hand back for publishing once they have committed."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A caller's key for one request. ``scope`` names the caller; ``fingerprint`` the request's input."""

    scope: str
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def for_request(cls, scope: str, key: str, operation: str, request: Mapping[str, Any]) -> IdempotencyKey:
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        return cls(scope, key, operation, hashlib.sha256(canonical.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class SpendResult:
    usage_event_id: int
    credits: int
    free_credits: int
    paid_credits: int
    balance: Balance
    replayed: bool = False
    changes: tuple[Event, ...] = ()
    queued_top_up: int | None = None
    """The auto top-up transaction this spend queued, for the caller to charge after commit."""


@dataclass(frozen=True, slots=True)
class GrantResult:
    lot_id: int
    balance: Balance
    replayed: bool = False
    changes: tuple[BalanceChange, ...] = ()


@dataclass(frozen=True, slots=True)
class HoldResult:
    hold_id: int
    balance: Balance
    usage_event_id: int | None = None
    replayed: bool = False
    changes: tuple[Event, ...] = ()
    queued_top_up: int | None = None
    """The auto top-up transaction this hold queued, for the caller to charge after commit."""


@dataclass(slots=True)
class SweepReport:
    expired_lots: int = 0
    released_holds: int = 0
    changes: list[BalanceChange] = field(default_factory=list)


class _Replay(Exception):
    """Raised inside a transaction to roll it back and answer with a stored response instead."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response


# ----------------------------------------------------------------------------------------------- helpers

_ACCOUNT_COLUMNS = "a.id, a.balance, a.held, a.version"
# What a spend needs to know whether it must queue an auto top-up, read in the round trip of the lock.
_AUTO_TOP_UP_COLUMNS = (
    "t.enabled AS atu_enabled, t.threshold AS atu_threshold, t.pending_transaction_id AS atu_pending,"
    " t.next_attempt_at AS atu_next"
)


async def _lock_account(
    sql: Sql, where: str, arg: int, idem: IdempotencyKey | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Lock one account row and, in the same round trip, read any record stored under ``idem``.

    A record found is the answer. None found is not final on PostgreSQL (see the module's notes): the
    operation goes on, and its ``_store_response`` finds the record a concurrent holder of the lock stored."""
    if idem is None:
        row = await sql.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM credit_accounts a WHERE a.{where} = $1" + sql.for_update(),
            arg,
        )
        if row is None:
            raise NotFoundError("Credit account")
        return row, None
    row = await sql.fetchrow(
        f"SELECT {_ACCOUNT_COLUMNS}, i.operation AS idem_operation, i.request_hash AS idem_hash,"
        f" i.response AS idem_response, {_AUTO_TOP_UP_COLUMNS} FROM credit_accounts a"
        " LEFT JOIN idempotency_records i ON i.scope = $2 AND i.key = $3"
        " LEFT JOIN auto_top_ups t ON t.account_id = a.id"
        f" WHERE a.{where} = $1" + sql.for_update(of="a"),
        arg,
        idem.scope,
        idem.key,
    )
    if row is None:
        raise NotFoundError("Credit account")
    if row["idem_hash"] is None:
        return row, None
    return row, _stored_response(idem, row["idem_operation"], row["idem_hash"], row["idem_response"])


async def lock_account(sql: Sql, account_id: int) -> dict[str, Any]:
    """Lock an account's row inside ``sql``'s transaction (for operations outside this module)."""
    row, _ = await _lock_account(sql, "id", account_id, None)
    return row


async def balance_locked(sql: Sql, account: dict[str, Any], now: datetime) -> Balance:
    """The live balance of an account that ``sql``'s transaction has locked."""
    account_id = int(account["id"])
    return balance_from_lots(
        await _live_lots(sql, account_id), await _held_now(sql, account_id, int(account["held"]), now), now
    )


async def _queue_auto_top_up(
    sql: Sql, account: dict[str, Any], after: Balance, terms: Terms | None, now: datetime
) -> int | None:
    """Queue an auto top-up when this change left the available balance below the account's threshold.
    The columns the lock read decide; only then does it cost more statements."""
    threshold = account.get("atu_threshold")
    if terms is None or threshold is None or after.available >= int(threshold):
        return None
    if not account["atu_enabled"] or account["atu_pending"] is not None:
        return None
    next_attempt_at = as_datetime(account["atu_next"])
    if next_attempt_at is not None and next_attempt_at > now:
        return None  # backing off after a decline, or a worker holds it
    from models.auto_top_up import queue_locked

    return await queue_locked(sql, int(account["id"]), after.available, terms, now)


def _stored_response(idem: IdempotencyKey, operation: str, request_hash: str, response: str) -> dict[str, Any]:
    if operation != idem.operation or request_hash != idem.fingerprint:
        raise IdempotencyConflictError()
    stored: dict[str, Any] = json.loads(response)
    return stored


async def _store_response(sql: Sql, idem: IdempotencyKey, response: dict[str, Any], now: datetime) -> None:
    """Write the key in the operation's transaction; if a concurrent request wrote it first, replay that."""
    rows = await sql.fetch(
        "INSERT INTO idempotency_records (scope, key, operation, request_hash, response, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING RETURNING id",
        idem.scope,
        idem.key,
        idem.operation,
        idem.fingerprint,
        json.dumps(response, separators=(",", ":")),
        now,
    )
    if not rows:
        raise _Replay({})


async def stored_refusal(sql: Sql, idem: IdempotencyKey) -> dict[str, Any] | None:
    """The refusal stored under ``idem`` by an operation whose successes live in a table of their own
    (``subscribe``, ``refundPayment``). Read under the account lock, in a statement of its own."""
    row = await sql.fetchrow(
        "SELECT operation, request_hash, response FROM idempotency_records WHERE scope = $1 AND key = $2",
        idem.scope,
        idem.key,
    )
    if row is None or row["operation"] != idem.operation:
        return None  # a key another operation recorded: that operation's own table decides (as before)
    return _stored_response(idem, row["operation"], row["request_hash"], row["response"])


async def store_refusal(sql: Sql, idem: IdempotencyKey, response: dict[str, Any], now: datetime) -> None:
    """Store a refusal under ``idem`` (the caller commits it and raises the refusal afterwards), so that a
    replay is refused the same way instead of being evaluated against newer state."""
    await sql.execute(
        "INSERT INTO idempotency_records (scope, key, operation, request_hash, response, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING",
        idem.scope,
        idem.key,
        idem.operation,
        idem.fingerprint,
        json.dumps(response, separators=(",", ":")),
        now,
    )


async def _read_stored(idem: IdempotencyKey) -> dict[str, Any]:
    async with in_transaction() as conn:
        row = await Sql(conn).fetchrow(
            "SELECT operation, request_hash, response FROM idempotency_records WHERE scope = $1 AND key = $2",
            idem.scope,
            idem.key,
        )
    if row is None:  # the other request rolled back after all: nothing stored, nothing happened
        raise IdempotencyConflictError()
    return _stored_response(idem, row["operation"], row["request_hash"], row["response"])


async def _held_now(sql: Sql, account_id: int, cached_held: int, now: datetime) -> int:
    """Credit held at ``now``: a hold past its timeout stops counting at that instant, swept or not."""
    if cached_held == 0:
        return 0
    rows = await sql.fetch(
        "SELECT amount, expires_at FROM holds WHERE account_id = $1 AND status = 'ACTIVE'", account_id
    )
    return sum(int(r["amount"]) for r in rows if is_live(as_datetime(r["expires_at"]), now))


async def _live_lots(sql: Sql, account_id: int) -> list[dict[str, Any]]:
    return await sql.fetch(
        "SELECT id, kind, remaining, expires_at, granted_at FROM credit_lots"
        " WHERE account_id = $1 AND status = 'ACTIVE' AND remaining > 0",
        account_id,
    )


async def _open(
    sql: Sql, account: AccountSelector, idem: IdempotencyKey, now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]], Balance]:
    """Lock the account, answer a replayed key with its stored response, and read the live balance."""
    row, stored = await _lock_account(sql, account[0], account[1], idem)
    if stored is not None:
        raise _Replay(stored)
    lots = await _live_lots(sql, int(row["id"]))
    return row, lots, balance_from_lots(lots, await _held_now(sql, int(row["id"]), int(row["held"]), now), now)


def _spend_order(lot: Mapping[str, Any]) -> tuple[int, int, datetime, datetime, int]:
    expires_at = as_datetime(lot["expires_at"])
    granted_at = as_datetime(lot["granted_at"])
    assert granted_at is not None
    never = datetime.max.replace(tzinfo=granted_at.tzinfo)
    return (
        0 if lot["kind"] == CreditKind.FREE else 1,
        1 if expires_at is None else 0,
        expires_at or never,
        granted_at,
        int(lot["id"]),
    )


def allocate(lots: list[dict[str, Any]], amount: int, now: datetime) -> list[tuple[dict[str, Any], int]]:
    """Split ``amount`` over live lots in spending order. The caller has checked that enough is live."""
    allocations: list[tuple[dict[str, Any], int]] = []
    left = amount
    for lot in sorted((lot for lot in lots if is_live(as_datetime(lot["expires_at"]), now)), key=_spend_order):
        if left == 0:
            break
        take = min(left, int(lot["remaining"]))
        allocations.append((lot, take))
        left -= take
    assert left == 0, "allocate() called for more than the live balance"
    return allocations


async def _take_from_lots(
    sql: Sql, lots: list[dict[str, Any]], amount: int, now: datetime
) -> tuple[list[tuple[dict[str, Any], int]], int, int]:
    """Decrement lots for ``amount``; return the allocations and the free/paid split."""
    allocations = allocate(lots, amount, now)
    free = paid = 0
    for lot, take in allocations:
        await sql.execute(
            "UPDATE credit_lots SET remaining = remaining - $1,"
            " status = CASE WHEN remaining - $2 = 0 THEN 'DEPLETED' ELSE status END WHERE id = $3",
            take,
            take,
            lot["id"],
        )
        lot["remaining"] = int(lot["remaining"]) - take
        if lot["kind"] == CreditKind.FREE:
            free += take
        else:
            paid += take
    return allocations, free, paid


ROLL_UP_USAGE = (
    "INSERT INTO usage_rollups (account_id, organization_key, dimension, key, bucket, events, credits,"
    " free_credits, paid_credits) VALUES ($1, $2, 'ACTIVITY', $3, $6, 1, $7, $8, $9),"
    " ($1, $2, 'AGENT', $4, $6, 1, $7, $8, $9), ($1, $2, 'MEMBER', $5, $6, 1, $7, $8, $9)"
    " ON CONFLICT (account_id, dimension, bucket, key, organization_key) DO UPDATE SET"
    " events = usage_rollups.events + 1, credits = usage_rollups.credits + excluded.credits,"
    " free_credits = usage_rollups.free_credits + excluded.free_credits,"
    " paid_credits = usage_rollups.paid_credits + excluded.paid_credits"
)
"""The hour's rollups of one usage event (``bench/ceiling.py`` runs the same statement)."""


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
) -> int:
    row = await sql.fetchrow(
        "INSERT INTO usage_events (account_id, user_id, organization_id, hold_id, agent_id, activity,"
        " quantity, credits, free_credits, paid_credits, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
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
        now,
    )
    assert row is not None
    usage_event_id = int(row["id"])
    values: list[Any] = []
    placeholders = []
    for n, (lot, take) in enumerate(allocations):
        base = n * 4
        placeholders.append(f"(${base + 1}, ${base + 2}, ${base + 3}, ${base + 4})")
        values += [usage_event_id, lot["id"], lot["kind"], take]
    if placeholders:
        await sql.execute(
            "INSERT INTO usage_allocations (usage_event_id, lot_id, kind, amount) VALUES " + ", ".join(placeholders),
            *values,
        )
    # Reports read these hourly rollups, never the raw events: one row per dimension, in one round trip.
    await sql.execute(
        ROLL_UP_USAGE,
        account_id,
        organization_id or 0,
        activity,
        agent_id,
        str(user_id),
        now.astimezone(UTC).replace(minute=0, second=0, microsecond=0),
        credits,
        free,
        paid,
    )
    return usage_event_id


async def _append(
    sql: Sql,
    account: dict[str, Any],
    entry_type: LedgerEntryType,
    *,
    amount: int = 0,
    free_amount: int = 0,
    paid_amount: int = 0,
    held_delta: int = 0,
    now: datetime,
    lot_id: int | None = None,
    usage_event_id: int | None = None,
    hold_id: int | None = None,
    reason: str | None = None,
) -> None:
    """Append one ledger row and move the account's cached balance, held credit and version with it."""
    account["balance"] = int(account["balance"]) + amount
    account["held"] = int(account["held"]) + held_delta
    account["version"] = int(account["version"]) + 1
    await sql.execute(
        "INSERT INTO ledger_entries (account_id, entry_type, amount, free_amount, paid_amount, held_delta,"
        " balance_after, held_after, version, lot_id, usage_event_id, hold_id, reason, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        account["id"],
        entry_type.value,
        amount,
        free_amount,
        paid_amount,
        held_delta,
        account["balance"],
        account["held"],
        account["version"],
        lot_id,
        usage_event_id,
        hold_id,
        reason,
        now,
    )


async def _save_account(sql: Sql, account: dict[str, Any]) -> None:
    await sql.execute(
        "UPDATE credit_accounts SET balance = $1, held = $2, version = $3 WHERE id = $4",
        account["balance"],
        account["held"],
        account["version"],
        account["id"],
    )


def _change(account: dict[str, Any], delta: int, reason: str, balance: Balance, now: datetime) -> BalanceChange:
    return BalanceChange(int(account["id"]), int(account["version"]), delta, reason, balance, now)


MAX_BALANCE = MAX_MICRO
"""The most an account may hold, in micro-credits: 10^12 credits, far inside a signed 64-bit column."""

AccountSelector = tuple[Literal["id", "user_id", "organization_id"], int]


# -------------------------------------------------------------------------------------------- operations


async def read_balances(account_ids: list[int], now: datetime) -> dict[int, Balance]:
    """Balances of several accounts in two queries, whatever their number."""
    if not account_ids:
        return {}
    from tortoise import connections

    sql = Sql(connections.get("default"))
    marks = ", ".join(f"${n + 1}" for n in range(len(account_ids)))
    held_rows = await sql.fetch(f"SELECT id, held FROM credit_accounts WHERE id IN ({marks})", *account_ids)
    lot_rows = await sql.fetch(
        "SELECT account_id, kind, remaining, expires_at FROM credit_lots"
        f" WHERE status = 'ACTIVE' AND remaining > 0 AND account_id IN ({marks})",
        *account_ids,
    )
    by_account: dict[int, list[dict[str, Any]]] = {}
    for lot in lot_rows:
        by_account.setdefault(int(lot["account_id"]), []).append(lot)
    held = {int(row["id"]): 0 for row in held_rows}
    holding = [int(row["id"]) for row in held_rows if int(row["held"])]
    if holding:
        marks = ", ".join(f"${n + 1}" for n in range(len(holding)))
        for hold_row in await sql.fetch(
            f"SELECT account_id, amount, expires_at FROM holds WHERE status = 'ACTIVE' AND account_id IN ({marks})",
            *holding,
        ):
            if is_live(as_datetime(hold_row["expires_at"]), now):
                held[int(hold_row["account_id"])] += int(hold_row["amount"])
    return {
        int(row["id"]): balance_from_lots(by_account.get(int(row["id"]), []), held[int(row["id"])], now)
        for row in held_rows
    }


async def account_state(account_id: int, now: datetime) -> tuple[Balance, int] | None:
    """An account's balance and ledger version, read in one statement so that they agree."""
    from tortoise import connections

    rows = await Sql(connections.get("default")).fetch(
        "SELECT a.held, a.version, l.kind, l.remaining, l.expires_at FROM credit_accounts a"
        " LEFT JOIN credit_lots l ON l.account_id = a.id AND l.status = 'ACTIVE' AND l.remaining > 0"
        " WHERE a.id = $1",
        account_id,
    )
    if not rows:
        return None
    lots = [row for row in rows if row["kind"] is not None]
    held = (await read_balances([account_id], now))[account_id].held if int(rows[0]["held"]) else 0
    return balance_from_lots(lots, held, now), int(rows[0]["version"])


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
) -> tuple[PoolBudget | None, LedgerError | None]:
    """Why a spend or hold of ``credits`` is refused (a pool member's budget, then the available credit),
    stored under the caller's key so a replay is refused the same way; and the member's budget, if any."""
    budget = (
        await _pool_budget(sql, int(row["id"]), organization_id, user_id, now)
        if account[0] == "organization_id"
        else None
    )
    if budget is not None and (over := _over_budget(budget, credits)) is not None:
        return budget, await _refuse(sql, idem, over, now)
    if credits > before.available:
        return budget, await _refuse(sql, idem, InsufficientCreditsError(before.available, credits), now)
    return budget, None


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
) -> SpendResult:
    """Spend ``credits`` micro-credits from an account, FREE first. Refuses an overspend whole.

    With ``auto_top_up`` terms, a spend that leaves the available balance below the account's auto top-up
    threshold queues the top-up in its own transaction (``queued_top_up``)."""
    assert credits > 0
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, lots, before = await _open(sql, account, idem, now)
            budget, refusal = await _refusal(sql, row, account, before, organization_id, user_id, credits, idem, now)
            if refusal is None:
                if budget is not None:
                    await _count_pool_spend(sql, organization_id, user_id, credits, now)
                allocations, free, paid = await _take_from_lots(sql, lots, credits, now)
                usage_event_id = await _insert_usage(
                    sql,
                    account_id=int(row["id"]),
                    user_id=user_id,
                    organization_id=organization_id,
                    hold_id=None,
                    agent_id=agent_id,
                    activity=activity,
                    quantity=quantity,
                    credits=credits,
                    free=free,
                    paid=paid,
                    allocations=allocations,
                    now=now,
                )
                await _append(
                    sql,
                    row,
                    LedgerEntryType.SPEND,
                    amount=-credits,
                    free_amount=-free,
                    paid_amount=-paid,
                    now=now,
                    usage_event_id=usage_event_id,
                )
                await _save_account(sql, row)
                after = Balance(free=before.free - free, paid=before.paid - paid, held=before.held)
                result = SpendResult(usage_event_id, credits, free, paid, after)
                await _store_response(sql, idem, _spend_json(result), now)
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
            _change(row, -credits, "SPEND", result.balance, now),
            *_usage(organization_id, result.usage_event_id, row, user_id, agent_id, activity, credits, result, now),
        ),
        queued_top_up=queued,
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
        ),
    )


@dataclass(frozen=True, slots=True)
class PoolBudget:
    """A member's monthly budget in a pool (``None``: no limit), what they spent from it this month (UTC),
    and what their active holds on it set aside (read only under a limit)."""

    limit: int | None
    spent: int
    held: int


async def _pool_budget(
    sql: Sql, pool_account_id: int, organization_id: int | None, user_id: int, now: datetime
) -> PoolBudget:
    """Read under the pool account's lock, so concurrent spends, holds and captures of one member see each
    other's counts and holds."""
    assert organization_id is not None
    row = await sql.fetchrow(
        "SELECT (SELECT monthly_limit FROM member_budgets WHERE organization_id = $1 AND user_id = $2) AS lim,"
        " (SELECT spent FROM budget_usage WHERE organization_id = $3 AND user_id = $4 AND month = $5) AS spent",
        organization_id,
        user_id,
        organization_id,
        user_id,
        now.strftime("%Y-%m"),
    )
    assert row is not None
    if row["lim"] is None:
        return PoolBudget(None, int(row["spent"] or 0), 0)
    # An active hold counts against the budget until it is captured (then its capture counts as spent),
    # released or timed out; a hold past its timeout stops counting at that instant, swept or not.
    holds = await sql.fetch(
        "SELECT amount, expires_at FROM holds WHERE account_id = $1 AND status = 'ACTIVE' AND user_id = $2",
        pool_account_id,
        user_id,
    )
    held = sum(int(h["amount"]) for h in holds if is_live(as_datetime(h["expires_at"]), now))
    return PoolBudget(int(row["lim"]), int(row["spent"] or 0), held)


def _over_budget(budget: PoolBudget, credits: int) -> BudgetExceededError | None:
    if budget.limit is None or budget.spent + budget.held + credits <= budget.limit:
        return None
    return BudgetExceededError(budget.limit, budget.spent, credits, budget.held)


def _budget_json(refusal: BudgetExceededError) -> dict[str, Any]:
    return {
        "refused": "budget",
        "limit": refusal.limit,
        "spent": refusal.spent,
        "required": refusal.required,
        "held": refusal.held,
    }


def _budget_replay(stored: dict[str, Any]) -> BudgetExceededError:
    return BudgetExceededError(
        int(stored["limit"]), int(stored["spent"]), int(stored["required"]), int(stored.get("held", 0))
    )


STORED_REFUSALS: tuple[type[LedgerError], ...] = (
    InsufficientCreditsError,
    BudgetExceededError,
    HoldNotActiveError,
    ExceedsHoldError,
    BalanceLimitError,
)
"""Refusals that depend on the state at the time of the call: stored under the key and replayed as such."""


def _refusal_json(refusal: LedgerError) -> dict[str, Any]:
    if isinstance(refusal, InsufficientCreditsError):
        return {"refused": "insufficient", "available": refusal.available, "required": refusal.required}
    if isinstance(refusal, BudgetExceededError):
        return _budget_json(refusal)
    if isinstance(refusal, HoldNotActiveError):
        return {"refused": "hold_not_active", "status": refusal.status}
    if isinstance(refusal, ExceedsHoldError):
        return {"refused": "exceeds_hold", "amount": refusal.amount}
    if isinstance(refusal, BalanceLimitError):
        return {"refused": "balance_limit", "limit": refusal.limit}
    raise TypeError(f"{type(refusal).__name__} is not stored under an idempotency key")


def _raise_if_refused(stored: dict[str, Any]) -> None:
    """Raise the refusal a stored response records, if it records one (not chained to the ``_Replay`` that
    brought the stored response)."""
    refused = stored.get("refused")
    if refused is None:
        return
    if refused == "insufficient":
        raise InsufficientCreditsError(int(stored["available"]), int(stored["required"])) from None
    if refused == "budget":
        raise _budget_replay(stored) from None
    if refused == "hold_not_active":
        raise HoldNotActiveError(str(stored["status"])) from None
    if refused == "exceeds_hold":
        raise ExceedsHoldError(int(stored["amount"])) from None
    if refused == "balance_limit":
        raise BalanceLimitError(int(stored["limit"])) from None
    raise ValueError(f"unknown stored refusal {refused!r}")


async def _refuse(sql: Sql, idem: IdempotencyKey, refusal: LedgerError, now: datetime) -> LedgerError:
    """Store ``refusal`` under the key; the caller lets the transaction commit and raises it afterwards. If a
    concurrent request with the key stored its answer first, that answer is replayed instead (``_Replay``)."""
    await _store_response(sql, idem, _refusal_json(refusal), now)
    return refusal


async def _count_pool_spend(sql: Sql, organization_id: int | None, user_id: int, credits: int, now: datetime) -> None:
    await sql.execute(
        "INSERT INTO budget_usage (organization_id, user_id, month, spent) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (organization_id, user_id, month) DO UPDATE SET spent = budget_usage.spent + excluded.spent",
        organization_id,
        user_id,
        now.strftime("%Y-%m"),
        credits,
    )


def _spend_json(result: SpendResult) -> dict[str, Any]:
    return {
        "usage_event_id": result.usage_event_id,
        "credits": result.credits,
        "free": result.free_credits,
        "paid": result.paid_credits,
        "balance": result.balance.to_json(),
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
    )


async def grant(
    account_id: int,
    *,
    credits: int,
    kind: CreditKind,
    source: LotSource,
    expires_at: datetime | None,
    reason: str | None,
    idem: IdempotencyKey | None,
    now: datetime,
) -> GrantResult:
    """Add a lot of ``credits`` micro-credits to an account."""
    assert credits > 0
    refusal: LedgerError | None = None
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, stored = await _lock_account(sql, "id", account_id, idem)
            if stored is not None:
                raise _Replay(stored)
            try:
                result = await grant_locked(sql, row, credits, kind, source, expires_at, reason, now)
            except BalanceLimitError as exc:
                if idem is None:
                    raise
                refusal = await _refuse(sql, idem, exc, now)
            else:
                if idem is not None:
                    await _store_response(
                        sql, idem, {"lot_id": result.lot_id, "balance": result.balance.to_json()}, now
                    )
    except _Replay as replay:
        stored = replay.response
        if not stored:
            assert idem is not None
            stored = await _read_stored(idem)
        _raise_if_refused(stored)
        return GrantResult(int(stored["lot_id"]), Balance.from_json(stored["balance"]), replayed=True)
    if refusal is not None:
        raise refusal
    return result


async def grant_locked(
    sql: Sql,
    account: dict[str, Any],
    credits: int,
    kind: CreditKind,
    source: LotSource,
    expires_at: datetime | None,
    reason: str | None,
    now: datetime,
) -> GrantResult:
    if int(account["balance"]) + credits > MAX_BALANCE:
        raise BalanceLimitError(MAX_BALANCE)
    lot = await sql.fetchrow(
        "INSERT INTO credit_lots (account_id, kind, source, amount, remaining, status, granted_at,"
        " expires_at, reason) VALUES ($1, $2, $3, $4, $5, 'ACTIVE', $6, $7, $8) RETURNING id",
        account["id"],
        kind.value,
        source.value,
        credits,
        credits,
        now,
        expires_at,
        reason,
    )
    assert lot is not None
    lot_id = int(lot["id"])
    await _append(
        sql,
        account,
        LedgerEntryType.GRANT,
        amount=credits,
        free_amount=credits if kind is CreditKind.FREE else 0,
        paid_amount=credits if kind is CreditKind.PAID else 0,
        now=now,
        lot_id=lot_id,
        reason=reason,
    )
    await _save_account(sql, account)
    balance = balance_from_lots(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        now,
    )
    # Subscribers see why credit arrived: a top-up, an auto top-up, a subscription period, or another grant.
    reason = source.value if source in (LotSource.TOP_UP, LotSource.AUTO_TOP_UP, LotSource.SUBSCRIPTION) else "GRANT"
    return GrantResult(lot_id, balance, changes=(_change(account, credits, reason, balance, now),))


async def void_lot_locked(
    sql: Sql, account: dict[str, Any], lot_id: int, credits: int, reason: str, now: datetime
) -> tuple[int, BalanceChange | None]:
    """Take back up to ``credits`` of a lot (a refunded payment), as far as it is unspent and not held.
    Returns the micro-credits voided and the change to publish (``None`` if nothing was left to void)."""
    lot = await sql.fetchrow(
        "SELECT kind, remaining, expires_at FROM credit_lots WHERE id = $1 AND account_id = $2", lot_id, account["id"]
    )
    assert lot is not None
    expires = as_datetime(lot["expires_at"])
    if expires is not None and expires <= now:
        return 0, None  # expired credit is gone already, whether or not the sweep has recorded it
    before = balance_from_lots(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        now,
    )
    voided = min(credits, int(lot["remaining"]), before.available)
    if voided <= 0:
        return 0, None
    await sql.execute(
        "UPDATE credit_lots SET remaining = remaining - $1,"
        " status = CASE WHEN remaining - $1 = 0 THEN 'VOIDED' ELSE status END WHERE id = $2",
        voided,
        lot_id,
    )
    free = voided if lot["kind"] == CreditKind.FREE else 0
    await _append(
        sql,
        account,
        LedgerEntryType.REFUND,
        amount=-voided,
        free_amount=-free,
        paid_amount=-(voided - free),
        now=now,
        lot_id=lot_id,
        reason=reason,
    )
    await _save_account(sql, account)
    after = balance_from_lots(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        now,
    )
    return voided, _change(account, -voided, "REFUND", after, now)


async def create_user(email: str, *, signup_bonus: int, bonus_lifetime: timedelta, now: datetime) -> int:
    """Create a user with a credit account and, if configured, the signup bonus. Returns the user id."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        user = await sql.fetchrow("INSERT INTO users (email, created_at) VALUES ($1, $2) RETURNING id", email, now)
        assert user is not None
        account = await sql.fetchrow(
            "INSERT INTO credit_accounts (user_id, balance, held, version, created_at)"
            " VALUES ($1, 0, 0, 0, $2) RETURNING id, balance, held, version",
            user["id"],
            now,
        )
        assert account is not None
        if signup_bonus > 0:
            await grant_locked(
                sql,
                dict(account),
                signup_bonus,
                CreditKind.FREE,
                LotSource.SIGNUP_BONUS,
                now + bonus_lifetime,
                "Signup bonus",
                now,
            )
    return int(user["id"])


async def hold(
    account: AccountSelector,
    *,
    user_id: int,
    organization_id: int | None,
    agent_id: str,
    activity: str,
    credits: int,
    expires_at: datetime,
    idem: IdempotencyKey,
    now: datetime,
    auto_top_up: Terms | None = None,
) -> HoldResult:
    """Set ``credits`` aside for a long-running task: lowers ``available``, not ``total`` (and, like a
    spend, may queue an auto top-up)."""
    assert credits > 0
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, lots, before = await _open(sql, account, idem, now)
            _, refusal = await _refusal(sql, row, account, before, organization_id, user_id, credits, idem, now)
            if refusal is None:
                created = await sql.fetchrow(
                    "INSERT INTO holds (account_id, user_id, organization_id, agent_id, activity, amount,"
                    " captured, status, created_at, expires_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, 0, 'ACTIVE', $7, $8) RETURNING id",
                    row["id"],
                    user_id,
                    organization_id,
                    agent_id,
                    activity,
                    credits,
                    now,
                    expires_at,
                )
                assert created is not None
                hold_id = int(created["id"])
                await _append(sql, row, LedgerEntryType.HOLD, held_delta=credits, now=now, hold_id=hold_id)
                await _save_account(sql, row)
                after = Balance(free=before.free, paid=before.paid, held=before.held + credits)
                await _store_response(sql, idem, {"hold_id": hold_id, "balance": after.to_json()}, now)
                queued = await _queue_auto_top_up(sql, row, after, auto_top_up, now)
    except _Replay as replay:
        stored = replay.response or await _read_stored(idem)
        _raise_if_refused(stored)
        return HoldResult(int(stored["hold_id"]), Balance.from_json(stored["balance"]), replayed=True)
    if refusal is not None:
        raise refusal
    return HoldResult(hold_id, after, changes=(_change(row, 0, "HOLD", after, now),), queued_top_up=queued)


async def _hold_account(hold_id: int) -> int:
    from tortoise import connections

    row = await Sql(connections.get("default")).fetchrow("SELECT account_id FROM holds WHERE id = $1", hold_id)
    if row is None:
        raise NotFoundError("Hold")
    return int(row["account_id"])


async def capture_hold(hold_id: int, *, credits: int | None, idem: IdempotencyKey, now: datetime) -> HoldResult:
    """Spend ``credits`` (default: all) of an active hold; the rest of it is returned to ``available``."""
    account_id = await _hold_account(hold_id)
    refusal: LedgerError | None = None
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, stored = await _lock_account(sql, "id", account_id, idem)
            if stored is not None:
                raise _Replay(stored)
            try:
                held, amount, lots, live = await _capturable(sql, row, hold_id, credits, now)
            except STORED_REFUSALS as exc:
                refusal = await _refuse(sql, idem, exc, now)
            else:
                usage_event_id = None
                free = paid = 0
                if amount > 0:
                    if held["pool_of"] is not None:  # a pool's hold: the capture counts as the member's spend
                        await _count_pool_spend(sql, int(held["pool_of"]), int(held["user_id"]), amount, now)
                    allocations, free, paid = await _take_from_lots(sql, lots, amount, now)
                    usage_event_id = await _insert_usage(
                        sql,
                        account_id=account_id,
                        user_id=int(held["user_id"]),
                        organization_id=held["organization_id"],
                        hold_id=hold_id,
                        agent_id=held["agent_id"],
                        activity=held["activity"],
                        quantity=None,
                        credits=amount,
                        free=free,
                        paid=paid,
                        allocations=allocations,
                        now=now,
                    )
                await sql.execute(
                    "UPDATE holds SET status = 'CAPTURED', captured = $1, settled_at = $2 WHERE id = $3",
                    amount,
                    now,
                    hold_id,
                )
                await _append(
                    sql,
                    row,
                    LedgerEntryType.CAPTURE,
                    amount=-amount,
                    free_amount=-free,
                    paid_amount=-paid,
                    held_delta=-int(held["amount"]),
                    now=now,
                    usage_event_id=usage_event_id,
                    hold_id=hold_id,
                )
                await _save_account(sql, row)
                after = Balance(free=live.free - free, paid=live.paid - paid, held=live.held - int(held["amount"]))
                await _store_response(
                    sql,
                    idem,
                    {"hold_id": hold_id, "usage_event_id": usage_event_id, "balance": after.to_json()},
                    now,
                )
    except _Replay as replay:
        stored = replay.response or await _read_stored(idem)
        _raise_if_refused(stored)
        return HoldResult(hold_id, Balance.from_json(stored["balance"]), stored.get("usage_event_id"), replayed=True)
    if refusal is not None:
        raise refusal
    split = SpendResult(usage_event_id or 0, amount, free, paid, after)
    usage = _usage(
        held["organization_id"],
        usage_event_id,
        row,
        int(held["user_id"]),
        held["agent_id"],
        held["activity"],
        amount,
        split,
        now,
    )
    return HoldResult(hold_id, after, usage_event_id, changes=(_change(row, -amount, "CAPTURE", after, now), *usage))


async def _capturable(
    sql: Sql, account: dict[str, Any], hold_id: int, credits: int | None, now: datetime
) -> tuple[dict[str, Any], int, list[dict[str, Any]], Balance]:
    """The active hold, the amount to capture, the live lots and the balance; or the refusal, raised."""
    held = await _active_hold(sql, hold_id, now)
    amount = int(held["amount"]) if credits is None else credits
    if amount > int(held["amount"]):
        raise ExceedsHoldError(int(held["amount"]))
    account_id = int(account["id"])
    lots = await _live_lots(sql, account_id)
    live = balance_from_lots(lots, await _held_now(sql, account_id, int(account["held"]), now), now)
    if amount > live.total:
        # Free lots counted when the hold was placed expired since: refuse, keep the hold.
        raise InsufficientCreditsError(live.total, amount)
    return held, amount, lots, live


async def release_hold(hold_id: int, *, idem: IdempotencyKey, now: datetime) -> HoldResult:
    """Return all of an active hold to ``available``."""
    account_id = await _hold_account(hold_id)
    refusal: LedgerError | None = None
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, stored = await _lock_account(sql, "id", account_id, idem)
            if stored is not None:
                raise _Replay(stored)
            try:
                held = await _active_hold(sql, hold_id, now)
            except HoldNotActiveError as exc:
                refusal = await _refuse(sql, idem, exc, now)
            else:
                change = await _release_locked(sql, row, held, HoldStatus.RELEASED, "RELEASE", now)
                await _store_response(sql, idem, {"hold_id": hold_id, "balance": change.balance.to_json()}, now)
    except _Replay as replay:
        stored = replay.response or await _read_stored(idem)
        _raise_if_refused(stored)
        return HoldResult(hold_id, Balance.from_json(stored["balance"]), replayed=True)
    if refusal is not None:
        raise refusal
    return HoldResult(hold_id, change.balance, changes=(change,))


async def _active_hold(sql: Sql, hold_id: int, now: datetime) -> dict[str, Any]:
    held = await sql.fetchrow(
        "SELECT h.id, h.user_id, h.organization_id, h.agent_id, h.activity, h.amount, h.status, h.expires_at,"
        " a.organization_id AS pool_of FROM holds h JOIN credit_accounts a ON a.id = h.account_id WHERE h.id = $1",
        hold_id,
    )
    if held is None:
        raise NotFoundError("Hold")
    if held["status"] != HoldStatus.ACTIVE:
        raise HoldNotActiveError(str(held["status"]))
    if not is_live(as_datetime(held["expires_at"]), now):
        raise HoldNotActiveError(HoldStatus.EXPIRED)  # timed out: the sweep will record it as EXPIRED
    return held


async def _release_locked(
    sql: Sql, account: dict[str, Any], held: dict[str, Any], status: HoldStatus, reason: str, now: datetime
) -> BalanceChange:
    await sql.execute("UPDATE holds SET status = $1, settled_at = $2 WHERE id = $3", status.value, now, held["id"])
    await _append(
        sql,
        account,
        LedgerEntryType.RELEASE,
        held_delta=-int(held["amount"]),
        now=now,
        hold_id=int(held["id"]),
        reason=reason,
    )
    await _save_account(sql, account)
    balance = balance_from_lots(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        now,
    )
    return _change(account, 0, reason, balance, now)


async def sweep(now: datetime) -> SweepReport:
    """Record expiries of lots past their ``expiresAt`` and release holds past their timeout.

    Each account is swept in its own transaction under its row lock, and every row is re-read under that
    lock, so sweeps running in several processes never record the same expiry twice.
    """
    from models.tables import CreditLot, Hold

    report = SweepReport()
    due: set[int] = set()
    for due_lot in await CreditLot.filter(status=LotStatus.ACTIVE, expires_at__lte=now).only("id", "account_id"):
        due.add(due_lot.account_id)
    for due_hold in await Hold.filter(status=HoldStatus.ACTIVE, expires_at__lte=now).only("id", "account_id"):
        due.add(due_hold.account_id)
    for account_id in sorted(due):
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, _ = await _lock_account(sql, "id", account_id, None)
            expired_delta = 0
            touched = False
            for lot in await sql.fetch(
                "SELECT id, kind, remaining, expires_at FROM credit_lots WHERE account_id = $1"
                " AND status = 'ACTIVE' AND expires_at IS NOT NULL",
                account_id,
            ):
                if is_live(as_datetime(lot["expires_at"]), now):
                    continue
                remaining = int(lot["remaining"])
                await sql.execute("UPDATE credit_lots SET status = 'EXPIRED', remaining = 0 WHERE id = $1", lot["id"])
                await _append(
                    sql,
                    row,
                    LedgerEntryType.EXPIRE,
                    amount=-remaining,
                    free_amount=-remaining if lot["kind"] == CreditKind.FREE else 0,
                    paid_amount=-remaining if lot["kind"] == CreditKind.PAID else 0,
                    now=now,
                    lot_id=int(lot["id"]),
                    reason="Expired",
                )
                expired_delta -= remaining
                touched = True
                report.expired_lots += 1
            if touched:
                await _save_account(sql, row)
            changes: list[BalanceChange] = []
            if expired_delta:
                balance = balance_from_lots(
                    await _live_lots(sql, account_id), await _held_now(sql, account_id, int(row["held"]), now), now
                )
                changes.append(_change(row, expired_delta, "EXPIRE", balance, now))
            for held in await sql.fetch(
                "SELECT id, amount, expires_at FROM holds WHERE account_id = $1 AND status = 'ACTIVE'",
                account_id,
            ):
                if is_live(as_datetime(held["expires_at"]), now):
                    continue
                changes.append(await _release_locked(sql, row, held, HoldStatus.EXPIRED, "HOLD_TIMEOUT", now))
                report.released_holds += 1
        report.changes.extend(changes)
    return report


@dataclass(frozen=True, slots=True)
class AuditFinding:
    account_id: int
    problem: str


async def audit() -> list[AuditFinding]:
    """Check, for every account: cached balance = Σ remaining of lots = Σ ledger amounts, and the same for
    held credit against active holds and ledger held deltas."""
    from tortoise import connections

    sql = Sql(connections.get("default"))
    accounts = await sql.fetch("SELECT id, balance, held, version FROM credit_accounts ORDER BY id")
    lots = {
        int(r["account_id"]): int(r["total"])
        for r in await sql.fetch("SELECT account_id, SUM(remaining) AS total FROM credit_lots GROUP BY account_id")
    }
    ledger = {
        int(r["account_id"]): (int(r["amount"]), int(r["held"]), int(r["entries"]), int(r["version"]))
        for r in await sql.fetch(
            "SELECT account_id, SUM(amount) AS amount, SUM(held_delta) AS held, COUNT(*) AS entries,"
            " MAX(version) AS version FROM ledger_entries GROUP BY account_id"
        )
    }
    holds = {
        int(r["account_id"]): int(r["total"])
        for r in await sql.fetch(
            "SELECT account_id, SUM(amount) AS total FROM holds WHERE status = 'ACTIVE' GROUP BY account_id"
        )
    }
    findings: list[AuditFinding] = []
    for account in accounts:
        account_id = int(account["id"])
        balance, held, version = int(account["balance"]), int(account["held"]), int(account["version"])
        ledger_amount, ledger_held, entries, ledger_version = ledger.get(account_id, (0, 0, 0, 0))
        checks = [
            (lots.get(account_id, 0), "sum of lot remaining", balance, "cached balance"),
            (ledger_amount, "sum of ledger amounts", balance, "cached balance"),
            (holds.get(account_id, 0), "sum of active holds", held, "cached held"),
            (ledger_held, "sum of ledger held deltas", held, "cached held"),
            (entries, "ledger entries", version, "account version"),
            (ledger_version, "last ledger version", version, "account version"),
        ]
        for found, found_name, expected, expected_name in checks:
            if found != expected:
                findings.append(AuditFinding(account_id, f"{found_name} {found} != {expected_name} {expected}"))
    return findings
