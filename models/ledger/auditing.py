"""The audit (see docs/rules.md, "Audit invariant"): per account, cached balance = Σ remaining of lots =
Σ ledger amounts, and the same for held credit.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.sql import read_snapshot


@dataclass(frozen=True, slots=True)
class AuditFinding:
    account_id: int
    problem: str


async def audit() -> list[AuditFinding]:
    """Check, for every account: cached balance = Σ remaining of lots = Σ ledger amounts, and the same for
    held credit against active holds and ledger held deltas. The reads share one snapshot (``read_snapshot``),
    so a spend committing between two of them is not reported as drift."""
    async with read_snapshot() as sql:  # one state of every table, even while spends commit beside it
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
