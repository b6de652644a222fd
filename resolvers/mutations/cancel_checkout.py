from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info

from billing import checkout
from billing.errors import CheckoutCompletedError, CheckoutNotCancelableError, PaymentUnavailableError
from gateway.base import HostedGateway
from models.ids import decode_id, encode_id
from models.tables import CreditAccount as CreditAccountRow
from models.tables import Transaction as TransactionRow
from resolvers.context import Context
from resolvers.mutations.payments import billing_account
from schema.errors import NotFound, ValidationError
from schema.mutations.cancel_checkout import (
    CancelCheckoutInput,
    CancelCheckoutResult,
    CancelCheckoutSuccess,
    CheckoutCompleted,
)
from schema.payments import PaymentUnavailable, Transaction

TRANSACTION_NOT_FOUND = "Transaction not found"
NOT_HOSTED = "Only a top-up paid on a Checkout page (the stripe gateway) can be canceled"


@dataclass(frozen=True, slots=True)
class _AccountOf:
    """The transaction's account, named as topUp's input names one (``billing_account`` decides who may pay)."""

    account_id: str | None
    external_user_id: str | None = None
    external_organization_id: str | None = None


async def cancel_checkout(info: Info[Context, None], input: CancelCheckoutInput) -> CancelCheckoutResult:
    """Close a PENDING top-up's Checkout page at the processor, then fail the top-up. Safe to repeat: a canceled
    top-up is answered as it is."""
    pk = decode_id(input.transaction_id, "Transaction")
    txn = None if pk is None else await TransactionRow.filter(id=pk).first()
    if txn is None:
        return NotFound(message=TRANSACTION_NOT_FOUND)
    account = await billing_account(info, _AccountOf(encode_id("CreditAccount", txn.account_id)))
    if not isinstance(account, CreditAccountRow):
        return account
    services = info.context.services
    gateway = services.gateway
    if not isinstance(gateway, HostedGateway):
        return ValidationError(message=NOT_HOSTED, field="transactionId")
    if reason := gateway.unavailable_reason():
        return PaymentUnavailable(message=reason)
    try:
        canceled = await checkout.cancel(services, gateway, txn)
    except CheckoutNotCancelableError as exc:
        return ValidationError(message=exc.message, field="transactionId")
    except CheckoutCompletedError as exc:
        return CheckoutCompleted(message=exc.message, transaction=Transaction.of(await TransactionRow.get(id=txn.id)))
    except PaymentUnavailableError as exc:
        return PaymentUnavailable(message=exc.message)
    return CancelCheckoutSuccess(transaction=Transaction.of(canceled))
