"""billing.refunds without GraphQL: a refund returns the money and voids the credit it bought, carries a key
made from its id, and a refusal or an unknown answer leaves what the customer sees as it was."""

from __future__ import annotations

from dataclasses import replace

import pytest

from billing import payments, refunds
from billing.errors import PaymentUnavailableError
from gateway.base import Charge, GatewayError
from models.balance import Balance
from models.credits import MICRO
from models.ledger import BalanceChange, IdempotencyKey
from models.tables import Refund, RefundStatus, Transaction, TransactionStatus
from tests.support.billing import Customer
from tests.support.helpers import ScriptedGateway

PAID = Balance(free=100 * MICRO, paid=50 * MICRO, held=0)


class RefundsUnanswered(ScriptedGateway):
    """Charges work; the first ``unanswered`` refunds get no answer (their outcome is unknown)."""

    def __init__(self, unanswered: int) -> None:
        super().__init__()
        self.unanswered = unanswered
        self.refund_keys: list[str] = []

    async def refund(self, *, charge: str, amount: int, currency: str, idempotency_key: str) -> Charge:
        self.refund_keys.append(idempotency_key)
        if self.unanswered:
            self.unanswered -= 1
            raise GatewayError("The processor did not answer")
        return await super().refund(charge=charge, amount=amount, currency=currency, idempotency_key=idempotency_key)


def refund_key(name: str = "r1", amount: int | None = None) -> IdempotencyKey:
    return IdempotencyKey.for_request("admin", name, "refundPayment", {"amount": amount})


async def paid(ada: Customer) -> Transaction:
    """Ada buys 50 credits; the change it publishes is read off."""
    txn = await payments.top_up(
        ada.services,
        ada.account_id,
        credits=50 * MICRO,
        method=None,
        payment_token="tok_visa",
        idem=IdempotencyKey.for_request("user:1", "t1", "topUp", {"credits": 50 * MICRO}),
    )
    assert txn.status == TransactionStatus.SUCCEEDED
    assert await ada.balance() == PAID
    ada.changes()
    return txn


def test_the_processor_key_names_our_refund() -> None:
    assert refunds.processor_refund_key(7) == "creditline-refund-7"


async def test_a_full_refund_returns_the_money_voids_the_credit_and_publishes_the_change(ada: Customer) -> None:
    txn = await paid(ada)

    refund = await refunds.refund(ada.services, txn, amount=None, reason="asked", idem=refund_key())

    assert (refund.status, refund.amount, refund.credits, refund.failure_reason) == (
        RefundStatus.SUCCEEDED,
        txn.amount,
        50 * MICRO,
        None,
    )
    assert await ada.balance() == Balance(free=100 * MICRO, paid=0, held=0)
    [change] = ada.changes()
    assert isinstance(change, BalanceChange)
    assert (change.delta, change.balance) == (-50 * MICRO, await ada.balance())


async def test_a_payment_on_another_gateway_is_refused_and_nothing_is_written(ada: Customer) -> None:
    txn = await paid(ada)
    await Transaction.filter(id=txn.id).update(gateway="legacy")

    with pytest.raises(PaymentUnavailableError, match="made on the legacy gateway, which is not active"):
        await refunds.refund(
            ada.services, await Transaction.get(id=txn.id), amount=None, reason=None, idem=refund_key()
        )

    assert await Refund.all().count() == 0
    assert await ada.balance() == PAID
    assert ada.changes() == []


async def test_an_unanswered_refund_stays_pending_and_its_resend_asks_again_with_the_same_key(ada: Customer) -> None:
    gateway = RefundsUnanswered(unanswered=1)
    ada = replace(ada, services=replace(ada.services, gateway=gateway), gateway=gateway)
    txn = await paid(ada)

    with pytest.raises(PaymentUnavailableError, match="could not be reached: try again"):
        await refunds.refund(ada.services, txn, amount=None, reason=None, idem=refund_key())
    [pending] = await Refund.all()
    assert pending.status == RefundStatus.PENDING
    assert await ada.balance() == PAID  # nothing is voided until the processor says the money went back
    assert ada.changes() == []

    refund = await refunds.refund(ada.services, txn, amount=None, reason=None, idem=refund_key())

    assert (refund.id, refund.status) == (pending.id, RefundStatus.SUCCEEDED)
    assert gateway.refund_keys == [f"creditline-refund-{pending.id}"] * 2
    assert await Refund.all().count() == 1
    assert await ada.balance() == Balance(free=100 * MICRO, paid=0, held=0)
