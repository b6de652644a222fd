"""resumeAgent (README, Spend limits): end the pause of tripped velocity limits."""

from __future__ import annotations

from strawberry.types import Info

from models import limits
from models.ids import decode_id
from models.tables import CreditAccount as CreditAccountRow
from models.tables import LimitKind
from models.tables import SpendLimit as SpendLimitRow
from resolvers.context import Context
from resolvers.mutations._limits import LIMIT_NOT_FOUND, check_manages, gate, managed_account
from resolvers.permissions import principal
from resolvers.validation import check_identifier
from schema.errors import NotFound, ValidationError
from schema.limits import SpendLimit
from schema.mutations.resume_agent import ResumeAgentInput, ResumeAgentResult, ResumeAgentSuccess


async def resume_agent(info: Info[Context, None], input: ResumeAgentInput) -> ResumeAgentResult:
    names_account = any(
        value is not None for value in (input.account_id, input.external_user_id, input.external_organization_id)
    )
    if (input.limit_id is None) == (input.agent_id is None) or (input.limit_id is not None and names_account):
        return ValidationError(
            message="Give limitId, or agentId (with the account unless it is your own)", field="limitId"
        )
    now = info.context.now()
    if input.limit_id is not None:
        if denied := gate(principal(info)):
            return denied
        pk = decode_id(input.limit_id, "SpendLimit")
        row = None if pk is None else await SpendLimitRow.filter(id=pk).only("id", "account_id", "kind").first()
        if row is None:
            return NotFound(message=LIMIT_NOT_FOUND)
        if denied := await check_manages(info, row.account_id):
            return denied
        if LimitKind(row.kind) is not LimitKind.VELOCITY:
            return ValidationError(message="Only a VELOCITY limit pauses: this one is a CAP", field="limitId")
        resumed = await limits.resume(row.account_id, now, limit_id=row.id)
        if not resumed:  # removed meanwhile
            return NotFound(message=LIMIT_NOT_FOUND)
    else:
        account = await managed_account(info, input.account_id, input.external_user_id, input.external_organization_id)
        if not isinstance(account, CreditAccountRow):
            return account
        assert input.agent_id is not None
        if invalid := check_identifier(input.agent_id, "agentId", 200):
            return invalid
        resumed = await limits.resume(account.id, now, agent_id=input.agent_id)
        if not resumed:
            return NotFound(message=f"Agent {input.agent_id!r} has no velocity limit on this account")
    return ResumeAgentSuccess(limits=[SpendLimit.of(row.view) for row in resumed])
