"""setSpendLimit (README, Spend limits): create or replace one limit of an account's subject."""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info

from models import limits
from models.ids import decode_id
from models.limit_rules import MAX_ROLLING_HOURS, MAX_ROLLING_MINUTES, LimitSpec, zone
from models.tables import ApiToken as ApiTokenRow
from models.tables import CreditAccount as CreditAccountRow
from models.tables import LimitKind, LimitScope, LimitWindow, Membership, TokenKind
from models.tokens import USAGE_WRITE
from resolvers.context import Context
from resolvers.mutations._limits import any_account, managed_account
from resolvers.permissions import principal
from resolvers.references import user_pk
from resolvers.validation import check_identifier, check_positive, first_error
from schema.errors import NotFound, ValidationError
from schema.limits import SpendLimit
from schema.mutations.set_spend_limit import SetSpendLimitInput, SetSpendLimitResult, SetSpendLimitSuccess

MAX_COOLDOWN_SECONDS = 31 * 24 * 3600
CALENDAR = (LimitWindow.DAY, LimitWindow.WEEK, LimitWindow.MONTH)
SUBJECT_FIELDS = {
    LimitScope.MEMBER: ("memberId", "externalMemberId"),
    LimitScope.AGENT: ("agentId",),
    LimitScope.TOKEN: ("tokenId",),
}
MEMBER_NOT_FOUND = "Member not found in the pool's organization"
TOKEN_NOT_FOUND = "Token not found"


@dataclass(frozen=True, slots=True)
class Subject:
    user_id: int | None = None
    agent_id: str | None = None
    token_id: int | None = None


async def set_spend_limit(info: Info[Context, None], input: SetSpendLimitInput) -> SetSpendLimitResult:
    account = await managed_account(info, input.account_id, input.external_user_id, input.external_organization_id)
    if not isinstance(account, CreditAccountRow):
        return account
    if invalid := check_limit(input):
        return invalid
    subject = await _subject(info, account, input)
    if not isinstance(subject, Subject):
        return subject
    rolling = input.window in (LimitWindow.ROLLING_HOURS, LimitWindow.ROLLING_MINUTES)
    spec = LimitSpec(
        scope=input.scope,
        amount=int(input.amount),
        window=input.window,
        window_length=input.window_length if rolling and input.window_length is not None else 1,
        time_zone=input.time_zone if input.time_zone is not None else "UTC",
        kind=input.kind,
        action=input.action,
        warn_percent=input.warn_at_percent,
        max_credits_per_run=None if input.max_credits_per_run is None else int(input.max_credits_per_run),
        cooldown_seconds=input.cooldown_seconds,
        user_id=subject.user_id,
        agent_id=subject.agent_id,
        token_id=subject.token_id,
    )
    view, created = await limits.set_limit(account.id, spec, info.context.now())
    return SetSpendLimitSuccess(limit=SpendLimit.of(view), created=created)


def check_limit(input: SetSpendLimitInput) -> ValidationError | None:
    """Everything about the limit that needs no lookup: its subject's fields for its scope, kind against window,
    the window's length and zone, the amounts and the velocity-only and cap-only fields."""
    given = {
        "memberId": input.member_id,
        "externalMemberId": input.external_member_id,
        "agentId": input.agent_id,
        "tokenId": input.token_id,
    }
    allowed = SUBJECT_FIELDS.get(input.scope, ())
    for name, value in given.items():
        if value is not None and name not in allowed:
            owner = next(scope for scope, fields in SUBJECT_FIELDS.items() if name in fields)
            return ValidationError(message=f"{name} is for scope {owner.value} only", field=name)
    velocity = input.kind is LimitKind.VELOCITY
    length = input.window_length
    return first_error(
        _missing_subject(input),
        ValidationError(message="A VELOCITY limit's window is ROLLING_MINUTES", field="window")
        if velocity and input.window is not LimitWindow.ROLLING_MINUTES
        else None,
        ValidationError(message="ROLLING_MINUTES is for VELOCITY limits: a CAP counts hours or more", field="window")
        if not velocity and input.window is LimitWindow.ROLLING_MINUTES
        else None,
        _check_length(input.window, length),
        _check_zone(input.window, input.time_zone),
        check_positive(input.amount, "amount"),
        ValidationError(message="warnAtPercent must be 1 to 100", field="warnAtPercent")
        if input.warn_at_percent is not None and not 1 <= input.warn_at_percent <= 100
        else None,
        ValidationError(message="maxCreditsPerRun is for CAP limits only", field="maxCreditsPerRun")
        if velocity and input.max_credits_per_run is not None
        else None,
        check_positive(input.max_credits_per_run, "maxCreditsPerRun"),
        ValidationError(message="cooldownSeconds is for VELOCITY limits only", field="cooldownSeconds")
        if not velocity and input.cooldown_seconds is not None
        else None,
        ValidationError(message=f"cooldownSeconds must be 1 to {MAX_COOLDOWN_SECONDS}", field="cooldownSeconds")
        if input.cooldown_seconds is not None and not 1 <= input.cooldown_seconds <= MAX_COOLDOWN_SECONDS
        else None,
    )


