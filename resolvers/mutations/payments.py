from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from strawberry.types import Info

from billing.customers import customer_for
from gateway.base import GatewayError, GatewayUnavailable, HostedGateway, InvalidPaymentToken
from models import payments, subscriptions
from models.credits import MICRO
from models.ledger import BalanceChange, IdempotencyConflictError, IdempotencyKey
from models.tables import CreditAccount as CreditAccountRow
from models.tables import PaymentMethod as PaymentMethodRow
from models.tables import Transaction as TransactionRow
from models.tables import TransactionStatus, TransactionType
from resolvers.context import Context, Services
from resolvers.ids import decode_id
from resolvers.mutations._common import conflict
from resolvers.mutations.checkout import top_up_by_checkout
from resolvers.permissions import BILLING_ROLES, principal, roles_in
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

log = logging.getLogger("creditline.payments")
PAYING_NEEDS_ROLE = "Paying for this account needs its owner, or the BILLING or OWNER role in its organization"


async def billing_account(info: Info[Context, None], account_id: str | None) -> CreditAccountRow | Forbidden | NotFound:
    """The account a payment is for: your own by default; an organization pool needs BILLING or OWNER."""
    who = principal(info)
    if account_id is None:
        if who.user_id is None:
            return Forbidden(message="Give accountId: this token belongs to a service or an admin")
        return await CreditAccountRow.get(user_id=who.user_id)
    pk = decode_id(account_id, "CreditAccount")
    account = None if pk is None else await CreditAccountRow.filter(id=pk).first()
    if account is None:
        return NotFound(message="Credit account not found")
    if who.is_admin or (account.user_id is not None and account.user_id == who.user_id):
        return account
    if account.organization_id is not None and (await roles_in(info, account.organization_id) or frozenset()) & (
        BILLING_ROLES
    ):
        return account
    return Forbidden(
        message="Paying for this account needs its owner, or the BILLING or OWNER role in its organization"
    )


def price(info: Info[Context, None]) -> payments.Price:
    settings = info.context.services.settings
    return payments.Price(settings.currency, settings.price_per_100_credits)


async def top_up(info: Info[Context, None], input: TopUpInput) -> TopUpResult:
    """Buy PAID credit once, with a saved card or a one-off token. PENDING until the payment succeeds."""
    ctx = info.context
    settings = ctx.services.settings
    account = await billing_account(info, input.account_id)
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
    if isinstance(gateway, HostedGateway):
        return await top_up_by_checkout(info, gateway, account, credits, input.idempotency_key)
    method_id: int | None = None
    if input.payment_method_id is not None:
        method_id = decode_id(input.payment_method_id, "PaymentMethod")
        method = (
            None
            if method_id is None
            else await PaymentMethodRow.filter(id=method_id, account_id=account.id, removed_at=None).first()
        )
        if method is None:
            return NotFound(message="Payment method not found on this account")
        card = method.reference
    else:
        assert input.payment_token is not None
        try:
            card = (await gateway.save_card(input.payment_token)).reference
        except InvalidPaymentToken as exc:
            return ValidationError(message=str(exc), field="paymentToken")
        except (GatewayError, GatewayUnavailable) as exc:
            return PaymentUnavailable(message=str(exc))
    idem = IdempotencyKey.for_request(
        principal(info).idempotency_scope,
        input.idempotency_key,
        "topUp",
        {"account": account.id, "credits": credits, "method": method_id, "token": input.payment_token},
    )
    try:
        txn, new = await payments.start_top_up(
            account.id,
            credits=credits,
            price=price(info),
            gateway=gateway.name,
            payment_method_id=method_id,
            card_reference=card,
            kind=TransactionType.TOP_UP,
            idem=idem,
            now=ctx.now(),
        )
    except IdempotencyConflictError:
        return conflict(input.idempotency_key)
    if new:
        txn = await charge_pending(ctx.services, txn)
    elif txn.status == TransactionStatus.PENDING:
        txn, in_flight = await payments.settled(txn, wait_seconds=settings.replay_wait_seconds, now=ctx.now())
        if in_flight:
            return still_in_flight()
    if txn.status == TransactionStatus.FAILED:
        reason_text = txn.failure_reason or "Payment failed"
        return PaymentDeclined(
            message=f"The payment failed: {reason_text}", reason=reason_text, transaction=Transaction.of(txn)
        )
    return TopUpSuccess(transaction=Transaction.of(txn))


