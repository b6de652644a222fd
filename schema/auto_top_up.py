"""The auto top-up of an account, as its owner (or a BILLING/OWNER member of a pool) sees it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from models import tables
from models.ledger import auto_top_up
from resolvers.context import Context
from schema.payments import PaymentMethod, Transaction
from schema.scalars import Credits


@strawberry.enum(description="What auto top-up is doing now")
class AutoTopUpStatus(Enum):
    ACTIVE = strawberry.enum_value("ACTIVE", description="Waits for the available balance to go below the threshold")
    PENDING = strawberry.enum_value("PENDING", description="A top-up is being charged (pendingTransaction)")
    RETRY_SCHEDULED = strawberry.enum_value(
        "RETRY_SCHEDULED", description="A payment was declined: no top-up before nextAttemptAt, then it tries again"
    )
    CAP_REACHED = strawberry.enum_value(
        "CAP_REACHED", description="The next top-up would take this month past monthlyCap: none until next month"
    )
    OFF = strawberry.enum_value("OFF", description="Switched off, by the user or after declines (disabledReason)")


@strawberry.type(
    description="Buys credit by itself: when a spend or hold takes the available balance below `threshold`, "
    "one top-up of `amount` (or up to `target`) is charged to `paymentMethod`, at most `monthlyCap` a month."
)
class AutoTopUp:
    enabled: bool
    status: AutoTopUpStatus
    status_message: str = strawberry.field(description="The status in words, e.g. why no top-up happens")
    threshold: Credits
    amount: Credits | None = strawberry.field(description="A fixed top-up (null when topping up to `target`)")
    target: Credits | None = strawberry.field(
        description="Top up to this available balance, in whole credits (null with a fixed `amount`)"
    )
    monthly_cap: Credits = strawberry.field(description="Most credit auto top-up buys per calendar month (UTC)")
    topped_up_this_month: Credits = strawberry.field(
        description="Credit auto top-up bought this calendar month (UTC), the pending top-up included"
    )
    declines: int = strawberry.field(description="Declined payments in a row; at 3 auto top-up switches off")
    disabled_reason: str | None = strawberry.field(description="Why auto top-up switched itself off")
    next_attempt_at: datetime | None = strawberry.field(description="After a decline: no new top-up before this")
    updated_at: datetime
    payment_method_id: strawberry.Private[int | None]
    pending_transaction_id: strawberry.Private[int | None]

    @strawberry.field(description="The card charged")
    async def payment_method(self, info: Info[Context, None]) -> PaymentMethod | None:
        row = (
            None
            if self.payment_method_id is None
            else await info.context.loaders.payment_method.load(self.payment_method_id)
        )
        return None if row is None else PaymentMethod.of(row)

    @strawberry.field(description="The top-up being charged now, if any")
    async def pending_transaction(self, info: Info[Context, None]) -> Transaction | None:
        if self.pending_transaction_id is None:
            return None
        return Transaction.of(await tables.Transaction.get(id=self.pending_transaction_id))

    @classmethod
    def of(cls, state: auto_top_up.State) -> AutoTopUp:
        row = state.row
        return cls(
            enabled=row.enabled,
            status=AutoTopUpStatus(state.status),
            status_message=state.message,
            threshold=Credits(row.threshold),
            amount=None if row.amount is None else Credits(row.amount),
            target=None if row.target is None else Credits(row.target),
            monthly_cap=Credits(row.monthly_cap),
            topped_up_this_month=Credits(state.topped_up_this_month),
            declines=row.declines,
            disabled_reason=row.disabled_reason,
            next_attempt_at=row.next_attempt_at if state.status == "RETRY_SCHEDULED" else None,
            updated_at=row.updated_at,
            payment_method_id=row.payment_method_id,
            pending_transaction_id=row.pending_transaction_id,
        )

    @classmethod
    async def load(cls, info: Info[Context, None], account_id: int) -> AutoTopUp | None:
        balance = await info.context.loaders.balance.load(account_id)
        state = await auto_top_up.state(account_id, balance, info.context.now())
        return None if state is None else cls.of(state)
