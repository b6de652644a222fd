from __future__ import annotations

from strawberry.types import Info

from models import ledger
from models.tables import CreditAccount as CreditAccountRow
from models.tables import CreditKind, LotSource
from models.tables import CreditLot as CreditLotRow
from resolvers.accounts import NO_POOL, NoPool, named_account
from resolvers.context import Context
from resolvers.mutations._common import conflict
from resolvers.permissions import principal, require_admin
from resolvers.validation import check_future, check_key, check_optional_text, check_positive, first_error
from schema.errors import NotFound, ValidationError
from schema.mutations.grant_credits import GrantCreditsInput, GrantCreditsResult, GrantCreditsSuccess
from schema.types import CreditBalance, CreditLot


async def grant_credits(info: Info[Context, None], input: GrantCreditsInput) -> GrantCreditsResult:
    """Grant credit to an account: FREE as a promotion, PAID as an adjustment. Admin tokens only."""
    if denied := require_admin(info):
        return denied
    now = info.context.now()
    if invalid := first_error(
        check_key(input.idempotency_key),
        check_positive(input.credits, "credits"),
        check_future(input.expires_at, "expiresAt", now),
        check_optional_text(input.reason, "reason", 500),
    ):
        return invalid
    named = await named_account(input.account_id, input.external_user_id, input.external_organization_id, required=True)
    if isinstance(named, NoPool):
        return NotFound(message=NO_POOL)
    if not isinstance(named, CreditAccountRow):
        assert named is not None, "required: None is a ValidationError"
        return named
    account_id = int(named.id)
    kind = CreditKind(input.kind)
    idem = ledger.IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "grantCredits",
        {
            "account": account_id,
            "credits": input.credits,
            "kind": kind.value,
            "expires_at": input.expires_at.isoformat() if input.expires_at else None,
            "reason": input.reason,
        },
    )
    try:
        result = await ledger.grant(
            account_id,
            credits=int(input.credits),
            kind=kind,
            source=LotSource.PROMOTION if kind is CreditKind.FREE else LotSource.ADJUSTMENT,
            expires_at=input.expires_at,
            reason=input.reason,
            idem=idem,
            now=now,
        )
    except ledger.BalanceLimitError:
        return ValidationError(
            message="This grant would take the balance over the maximum an account may hold", field="credits"
        )
    except ledger.IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except ledger.NotFoundError:
        return NotFound(message="Credit account not found")
    info.context.services.bus.publish(result.changes)
    lot = await CreditLotRow.get(id=result.lot_id)
    return GrantCreditsSuccess(lot=CreditLot.of(lot), balance=CreditBalance.of(result.balance))
