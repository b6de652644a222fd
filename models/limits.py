"""Spend limits: what one is (``LimitView``), and setting and removing them under the account lock (see
docs/rules.md, "Spend limits"). The ledger enforces them in the spend's and the hold's transaction.

Every change recounts ``credit_accounts.spend_limits`` under the lock: a spend reads that count with the
lock, and reads the limits only when there are some (in the lock's statement). The recount also writes the
account's row, which is how a spend that waited for the lock on PostgreSQL learns that the limits it read
in that statement may be stale (``models/ledger/limits.py`` ``_folded_sql``): so does every change of limits
or counters, the new limit's, a replaced one's, a resume's and a member budget's first count alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import connections
from tortoise.transactions import in_transaction

from models.balance import is_live
from models.ledger.locking import lock_account
from models.limit_rules import VIEW_COLUMNS_SQL, LimitSpec, LimitView, period, subject_of
from models.sql import Sql, as_datetime
from models.tables import LimitKind, LimitScope, LimitWindow


async def recount(sql: Sql, account_id: int) -> None:
    """Recount the limits of the account that ``sql``'s transaction has locked, after changing its limits or
    counters: this writes its row, even when the count stays."""
    await sql.execute(
        "UPDATE credit_accounts SET spend_limits = (SELECT COUNT(*) FROM spend_limits WHERE account_id = $1)"
        " WHERE id = $2",
        account_id,
        account_id,
    )


async def set_limit(account_id: int, spec: LimitSpec, now: datetime) -> tuple[LimitView, bool]:
    """Create the limit, or replace the one its subject has of that kind, window and action (keeping what was
    counted against it, also across a change of time zone). Returns the limit and whether it is new."""
    async with in_transaction() as conn:
        return await set_limit_in(Sql(conn), account_id, spec, now)


_CALENDAR = (LimitWindow.DAY, LimitWindow.WEEK, LimitWindow.MONTH)


async def set_limit_in(sql: Sql, account_id: int, spec: LimitSpec, now: datetime) -> tuple[LimitView, bool]:
    """``set_limit`` inside the caller's transaction (``sql``), so that what makes the limit's subject (an
    agent token) and its limit commit together or not at all."""
    await lock_account(sql, account_id)
    key = (account_id, spec.subject, spec.kind.value, spec.window.value, spec.window_length, spec.action.value)
    where = 'account_id = $1 AND subject = $2 AND kind = $3 AND "window" = $4 AND window_length = $5 AND action = $6'
    found = await sql.fetchrow(f"SELECT id, time_zone FROM spend_limits WHERE {where}", *key)
    values = (
        spec.scope.value,
        spec.user_id,
        spec.agent_id,
        spec.token_id,
        spec.time_zone,
        spec.amount,
        spec.warn_percent,
        spec.max_credits_per_run,
        spec.cooldown_seconds,
        now,
    )
    created = found is None
    if found is None:
        inserted = await sql.fetchrow(
            "INSERT INTO spend_limits (scope, user_id, agent_id, token_id, time_zone, amount,"
            " warn_percent, max_credits_per_run, cooldown_seconds, updated_at, account_id, subject, kind,"
            ' "window", window_length, action, created_at, paused)'
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING id",
            *values,
            *key,
            now,
            False,
        )
        assert inserted is not None
        limit_id = int(inserted["id"])
    else:
        limit_id = int(found["id"])
        await sql.execute(
            "UPDATE spend_limits SET scope = $1, user_id = $2, agent_id = $3, token_id = $4, time_zone = $5,"
            " amount = $6, warn_percent = $7, max_credits_per_run = $8, cooldown_seconds = $9, updated_at = $10"
            " WHERE id = $11",
            *values,
            limit_id,
        )
        if spec.window in _CALENDAR and str(found["time_zone"]) != spec.time_zone:
            await _move_period(sql, limit_id, spec.window, str(found["time_zone"]), spec.time_zone, now)
    await recount(sql, account_id)
    row = await sql.fetchrow(f"SELECT {VIEW_COLUMNS_SQL} FROM spend_limits l WHERE l.id = $1", limit_id)
    assert row is not None
    return LimitView.of(row), created


async def _move_period(sql: Sql, limit_id: int, window: LimitWindow, old: str, new: str, now: datetime) -> None:
    """A calendar limit moved to another time zone keeps what was counted in its current period: the counter
    of the old zone's current period (and any already at the new one's) becomes one counter at the new zone's
    current period start. Left at its old key, a counter of a zone to the west would start after the new
    period and count as a later period's (docs/rules.md, "Spend limits")."""
    before = period(window, 1, old, now).bucket
    after = period(window, 1, new, now).bucket
    if before == after:
        return
    rows = await sql.fetch(
        "SELECT spent FROM spend_limit_usage WHERE limit_id = $1 AND run_id = '' AND period IN ($2, $3)",
        limit_id,
        before,
        after,
    )
    total = sum(int(row["spent"]) for row in rows)
    await sql.execute(
        "DELETE FROM spend_limit_usage WHERE limit_id = $1 AND run_id = '' AND period IN ($2, $3)",
        limit_id,
        before,
        after,
    )
    if total:
        await sql.execute(
            "INSERT INTO spend_limit_usage (limit_id, run_id, period, spent) VALUES ($1, '', $2, $3)",
            limit_id,
            after,
            total,
        )


