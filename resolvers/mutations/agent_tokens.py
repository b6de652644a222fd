"""createAgentToken (README, Agent tokens; docs/rules.md, Delegated tokens): a SERVICE token bound to one
account, and optionally to one agent, some activities and its own cap, minted by whoever may hand out that
account's credit.

Its own mutation rather than more of createApiToken: it names an account, an agent and a cap, which no other
kind of token takes, and who may mint it is decided by the account (its owner, the pool's roles), not by the
kind of token asked for."""

from __future__ import annotations

from datetime import UTC

from strawberry.types import Info

from models import tokens
from models.instants import iso_z
from models.limit_rules import MAX_ROLLING_HOURS, LimitSpec, zone
from models.tables import ApiToken as ApiTokenRow
from models.tables import CreditAccount as CreditAccountRow
from models.tables import LimitAction, LimitKind, LimitScope, LimitWindow, TokenKind
from models.tables import SpendLimit as SpendLimitRow
from models.tokens import ACTIVITIES_LENGTH, BALANCE_READ, MAX_ACTIVITIES, USAGE_WRITE, Principal
from resolvers.accounts import NO_POOL, NoPool, named_account, owners
from resolvers.context import Context
from resolvers.mutations.api_tokens import MAX_NAME, check_idle
from resolvers.permissions import BILLING_ROLES, principal, roles_in
from resolvers.validation import check_future, check_identifier, check_label, first_error
from schema.errors import Forbidden, NotFound, ValidationError
from schema.mutations.agent_tokens import (
    AgentTokenLimitInput,
    CreateAgentTokenInput,
    CreateAgentTokenResult,
    CreateAgentTokenSuccess,
)
from schema.types import ApiToken

MINTERS_ONLY = (
    "Minting agent tokens needs a user token (for its own account or an organization's pool), an admin token, or"
    " a service token with the 'usage:write' scope"
)
NOT_BY_AGENT = "An agent token cannot mint tokens"
MINTING_NEEDS_ROLE = (
    "Minting an agent token for this account needs its owner, the BILLING or OWNER role in its organization, or"
    " a monthly budget there"
)
MEMBER_NEEDS_BUDGET = (
    "A MEMBER needs a monthly budget in this organization to hand an agent part of it (an OWNER or BILLING member"
    " sets one with setMemberBudget)"
)


def check_activities(activities: list[str] | None) -> ValidationError | None:
    """At most ``MAX_ACTIVITIES`` activity names, each as spends take it and without spaces (they are stored
    space-separated); none at all would allow nothing, so null is how to say any."""
    if activities is None:
        return None
    field = "activities"
    if not 1 <= len(activities) <= MAX_ACTIVITIES:
        return ValidationError(message=f"activities: 1 to {MAX_ACTIVITIES}, or null for any", field=field)
    for activity in activities:
        if invalid := check_identifier(activity, field, 100):
            return invalid
        if " " in activity:
            return ValidationError(message=f"activities: {activity!r} has a space; activities have none", field=field)
    if len(" ".join(sorted(set(activities)))) > ACTIVITIES_LENGTH:
        return ValidationError(message=f"activities: at most {ACTIVITIES_LENGTH} characters in all", field=field)
    return None


def limit_spec(cap: AgentTokenLimitInput) -> LimitSpec | ValidationError:
    """The token's cap as set: a BLOCK CAP of scope TOKEN (its token id is known once the token is made)."""
    prefix = "spendLimit."
    if invalid := first_error(
        ValidationError(message="spendLimit.amount must be positive", field=f"{prefix}amount")
        if cap.amount <= 0
        else None,
        ValidationError(
            message="spendLimit.window: ROLLING_MINUTES is for velocity breakers; a cap takes DAY, WEEK, MONTH,"
            " ROLLING_HOURS or TOTAL",
            field=f"{prefix}window",
        )
        if cap.window is LimitWindow.ROLLING_MINUTES
        else None,
        ValidationError(
            message=f"spendLimit.windowLength must be 1 to {MAX_ROLLING_HOURS} hours for ROLLING_HOURS, else 1",
            field=f"{prefix}windowLength",
        )
        if not (
            1 <= cap.window_length <= MAX_ROLLING_HOURS
            if cap.window is LimitWindow.ROLLING_HOURS
            else cap.window_length == 1
        )
        else None,
        ValidationError(
            message=f"spendLimit.timeZone: unknown time zone {cap.time_zone[:64]!r}", field=f"{prefix}timeZone"
        )
        if zone(cap.time_zone) is None
        else None,
        ValidationError(message="spendLimit.warnAtPercent must be 1 to 100", field=f"{prefix}warnAtPercent")
        if cap.warn_at_percent is not None and not 1 <= cap.warn_at_percent <= 100
        else None,
        ValidationError(message="spendLimit.maxCreditsPerRun must be positive", field=f"{prefix}maxCreditsPerRun")
        if cap.max_credits_per_run is not None and cap.max_credits_per_run <= 0
        else None,
    ):
        return invalid
    return LimitSpec(
        scope=LimitScope.TOKEN,
        amount=int(cap.amount),
        window=cap.window,
        window_length=cap.window_length,
        time_zone=cap.time_zone,
        kind=LimitKind.CAP,
        action=LimitAction.BLOCK,
        warn_percent=cap.warn_at_percent,
        max_credits_per_run=None if cap.max_credits_per_run is None else int(cap.max_credits_per_run),
        token_id=0,  # replaced by the new token's id in the minting transaction
    )


