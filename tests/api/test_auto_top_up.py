"""Auto top-up on the sandbox gateway (docs/rules.md, Auto top-up queueing): configuring it, the top-up a
spend queues, the worker that charges it, declines and their back-off, the monthly cap, access, and the card
it uses."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from billing import auto_top_up as billing_auto_top_up
from billing.payments import charge_pending
from billing.reconcile import reconcile_pending
from creditline import auto_top_up_worker
from creditline.app import create_app
from models import ledger, organizations
from models.credits import MICRO
from models.ledger import BalanceChange, auto_top_up
from models.money import Price
from models.sql import Sql
from models.tables import (
    AutoTopUp,
    CreditAccount,
    CreditKind,
    CreditLot,
    Invoice,
    LotSource,
    MemberRole,
    PaymentMethod,
    Transaction,
)
from resolvers.mutations.payments import PAYING_NEEDS_ROLE
from tests.support.backends import T0
from tests.support.helpers import SPEND, Api, ScriptedGateway, gid

FIELDS = """
fragment AutoTopUpFields on AutoTopUp {
  enabled status statusMessage threshold amount target monthlyCap toppedUpThisMonth declines disabledReason
  nextAttemptAt paymentMethod { id last4 } pendingTransaction { status }
}
"""
CONFIGURE = (
    """mutation($input: ConfigureAutoTopUpInput!) { configureAutoTopUp(input: $input) { __typename
  ... on ConfigureAutoTopUpSuccess { autoTopUp { ...AutoTopUpFields } }
  ... on ValidationError { message field }
  ... on Error { message } } }"""
    + FIELDS
)
MY_CREDIT = (
    """{ me { credit { balance { total free paid held available } autoTopUp { ...AutoTopUpFields }
  lots { edges { node { kind source amount } } }
  transactions { edges { node { type status credits amount { amount currency } failureReason
    invoice { number total { amount } } } } } } } }"""
    + FIELDS
)
ADD_CARD = """mutation($token: String!) { addPaymentMethod(input: {token: $token}) {
  ... on AddPaymentMethodSuccess { paymentMethod { id } } } }"""
REMOVE_CARD = """mutation($id: ID!) { removePaymentMethod(input: {paymentMethodId: $id}) {
  __typename ... on PaymentMethodsSuccess { paymentMethods { last4 } } ... on Error { message } } }"""
HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename ... on HoldCreditsSuccess { balance { available } } ... on Error { message } } }"""

USER = gid("User", 1)
VISA = gid("PaymentMethod", 1)
TERMS = auto_top_up.Terms(Price("USD", 100), "sandbox")


def settings_input(**given: Any) -> dict[str, Any]:
    return {"input": {"threshold": "50", "amount": "100", "monthlyCap": "1000", **given}}


def active(**overrides: Any) -> dict[str, Any]:
    """The autoTopUp of the usual configuration, waiting for the balance to go below the threshold."""
    return {
        "enabled": True,
        "status": "ACTIVE",
        "statusMessage": "Tops up 100 credits when the available balance goes below 50",
        "threshold": "50",
        "amount": "100",
        "target": None,
        "monthlyCap": "1000",
        "toppedUpThisMonth": "0",
        "declines": 0,
        "disabledReason": None,
        "nextAttemptAt": None,
        "paymentMethod": {"id": VISA, "last4": "4242"},
        "pendingTransaction": None,
    } | overrides


