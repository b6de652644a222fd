"""Balance alerts (docs/rules.md, "Balance alerts"): ``balance.low``, ``balance.depleted`` and
``balance.recovered``, each fired once per crossing, in the transaction of the change that crosses.

What is compared: the account's *recorded* available credit, ``max(-overdraft, balance - held - owed)`` of
its locked row, before and after the change. Every ledger row moves those columns (``entries._append``) and
the overdraft limit is set under the lock, so the values an account's operations see form one unbroken path
and the serial order of the lock decides every crossing: concurrent spends give exactly the serial events.
(A lot past its ``expiresAt`` or a hold past its timeout leaves the recorded figure when the sweep records
it; the crossing it causes fires then.)

How it is wired: ``entries._append`` remembers the available of the row before its first change
(``_BEFORE``), ``entries._save_account`` calls ``check`` once the row is written, and the operation hands
what was raised (``taken``) to its caller with its other changes, published after commit. ``check`` reads
the levels from the lock's row (``alert_levels``, parsed once per distinct text), so a change that crosses
nothing costs no statement; a fall below a level costs one (PostgreSQL: the event and the alert in one
data-modifying statement; SQLite, which has none, two); a rise reads the open alerts first.

- ``balance.low`` at level L: before >= L > after (L among the account's levels, or the deployment default).
- ``balance.depleted``: before > 0 >= after (an alert of level 0, whatever the levels).
- ``balance.recovered``: an OPEN alert of level L (L a level in force, or 0 for depleted) and before < L <=
  after (after > 0 for depleted): resolves it, and its event names the alert it resolves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from tortoise.transactions import in_transaction

from models.credits import format_credits
from models.ids import encode_id
from models.outbox import EventType, new_public_id, note_written
from models.sql import Sql

MAX_LEVELS = 5
"""The most alert levels an account may set (``setBalanceAlerts``)."""

_BEFORE = "_alert_before"
_RAISED = "_alerts_raised"

_default: tuple[int, ...] = ()


def set_default_level(micro: int) -> None:
    """The deployment's level for accounts that set none (``Settings.default_low_balance_credits``; 0: none).
    Set by the shell when it builds its ``Services``."""
    global _default
    _default = (micro,) if micro > 0 else ()


def default_levels() -> tuple[int, ...]:
    return _default


@lru_cache(maxsize=4096)
def parse_levels(text: str) -> tuple[int, ...]:
    """``alert_levels`` as stored (comma-separated micro-credits; '' none), highest first."""
    return tuple(sorted((int(part) for part in text.split(",") if part), reverse=True))


def store_levels(levels: tuple[int, ...]) -> str:
    return ",".join(str(level) for level in sorted(levels, reverse=True))


def levels_of(account: dict[str, Any]) -> tuple[int, ...]:
    """The levels in force for a locked account row: its own, or the deployment's when it set none."""
    text = account.get("alert_levels")
    return _default if text is None else parse_levels(text)


def available_of(account: dict[str, Any]) -> int:
    """The account's recorded available credit, from its row."""
    return max(
        -int(account.get("overdraft") or 0), int(account["balance"]) - int(account["held"]) - int(account["owed"])
    )


@dataclass(frozen=True, slots=True)
class AlertChanged:
    """An alert raised (``balance.low``/``balance.depleted``) or resolved (``balance.recovered``) by a
    committed change: the outbox event's type and id, and the alert. Published after commit."""

    account_id: int
    alert_id: int
    event_type: str
    event_id: str
    sequence: int
    level: int
    available: int
    previous: int
    occurred_at: datetime
    resolved_kind: str | None = None
    """For ``balance.recovered``: the kind of the alert it resolved (``balance.low`` or ``balance.depleted``)."""


def remember(account: dict[str, Any], now: datetime) -> None:
    """Called before a row's first change since it was last saved: keep the available it had."""
    if _BEFORE not in account:
        account[_BEFORE] = (available_of(account), int(account["version"]), now)