def _missing_subject(input: SetSpendLimitInput) -> ValidationError | None:
    if input.scope is LimitScope.MEMBER and input.member_id is None and input.external_member_id is None:
        return ValidationError(message="Scope MEMBER needs memberId or externalMemberId", field="memberId")
    if input.scope is LimitScope.AGENT:
        if input.agent_id is None:
            return ValidationError(message="Scope AGENT needs agentId", field="agentId")
        return check_identifier(input.agent_id, "agentId", 200)
    if input.scope is LimitScope.TOKEN and input.token_id is None:
        return ValidationError(message="Scope TOKEN needs tokenId", field="tokenId")
    return None


def _check_length(window: LimitWindow, length: int | None) -> ValidationError | None:
    most = {LimitWindow.ROLLING_HOURS: MAX_ROLLING_HOURS, LimitWindow.ROLLING_MINUTES: MAX_ROLLING_MINUTES}.get(window)
    if most is None:
        if length is not None and length != 1:
            return ValidationError(
                message=f"windowLength is for rolling windows only: {window.value} has none", field="windowLength"
            )
        return None
    unit = "hours" if window is LimitWindow.ROLLING_HOURS else "minutes"
    if length is None or not 1 <= length <= most:
        return ValidationError(message=f"{window.value} needs windowLength: 1 to {most} {unit}", field="windowLength")
    return None


def _check_zone(window: LimitWindow, time_zone: str | None) -> ValidationError | None:
    if time_zone is None:
        return None
    if window not in CALENDAR:
        return ValidationError(message="timeZone is for DAY, WEEK and MONTH only", field="timeZone")
    if zone(time_zone) is None:
        return ValidationError(message="timeZone must be an IANA time zone such as Europe/Paris", field="timeZone")
    return None


async def _subject(
    info: Info[Context, None], account: CreditAccountRow, input: SetSpendLimitInput
) -> Subject | NotFound | ValidationError:
    if input.scope is LimitScope.AGENT:
        return Subject(agent_id=input.agent_id)
    if input.scope is LimitScope.MEMBER:
        if account.organization_id is None:
            return ValidationError(
                message="Scope MEMBER is for an organization's pool: a user's own account takes scope ACCOUNT",
                field="scope",
            )
        member = await user_pk(
            input.member_id, input.external_member_id, own_field="memberId", external_field="externalMemberId"
        )
        if isinstance(member, ValidationError):
            return member
        # Not a member and no such user are one answer, by either form of id.
        if isinstance(member, NotFound) or not await Membership.exists(
            user_id=member, organization_id=account.organization_id
        ):
            return NotFound(message=MEMBER_NOT_FOUND)
        return Subject(user_id=member)
    if input.scope is LimitScope.TOKEN:
        return await _token(info, account, input.token_id)
    return Subject()


async def _token(
    info: Info[Context, None], account: CreditAccountRow, token_id: str | None
) -> Subject | NotFound | ValidationError:
    """A token that may spend from the account: bound to it (a delegated agent token), or, for those who manage
    every account, an unbound service token with usage:write or an admin token. Anyone else sees only the tokens
    bound to their account: any other is not found, whether it exists or not."""
    pk = decode_id(token_id or "", "ApiToken")
    row = None if pk is None else await ApiTokenRow.filter(id=pk).first()
    if row is None or (row.account_id != account.id and not any_account(principal(info))):
        return NotFound(message=TOKEN_NOT_FOUND)
    kind = TokenKind(row.kind)
    field = "tokenId"
    if row.revoked_at is not None:
        return ValidationError(message="That token is revoked: it spends nothing", field=field)
    if kind in (TokenKind.USER, TokenKind.PORTAL):
        return ValidationError(
            message=f"{kind.value} tokens never spend: a TOKEN limit is for one that does", field=field
        )
    if row.account_id is not None and row.account_id != account.id:
        return ValidationError(
            message="That token is bound to another account: it cannot spend from this one", field=field
        )
    if row.account_id is None and kind is TokenKind.SERVICE and USAGE_WRITE not in row.scopes.split():
        return ValidationError(message=f"That token cannot spend: it has no '{USAGE_WRITE}' scope", field=field)
    return Subject(token_id=row.id)