class Shop:
    """Ada (User 1) with 100 free credits and, unless told otherwise, a saved card; an agent spends for her."""

    def __init__(self, api: Api, ada: str, agent: str) -> None:
        self.api, self.ada, self.agent = api, ada, agent
        self.keys = 0

    async def configure(self, token: str | None = None, **given: Any) -> Any:
        data = await self.api.data(CONFIGURE, settings_input(**given), token or self.ada)
        return data["configureAutoTopUp"]

    async def spend(self, credits: str, *, wait: bool = True) -> Any:
        self.keys += 1
        data = await self.api.data(
            SPEND,
            {
                "input": {
                    "userId": USER,
                    "agentId": "agent-1",
                    "activity": "answer",
                    "credits": credits,
                    "idempotencyKey": f"spend-{self.keys}",
                }
            },
            self.agent,
        )
        if wait:
            await billing_auto_top_up.idle()
        return data["spendCredits"]

    async def credit(self) -> Any:
        return (await self.api.data(MY_CREDIT, token=self.ada))["me"]["credit"]

    async def state(self) -> tuple[Any, ...]:
        """All that a refused request must leave as it was."""
        return (
            await self.credit(),
            [
                (r.enabled, r.threshold, r.amount, r.target, r.monthly_cap, r.payment_method_id, r.declines)
                for r in await AutoTopUp.all().order_by("id")
            ],
            await Transaction.all().count(),
            [(m.id, m.removed_at) for m in await PaymentMethod.all().order_by("id")],
        )


async def make_shop(api: Api, card: str | None = "tok_visa") -> Shop:
    user_id, ada = await api.user("ada@example.com", bonus=100)
    assert gid("User", user_id) == USER
    shop = Shop(api, ada, await api.service())
    if card is not None:
        await api.data(ADD_CARD, {"token": card}, ada)
    return shop


def balance(total: str, free: str, paid: str, held: str = "0", available: str | None = None) -> dict[str, str]:
    return {"total": total, "free": free, "paid": paid, "held": held, "available": available or total}


def auto_top_up_row(status: str, credits: str, cents: int, invoice: str | None, reason: str | None = None) -> Any:
    return {
        "type": "AUTO_TOP_UP",
        "status": status,
        "credits": credits,
        "amount": {"amount": cents, "currency": "USD"},
        "failureReason": reason,
        "invoice": None if invoice is None else {"number": invoice, "total": {"amount": cents}},
    }


def transactions(credit: Any) -> list[Any]:
    return [edge["node"] for edge in credit["transactions"]["edges"]]


# ------------------------------------------------------------------------------------- the happy path


async def test_a_spend_below_the_threshold_queues_one_top_up_and_the_worker_grants_it(api: Api) -> None:
    shop = await make_shop(api)
    configured = await shop.configure()
    assert configured == {"__typename": "ConfigureAutoTopUpSuccess", "autoTopUp": active()}
    watcher = api.app.state.services.bus.subscribe(frozenset({1}))
    try:
        above = await shop.spend("40")
        assert above["balance"] == {"total": "60", "free": "60", "paid": "0", "held": "0", "available": "60"}
        assert await Transaction.all().count() == 0

        below = await shop.spend("20")  # available 40 < 50; the server charges it without waiting for a sweep

        assert below["balance"]["available"] == "40"  # the spend answers with its own committed balance
        credit = await shop.credit()
        assert credit["balance"] == balance("140", "40", "100")
        assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "100", 100, "INV-000001")]
        assert {"kind": "PAID", "source": "AUTO_TOP_UP", "amount": "100"} in [
            edge["node"] for edge in credit["lots"]["edges"]
        ]
        assert credit["autoTopUp"] == active(toppedUpThisMonth="100")
        events = [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
        assert [(e.reason, e.delta) for e in events if isinstance(e, BalanceChange)] == [
            ("SPEND", -40 * MICRO),
            ("SPEND", -20 * MICRO),
            ("AUTO_TOP_UP", 100 * MICRO),
        ]
    finally:
        watcher.close()
    assert (await AutoTopUp.get(account_id=1)).pending_transaction_id is None


async def test_a_top_up_to_a_target_buys_what_lifts_the_balance_there_in_whole_credits(api: Api) -> None:
    shop = await make_shop(api)
    configured = await shop.configure(amount=None, target="200")
    assert configured["autoTopUp"]["statusMessage"] == "Tops up to 200 credits when the available balance goes below 50"
    assert (configured["autoTopUp"]["amount"], configured["autoTopUp"]["target"]) == (None, "200")

    await shop.spend("60.5")  # available 39.5: 160.5 short of 200, bought as 161

    credit = await shop.credit()
    assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "161", 161, "INV-000001")]
    assert credit["balance"] == balance("200.5", "39.5", "161")