async def remove_limit(limit_id: int) -> LimitView | None:
    """Remove a limit and what was counted against it; None if there is no such limit."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        found = await sql.fetchrow("SELECT account_id FROM spend_limits WHERE id = $1", limit_id)
        if found is None:
            return None
        account_id = int(found["account_id"])
        await lock_account(sql, account_id)
        row = await sql.fetchrow(f"SELECT {VIEW_COLUMNS_SQL} FROM spend_limits l WHERE l.id = $1", limit_id)
        if row is None:  # removed by a concurrent call while this one waited for the lock
            return None
        await sql.execute("DELETE FROM spend_limit_usage WHERE limit_id = $1", limit_id)
        await sql.execute("DELETE FROM spend_limits WHERE id = $1", limit_id)
        await recount(sql, account_id)
    return LimitView.of(row)


def paused_now(paused: Any, paused_until: Any, now: datetime) -> bool:
    """Whether a velocity limit's subject is paused at ``now`` (a pause with an end is over at that instant)."""
    if not paused:
        return False
    until = as_datetime(paused_until)
    return until is None or until > now


# Reading limits with their usage, for display (the API). The enforcement reads the same numbers inside the
# spend's transaction, under the lock; these reads take no lock and show the state as of their statements.

STATE_COLUMNS_SQL = "l.tripped_at, l.paused_until, l.paused"
"""A velocity limit's state, beside ``VIEW_COLUMNS_SQL``: when it last tripped and whether it pauses now."""

_CHUNK = 300
"""Limits per statement (three arguments each: within SQLite's 999)."""


@dataclass(frozen=True, slots=True)
class LimitRow:
    """A limit as stored now: what it is, and its velocity state (``paused`` the stored flag: a pause with an end
    is over at that instant, see ``paused_at``)."""

    view: LimitView
    tripped_at: datetime | None
    paused_until: datetime | None
    paused: bool

    @classmethod
    def of(cls, row: dict[str, Any]) -> LimitRow:
        return cls(
            LimitView.of(row), as_datetime(row["tripped_at"]), as_datetime(row["paused_until"]), bool(row["paused"])
        )

    def paused_at(self, now: datetime) -> bool:
        return paused_now(self.paused, self.paused_until, now)


@dataclass(frozen=True, slots=True)
class Usage:
    """What counts against a limit now (docs/rules.md, "Spend limits"): ``spent`` in its current window,
    ``held`` by its subject's active holds (a CAP's; 0 for a VELOCITY breaker, whose counters took its holds
    when they were placed), both in micro-credits."""

    spent: int
    held: int


def _conn() -> Sql:
    return Sql(connections.get("default"))


async def limits_of(account_ids: Sequence[int]) -> list[LimitRow]:
    """Every limit of these accounts, in one statement, in the order they were made."""
    if not account_ids:
        return []
    marks = ", ".join(f"${n + 1}" for n in range(len(account_ids)))
    rows = await _conn().fetch(
        f"SELECT {VIEW_COLUMNS_SQL}, {STATE_COLUMNS_SQL} FROM spend_limits l WHERE l.account_id IN ({marks})"
        " ORDER BY l.id",
        *account_ids,
    )
    return [LimitRow.of(row) for row in rows]


async def limits_by_id(limit_ids: Sequence[int]) -> dict[int, LimitRow]:
    """These limits as stored now (absent: removed), in one statement."""
    if not limit_ids:
        return {}
    marks = ", ".join(f"${n + 1}" for n in range(len(limit_ids)))
    rows = await _conn().fetch(
        f"SELECT {VIEW_COLUMNS_SQL}, {STATE_COLUMNS_SQL} FROM spend_limits l WHERE l.id IN ({marks})", *limit_ids
    )
    return {int(row["id"]): LimitRow.of(row) for row in rows}


def _holds_subject(view: LimitView, hold: dict[str, Any]) -> bool:
    if view.scope is LimitScope.ACCOUNT:
        return True
    if view.scope is LimitScope.MEMBER:
        return hold["user_id"] is not None and int(hold["user_id"]) == view.user_id
    if view.scope is LimitScope.AGENT:
        return bool(hold["agent_id"] == view.agent_id)
    return hold["token_id"] is not None and int(hold["token_id"]) == view.token_id