async def create_agent_token(info: Info[Context, None], input: CreateAgentTokenInput) -> CreateAgentTokenResult:
    who = principal(info)
    if who.delegated:
        return Forbidden(message=NOT_BY_AGENT)
    if not (who.is_admin or who.kind is TokenKind.USER or who.has_scope(USAGE_WRITE)):
        return Forbidden(message=MINTERS_ONLY)
    now = info.context.now()
    if invalid := first_error(
        check_label(input.name, "name", MAX_NAME),
        check_identifier(input.agent_id, "agentId", 200) if input.agent_id is not None else None,
        check_activities(input.activities),
        check_future(input.expires_at, "expiresAt", now),
        check_idle(input.idle_timeout_seconds),
    ):
        return invalid
    spec = None
    if input.spend_limit is not None:
        made = limit_spec(input.spend_limit)
        if isinstance(made, ValidationError):
            return made
        spec = made
    expires_at = None if input.expires_at is None else input.expires_at.astimezone(UTC)
    if who.expires_at is not None:
        # No delegated token outlives the token that mints it: none given is the minter's own expiry.
        if expires_at is None:
            expires_at = who.expires_at
        elif expires_at > who.expires_at:
            return ValidationError(
                message="A token cannot outlive the token that makes it: expiresAt must be at or before"
                f" {iso_z(who.expires_at)}",
                field="expiresAt",
            )
    account = await _account(info, who, input)
    if not isinstance(account, tuple):
        return account
    row, reads = account
    minted = await tokens.create_agent_token(
        name=input.name,
        account_id=int(row.id),
        now=now,
        scopes=(USAGE_WRITE, BALANCE_READ) if reads else (USAGE_WRITE,),
        spends_as=who.user_id if who.kind is TokenKind.USER else None,
        agent_id=input.agent_id,
        activities=None if input.activities is None else tuple(input.activities),
        expires_at=expires_at,
        idle_timeout_seconds=input.idle_timeout_seconds,
        limit=spec,
    )
    token = await ApiTokenRow.get(id=minted.token_id)
    return CreateAgentTokenSuccess(secret=minted.secret, api_token=ApiToken.of(token, now))


async def _account(
    info: Info[Context, None], who: Principal, input: CreateAgentTokenInput
) -> tuple[CreditAccountRow, bool] | Forbidden | NotFound | ValidationError:
    """The account the token is bound to, and whether the token may read its balance (whether its minter
    may). As paying is (resolvers/mutations/payments.py billing_account): an unknown global ID is ``NotFound``,
    an unknown externalId is refused as another's account is to anyone but the platform, and whether an
    organization has a pool is told only to those who could mint for it."""
    named = await named_account(input.account_id, input.external_user_id, input.external_organization_id)
    platform = who.is_admin or who.kind is TokenKind.SERVICE
    if isinstance(named, ValidationError):
        return named
    if named is None:
        if who.user_id is None:
            return ValidationError(
                message="Give accountId: this token belongs to a service or an admin", field="accountId"
            )
        return await CreditAccountRow.get(user_id=who.user_id), True
    if isinstance(named, NotFound):
        external = input.external_user_id is not None or input.external_organization_id is not None
        return Forbidden(message=MINTING_NEEDS_ROLE) if external and not platform else named
    if platform:
        if isinstance(named, NoPool):
            return NotFound(message=NO_POOL)
        return named, who.is_admin or who.has_scope(BALANCE_READ)
    user_id, organization_id = owners(named)
    if user_id is not None:
        return (named, True) if user_id == who.user_id and isinstance(named, CreditAccountRow) else _refused()
    assert organization_id is not None
    roles = await roles_in(info, organization_id)
    if roles is None:
        return _refused()
    if isinstance(named, NoPool):
        return NotFound(message=NO_POOL) if roles & BILLING_ROLES else _refused()
    if roles & BILLING_ROLES:
        return named, True
    # A MEMBER's token spends as them, so it can spend only what their own budget lets them: one is needed.
    assert who.user_id is not None
    if not await _has_budget(int(named.id), who.user_id):
        return Forbidden(message=MEMBER_NEEDS_BUDGET)
    return named, False


def _refused() -> Forbidden:
    return Forbidden(message=MINTING_NEEDS_ROLE)


async def _has_budget(account_id: int, user_id: int) -> bool:
    """A BLOCK cap on the member (scope MEMBER) in this pool: their monthly budget is one."""
    return await SpendLimitRow.exists(
        account_id=account_id,
        subject=f"member:{user_id}",
        kind=LimitKind.CAP,
        action=LimitAction.BLOCK,
    )
