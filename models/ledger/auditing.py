"""The audit (see docs/rules.md, "Audit invariant"): per account, cached balance = Σ remaining of lots =
Σ ledger amounts, the same for held credit, and what it owes = Σ ledger owed deltas >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.sql import read_snapshot


@dataclass(frozen=True, slots=True)
class AuditFinding:
    account_id: int
    problem: str


async def audit() -> list[AuditFinding]:
    """Check, for every account: cached balance = Σ remaining of lots = Σ ledger amounts, the same for held
    credit against active holds and ledger held deltas, cached owed = Σ ledger owed deltas and never
    negative, and what its entries borrowed = Σ the owed part of its usage events. The reads share one snapshot
    (``read_snapshot``), so a spend committing between two of them is not reported as drift."""
    async with read_snapshot() as sql:  # one state of every table, even while spends commit beside it
        accounts = await sql.fetch("SELECT id, balance, held, owed, version FROM credit_accounts ORDER BY id")
        lots = {
            int(r["account_id"]): int(r["total"])
            for r in await sql.fetch("SELECT account_id, SUM(remaining) AS total FROM credit_lots GROUP BY account_id")
        }
        ledger = {
            int(r["account_id"]): (
                int(r["amount"]),
                int(r["held"]),
                int(r["entries"]),
                int(r["version"]),
                int(r["owed"]),
                int(r["borrowed"]),
            )
            for r in await sql.fetch(
                "SELECT account_id, SUM(amount) AS amount, SUM(held_delta) AS held, COUNT(*) AS entries,"
                " MAX(version) AS version, SUM(owed_delta) AS owed,"
                " SUM(CASE WHEN owed_delta > 0 THEN owed_delta ELSE 0 END) AS borrowed"
                " FROM ledger_entries GROUP BY account_id"
            )
        }
        # Only spends and captures borrow, each for its usage event's owed part.
        usage_owed = {
            int(r["account_id"]): int(r["owed"])
            for r in await sql.fetch(
                "SELECT account_id, SUM(owed_credits) AS owed FROM usage_events WHERE owed_credits <> 0"
                " GROUP BY account_id"
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
        owed = int(account["owed"])
        ledger_amount, ledger_held, entries, ledger_version, ledger_owed, borrowed = ledger.get(
            account_id, (0, 0, 0, 0, 0, 0)
        )
        checks = [
            (lots.get(account_id, 0), "sum of lot remaining", balance, "cached balance"),
            (ledger_amount, "sum of ledger amounts", balance, "cached balance"),
            (holds.get(account_id, 0), "sum of active holds", held, "cached held"),
            (ledger_held, "sum of ledger held deltas", held, "cached held"),
            (entries, "ledger entries", version, "account version"),
            (ledger_version, "last ledger version", version, "account version"),
            (ledger_owed, "sum of ledger owed deltas", owed, "cached owed"),
            (usage_owed.get(account_id, 0), "sum of usage owed credits", borrowed, "sum of ledger owed borrowed"),
        ]
        for found, found_name, expected, expected_name in checks:
            if found != expected:
                findings.append(AuditFinding(account_id, f"{found_name} {found} != {expected_name} {expected}"))
        if owed < 0:
            findings.append(AuditFinding(account_id, f"cached owed {owed} < 0"))
    return findings
