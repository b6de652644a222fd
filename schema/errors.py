"""Typed errors returned inside result unions. Each implements ``Error { message }``."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schema.limits import SpendLimit
from schema.scalars import Credits


@strawberry.interface(description="Something the caller can act on. Every error type has a message.")
class Error:
    message: str


@strawberry.type
class InsufficientCredits(Error):
    available: Credits
    required: Credits


@strawberry.type
class IdempotencyConflict(Error):
    idempotency_key: str


@strawberry.type
class ValidationError(Error):
    field: str | None = strawberry.field(description="The input field at fault, in camelCase, if one is")


@strawberry.type
class Forbidden(Error):
    pass


@strawberry.type
class NotFound(Error):
    pass


@strawberry.type(description="The hold is no longer active (captured, released or timed out).")
class HoldNotActive(Error):
    status: str


@strawberry.type(description="An organization must keep at least one owner.")
class LastOwner(Error):
    pass


@strawberry.type(
    description="Another user or organization has this email or externalId already; a create with an externalId"
    " that exists with the same details answers the existing one instead"
)
class AlreadyExists(Error):
    field: str | None = strawberry.field(description="The input field at fault, in camelCase: email or externalId")
    existing_id: strawberry.ID = strawberry.field(description="The global ID of the one that has it")


@strawberry.type
class AlreadyMember(Error):
    pass


@strawberry.type(description="The email has a pending invitation to this organization already: revoke it first.")
class AlreadyInvited(Error):
    pass


@strawberry.type(description="The invitation is past its expiry: it can no longer be accepted, declined or revoked.")
class InvitationExpired(Error):
    expires_at: datetime


@strawberry.type(description="The invitation was accepted, declined or revoked already.")
class InvitationNotPending(Error):
    status: str = strawberry.field(description="ACCEPTED, DECLINED or REVOKED")


@strawberry.type(
    description="A shared-pool spend or hold would take the member past their monthly budget: spentThisMonth"
    " + held + required > monthlyBudget."
)
class BudgetExceeded(Error):
    monthly_budget: Credits
    spent_this_month: Credits
    held: Credits = strawberry.field(
        description="What the member's active holds on the pool set aside; it counts against the budget until"
        " the hold is captured (then the capture counts as spent), released or timed out"
    )
    required: Credits


@strawberry.type(
    description="A BLOCK spend limit would be passed: spent + held + required > limit.amount (or, with agentRunId,"
    " the run's spent + held + required > limit.maxCreditsPerRun). Nothing changed."
)
class SpendLimitExceeded(Error):
    limit: SpendLimit
    spent: Credits = strawberry.field(description="Spent in the current window (or by the run)")
    held: Credits = strawberry.field(description="Set aside by active holds that count against the limit")
    required: Credits
    resets_at: datetime | None = strawberry.field(description="When the window's usage next drops; null: never")
    agent_run_id: str | None = strawberry.field(description="The run whose maxCreditsPerRun it is, if that refused")


@strawberry.type(
    description="A velocity limit tripped: spending by its subject is paused until resumeAgent, or until pausedUntil"
    " if the limit has a cool-down. Nothing changed."
)
class SpendPaused(Error):
    limit: SpendLimit
    tripped_at: datetime
    paused_until: datetime | None = strawberry.field(description="null: until a person resumes it")