async def test_a_fixed_amount_is_bought_whatever_the_shortfall(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure(amount="10", threshold="95", monthlyCap="100")

    await shop.spend("90")  # available 10, far below 95: still 10 credits

    credit = await shop.credit()
    assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "10", 10, "INV-000001")]
    assert credit["balance"] == balance("20", "10", "10")


async def test_setting_it_up_below_the_threshold_tops_up_at_once(api: Api) -> None:
    shop = await make_shop(api)

    configured = await shop.configure(threshold="150")

    assert configured["autoTopUp"] == active(
        threshold="150",
        statusMessage="Tops up 100 credits when the available balance goes below 150",
        toppedUpThisMonth="100",
    )
    credit = await shop.credit()
    assert credit["balance"] == balance("200", "100", "100")
    assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "100", 100, "INV-000001")]
    again = await shop.configure(threshold="150")  # above the threshold now: nothing more
    assert again == configured
    assert await Transaction.all().count() == 1


async def test_a_hold_below_the_threshold_queues_a_top_up_too(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()
    hold_input = {"userId": USER, "agentId": "a", "activity": "answer", "credits": "70", "idempotencyKey": "h1"}

    held = await api.data(HOLD, {"input": hold_input}, shop.agent)
    await billing_auto_top_up.idle()

    assert held["holdCredits"] == {"__typename": "HoldCreditsSuccess", "balance": {"available": "30"}}
    credit = await shop.credit()
    assert credit["balance"] == balance("200", "100", "100", held="70", available="130")
    assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "100", 100, "INV-000001")]


# ------------------------------------------------------------------------------------- never two at once


async def spend_directly(credits: int, key: str, now: Any, terms: auto_top_up.Terms | None = TERMS) -> int | None:
    result = await ledger.spend(
        ("user_id", 1),
        user_id=1,
        organization_id=None,
        agent_id="agent-1",
        activity="answer",
        credits=credits,
        quantity=None,
        idem=ledger.IdempotencyKey.for_request("service:test", key, "spendCredits", {"key": key}),
        now=now,
        auto_top_up=terms,
    )
    return result.queued_top_up


async def test_one_top_up_in_flight_at_most_and_it_is_charged_once(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()
    services = api.app.state.services

    first = await spend_directly(60 * MICRO, "s1", api.clock.now())  # queued; nobody charges it yet
    second = await spend_directly(10 * MICRO, "s2", api.clock.now())  # still below, but one is in flight

    assert (first, second) == (1, None)
    pending = await shop.credit()
    assert pending["autoTopUp"]["status"] == "PENDING"
    assert pending["autoTopUp"]["pendingTransaction"] == {"status": "PENDING"}
    assert pending["autoTopUp"]["toppedUpThisMonth"] == "100"  # pending counts against the cap
    assert await reconcile_pending(services, older_than=timedelta(0)) == 0  # not the top-up reconciler's job
    charged = await asyncio.gather(*(billing_auto_top_up.charge(services, 1) for _ in range(3)))
    assert sorted(charged) == [False, False, True]
    assert await billing_auto_top_up.charge(services, 1) is False
    assert await auto_top_up_worker.run_due(services) == 0
    credit = await shop.credit()
    assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "100", 100, "INV-000001")]
    assert credit["balance"] == balance("130", "30", "100")


