from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from strawberry.types import Info

from billing import checkout
from billing import payments as billing_payments
from billing.errors import InvalidPaymentTokenError, PaymentMethodNotFoundError, PaymentUnavailableError
from gateway.base import HostedGateway
from models import payments
from models.credits import MICRO
from models.ids import decode_id
from models.ledger import IdempotencyConflictError, IdempotencyKey
from models.tables import CreditAccount as CreditAccountRow
from models.tables import PaymentMethod as PaymentMethodRow
from models.tables import TransactionStatus
from resolvers.accounts import NO_POOL, NoPool, named_account, owners
from resolvers.context import Context
from resolvers.mutations._common import conflict
from resolvers.permissions import BILLING_ROLES, PORTAL_MESSAGE, portal_account, principal, roles_in
from resolvers.validation import check_identifier, check_key, first_error
from schema.errors import Forbidden, NotFound, ValidationError
from schema.payments import (
    AddPaymentMethodInput,
    AddPaymentMethodResult,
    AddPaymentMethodSuccess,
    PaymentDeclined,
    PaymentMethod,
    PaymentMethodInput,
    PaymentMethodInUse,
    PaymentMethodResult,
    PaymentMethodsSuccess,
    PaymentUnavailable,
    TopUpInput,
    TopUpResult,
    TopUpSuccess,
    Transaction,
)

PAYING_NEEDS_ROLE = "Paying for this account needs its owner, or the BILLING or OWNER role in its organization"
PORTAL_PAYS_OWN = f"{PORTAL_MESSAGE}: paying for another account needs its own session"


class NamesAccount(Protocol):
    """An input with ``accountId``, ``externalUserId`` and ``externalOrganizationId`` (resolvers/accounts.py)."""

    @property
    def account_id(self) -> str | None: ...

    @property
    def external_user_id(self) -> str | None: ...

    @property
    def external_organization_id(self) -> str | None: ...


async def billing_account(
    info: Info[Context, None], input: NamesAccount
) -> CreditAccountRow | Forbidden | NotFound | ValidationError:
    """The account a payment is for: your own by default (a portal session's: the one it is bound to, and no
    other); an organization pool needs BILLING or OWNER. Whether an organization has a pool is told only to
    those who could pay for it, and whether an externalId exists to admins only (for anyone else an unknown one
    is refused as another's account is; an unknown global ID stays ``NotFound``)."""
    who = principal(info)
    named = await named_account(input.account_id, input.external_user_id, input.external_organization_id)
    external = input.external_user_id is not None or input.external_organization_id is not None
    if isinstance(named, NotFound) and external and not who.is_admin:
        return Forbidden(message=PORTAL_PAYS_OWN if portal_account(who) is not None else PAYING_NEEDS_ROLE)
    if (bound := portal_account(who)) is not None:
        return await _portal_account(bound, named)
    if named is None:
        if who.user_id is None:
            return Forbidden(message="Give accountId: this token belongs to a service or an admin")
        return await CreditAccountRow.get(user_id=who.user_id)
    if isinstance(named, NotFound | ValidationError):
        return named
    user_id, organization_id = owners(named)
    allowed = who.is_admin or (user_id is not None and user_id == who.user_id)
    if not allowed and organization_id is not None:
        allowed = bool((await roles_in(info, organization_id) or frozenset()) & BILLING_ROLES)
    if not allowed:
        return Forbidden(message=PAYING_NEEDS_ROLE)
    return NotFound(message=NO_POOL) if isinstance(named, NoPool) else named


async def _portal_account(
    bound: int, named: CreditAccountRow | NoPool | NotFound | ValidationError | None
) -> CreditAccountRow | Forbidden | NotFound | ValidationError:
    if named is None:
        return await CreditAccountRow.get(id=bound)
    if isinstance(named, NotFound | ValidationError):
        return named
    if isinstance(named, NoPool) or named.id != bound:
        return Forbidden(message=PORTAL_PAYS_OWN)
    return named


