"""The account's row lock and the idempotency record read with it; refusals stored under their key.

Why the record is read in the lock's statement, and why only its insert is proof: the notes in
``models/ledger/__init__.py``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, Protocol

from tortoise.transactions import in_transaction

from models.ledger.errors import (
    BalanceLimitError,
    BudgetExceededError,
    ExceedsHoldError,
    HoldNotActiveError,
    IdempotencyConflictError,
    IdempotencyKey,
    InsufficientCreditsError,
    LedgerError,
    NotFoundError,
    SpendLimitExceededError,
    SpendPausedError,
)
from models.limit_rules import LimitView
from models.sql import Sql


class _Replay(Exception):
    """Raised inside a transaction to roll it back and answer with a stored response instead."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response


AccountSelector = tuple[Literal["id", "user_id", "organization_id"], int]


# ``spend_limits`` (how many limits the account has) and ``organization_id`` (a pool's) tell the spend whether
# it has limits to read, and whether a member's monthly limit is their pool budget, without a statement more;
# ``overdraft`` and ``owed`` how far below zero it may go; ``alert_levels`` whether it crosses a low-balance
# alert level (models/outbox.py), and ``user_id`` whose account an event is about.
_ACCOUNT_COLUMNS = (
    "a.id, a.balance, a.held, a.version, a.spend_limits, a.organization_id, a.overdraft, a.owed, a.user_id,"
    " a.alert_levels"
)
# What a spend needs to know whether it must queue an auto top-up, read in the round trip of the lock.
_AUTO_TOP_UP_COLUMNS = (
    "t.enabled AS atu_enabled, t.threshold AS atu_threshold, t.pending_transaction_id AS atu_pending,"
    " t.next_attempt_at AS atu_next"
)


class ReadWithLock(Protocol):
    """More the lock's statement reads (``models/ledger/limits.py`` ``Fold``: the spend limits)."""

    def columns(self, first: int, postgres: bool) -> tuple[str, list[Any]]:
        """Columns to add to the statement (from ``credit_accounts a``), with their arguments numbered from
        ``first``."""
        ...


READ_WITH_LOCK = "read_with_lock"
"""The key of the locked row that keeps the ``also`` its statement read (absent: none)."""


# The live lots and the active holds of the locked account, read in the lock's statement (``live``): one JSON
# array each (the holds only when the cached held credit says there are some), filtered at ``now`` by the
# reader (models/ledger/lots.py), as the statements of their own did.
_LIVE_LOTS = (
    "SELECT json_group_array(json_object('id', l.id, 'kind', l.kind, 'remaining', l.remaining,"
    " 'expires_at', l.expires_at, 'granted_at', l.granted_at)) FROM credit_lots l WHERE l.account_id = a.id"
    " AND l.status = 'ACTIVE' AND l.remaining > 0"
)
_ACTIVE_HOLDS = (
    "SELECT json_group_array(json_object('amount', h.amount, 'expires_at', h.expires_at)) FROM holds h"
    " WHERE h.account_id = a.id AND h.status = 'ACTIVE'"
)
# On PostgreSQL a statement that waited for the lock sees the locked row as its holder left it, but every
# other row as it was when the statement began: a subquery of it reads lots and holds the holder may have
# changed. The function (models/migrations/0020_live_credit_function.py, the same read) is VOLATILE: called
# again for the row the holder left, its queries see the holder's commit, in the same round trip.
_LIVE_COLUMNS = {
    True: ", creditline_live_credit(a.id, a.held) AS live_read",
    False: f", ({_LIVE_LOTS}) AS lots_read, CASE WHEN a.held <> 0 THEN ({_ACTIVE_HOLDS}) END AS holds_read",
}
# The spend limits are read by subqueries (``also``: models/ledger/limits.py ``Fold``), which may be stale so:
# the row seen when the statement began differing from the row locked (xmin, the transaction that wrote that
# version) says the holder changed it, and the statement runs again, under the lock now held (its new snapshot
# sees the holder's commit). Whatever changes limits or counters under the lock also writes the account row.
_FRESH = ", a.xmin = (SELECT s.xmin FROM credit_accounts s WHERE s.id = a.id) AS fresh"

LIVE_LOTS = "lots_read"
"""The key of the locked row that keeps the live lots its statement read (with ``live``)."""
ACTIVE_HOLDS = "holds_read"
"""The key of the locked row that keeps the active holds its statement read (None: it holds nothing)."""