async def test_concurrent_spends_crossing_the_threshold_queue_one_top_up(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()

    results = await asyncio.gather(*(spend_directly(6 * MICRO, f"c{n}", api.clock.now()) for n in range(10)))

    assert sorted(results, key=lambda r: r or 0) == [None] * 9 + [1]
    assert await Transaction.all().count() == 1
    await billing_auto_top_up.charge(api.app.state.services, 1)
    assert (await shop.credit())["balance"] == balance("140", "40", "100")


async def test_concurrent_spends_over_http_queue_one_top_up(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()

    spent = await asyncio.gather(*(shop.spend("6", wait=False) for _ in range(10)))
    await billing_auto_top_up.idle()

    assert [s["__typename"] for s in spent] == ["SpendCreditsSuccess"] * 10
    credit = await shop.credit()
    assert transactions(credit) == [auto_top_up_row("SUCCEEDED", "100", 100, "INV-000001")]
    assert credit["balance"] == balance("140", "40", "100")


# ------------------------------------------------------------------------------------- crashes


async def test_the_sweep_charges_a_top_up_whose_worker_died_once_its_claim_runs_out(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()
    services = api.app.state.services
    services.gateway = gateway = ScriptedGateway()
    assert await spend_directly(60 * MICRO, "s1", api.clock.now()) == 1
    assert await auto_top_up.claim(1, api.clock.now())  # a worker took it, then its process died

    assert await auto_top_up_worker.run_due(services) == 0  # its claim still holds
    api.clock.advance(auto_top_up.CLAIM_LEASE)
    assert await auto_top_up_worker.run_due(services) == 1
    assert await auto_top_up_worker.run_due(services) == 0

    assert gateway.calls == ["creditline-transaction-1"]
    assert transactions(await shop.credit()) == [auto_top_up_row("SUCCEEDED", "100", 100, "INV-000001")]


async def test_a_crash_between_the_charge_and_the_settling_charges_nothing_twice(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()
    services = api.app.state.services
    services.gateway = gateway = ScriptedGateway()
    await spend_directly(60 * MICRO, "s1", api.clock.now())
    assert await auto_top_up.claim(1, api.clock.now())
    await charge_pending(services, await Transaction.get(id=1))  # charged and granted; the settling never ran
    api.clock.advance(auto_top_up.CLAIM_LEASE)

    assert await auto_top_up_worker.run_due(services) == 1

    assert gateway.calls == ["creditline-transaction-1"]
    credit = await shop.credit()
    assert credit["autoTopUp"] == active(toppedUpThisMonth="100")
    assert credit["balance"] == balance("140", "40", "100")


# ------------------------------------------------------------------------------------- declines


async def test_declines_back_off_and_the_third_in_a_row_switches_auto_top_up_off(api: Api) -> None:
    shop = await make_shop(api, card="tok_chargeDeclined")
    await shop.configure()
    declined = auto_top_up_row("FAILED", "100", 100, None, "Your card was declined.")
    card = {"id": VISA, "last4": "0002"}

    await shop.spend("60")

    credit = await shop.credit()
    assert credit["autoTopUp"] == active(
        status="RETRY_SCHEDULED",
        statusMessage="A payment was declined (1 in a row): auto top-up tries again after 2026-01-15T13:00:00+00:00",
        declines=1,
        nextAttemptAt="2026-01-15T13:00:00+00:00",
        paymentMethod=card,
    )
    assert transactions(credit) == [declined]
    await shop.spend("1")  # backing off: no new top-up yet
    assert await auto_top_up_worker.run_due(api.app.state.services) == 0
    assert await Transaction.all().count() == 1

    api.clock.advance(timedelta(hours=1))
    assert await auto_top_up_worker.run_due(api.app.state.services) == 1  # the sweep retries by itself
    second = (await shop.credit())["autoTopUp"]
    assert (second["declines"], second["nextAttemptAt"]) == (2, "2026-01-15T19:00:00+00:00")

    api.clock.advance(timedelta(hours=6))
    await shop.spend("1")  # a spend after the back-off tries again at once

    credit = await shop.credit()
    assert credit["autoTopUp"] == active(
        enabled=False,
        status="OFF",
        statusMessage="Switched off after 3 declined payments in a row: Your card was declined.",
        declines=3,
        disabledReason="Switched off after 3 declined payments in a row: Your card was declined.",
        paymentMethod=card,
    )
    assert transactions(credit) == [declined] * 3
    assert credit["balance"] == balance("38", "38", "0")
    assert await Invoice.all().count() == 0
    assert await CreditLot.filter(kind="PAID").count() == 0
    api.clock.advance(timedelta(days=1))
    await shop.spend("1")
    assert await auto_top_up_worker.run_due(api.app.state.services) == 0
    assert await Transaction.all().count() == 3

    visa = (await api.data(ADD_CARD, {"token": "tok_visa"}, shop.ada))["addPaymentMethod"]["paymentMethod"]["id"]
    enabled = await shop.configure(enabled=True, paymentMethodId=visa)  # below the threshold: charged at once

    assert enabled["autoTopUp"] == active(toppedUpThisMonth="100", paymentMethod={"id": visa, "last4": "4242"})
    assert (await shop.credit())["balance"] == balance("137", "37", "100")


async def test_a_success_after_a_decline_resets_the_count(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()
    services = api.app.state.services
    services.gateway = ScriptedGateway(["Your card was declined."])

    await shop.spend("60")
    assert (await shop.credit())["autoTopUp"]["declines"] == 1
    api.clock.advance(timedelta(hours=1))
    assert await auto_top_up_worker.run_due(services) == 1

    credit = await shop.credit()
    assert credit["autoTopUp"] == active(toppedUpThisMonth="100")
    assert [t["status"] for t in transactions(credit)] == ["SUCCEEDED", "FAILED"]


async def test_a_back_off_that_ran_out_above_the_threshold_queues_nothing(api: Api) -> None:
    shop = await make_shop(api, card="tok_chargeDeclined")
    await shop.configure()
    await shop.spend("60")
    await ledger.grant(
        1,
        credits=100 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=api.clock.now(),
    )
    api.clock.advance(timedelta(hours=1))

    assert await auto_top_up_worker.run_due(api.app.state.services) == 0

    row = await AutoTopUp.get(account_id=1)
    assert (row.declines, row.next_attempt_at, row.pending_transaction_id) == (1, None, None)
    assert (await shop.credit())["autoTopUp"]["status"] == "ACTIVE"
    assert await Transaction.all().count() == 1


# ------------------------------------------------------------------------------------- the monthly cap


async def test_the_monthly_cap_stops_top_ups_until_next_month(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure(monthlyCap="200")

    await shop.spend("60")  # 40 left: the first 100
    await shop.spend("100")  # 40 left: the second, 200 this month
    await shop.spend("130")  # 10 left: a third would make 300

    credit = await shop.credit()
    assert credit["balance"] == balance("10", "0", "10")
    assert [t["status"] for t in transactions(credit)] == ["SUCCEEDED", "SUCCEEDED"]
    assert credit["autoTopUp"] == active(
        status="CAP_REACHED",
        statusMessage="This month's cap is reached: 200 of 200 credits topped up, and the next top-up of 100"
        " would exceed it. Auto top-up resumes on 2026-02-01",
        monthlyCap="200",
        toppedUpThisMonth="200",
    )

    api.clock.freeze(T0.replace(month=2, day=1, hour=0))
    assert (await shop.credit())["autoTopUp"]["status"] == "ACTIVE"
    await shop.spend("1")

    credit = await shop.credit()
    assert credit["balance"] == balance("109", "0", "109")
    assert credit["autoTopUp"]["toppedUpThisMonth"] == "100"


async def test_declined_top_ups_do_not_count_against_the_cap(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure(monthlyCap="100")
    api.app.state.services.gateway = ScriptedGateway(["Your card was declined."])

    await shop.spend("60")
    api.clock.advance(timedelta(hours=1))
    assert await auto_top_up_worker.run_due(api.app.state.services) == 1

    credit = await shop.credit()
    assert [t["status"] for t in transactions(credit)] == ["SUCCEEDED", "FAILED"]
    assert credit["autoTopUp"]["toppedUpThisMonth"] == "100"


# ------------------------------------------------------------------------------------- configuring


async def test_omitted_fields_keep_their_values_and_switching_off_stops_top_ups(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()

    off = await api.data(CONFIGURE, {"input": {"enabled": False}}, shop.ada)
    assert off["configureAutoTopUp"]["autoTopUp"] == active(
        enabled=False, status="OFF", statusMessage="Auto top-up is switched off"
    )
    await shop.spend("60")
    assert await Transaction.all().count() == 0

    target = await api.data(CONFIGURE, {"input": {"target": "300", "enabled": True}}, shop.ada)

    assert target["configureAutoTopUp"]["autoTopUp"] == active(
        amount=None,
        target="300",
        statusMessage="Tops up to 300 credits when the available balance goes below 50",
        toppedUpThisMonth="260",
    )
    assert (await shop.credit())["balance"] == balance("300", "40", "260")


async def test_an_account_without_auto_top_up_shows_null(api: Api) -> None:
    shop = await make_shop(api)
    assert (await shop.credit())["autoTopUp"] is None


NO_CHANGE_CASES = [
    pytest.param({"threshold": None}, ("threshold is required to set up auto top-up", "threshold"), id="no-threshold"),
    pytest.param({"monthlyCap": None}, ("monthlyCap is required to set up auto top-up", "monthlyCap"), id="no-cap"),
    pytest.param({"amount": None}, ("Give exactly one of amount or target", None), id="neither-amount-nor-target"),
    pytest.param({"target": "200"}, ("Give exactly one of amount or target", None), id="amount-and-target"),
    pytest.param({"amount": "100.5"}, ("amount must be a whole number of credits", "amount"), id="fractional-amount"),
    pytest.param({"amount": "9"}, ("amount must be between 10 and 100000", "amount"), id="amount-below-minimum"),
    pytest.param({"amount": "100001"}, ("amount must be between 10 and 100000", "amount"), id="amount-above-maximum"),
    pytest.param({"amount": "-100"}, ("amount must be positive", "amount"), id="negative-amount"),
    pytest.param({"threshold": "0"}, ("threshold must be positive", "threshold"), id="zero-threshold"),
    pytest.param({"threshold": "-5"}, ("threshold must be positive", "threshold"), id="negative-threshold"),
    pytest.param(
        {"threshold": "0.5"}, ("threshold must be a whole number of credits", "threshold"), id="fractional-threshold"
    ),
    pytest.param(
        {"amount": None, "target": "50"}, ("target must be above threshold", "target"), id="target-at-threshold"
    ),
    pytest.param(
        {"amount": None, "target": "55"},
        ("target must be at least 10 above threshold (the smallest top-up)", "target"),
        id="target-too-close",
    ),
    pytest.param(
        {"amount": None, "target": "100001"}, ("target must be at most 100000", "target"), id="target-above-maximum"
    ),
    pytest.param(
        {"monthlyCap": "99"},
        ("monthlyCap must allow at least one top-up (100 credits)", "monthlyCap"),
        id="cap-below-one-top-up",
    ),
    pytest.param(
        {"amount": None, "target": "200", "monthlyCap": "149"},
        ("monthlyCap must allow at least one top-up (150 credits)", "monthlyCap"),
        id="cap-below-the-smallest-top-up-to-target",
    ),
    pytest.param(
        {"monthlyCap": "1000.25"}, ("monthlyCap must be a whole number of credits", "monthlyCap"), id="fractional-cap"
    ),
]


@pytest.mark.parametrize(("given", "expected"), NO_CHANGE_CASES)
async def test_bad_input_is_refused_and_changes_nothing(
    api: Api, given: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    shop = await make_shop(api)
    before = await shop.state()

    refused = await shop.configure(**given)

    assert refused == {"__typename": "ValidationError", "message": expected[0], "field": expected[1]}
    assert await shop.state() == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"target": "40"}, id="target-below-the-kept-threshold"),
        pytest.param({"amount": None, "target": "55"}, id="target-too-close-to-the-kept-threshold"),
        pytest.param({"monthlyCap": "50"}, id="cap-below-the-kept-amount"),
    ],
)
async def test_a_change_that_leaves_a_bad_configuration_is_refused_and_keeps_the_old_one(
    api: Api, change: dict[str, Any]
) -> None:
    shop = await make_shop(api)
    await shop.configure()
    before = await shop.state()

    refused = await api.data(CONFIGURE, {"input": change}, shop.ada)

    assert refused["configureAutoTopUp"]["__typename"] == "ValidationError"
    assert await shop.state() == before


async def test_a_card_that_is_not_the_accounts_is_not_found_and_changes_nothing(api: Api) -> None:
    shop = await make_shop(api)
    _, bob = await api.user("bob@example.com", bonus=0)
    bobs = (await api.data(ADD_CARD, {"token": "tok_visa"}, bob))["addPaymentMethod"]["paymentMethod"]["id"]
    before = await shop.state()

    for card in (bobs, gid("PaymentMethod", 999), "not-an-id"):
        refused = await shop.configure(paymentMethodId=card)
        assert refused == {"__typename": "NotFound", "message": "Payment method not found on this account"}
    assert await shop.state() == before


async def test_without_a_saved_card_it_asks_for_one_and_changes_nothing(api: Api) -> None:
    shop = await make_shop(api, card=None)
    before = await shop.state()

    refused = await shop.configure()

    assert refused == {
        "__typename": "ValidationError",
        "message": "Add a card first (addPaymentMethod), or give paymentMethodId",
        "field": "paymentMethodId",
    }
    assert await shop.state() == before


async def test_a_hosted_gateway_has_no_auto_top_up_and_spends_queue_none(api: Api) -> None:
    shop = await make_shop(api)
    await shop.configure()
    app = create_app(replace(api.settings, gateway="stripe"), clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        before = await shop.state()
        response = await client.post(
            "/graphql",
            json={"query": CONFIGURE, "variables": settings_input(threshold="60")},
            headers={"authorization": f"Bearer {shop.ada}"},
        )
        assert response.json()["data"]["configureAutoTopUp"] == {
            "__typename": "PaymentUnavailable",
            "message": "Auto top-up needs cards on file, which the stripe gateway does not keep",
        }
        assert await shop.state() == before
        spent = await client.post(
            "/graphql",
            json={
                "query": SPEND,
                "variables": {
                    "input": {
                        "userId": USER,
                        "agentId": "a",
                        "activity": "answer",
                        "credits": "60",
                        "idempotencyKey": "k",
                    }
                },
            },
            headers={"authorization": f"Bearer {shop.agent}"},
        )
        assert spent.json()["data"]["spendCredits"]["balance"]["available"] == "40"
    await billing_auto_top_up.idle()
    assert await Transaction.all().count() == 0


# ------------------------------------------------------------------------------------- who may


async def test_who_may_configure_auto_top_up(api: Api) -> None:
    now = api.clock.now()
    shop = await make_shop(api)
    owner_id, owner = await api.user("owner@example.com", bonus=0)
    billing_id, billing = await api.user("billing@example.com", bonus=0)
    member_id, member = await api.user("member@example.com", bonus=0)
    org = await organizations.create("Acme", owner_id, now)
    await organizations.add_member(org.id, billing_id, [MemberRole.BILLING], now)
    await organizations.add_member(org.id, member_id, [MemberRole.MEMBER], now)
    pool = await organizations.enable_pool(org.id, now)
    pool_id = gid("CreditAccount", pool.id)
    card = await api.data(
        'mutation($a: ID!) { addPaymentMethod(input: {accountId: $a, token: "tok_visa"}) {'
        " ... on AddPaymentMethodSuccess { paymentMethod { id } } } }",
        {"a": pool_id},
        billing,
    )
    pool_card = card["addPaymentMethod"]["paymentMethod"]["id"]
    admin = await api.admin()
    before = await shop.state()

    async def configure(token: str, **given: Any) -> Any:
        return await shop.configure(token, **given)

    forbidden = {"__typename": "Forbidden", "message": PAYING_NEEDS_ROLE}
    assert await configure(member, accountId=pool_id) == forbidden
    assert await configure(owner, accountId=gid("CreditAccount", 1)) == forbidden  # Ada's own account
    assert await configure(shop.agent, accountId=pool_id) == forbidden
    assert await configure(shop.agent) == {
        "__typename": "Forbidden",
        "message": "Give accountId: this token belongs to a service or an admin",
    }
    assert await configure(owner, accountId=gid("CreditAccount", 999)) == {
        "__typename": "NotFound",
        "message": "Credit account not found",
    }
    assert await configure(owner, accountId=pool_id, paymentMethodId=VISA) == {
        "__typename": "NotFound",
        "message": "Payment method not found on this account",
    }  # Ada's card does not pay for Acme's pool
    assert await shop.state() == before
    assert await AutoTopUp.all().count() == 0

    pool_card_view = {"id": pool_card, "last4": "4242"}
    by_billing = await configure(billing, accountId=pool_id)  # the pool is empty: charged at once
    assert by_billing["autoTopUp"] == active(paymentMethod=pool_card_view, toppedUpThisMonth="100")
    by_owner = await configure(owner, accountId=pool_id, threshold="60")
    assert by_owner["autoTopUp"]["threshold"] == "60"
    by_admin = await configure(admin, accountId=pool_id, threshold="70")
    assert by_admin["autoTopUp"]["threshold"] == "70"
    await pool.refresh_from_db()
    assert pool.balance == 100 * MICRO

    read = "query($id: ID!) { node(id: $id) { ... on CreditAccount { autoTopUp { threshold } } } }"
    assert (await api.data(read, {"id": pool_id}, billing))["node"] == {"autoTopUp": {"threshold": "70"}}
    assert (await api.data(read, {"id": pool_id}, member))["node"] is None
    assert (await api.data(read, {"id": pool_id}, shop.ada))["node"] is None


# ------------------------------------------------------------------------------------- the card it uses


async def test_the_card_auto_top_up_uses_cannot_be_removed_until_it_stops_using_it(api: Api) -> None:
    shop = await make_shop(api)
    mastercard = (await api.data(ADD_CARD, {"token": "tok_mastercard"}, shop.ada))["addPaymentMethod"]
    await shop.configure()
    before = await shop.state()

    refused = await api.data(REMOVE_CARD, {"id": VISA}, shop.ada)

    assert refused["removePaymentMethod"] == {
        "__typename": "PaymentMethodInUse",
        "message": "Auto top-up charges this card: give auto top-up another card or switch it off first",
    }
    assert await shop.state() == before
    other = await api.data(REMOVE_CARD, {"id": mastercard["paymentMethod"]["id"]}, shop.ada)
    assert other["removePaymentMethod"] == {
        "__typename": "PaymentMethodsSuccess",
        "paymentMethods": [{"last4": "4242"}],
    }

    await shop.configure(enabled=False)
    removed = await api.data(REMOVE_CARD, {"id": VISA}, shop.ada)
    assert removed["removePaymentMethod"] == {"__typename": "PaymentMethodsSuccess", "paymentMethods": []}
    before = await shop.state()
    again = await api.data(CONFIGURE, {"input": {"enabled": True}}, shop.ada)  # its card is gone
    assert again["configureAutoTopUp"] == {
        "__typename": "NotFound",
        "message": "Payment method not found on this account",
    }
    assert await shop.state() == before


# ------------------------------------------------------------------------------------- the spend's cost


class StatementLog:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        fetch, execute = Sql.fetch, Sql.execute

        async def logged_fetch(sql: Sql, text: str, *args: Any) -> list[dict[str, Any]]:
            self.statements.append(text)
            return await fetch(sql, text, *args)

        async def logged_execute(sql: Sql, text: str, *args: Any) -> int:
            self.statements.append(text)
            return await execute(sql, text, *args)

        monkeypatch.setattr(Sql, "fetch", logged_fetch)
        monkeypatch.setattr(Sql, "execute", logged_execute)

    async def count(self, key: str, credits: int, now: Any) -> int:
        self.statements.clear()
        await spend_directly(credits, key, now)
        return len(self.statements)


async def test_a_spend_costs_statements_only_when_it_queues_a_top_up(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    shop = await make_shop(api)
    log = StatementLog(monkeypatch)
    now = api.clock.now()

    without = await log.count("k1", MICRO, now)
    await shop.configure()
    above = await log.count("k2", MICRO, now)
    queueing = await log.count("k3", 50 * MICRO, now)
    in_flight = await log.count("k4", MICRO, now)

    assert (above, queueing, in_flight) == (without, without + 3, without)
    assert (await CreditAccount.get(id=1)).balance == 47 * MICRO