async def top_up(info: Info[Context, None], input: TopUpInput) -> TopUpResult:
    """Buy PAID credit once, with a saved card or a one-off token. PENDING until the payment succeeds."""
    ctx = info.context
    settings = ctx.services.settings
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    credits = int(input.credits)
    gateway = ctx.services.gateway
    low, high = settings.top_up_min_credits, settings.top_up_max_credits
    if invalid := first_error(
        check_key(input.idempotency_key),
        ValidationError(message="credits must be a whole number of credits", field="credits")
        if credits % MICRO
        else None,
        ValidationError(message=f"credits must be between {low} and {high}", field="credits")
        if not low * MICRO <= credits <= high * MICRO
        else None,
        ValidationError(message="Give exactly one of paymentMethodId or paymentToken", field=None)
        if gateway.card_on_file and (input.payment_method_id is None) == (input.payment_token is None)
        else None,
        ValidationError(message="Give no paymentMethodId or paymentToken: the card is entered at checkout", field=None)
        if not gateway.card_on_file and (input.payment_method_id is not None or input.payment_token is not None)
        else None,
        check_identifier(input.payment_token, "paymentToken", 255) if input.payment_token is not None else None,
    ):
        return invalid
    if reason := gateway.unavailable_reason():
        return PaymentUnavailable(message=reason)
    method_id: int | None = None
    method: PaymentMethodRow | None = None
    if input.payment_method_id is not None:
        method_id = decode_id(input.payment_method_id, "PaymentMethod")
        try:
            method = await billing_payments.saved_card(account.id, method_id)
        except PaymentMethodNotFoundError as exc:
            return NotFound(message=exc.message)
    idem = IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "topUp",
        {"account": account.id, "credits": credits, "method": method_id, "token": input.payment_token},
    )
    try:
        if isinstance(gateway, HostedGateway):
            txn = await checkout.top_up(ctx.services, gateway, account.id, credits=credits, idem=idem)
        else:
            txn = await billing_payments.top_up(
                ctx.services, account.id, credits=credits, method=method, payment_token=input.payment_token, idem=idem
            )
    except IdempotencyConflictError:
        return conflict(input.idempotency_key)
    except InvalidPaymentTokenError as exc:
        return ValidationError(message=exc.message, field="paymentToken")
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    if txn.status == TransactionStatus.FAILED:
        reason_text = txn.failure_reason or "Payment failed"
        return PaymentDeclined(
            message=f"The payment failed: {reason_text}", reason=reason_text, transaction=Transaction.of(txn)
        )
    shown = Transaction.of(txn)
    return TopUpSuccess(transaction=shown, checkout_url=shown.checkout_url)


async def add_payment_method(info: Info[Context, None], input: AddPaymentMethodInput) -> AddPaymentMethodResult:
    """Save a card on a card-on-file gateway; the account's first card becomes its default."""
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    if invalid := check_identifier(input.token, "token", 255):
        return invalid
    gateway = info.context.services.gateway
    if not gateway.card_on_file:
        return PaymentUnavailable(message="Cards are managed in the payment processor's customer portal")
    if reason := gateway.unavailable_reason():
        return PaymentUnavailable(message=reason)
    try:
        method = await billing_payments.save_card(info.context.services, account.id, input.token)
    except InvalidPaymentTokenError as exc:
        return ValidationError(message=exc.message, field="token")
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    return AddPaymentMethodSuccess(payment_method=PaymentMethod.of(method))


async def _card_change(
    info: Info[Context, None], input: PaymentMethodInput, change: Callable[[int, int], Awaitable[object | None]]
) -> PaymentMethodResult:
    account = await billing_account(info, input)
    if not isinstance(account, CreditAccountRow):
        return account
    if not info.context.services.gateway.card_on_file:
        return PaymentUnavailable(message="Cards are managed in the payment processor's customer portal")
    method_id = decode_id(input.payment_method_id, "PaymentMethod")
    try:
        changed = None if method_id is None else await change(account.id, method_id)
    except payments.PaymentMethodInUseError as exc:
        return PaymentMethodInUse(message=str(exc))
    if changed is None:
        return NotFound(message="Payment method not found on this account")
    rows = await PaymentMethodRow.filter(account_id=account.id, removed_at=None).order_by("id")
    return PaymentMethodsSuccess(payment_methods=[PaymentMethod.of(row) for row in rows])


async def set_default_payment_method(info: Info[Context, None], input: PaymentMethodInput) -> PaymentMethodResult:
    """Make a saved card the one used by default."""
    return await _card_change(info, input, payments.set_default_card)


async def remove_payment_method(info: Info[Context, None], input: PaymentMethodInput) -> PaymentMethodResult:
    """Remove a saved card; if it was the default, the oldest remaining card becomes the default."""
    services = info.context.services

    async def remove(account: int, method: int) -> PaymentMethodRow | None:
        return await billing_payments.remove_card(services, account, method)

    return await _card_change(info, input, remove)