async def usage(views: Sequence[LimitView], now: datetime) -> dict[int, Usage]:
    """What counts against each limit at ``now``, by limit id: two statements for any number of limits (one
    more per ``_CHUNK`` limits). spent: the limit's counters with run_id '' from its period's ``since`` to its
    ``bucket``; held: the active holds, not timed out, on its account by its subject (a CAP's; a VELOCITY
    breaker's is 0: its holds are in its counters, as the ledger counts them)."""
    if not views:
        return {}
    sql = _conn()
    spent: dict[int, int] = {}
    unique = list({view.id: view for view in views}.values())
    # A calendar limit counts its current period's counter only while it is its newest (as the enforcement
    # does, models/ledger/limits.py): the counters up to now are read, and one after the period's start
    # (which set_limit's move to another zone leaves none of) means the period counts nothing.
    current: dict[int, int] = {}
    at = int(now.timestamp())
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        ranges: list[str] = []
        args: list[int] = []
        for view in chunk:
            p = period(view.window, view.window_length, view.time_zone, now)
            upto = p.bucket
            if view.window in _CALENDAR:
                current[view.id], upto = p.bucket, at
            n = len(args)
            ranges.append(f"(limit_id = ${n + 1} AND period >= ${n + 2} AND period <= ${n + 3})")
            args += [view.id, p.since, upto]
        for row in await sql.fetch(
            "SELECT limit_id, SUM(spent) AS spent, MAX(period) AS latest FROM spend_limit_usage WHERE run_id = ''"
            f" AND ({' OR '.join(ranges)}) GROUP BY limit_id",
            *args,
        ):
            limit_id = int(row["limit_id"])
            if current.get(limit_id, int(row["latest"])) == int(row["latest"]):
                spent[limit_id] = int(row["spent"])
    accounts = sorted({view.account_id for view in unique})
    marks = ", ".join(f"${n + 1}" for n in range(len(accounts)))
    holds = [
        row
        for row in await sql.fetch(
            "SELECT account_id, user_id, agent_id, token_id, amount, expires_at FROM holds"
            f" WHERE status = 'ACTIVE' AND account_id IN ({marks})",
            *accounts,
        )
        if is_live(as_datetime(row["expires_at"]), now)
    ]
    by_account: dict[int, list[dict[str, Any]]] = {}
    for hold in holds:
        by_account.setdefault(int(hold["account_id"]), []).append(hold)
    return {
        view.id: Usage(
            spent.get(view.id, 0),
            0
            if view.kind is LimitKind.VELOCITY
            else sum(int(h["amount"]) for h in by_account.get(view.account_id, []) if _holds_subject(view, h)),
        )
        for view in unique
    }


async def resume(
    account_id: int, now: datetime, *, limit_id: int | None = None, agent_id: str | None = None
) -> list[LimitRow]:
    """End the pause of the account's velocity limits: the one ``limit_id``, or every one on ``agent_id``.
    Returns them as they are after (none: no such velocity limit). ``tripped_at`` stays, as the last trip.

    The current counters of those that were paused go too: a breaker counts afresh from the resume, or the
    burst that tripped it would trip it again at the next spend of the same window."""
    assert (limit_id is None) != (agent_id is None)
    where, key = ("id = $2", limit_id) if limit_id is not None else ("subject = $2", subject_of_agent(agent_id))
    async with in_transaction() as conn:
        sql = Sql(conn)
        await lock_account(sql, account_id)
        found = await sql.fetch(
            "SELECT id, paused, paused_until FROM spend_limits WHERE account_id = $1 AND kind = $3"
            f" AND {where} ORDER BY id",
            account_id,
            key,
            LimitKind.VELOCITY.value,
        )
        ids = [int(row["id"]) for row in found]
        if not ids:
            return []
        # Only those with a pause to end change: resuming what is not paused changes nothing.
        pausing = [int(row["id"]) for row in found if row["paused"] or row["paused_until"] is not None]
        if pausing:
            marks = ", ".join(f"${n + 1}" for n in range(len(pausing)))
            shifted = ", ".join(f"${n + 3}" for n in range(len(pausing)))
            await sql.execute(
                f"UPDATE spend_limits SET paused = $1, paused_until = NULL, updated_at = $2 WHERE id IN ({shifted})",
                False,
                now,
                *pausing,
            )
            await sql.execute(f"DELETE FROM spend_limit_usage WHERE run_id = '' AND limit_id IN ({marks})", *pausing)
            await recount(sql, account_id)
        marks = ", ".join(f"${n + 1}" for n in range(len(ids)))
        rows = await sql.fetch(
            f"SELECT {VIEW_COLUMNS_SQL}, {STATE_COLUMNS_SQL} FROM spend_limits l WHERE l.id IN ({marks}) ORDER BY l.id",
            *ids,
        )
    return [LimitRow.of(row) for row in rows]


def subject_of_agent(agent_id: str | None) -> str:
    assert agent_id is not None
    return subject_of(LimitScope.AGENT, user_id=None, agent_id=agent_id, token_id=None)