def taken(account: dict[str, Any]) -> tuple[AlertChanged, ...]:
    """What ``check`` raised on this row since last asked, for the operation's caller to publish."""
    raised: list[AlertChanged] | None = account.pop(_RAISED, None)
    return () if raised is None else tuple(raised)


async def saved(sql: Sql, account: dict[str, Any]) -> None:
    """Called once a changed row is written: fire what the change since ``remember`` crossed."""
    remembered: tuple[int, int, datetime] | None = account.pop(_BEFORE, None)
    if remembered is None:
        return
    before, version, now = remembered
    await check(sql, account, before, now, fresh=version == 0)


async def check(sql: Sql, account: dict[str, Any], before: int, now: datetime, *, fresh: bool = False) -> None:
    """Emit the alert events of a change from ``before`` to the row's available now (the caller holds the
    lock). Nothing crossed: no statement. ``fresh``: the account had no ledger row before, so no alert is
    open (a new user's signup bonus reads none)."""
    after = available_of(account)
    if after == before:
        return
    levels = levels_of(account)
    if after < before:
        for level in levels:
            if before >= level > after:
                await _raise(sql, account, EventType.BALANCE_LOW, level, before, after, now)
        if before > 0 >= after:
            await _raise(sql, account, EventType.BALANCE_DEPLETED, 0, before, after, now)
        return
    crossed = [level for level in levels if before < level <= after]
    if before <= 0 < after:
        crossed.append(0)
    if crossed and not fresh:
        await _recover(sql, account, crossed, before, after, now)


def account_json(account: dict[str, Any]) -> dict[str, Any]:
    user_id = account.get("user_id")
    organization_id = account.get("organization_id")
    return {
        "id": encode_id("CreditAccount", int(account["id"])),
        "userId": None if user_id is None else encode_id("User", int(user_id)),
        "organizationId": None if organization_id is None else encode_id("Organization", int(organization_id)),
    }


_EVENT_COLUMNS = "public_id, type, account_id, organization_id, sequence, data, created_at"
_NEXT_SEQUENCE = "(SELECT COALESCE(MAX(x.sequence), 0) + 1 FROM events x WHERE x.account_id = $3)"
# PostgreSQL: the event and the alert it raises in one statement.
_RAISE_PG = (
    f"WITH e AS (INSERT INTO events ({_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, {_NEXT_SEQUENCE}, $5, $6)"
    " RETURNING id, sequence)"
    " INSERT INTO alerts (account_id, kind, level, status, raised_event_id, opened_at)"
    " SELECT $3, $2, $7, 'OPEN', e.id, $6 FROM e RETURNING id, (SELECT sequence FROM e) AS sequence"
)
_EVENT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, {_NEXT_SEQUENCE}, $5, $6) RETURNING id, sequence"
)
_ALERT = (
    "INSERT INTO alerts (account_id, kind, level, status, raised_event_id, opened_at)"
    " VALUES ($1, $2, $3, 'OPEN', $4, $5) RETURNING id"
)


def _data(account: dict[str, Any], level: int, before: int, after: int) -> dict[str, Any]:
    return {
        "account": account_json(account),
        "level": format_credits(level),
        "available": format_credits(after),
        "previous": format_credits(before),
    }


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


async def _raise(
    sql: Sql, account: dict[str, Any], kind: EventType, level: int, before: int, after: int, now: datetime
) -> None:
    account_id = int(account["id"])
    public_id = new_public_id()
    text = _text(_data(account, level, before, after))
    organization_id = account.get("organization_id")
    note_written()
    if sql.postgres:
        row = await sql.fetchrow(_RAISE_PG, public_id, kind.value, account_id, organization_id, text, now, level)
        assert row is not None
        alert_id, sequence = int(row["id"]), int(row["sequence"])
    else:
        event = await sql.fetchrow(_EVENT, public_id, kind.value, account_id, organization_id, text, now)
        assert event is not None
        alert = await sql.fetchrow(_ALERT, account_id, kind.value, level, event["id"], now)
        assert alert is not None
        alert_id, sequence = int(alert["id"]), int(event["sequence"])
    account.setdefault(_RAISED, []).append(
        AlertChanged(account_id, alert_id, kind.value, public_id, sequence, level, after, before, now)
    )


