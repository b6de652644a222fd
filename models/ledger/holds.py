"""Holds (see docs/rules.md, "Holds"): credit set aside for a long-running task, lowering ``available`` but
not ``total``; captured (fully or partly, the rest returned), released, or timed out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from models.balance import Balance, account_balance, is_live
from models.ledger import alerts, limits
from models.ledger.auto_top_up import Terms, _queue_auto_top_up
from models.ledger.entries import _append, _change, _entry, _save_account
from models.ledger.errors import (
    BalanceChange,
    ExceedsHoldError,
    HoldNotActiveError,
    HoldResult,
    IdempotencyKey,
    InsufficientCreditsError,
    LedgerError,
    LimitWarning,
    NotFoundError,
    SpendResult,
)
from models.ledger.locking import (
    STORED_REFUSALS,
    AccountSelector,
    _lock_account,
    _raise_if_refused,
    _read_stored,
    _refuse,
    _Replay,
    _store_response,
)
from models.ledger.lots import _held_now, _live_lots, _open, _take_from_lots, take
from models.ledger.spending import _around_id, _insert_usage, _refusal, _Usage, _usage, _write_folded
from models.sql import Sql, as_datetime
from models.tables import HoldStatus, LedgerEntryType


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
    run_id: str | None = None,
    token_id: int | None = None,
    quantity: int | None = None,
) -> HoldResult:
    """Set ``credits`` aside for a long-running task: lowers ``available``, not ``total`` (and, like a
    spend, may queue an auto top-up). ``run_id``, ``token_id`` and ``quantity`` (the rate card's units it was
    priced from) are kept on the hold and carried to its capture's usage event."""
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
                hold=True,
            )
            if refusal is None:
                created = await sql.fetchrow(
                    "INSERT INTO holds (account_id, user_id, organization_id, agent_id, activity, amount,"
                    " captured, status, created_at, expires_at, run_id, token_id, quantity)"
                    " VALUES ($1, $2, $3, $4, $5, $6, 0, 'ACTIVE', $7, $8, $9, $10, $11) RETURNING id",
                    row["id"],
                    user_id,
                    organization_id,
                    agent_id,
                    activity,
                    credits,
                    now,
                    expires_at,
                    run_id,
                    token_id,
                    quantity,
                )
                assert created is not None
                hold_id = int(created["id"])
                # A breaker counts the hold now, in the bucket it is placed in (a cap counts it as held).
                limits.count_with_save(row, applied.standing, run_id, credits, "hold")
                await _append(sql, row, LedgerEntryType.HOLD, held_delta=credits, now=now, hold_id=hold_id)
                await _save_account(sql, row)
                after = Balance(before.free, before.paid, before.held + credits, before.owed, before.overdraft)
                await _store_response(sql, idem, _held_json(hold_id, after, applied.warnings), now)
                queued = await _queue_auto_top_up(sql, row, after, auto_top_up, now)
    except _Replay as replay:
        return _held_replay(replay.response or await _read_stored(idem))
    if refusal is not None:
        raise refusal
    return HoldResult(
        hold_id,
        after,
        changes=(_change(row, 0, "HOLD", after, now), *alerts.taken(row)),
        queued_top_up=queued,
        warnings=applied.warnings,
    )


def _held_json(hold_id: int, balance: Balance, warnings: tuple[LimitWarning, ...]) -> dict[str, Any]:
    """The stored answer of a hold or an increase of one (warnings only when there are some)."""
    stored_warnings = limits.warnings_json(warnings)
    return {
        "hold_id": hold_id,
        "balance": balance.to_json(),
        **({"warnings": stored_warnings} if stored_warnings else {}),
    }


def _held_replay(stored: dict[str, Any]) -> HoldResult:
    _raise_if_refused(stored)
    return HoldResult(
        int(stored["hold_id"]),
        Balance.from_json(stored["balance"]),
        replayed=True,
        warnings=limits.warnings_of(stored.get("warnings", [])),
    )


async def _hold_account(hold_id: int) -> int:
    row = await Sql(connections.get("default")).fetchrow("SELECT account_id FROM holds WHERE id = $1", hold_id)
    if row is None:
        raise NotFoundError("Hold")
    return int(row["account_id"])


async def _hold_subjects(hold_id: int) -> tuple[int, limits.Who]:
    """The hold's account, and who it is for the limits (its member, agent, token and run: never changed
    after it is placed, so read before the lock, for the lock's statement to read the limits with)."""
    row = await Sql(connections.get("default")).fetchrow(
        "SELECT account_id, user_id, agent_id, token_id, run_id FROM holds WHERE id = $1", hold_id
    )
    if row is None:
        raise NotFoundError("Hold")
    return int(row["account_id"]), _who(row)


def _who(held: dict[str, Any]) -> limits.Who:
    token_id = None if held["token_id"] is None else int(held["token_id"])
    return limits.Who(int(held["user_id"]), held["agent_id"], token_id, held["run_id"])


