"""``setBalanceAlerts``: an account's balance-alert levels (models/ledger/alerts.py; docs/rules.md, "Balance
alerts"). Who may: the spend limits' rule (``resolvers/mutations/_limits.py``)."""

from __future__ import annotations

from strawberry.types import Info

from models.ledger import alerts
from models.tables import CreditAccount as CreditAccountRow
from resolvers.context import Context
from resolvers.mutations._limits import managed_account
from schema.alerts import AlertLevels
from schema.errors import NotFound, ValidationError
from schema.mutations.set_balance_alerts import SetBalanceAlertsInput, SetBalanceAlertsResult, SetBalanceAlertsSuccess
from schema.scalars import Credits
from schema.types import CreditAccount


def _levels(input: SetBalanceAlertsInput) -> tuple[int, ...] | ValidationError | None:
    if input.use_default:
        if input.levels is not None:
            return ValidationError(message="Give either levels or useDefault: true, not both", field="levels")
        return None
    if input.levels is None:
        return ValidationError(message="Give levels (an empty list: none) or useDefault: true", field="levels")
    if len(input.levels) > alerts.MAX_LEVELS:
        return ValidationError(message=f"At most {alerts.MAX_LEVELS} alert levels", field="levels")
    if any(level <= 0 for level in input.levels):
        return ValidationError(message="Every alert level must be more than 0", field="levels")
    if len(set(input.levels)) != len(input.levels):
        return ValidationError(message="Alert levels must be distinct", field="levels")
    return tuple(int(level) for level in input.levels)


async def set_balance_alerts(info: Info[Context, None], input: SetBalanceAlertsInput) -> SetBalanceAlertsResult:
    """Set (or clear, or reset to the default) an account's balance-alert levels, under its lock. No event is
    sent: a new level fires when available next crosses it."""
    account = await managed_account(info, input.account_id, input.external_user_id, input.external_organization_id)
    if not isinstance(account, CreditAccountRow):
        return account
    levels = _levels(input)
    if isinstance(levels, ValidationError):
        return levels
    in_force = await alerts.configure(int(account.id), levels, info.context.now())
    if in_force is None:
        return NotFound(message="Credit account not found")
    return SetBalanceAlertsSuccess(
        account=CreditAccount(id=int(account.id)),
        alert_levels=AlertLevels(levels=[Credits(level) for level in in_force], is_default=levels is None),
    )