_KINDS = (EventType.BALANCE_LOW.value, EventType.BALANCE_DEPLETED.value)


async def _recover(
    sql: Sql, account: dict[str, Any], crossed: list[int], before: int, after: int, now: datetime
) -> None:
    account_id = int(account["id"])
    open_alerts = await sql.fetch(
        "SELECT a.id, a.kind, a.level, e.public_id FROM alerts a LEFT JOIN events e ON e.id = a.raised_event_id"
        " WHERE a.account_id = $1 AND a.status = 'OPEN' AND a.kind IN ($2, $3) ORDER BY a.level, a.id",
        account_id,
        *_KINDS,
    )
    for alert in open_alerts:
        level = int(alert["level"] or 0)
        depleted = alert["kind"] == EventType.BALANCE_DEPLETED.value
        if (0 if depleted else level) not in crossed:
            continue
        data = _data(account, level, before, after)
        data["alert"] = {
            "id": encode_id("Alert", int(alert["id"])),
            "kind": alert["kind"],
            "raisedEventId": alert["public_id"],
        }
        public_id = new_public_id()
        note_written()
        event = await sql.fetchrow(
            _EVENT,
            public_id,
            EventType.BALANCE_RECOVERED.value,
            account_id,
            account.get("organization_id"),
            _text(data),
            now,
        )
        assert event is not None
        await sql.execute(
            "UPDATE alerts SET status = 'RESOLVED', resolved_event_id = $1, resolved_at = $2 WHERE id = $3",
            event["id"],
            now,
            alert["id"],
        )
        account.setdefault(_RAISED, []).append(
            AlertChanged(
                account_id,
                int(alert["id"]),
                EventType.BALANCE_RECOVERED.value,
                public_id,
                int(event["sequence"]),
                level,
                after,
                before,
                now,
                str(alert["kind"]),
            )
        )


async def set_levels(sql: Sql, account: dict[str, Any], levels: tuple[int, ...] | None, now: datetime) -> int:
    """Store the account's levels (``None``: back to the deployment default) under its lock (the caller's).
    An open ``balance.low`` alert of a level no longer in force is resolved without an event (nothing
    recovered). Returns how many alerts that resolved."""
    text = None if levels is None else store_levels(levels)
    await sql.execute("UPDATE credit_accounts SET alert_levels = $1 WHERE id = $2", text, account["id"])
    account["alert_levels"] = text
    kept = levels_of(account)
    marks = ", ".join(f"${n + 4}" for n in range(len(kept)))
    return await sql.execute(
        "UPDATE alerts SET status = 'RESOLVED', resolved_at = $1 WHERE account_id = $2 AND kind = $3"
        " AND status = 'OPEN'" + (f" AND level NOT IN ({marks})" if kept else ""),
        now,
        account["id"],
        EventType.BALANCE_LOW.value,
        *kept,
    )


async def configure(account_id: int, levels: tuple[int, ...] | None, now: datetime) -> tuple[int, ...] | None:
    """``setBalanceAlerts``: store ``levels`` (``None``: the deployment default) under the account's row lock,
    so a change deciding its crossings at the same time sees the old levels or the new ones, whole. Returns
    the levels in force, or ``None`` for an unknown account."""
    async with in_transaction() as conn:
        sql = Sql(conn)
        # The lock of models/ledger/locking.py, taken here: locking's module imports this one's results.
        account = await sql.fetchrow(
            "SELECT id, alert_levels FROM credit_accounts WHERE id = $1" + sql.for_update(), account_id
        )
        if account is None:
            return None
        account = dict(account)
        await set_levels(sql, account, levels, now)
        return levels_of(account)
