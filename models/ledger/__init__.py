"""The ledger: every change to a balance is one transaction that appends ledger rows.

Rules (see docs/rules.md, "Spend order", "Refusal whole" and "Idempotency"):
- A spend takes FREE before PAID; within a kind the soonest expiry first (no expiry last), then the oldest
  grant, then the lowest id. A spend larger than the available balance is refused whole; with an overdraft,
  available may go down to -overdraft, and what the lots could not give is owed until a grant pays it back.
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

The package, by family (callers use the names below, ``from models import ledger; ledger.spend(...)``):
``errors`` (refusals and results), ``locking`` (the account lock, idempotency records, stored refusals),
``lots`` (live lots, the spend order, balances), ``entries`` (ledger rows), ``spending`` (spends, usage and
its rollups), ``batch`` (many spends in one transaction), ``limits`` (spend limits in the spend's and the
hold's transaction), ``grants`` (grants, voids, new users), ``holds``, ``sweeping``, ``auditing``,
``overdraft`` (an account's overdraft limit), and ``auto_top_up`` (the top-up a spend queues, and its
configuration, claims and outcomes).
"""

from models.ledger.auditing import AuditFinding, audit
from models.ledger.batch import BatchResult, BatchSpend, spend_batch
from models.ledger.errors import (
    BalanceChange,
    BalanceLimitError,
    BudgetExceededError,
    Event,
    ExceedsHoldError,
    GrantResult,
    HoldNotActiveError,
    HoldResult,
    IdempotencyConflictError,
    IdempotencyKey,
    InsufficientCreditsError,
    LedgerError,
    LimitWarning,
    NotFoundError,
    SpendLimitExceededError,
    SpendPausedError,
    SpendResult,
    SweepReport,
    UsageRecorded,
)
from models.ledger.grants import MAX_BALANCE, create_user, grant, grant_locked, void_lot_locked
from models.ledger.holds import (
    MAX_HOLD_LIFE,
    HoldLifeExceededError,
    capture_hold,
    extend_hold,
    hold,
    increase_hold,
    release_hold,
)
from models.ledger.locking import STORED_REFUSALS, AccountSelector, lock_account, store_refusal, stored_refusal
from models.ledger.lots import account_state, allocate, balance_locked, read_balances
from models.ledger.overdraft import set_overdraft
from models.ledger.spending import ROLL_UP_USAGE, spend
from models.ledger.sweeping import sweep

__all__ = [
    "MAX_BALANCE",
    "MAX_HOLD_LIFE",
    "ROLL_UP_USAGE",
    "STORED_REFUSALS",
    "AccountSelector",
    "AuditFinding",
    "BalanceChange",
    "BalanceLimitError",
    "BatchResult",
    "BatchSpend",
    "BudgetExceededError",
    "Event",
    "ExceedsHoldError",
    "GrantResult",
    "HoldLifeExceededError",
    "HoldNotActiveError",
    "HoldResult",
    "IdempotencyConflictError",
    "IdempotencyKey",
    "InsufficientCreditsError",
    "LedgerError",
    "LimitWarning",
    "NotFoundError",
    "SpendLimitExceededError",
    "SpendPausedError",
    "SpendResult",
    "SweepReport",
    "UsageRecorded",
    "account_state",
    "allocate",
    "audit",
    "balance_locked",
    "capture_hold",
    "create_user",
    "extend_hold",
    "grant",
    "grant_locked",
    "hold",
    "increase_hold",
    "lock_account",
    "read_balances",
    "release_hold",
    "set_overdraft",
    "spend",
    "spend_batch",
    "store_refusal",
    "stored_refusal",
    "sweep",
    "void_lot_locked",
]
