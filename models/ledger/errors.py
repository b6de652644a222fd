"""What ledger operations refuse with (``LedgerError`` and its family) and what they return."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.balance import Balance
from models.ledger.alerts import AlertChanged
from models.limit_rules import LimitView


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


class SpendLimitExceededError(LedgerError):
    """A spend or hold would take a BLOCK limit past its amount (or a run past the limit's
    ``max_credits_per_run``, then ``run_id`` names the run and ``spent``/``held`` are the run's): ``spent`` in the
    window, plus ``held`` by active holds that count against it, plus ``required`` > the amount.

    ``limit``: the limit as it was when it refused."""

    def __init__(
        self,
        limit: LimitView,
        spent: int,
        held: int,
        required: int,
        resets_at: datetime | None,
        run_id: str | None = None,
    ) -> None:
        super().__init__("This would exceed a spend limit")
        self.limit = limit
        self.spent = spent
        self.held = held
        self.required = required
        self.resets_at = resets_at
        self.run_id = run_id


class SpendPausedError(LedgerError):
    """A velocity limit tripped: the subject's spending is paused until a person resumes it or, with a
    cool-down, until ``paused_until``."""

    def __init__(self, limit: LimitView, tripped_at: datetime, paused_until: datetime | None) -> None:
        super().__init__("Spending is paused: a velocity limit tripped")
        self.limit = limit
        self.tripped_at = tripped_at
        self.paused_until = paused_until
        self.changes: tuple[BalanceChange, ...] = ()
        """The trip's balance event, when this refusal tripped the limit: published after the commit."""


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
    changes: int = 1
    """How many changes (versions) it covers: more than one for a batch of spends, published once per account
    (``version`` is the last; the versions before it, down to ``version - changes + 1``, are in the ledger)."""


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
    run_id: str | None = None


Event = BalanceChange | UsageRecorded | AlertChanged
"""What ledger operations hand back for publishing once they have committed."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""``json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)``, without building an encoder per
key (a batch fingerprints each of its events)."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A caller's key for one request. ``scope`` names the caller; ``fingerprint`` the request's input."""

    scope: str
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def for_request(cls, scope: str, key: str, operation: str, request: Mapping[str, Any]) -> IdempotencyKey:
        canonical = _CANONICAL.encode(request)
        return cls(scope, key, operation, hashlib.sha256(canonical.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class LimitWarning:
    """A limit at or past its warning threshold (or a NOTIFY limit past its amount) after an operation."""

    limit: LimitView
    spent: int
    held: int
    resets_at: datetime | None


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
    warnings: tuple[LimitWarning, ...] = ()
    """Limits this spend took to or past their warning threshold, or past a NOTIFY limit's amount."""


@dataclass(frozen=True, slots=True)
class GrantResult:
    lot_id: int
    balance: Balance
    replayed: bool = False
    changes: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class HoldResult:
    hold_id: int
    balance: Balance
    usage_event_id: int | None = None
    replayed: bool = False
    changes: tuple[Event, ...] = ()
    queued_top_up: int | None = None
    """The auto top-up transaction this hold queued, for the caller to charge after commit."""
    warnings: tuple[LimitWarning, ...] = ()


@dataclass(slots=True)
class SweepReport:
    expired_lots: int = 0
    released_holds: int = 0
    changes: list[Event] = field(default_factory=list)