def still_in_flight() -> PaymentUnavailable:
    """The answer to a resend whose first call is still waiting for the payment's outcome."""
    return PaymentUnavailable(
        message="The first request with this idempotencyKey is still waiting for the payment's outcome:"
        " send the same request again to get its answer"
    )


def subscription_billing(services: Services) -> subscriptions.Billing:
    settings = services.settings
    return subscriptions.Billing(settings.currency, settings.subscription_retry_days)


async def record_answer(
    services: Services, txn: TransactionRow, *, succeeded: bool, reference: str | None, failure_reason: str | None
) -> tuple[TransactionRow, tuple[BalanceChange, ...]]:
    """Record a gateway's answer to a PENDING payment: a subscription period moves its subscription too.
    The caller publishes the returned changes (after commit, which has happened on return)."""
    if txn.subscription_id is not None:
        return await subscriptions.complete(
            txn.id,
            succeeded=succeeded,
            reference=reference,
            failure_reason=failure_reason,
            plans=services.plans,
            billing=subscription_billing(services),
            now=services.clock.now(),
        )
    return await payments.complete(
        txn.id, succeeded=succeeded, reference=reference, failure_reason=failure_reason, now=services.clock.now()
    )


async def charge_pending(services: Services, txn: TransactionRow) -> TransactionRow:
    """Charge a PENDING transaction and record the answer. Charged outside any database transaction, with
    an idempotency key made from our own id, so charging again (the reconcile job) never pays twice."""
    gateway = services.gateway
    try:
        # Every argument comes from the stored row: a retry must send the very same request.
        saved = txn.payment_method_id is not None
        charge = await gateway.charge(
            amount=txn.amount,
            currency=txn.currency,
            card=txn.card_reference or "",
            idempotency_key=f"creditline-transaction-{txn.id}",
            description=f"{txn.credits // MICRO} credits",
            customer=await customer_for(gateway, txn.account_id, services.clock.now()) if saved else None,
            off_session=txn.type != TransactionType.TOP_UP,
        )
    except (GatewayError, GatewayUnavailable):
        return txn  # the outcome is unknown: it stays PENDING for the reconcile job
    completed, changes = await record_answer(
        services, txn, succeeded=charge.succeeded, reference=charge.reference, failure_reason=charge.failure_reason
    )
    services.bus.publish(changes)
    return completed


async def add_payment_method(info: Info[Context, None], input: AddPaymentMethodInput) -> AddPaymentMethodResult:
    """Save a card on a card-on-file gateway; the account's first card becomes its default."""
    account = await billing_account(info, input.account_id)
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
        customer = await customer_for(gateway, account.id, info.context.now())
        card = await gateway.save_card(input.token, customer=customer)
    except InvalidPaymentToken as exc:
        return ValidationError(message=str(exc), field="token")
    except (GatewayError, GatewayUnavailable) as exc:
        return PaymentUnavailable(message=str(exc))
    method = await payments.save_card(account.id, gateway=gateway.name, card=card, now=info.context.now())
    return AddPaymentMethodSuccess(payment_method=PaymentMethod.of(method))


async def _card_change(
    info: Info[Context, None], input: PaymentMethodInput, change: Callable[[int, int], Awaitable[object | None]]
) -> PaymentMethodResult:
    account = await billing_account(info, input.account_id)
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
    now = info.context.now()
    removed: list[PaymentMethodRow] = []

    async def remove(account: int, method: int) -> PaymentMethodRow | None:
        row = await payments.remove_card(account, method, now)
        removed.extend([row] if row is not None else [])
        return row

    result = await _card_change(info, input, remove)
    for row in removed:  # after the commit: the processor forgets the card too
        try:
            await info.context.services.gateway.remove_card(row.reference)
        except (GatewayError, GatewayUnavailable) as exc:
            log.warning("payment method %s removed here but not at the processor: %s", row.id, exc)
    return result
