"""billing.payments without GraphQL: a top-up's three steps, what a decline and an unreachable processor
leave behind, and the idempotency key every charge carries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from billing import payments
from billing.errors import InvalidPaymentTokenError, PaymentUnavailableError
from models.balance import Balance
from models.credits import MICRO
from models.ledger import BalanceChange, IdempotencyConflictError, IdempotencyKey
from models.tables import CreditLot, Invoice, PaymentMethod, Transaction, TransactionStatus, TransactionType
from tests.support.billing import Customer, UnreachableGateway

FREE = Balance(free=100 * MICRO, paid=0, held=0)


def key(name: str = "k1", credits: int = 50 * MICRO) -> IdempotencyKey:
    return IdempotencyKey.for_request("user:1", name, "topUp", {"credits": credits})


async def nothing_was_paid(ada: Customer) -> None:
    assert await ada.balance() == FREE
    assert await CreditLot.filter(account_id=ada.account_id).count() == 1  # the signup bonus alone
    assert await Invoice.all().count() == 0
    assert ada.changes() == []


def test_the_processor_key_names_our_transaction() -> None:
    assert payments.processor_key(7) == "creditline-transaction-7"


def test_the_price_comes_from_settings(ada: Customer) -> None:
    price = payments.price(ada.services)
    settings = ada.services.settings
    assert (price.currency, price.minor_per_100) == (settings.currency, settings.price_per_100_credits)


async def test_a_top_up_with_a_saved_card_grants_paid_credit_and_an_invoice(ada: Customer) -> None:
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    assert (card.last4, card.brand, card.is_default) == ("4242", "visa", True)

    txn = await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=card, payment_token=None, idem=key()
    )

    assert (txn.status, txn.type, txn.credits, txn.payment_method_id) == (
        TransactionStatus.SUCCEEDED,
        TransactionType.TOP_UP,
        50 * MICRO,
        card.id,
    )
    assert ada.gateway.calls == [f"creditline-transaction-{txn.id}"]
    assert await ada.balance() == Balance(free=100 * MICRO, paid=50 * MICRO, held=0)
    invoice = await Invoice.get(transaction_id=txn.id)
    assert (invoice.total, invoice.currency, invoice.status) == (txn.amount, txn.currency, "PAID")
    [change] = ada.changes()
    assert isinstance(change, BalanceChange)
    assert (change.delta, change.balance) == (50 * MICRO, await ada.balance())


async def test_a_resend_gets_the_same_payment_and_charges_nothing_again(ada: Customer) -> None:
    first = await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
    )
    again = await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
    )

    assert (again.id, again.status) == (first.id, TransactionStatus.SUCCEEDED)
    assert ada.gateway.calls == [f"creditline-transaction-{first.id}"]
    assert await Transaction.all().count() == 1
    assert await ada.balance() == Balance(free=100 * MICRO, paid=50 * MICRO, held=0)


async def test_the_same_key_for_another_request_is_refused_and_writes_nothing(ada: Customer) -> None:
    await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
    )
    ada.changes()

    with pytest.raises(IdempotencyConflictError):
        await payments.top_up(
            ada.services,
            ada.account_id,
            credits=60 * MICRO,
            method=None,
            payment_token="tok_visa",
            idem=IdempotencyKey.for_request("user:1", "k1", "topUp", {"credits": 60 * MICRO}),
        )

    assert await Transaction.all().count() == 1
    assert len(ada.gateway.calls) == 1
    assert ada.changes() == []


async def test_a_declined_charge_fails_the_payment_and_grants_nothing(ada: Customer) -> None:
    ada.gateway.declines.append("Your card was declined.")

    txn = await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
    )

    assert (txn.status, txn.failure_reason) == (TransactionStatus.FAILED, "Your card was declined.")
    await nothing_was_paid(ada)


async def test_an_unanswered_charge_stays_pending_then_a_charge_again_pays_once(ada: Customer) -> None:
    ada.services.gateway = unreachable = UnreachableGateway()

    txn = await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
    )

    assert txn.status == TransactionStatus.PENDING
    assert (await Transaction.get(id=txn.id)).status == TransactionStatus.PENDING
    await nothing_was_paid(ada)

    ada.services.gateway = ada.gateway
    paid = await payments.charge_pending(ada.services, txn)

    assert unreachable.calls == ada.gateway.calls == [f"creditline-transaction-{txn.id}"]  # the same request
    assert paid.status == TransactionStatus.SUCCEEDED
    assert await ada.balance() == Balance(free=100 * MICRO, paid=50 * MICRO, held=0)


async def test_a_resend_while_the_first_call_is_charging_is_unavailable(ada: Customer) -> None:
    ada.services.gateway = UnreachableGateway()
    await payments.top_up(
        ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
    )
    ada.services.settings = replace(ada.services.settings, replay_wait_seconds=0)

    with pytest.raises(PaymentUnavailableError, match="still waiting for the payment's outcome"):
        await payments.top_up(
            ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_visa", idem=key()
        )

    assert await Transaction.all().count() == 1
    await nothing_was_paid(ada)


async def test_an_unknown_card_token_is_refused_before_anything_is_written(ada: Customer) -> None:
    with pytest.raises(InvalidPaymentTokenError, match="Unknown sandbox token 'tok_nope'"):
        await payments.top_up(
            ada.services, ada.account_id, credits=50 * MICRO, method=None, payment_token="tok_nope", idem=key()
        )
    with pytest.raises(InvalidPaymentTokenError):
        await payments.save_card(ada.services, ada.account_id, "tok_nope")

    assert await Transaction.all().count() == 0
    assert await PaymentMethod.all().count() == 0
    assert ada.gateway.calls == []
    await nothing_was_paid(ada)


async def test_removing_the_default_card_makes_the_oldest_other_one_the_default(ada: Customer) -> None:
    visa = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    mastercard = await payments.save_card(ada.services, ada.account_id, "tok_mastercard")

    removed = await payments.remove_card(ada.services, ada.account_id, visa.id)

    assert removed is not None
    assert removed.removed_at == ada.services.clock.now()
    assert (await PaymentMethod.get(id=mastercard.id)).is_default
    assert await payments.remove_card(ada.services, ada.account_id, visa.id) is None  # gone already
