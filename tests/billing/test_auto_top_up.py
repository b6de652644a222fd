"""billing.auto_top_up without GraphQL or the worker: what a queued top-up costs, and charging it once."""

from __future__ import annotations

from billing import auto_top_up as billing_auto_top_up
from billing import payments
from models import ledger
from models.balance import Balance
from models.credits import MICRO
from models.ledger import auto_top_up
from models.tables import AutoTopUp, Invoice, Transaction, TransactionStatus, TransactionType
from tests.support.billing import Customer
from tests.support.helpers import ScriptedGateway


class HostedLike(ScriptedGateway):
    card_on_file = False


async def queued_top_up(ada: Customer) -> int:
    """Auto top-up of 100 below 50 on Ada's card, then a spend of 60 that leaves 40: the queued transaction."""
    card = await payments.save_card(ada.services, ada.account_id, "tok_visa")
    terms = billing_auto_top_up.terms(ada.services)
    assert terms is not None
    config = auto_top_up.Config(True, 50 * MICRO, 100 * MICRO, None, 1_000 * MICRO, card.id)
    assert await auto_top_up.configure(ada.account_id, config, terms=terms, now=ada.services.clock.now()) is None
    spent = await ledger.spend(
        ("user_id", 1),
        user_id=1,
        organization_id=None,
        agent_id="agent-1",
        activity="answer",
        credits=60 * MICRO,
        quantity=None,
        idem=ledger.IdempotencyKey.for_request("service:test", "s1", "spendCredits", {}),
        now=ada.services.clock.now(),
        auto_top_up=terms,
    )
    assert spent.queued_top_up is not None
    ada.changes()
    return spent.queued_top_up


def test_terms_are_the_settings_price_on_a_card_on_file_gateway(ada: Customer) -> None:
    assert billing_auto_top_up.terms(ada.services) == auto_top_up.Terms(payments.price(ada.services), "sandbox")
    ada.services.gateway = HostedLike()
    assert billing_auto_top_up.terms(ada.services) is None


async def test_a_queued_top_up_is_charged_once(ada: Customer) -> None:
    queued = await queued_top_up(ada)

    assert await billing_auto_top_up.charge(ada.services, queued) is True
    assert await billing_auto_top_up.charge(ada.services, queued) is False  # settled already

    txn = await Transaction.get(id=queued)
    assert (txn.type, txn.status, txn.credits) == (
        TransactionType.AUTO_TOP_UP,
        TransactionStatus.SUCCEEDED,
        100 * MICRO,
    )
    assert ada.gateway.calls == [f"creditline-transaction-{queued}"]
    assert await ada.balance() == Balance(free=40 * MICRO, paid=100 * MICRO, held=0)
    assert await Invoice.filter(transaction_id=queued).count() == 1
    assert await billing_auto_top_up.charge_due(ada.services) == 0


async def test_a_declined_top_up_grants_nothing_and_counts_the_decline(ada: Customer) -> None:
    queued = await queued_top_up(ada)
    ada.gateway.declines.append("Your card was declined.")

    assert await billing_auto_top_up.charge(ada.services, queued) is True

    txn = await Transaction.get(id=queued)
    assert (txn.status, txn.failure_reason) == (TransactionStatus.FAILED, "Your card was declined.")
    assert await ada.balance() == Balance(free=40 * MICRO, paid=0, held=0)
    assert await Invoice.all().count() == 0
    assert ada.changes() == []
    assert (await AutoTopUp.get(account_id=ada.account_id)).declines == 1