async def capture_hold(hold_id: int, *, credits: int | None, idem: IdempotencyKey, now: datetime) -> HoldResult:
    """Spend ``credits`` (default: all) of an active hold; the rest of it is returned to ``available``."""
    account_id, who = await _hold_subjects(hold_id)
    refusal: LedgerError | None = None
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, lots, live = await _open(sql, ("id", account_id), idem, now, limits.Fold(who, now))
            try:
                held, amount = await _capturable(sql, hold_id, credits, live, now)
            except STORED_REFUSALS as exc:
                refusal = await _refuse(sql, idem, exc, now)
            else:
                usage_event_id = None
                free = paid = owed = 0
                if amount > 0:
                    # A capture counts as spent against the caps of the hold's member, agent, token and run (read
                    # with the lock, as a spend reads them); the hold itself stopped counting as held. Not against
                    # the breakers: they counted the hold when it was placed.
                    standing = await limits.standing(sql, row, who, now)
                    limits.count_with_save(row, standing, who.run_id, amount, "capture")
                    usage = _Usage(
                        account_id=account_id,
                        user_id=int(held["user_id"]),
                        organization_id=held["organization_id"],
                        hold_id=hold_id,
                        agent_id=held["agent_id"],
                        activity=held["activity"],
                        # The units priced describe the whole hold: a part of it is not a known number of them.
                        quantity=held["quantity"] if amount == int(held["amount"]) else None,
                        credits=amount,
                        run_id=held["run_id"],
                        token_id=None if held["token_id"] is None else int(held["token_id"]),
                    )
                    if sql.postgres:
                        allocations, free, paid, owed = take(lots, amount, now, live)
                    else:
                        allocations, free, paid, owed = await _take_from_lots(sql, lots, amount, now, live)
                        usage_event_id = await _insert_usage(
                            sql, **usage.fields(), free=free, paid=paid, allocations=allocations, now=now
                        )
                entry: dict[str, Any] = {
                    "amount": -(free + paid),
                    "free_amount": -free,
                    "paid_amount": -paid,
                    "held_delta": -int(held["amount"]),
                    "owed_delta": owed,
                    "hold_id": hold_id,
                }
                after = Balance(
                    live.free - free,
                    live.paid - paid,
                    live.held - int(held["amount"]),
                    live.owed + owed,
                    live.overdraft,
                )
                if sql.postgres and amount > 0:
                    ledger_row = _entry(row, LedgerEntryType.CAPTURE, **entry, now=now)
                    usage_event_id = await _write_folded(
                        sql,
                        row,
                        usage,
                        allocations,
                        ledger_row,
                        idem,
                        _around_id({"hold_id": hold_id, "usage_event_id": 0, "balance": after.to_json()}),
                        now,
                        also=(
                            "settled AS (UPDATE holds SET status = 'CAPTURED', captured = {0}, settled_at = {1}"
                            " WHERE id = {2})",
                            [amount, now, hold_id],
                        ),
                    )
                else:
                    await sql.execute(
                        "UPDATE holds SET status = 'CAPTURED', captured = $1, settled_at = $2 WHERE id = $3",
                        amount,
                        now,
                        hold_id,
                    )
                    await _append(sql, row, LedgerEntryType.CAPTURE, **entry, now=now, usage_event_id=usage_event_id)
                    await _save_account(sql, row)
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
    usage_recorded = _usage(
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
    change = _change(row, -(free + paid), "CAPTURE", after, now)
    return HoldResult(hold_id, after, usage_event_id, changes=(change, *usage_recorded, *alerts.taken(row)))


async def _capturable(
    sql: Sql, hold_id: int, credits: int | None, live: Balance, now: datetime
) -> tuple[dict[str, Any], int]:
    """The active hold and the amount to capture (``live``: the balance read with the lock); or the refusal,
    raised."""
    held = await _active_hold(sql, hold_id, now)
    amount = int(held["amount"]) if credits is None else credits
    if amount > int(held["amount"]):
        raise ExceedsHoldError(int(held["amount"]))
    # What the lots have, and an overdraft as far as it is not owed yet (a capture never lowers available,
    # but free lots counted when the hold was placed may have expired since): beyond that, refuse and keep
    # the hold.
    capturable = live.total + max(0, live.overdraft - live.owed)
    if amount > capturable:
        raise InsufficientCreditsError(capturable, amount)
    return held, amount


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
        return _held_replay(replay.response or await _read_stored(idem))
    if refusal is not None:
        raise refusal
    return HoldResult(hold_id, change.balance, changes=(change, *alerts.taken(row)))


async def _active_hold(sql: Sql, hold_id: int, now: datetime) -> dict[str, Any]:
    held = await sql.fetchrow(
        "SELECT h.id, h.user_id, h.organization_id, h.agent_id, h.activity, h.amount, h.status, h.expires_at,"
        " h.run_id, h.token_id, h.quantity,"
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
    balance = account_balance(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        account,
        now,
    )
    return _change(account, 0, reason, balance, now)


MAX_HOLD_LIFE = timedelta(days=30)
"""How long after it was placed a hold may last, however often it is extended: an agent that keeps extending
a hold after its task died cannot park credit for ever."""


class HoldLifeExceededError(LedgerError):
    """An extension would take the hold past ``MAX_HOLD_LIFE`` after it was placed (bad input: not stored,
    and time only moves on, so a replay is refused the same way)."""

    def __init__(self, latest: datetime) -> None:
        super().__init__(f"A hold may not last past {MAX_HOLD_LIFE.days} days after it was placed")
        self.latest = latest


async def extend_hold(hold_id: int, *, lasting: timedelta, idem: IdempotencyKey, now: datetime) -> HoldResult:
    """Give an active hold a new timeout, ``now + lasting`` (shorter or longer than the one it had). No amount
    changes; the ledger still gets a HOLD row (held delta 0, reason EXTEND), so every change of a hold is a
    ledger row and the account's version, which the live stream follows, moves with it."""
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
                expires_at = now + lasting
                created = await sql.fetchrow("SELECT created_at FROM holds WHERE id = $1", hold_id)
                assert created is not None
                latest = as_datetime(created["created_at"])
                assert latest is not None
                latest += MAX_HOLD_LIFE
                if expires_at > latest:
                    raise HoldLifeExceededError(latest)
                await sql.execute("UPDATE holds SET expires_at = $1 WHERE id = $2", expires_at, held["id"])
                await _append(sql, row, LedgerEntryType.HOLD, now=now, hold_id=hold_id, reason="EXTEND")
                await _save_account(sql, row)
                after = account_balance(
                    await _live_lots(sql, account_id), await _held_now(sql, account_id, int(row["held"]), now), row, now
                )
                await _store_response(sql, idem, {"hold_id": hold_id, "balance": after.to_json()}, now)
    except _Replay as replay:
        return _held_replay(replay.response or await _read_stored(idem))
    if refusal is not None:
        raise refusal
    return HoldResult(hold_id, after, changes=(_change(row, 0, "EXTEND", after, now),))


async def increase_hold(
    hold_id: int,
    *,
    credits: int,
    quantity: int | None,
    idem: IdempotencyKey,
    now: datetime,
    auto_top_up: Terms | None = None,
) -> HoldResult:
    """Set ``credits`` more aside on an active hold, refused as a new hold of ``credits`` by the hold's
    member, agent and run would be (the member's budget, the spend limits, the available credit), since the
    hold already counts as held (a velocity breaker counts the increase as committed now, as it counted the
    hold when it was placed). ``quantity``: the rate card's units ``credits`` was priced from; the hold
    keeps a quantity only while all of its amount was priced from units. Like a hold, it may queue an auto
    top-up."""
    assert credits > 0
    account_id, who = await _hold_subjects(hold_id)
    refusal: LedgerError | None = None
    try:
        async with in_transaction() as conn:
            sql = Sql(conn)
            row, _, before = await _open(sql, ("id", account_id), idem, now, limits.Fold(who, now))
            try:
                held = await _active_hold(sql, hold_id, now)
            except HoldNotActiveError as exc:
                refusal = await _refuse(sql, idem, exc, now)
            else:
                # The pool's selector makes _refusal apply the member's budget, as it does to a hold on the pool.
                account: AccountSelector = (
                    ("organization_id", int(held["pool_of"])) if held["pool_of"] is not None else ("id", account_id)
                )
                applied, refusal = await _refusal(
                    sql,
                    row,
                    account,
                    before,
                    held["organization_id"],
                    int(held["user_id"]),
                    credits,
                    idem,
                    now,
                    agent_id=held["agent_id"],
                    run_id=held["run_id"],
                    token_id=None if held["token_id"] is None else int(held["token_id"]),
                    hold=True,
                )
            if refusal is None:
                kept = (
                    int(held["quantity"]) + quantity if held["quantity"] is not None and quantity is not None else None
                )
                await sql.execute(
                    "UPDATE holds SET amount = amount + $1, quantity = $2 WHERE id = $3", credits, kept, hold_id
                )
                limits.count_with_save(row, applied.standing, held["run_id"], credits, "hold")
                await _append(
                    sql, row, LedgerEntryType.HOLD, held_delta=credits, now=now, hold_id=hold_id, reason="INCREASE"
                )
                await _save_account(sql, row)
                after = Balance(before.free, before.paid, before.held + credits, before.owed, before.overdraft)
                await _store_response(sql, idem, _held_json(hold_id, after, applied.warnings), now)
                queued = await _queue_auto_top_up(sql, row, after, auto_top_up, now)
    except _Replay as replay:
        return _held_replay(replay.response or await _read_stored(idem))
    if refusal is not None:
        raise refusal
    return HoldResult(
        hold_id,
        after,
        changes=(_change(row, 0, "INCREASE", after, now), *alerts.taken(row)),
        queued_top_up=queued,
        warnings=applied.warnings,
    )
