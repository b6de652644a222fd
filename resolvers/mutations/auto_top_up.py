from __future__ import annotations

from dataclasses import replace

from strawberry.types import Info

from billing import auto_top_up as billing_auto_top_up
from billing.errors import PaymentMethodNotFoundError, PaymentMethodRequiredError, PaymentUnavailableError
from models.credits import MICRO, format_credits
from models.ids import decode_id
from models.ledger import auto_top_up
from models.tables import AutoTopUp as AutoTopUpRow
from models.tables import CreditAccount as CreditAccountRow
from resolvers.context import Context
from resolvers.mutations.payments import billing_account
from schema.auto_top_up import AutoTopUp
from schema.errors import NotFound, ValidationError
from schema.mutations.auto_top_up import ConfigureAutoTopUpInput, ConfigureAutoTopUpResult, ConfigureAutoTopUpSuccess
from schema.payments import PaymentUnavailable


def _whole(value: int | None, field: str) -> ValidationError | None:
    if value is None:
        return None
    if value <= 0:
        return ValidationError(message=f"{field} must be positive", field=field)
    if value % MICRO:
        return ValidationError(message=f"{field} must be a whole number of credits", field=field)
    return None


def _merge(
    input: ConfigureAutoTopUpInput, existing: AutoTopUpRow | None, low: int, high: int
) -> auto_top_up.Config | ValidationError:
    """The configuration after this change, checked whole: what is given replaces what was set."""
    for value, field in (
        (input.threshold, "threshold"),
        (input.amount, "amount"),
        (input.target, "target"),
        (input.monthly_cap, "monthlyCap"),
    ):
        if invalid := _whole(value, field):
            return invalid
    if input.amount is not None and input.target is not None:
        return ValidationError(message="Give exactly one of amount or target", field=None)
    if input.amount is not None or input.target is not None:
        amount, target = input.amount, input.target
    else:
        amount, target = (None, None) if existing is None else (existing.amount, existing.target)
    threshold = input.threshold if input.threshold is not None else None if existing is None else existing.threshold
    cap = input.monthly_cap if input.monthly_cap is not None else None if existing is None else existing.monthly_cap
    if threshold is None:
        return ValidationError(message="threshold is required to set up auto top-up", field="threshold")
    if amount is None and target is None:
        return ValidationError(message="Give exactly one of amount or target", field=None)
    if cap is None:
        return ValidationError(message="monthlyCap is required to set up auto top-up", field="monthlyCap")
    limits = f"between {format_credits(low)} and {format_credits(high)}"
    if amount is not None and not low <= amount <= high:
        return ValidationError(message=f"amount must be {limits}", field="amount")
    if target is not None:
        if target <= threshold:
            return ValidationError(message="target must be above threshold", field="target")
        if target > high:
            return ValidationError(message=f"target must be at most {format_credits(high)}", field="target")
        if target - threshold < low:
            return ValidationError(
                message=f"target must be at least {format_credits(low)} above threshold (the smallest top-up)",
                field="target",
            )
    smallest = auto_top_up.smallest_top_up(amount, target, threshold)
    if cap < smallest:
        return ValidationError(
            message=f"monthlyCap must allow at least one top-up ({format_credits(smallest)} credits)",
            field="monthlyCap",
        )
    enabled = input.enabled if input.enabled is not None else True if existing is None else existing.enabled
    method = None if existing is None else existing.payment_method_id
    return auto_top_up.Config(enabled, threshold, amount, target, cap, method)


async def configure_auto_top_up(info: Info[Context, None], input: ConfigureAutoTopUpInput) -> ConfigureAutoTopUpResult:
    """Set up, change, or switch auto top-up on or off. The account's owner, or BILLING/OWNER of a pool."""
    ctx = info.context
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    existing = await AutoTopUpRow.filter(account_id=account.id).first()
    settings = ctx.services.settings
    config = _merge(input, existing, settings.top_up_min_credits * MICRO, settings.top_up_max_credits * MICRO)
    if isinstance(config, ValidationError):
        return config
    if input.payment_method_id is not None:
        config = replace(config, payment_method_id=decode_id(input.payment_method_id, "PaymentMethod"))
    try:
        await billing_auto_top_up.configure(
            ctx.services, account.id, config, card_given=input.payment_method_id is not None
        )
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    except PaymentMethodRequiredError as exc:
        return ValidationError(message=exc.message, field="paymentMethodId")
    except PaymentMethodNotFoundError as exc:
        return NotFound(message=exc.message)
    loaded = await AutoTopUp.load(info, account.id)
    assert loaded is not None
    return ConfigureAutoTopUpSuccess(auto_top_up=loaded)