async def _lock_account(
    sql: Sql,
    where: str,
    arg: int,
    idem: IdempotencyKey | None,
    also: ReadWithLock | None = None,
    *,
    live: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Lock one account row and, in the same round trip, read any record stored under ``idem`` (and, with
    ``also``, what it reads: kept in the row under ``READ_WITH_LOCK``, for its reader to know what it read;
    with ``live``, the live lots and active holds, under ``LIVE_LOTS`` and ``ACTIVE_HOLDS``, fresh even when
    the statement waited for the lock). On PostgreSQL a statement that read the spend limits and waited for the
    lock while its holder changed the row runs once more (``_FRESH``).

    A record found is the answer. None found is not final on PostgreSQL (see the package's notes, in
    ``models/ledger/__init__.py``): the operation goes on, and its ``_store_response`` finds the record a
    concurrent holder of the lock stored."""
    if idem is None:
        row = await sql.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM credit_accounts a WHERE a.{where} = $1" + sql.for_update(),
            arg,
        )
        if row is None:
            raise NotFoundError("Credit account")
        return row, None
    extra, extra_args = ("", []) if also is None else also.columns(4, sql.postgres)
    if live:
        extra += _LIVE_COLUMNS[sql.postgres]
    checked = sql.postgres and also is not None
    statement = (
        f"SELECT {_ACCOUNT_COLUMNS}, i.operation AS idem_operation, i.request_hash AS idem_hash,"
        f" i.response AS idem_response, {_AUTO_TOP_UP_COLUMNS}{extra}{_FRESH if checked else ''}"
        " FROM credit_accounts a LEFT JOIN idempotency_records i ON i.scope = $2 AND i.key = $3"
        " LEFT JOIN auto_top_ups t ON t.account_id = a.id"
        f" WHERE a.{where} = $1" + sql.for_update(of="a")
    )
    row = await sql.fetchrow(statement, arg, idem.scope, idem.key, *extra_args)
    if row is not None and checked and not row["fresh"] and int(row["spend_limits"] or 0):
        row = await sql.fetchrow(statement, arg, idem.scope, idem.key, *extra_args)  # under the lock: fresh
    if row is None:
        raise NotFoundError("Credit account")
    if live and sql.postgres:
        row[LIVE_LOTS], row[ACTIVE_HOLDS] = _json(row.pop("live_read"))
    if also is not None:
        row[READ_WITH_LOCK] = also
    if row["idem_hash"] is None:
        return row, None
    return row, _stored_response(idem, row["idem_operation"], row["idem_hash"], row["idem_response"])


def _json(read: Any) -> Any:
    """A JSON value the lock's statement read (text, or decoded by the driver)."""
    return json.loads(read) if isinstance(read, str) else read


async def lock_account(sql: Sql, account_id: int) -> dict[str, Any]:
    """Lock an account's row inside ``sql``'s transaction (for operations outside this module)."""
    row, _ = await _lock_account(sql, "id", account_id, None)
    return row


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


STORED_REFUSALS: tuple[type[LedgerError], ...] = (
    InsufficientCreditsError,
    BudgetExceededError,
    HoldNotActiveError,
    ExceedsHoldError,
    BalanceLimitError,
    SpendLimitExceededError,
    SpendPausedError,
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
    if isinstance(refusal, SpendLimitExceededError):
        return {
            "refused": "spend_limit",
            "limit": refusal.limit.to_json(),
            "spent": refusal.spent,
            "held": refusal.held,
            "required": refusal.required,
            "resets_at": None if refusal.resets_at is None else refusal.resets_at.isoformat(),
            "run_id": refusal.run_id,
        }
    if isinstance(refusal, SpendPausedError):
        return {
            "refused": "spend_paused",
            "limit": refusal.limit.to_json(),
            "tripped_at": refusal.tripped_at.isoformat(),
            "paused_until": None if refusal.paused_until is None else refusal.paused_until.isoformat(),
        }
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
    if refused == "spend_limit":
        raise SpendLimitExceededError(
            LimitView.of(stored["limit"]),
            int(stored["spent"]),
            int(stored["held"]),
            int(stored["required"]),
            _instant(stored["resets_at"]),
            stored.get("run_id"),
        ) from None
    if refused == "spend_paused":
        tripped_at = _instant(stored["tripped_at"])
        assert tripped_at is not None
        raise SpendPausedError(LimitView.of(stored["limit"]), tripped_at, _instant(stored["paused_until"])) from None
    raise ValueError(f"unknown stored refusal {refused!r}")


async def _refuse(sql: Sql, idem: IdempotencyKey, refusal: LedgerError, now: datetime) -> LedgerError:
    """Store ``refusal`` under the key; the caller lets the transaction commit and raises it afterwards. If a
    concurrent request with the key stored its answer first, that answer is replayed instead (``_Replay``)."""
    await _store_response(sql, idem, _refusal_json(refusal), now)
    return refusal


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


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
