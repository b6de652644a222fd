"""Grants (a lot added to an account), voids of a refunded lot, and new users with their signup bonus.

A grant pays back what the account owes first (docs/rules.md, "Overdraft"): its lot keeps the rest.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from tortoise.transactions import in_transaction

from models.balance import Balance, account_balance
from models.credits import MAX_MICRO
from models.ledger import alerts
from models.ledger.entries import _append, _change, _save_account
from models.ledger.errors import BalanceLimitError, Event, GrantResult, IdempotencyKey, LedgerError
from models.ledger.locking import _lock_account, _raise_if_refused, _read_stored, _refuse, _Replay, _store_response
from models.ledger.lots import _held_now, _live_lots
from models.sql import Sql, as_datetime
from models.tables import CreditKind, LedgerEntryType, LotSource

MAX_BALANCE = MAX_MICRO
"""The most an account may hold, in micro-credits: 10^12 credits, far inside a signed 64-bit column."""


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
    """Add a lot of ``credits`` to an account whose row ``sql``'s transaction has locked. What the account
    owes is paid back first: the lot's ``amount`` is ``credits``, its ``remaining`` what is left after that."""
    repaid = min(credits, int(account["owed"]))
    kept = credits - repaid
    if int(account["balance"]) + kept > MAX_BALANCE:
        raise BalanceLimitError(MAX_BALANCE)
    lot = await sql.fetchrow(
        "INSERT INTO credit_lots (account_id, kind, source, amount, remaining, status, granted_at,"
        " expires_at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        account["id"],
        kind.value,
        source.value,
        credits,
        kept,
        "ACTIVE" if kept else "DEPLETED",  # all of it paid back a debt: nothing left to spend or expire
        now,
        expires_at,
        reason,
    )
    assert lot is not None
    lot_id = int(lot["id"])
    # The entry's amount is what the lots gained (the cached balance stays the sum of lot remaining); the
    # repayment is its owed_delta.
    await _append(
        sql,
        account,
        LedgerEntryType.GRANT,
        amount=kept,
        free_amount=kept if kind is CreditKind.FREE else 0,
        paid_amount=kept if kind is CreditKind.PAID else 0,
        owed_delta=-repaid,
        now=now,
        lot_id=lot_id,
        reason=reason,
    )
    await _save_account(sql, account)
    balance = account_balance(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        account,
        now,
    )
    # Subscribers see why credit arrived: a top-up, an auto top-up, a subscription period, or another grant.
    reason = source.value if source in (LotSource.TOP_UP, LotSource.AUTO_TOP_UP, LotSource.SUBSCRIPTION) else "GRANT"
    return GrantResult(lot_id, balance, changes=(_change(account, kept, reason, balance, now), *alerts.taken(account)))


async def void_lot_locked(
    sql: Sql, account: dict[str, Any], lot_id: int, credits: int, reason: str, now: datetime
) -> tuple[int, tuple[Event, ...]]:
    """Take back up to ``credits`` of a lot (a refunded payment), as far as it is unspent and not held.
    Returns the micro-credits voided and what to publish: its balance change and the alerts it raised (none
    if nothing was left to void).

    What the lot paid back of a debt when it was granted counts as spent: it is not in ``remaining``, so it
    is never voided, and a void never makes the account owe (it stops at ``available`` 0)."""
    lot = await sql.fetchrow(
        "SELECT kind, remaining, expires_at FROM credit_lots WHERE id = $1 AND account_id = $2", lot_id, account["id"]
    )
    assert lot is not None
    expires = as_datetime(lot["expires_at"])
    if expires is not None and expires <= now:
        return 0, ()  # expired credit is gone already, whether or not the sweep has recorded it
    before = account_balance(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        account,
        now,
    )
    voided = min(credits, int(lot["remaining"]), before.available)
    if voided <= 0:
        return 0, ()
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
    after = account_balance(
        await _live_lots(sql, int(account["id"])),
        await _held_now(sql, int(account["id"]), int(account["held"]), now),
        account,
        now,
    )
    return voided, (_change(account, -voided, "REFUND", after, now), *alerts.taken(account))


async def create_user(
    email: str,
    *,
    signup_bonus: int,
    bonus_lifetime: timedelta,
    now: datetime,
    external_id: str | None = None,
    metadata: dict[str, object] | None = None,
) -> int:
    """Create a user (with the platform's ``external_id`` and ``metadata``, if given) with a credit account
    and, if configured, the signup bonus, in one transaction. Returns the user id. A taken email or
    external_id raises Tortoise's ``IntegrityError`` and creates nothing."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        user = await sql.fetchrow(
            "INSERT INTO users (email, external_id, metadata, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            email,
            external_id,
            None if metadata is None else json.dumps(metadata, ensure_ascii=False, separators=(",", ":")),
            now,
        )
        assert user is not None
        account = await sql.fetchrow(
            "INSERT INTO credit_accounts (user_id, balance, held, version, created_at)"
            " VALUES ($1, 0, 0, 0, $2) RETURNING id, balance, held, version, overdraft, owed",
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
