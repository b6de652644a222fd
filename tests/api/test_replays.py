"""A replayed idempotency key answers what the first call answered: under concurrency, across a restart, and
for refusals too (a key is never evaluated again against newer state)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx

from creditline.app import create_app
from gateway.base import Card, Charge
from gateway.sandbox import SandboxGateway
from models.ledger import IdempotencyKey
from models.money import Price
from models.payments import start_top_up
from models.tables import (
    CreditAccount,
    CreditLot,
    Hold,
    IdempotencyRecord,
    Invoice,
    LedgerEntry,
    Refund,
    Subscription,
    Transaction,
    TransactionType,
    UsageEvent,
)
from tests.support.helpers import SPEND, Api, gid
from tests.support.payments import TOP_UP, top_up
from tests.support.refunds import REFUND, paid_customer, refund
from tests.support.subscriptions import ADD_CARD, CANCEL, SUBSCRIBE, subscribe_input

HOLD = """mutation($input: HoldCreditsInput!) { holdCredits(input: $input) {
  __typename ... on HoldCreditsSuccess { hold { id status amount } balance { total held available } }
  ... on InsufficientCredits { message available required } ... on Error { message } } }"""
CAPTURE = """mutation($input: CaptureHoldInput!) { captureHold(input: $input) {
  __typename
  ... on CaptureHoldSuccess { hold { id status captured } usageEvent { id credits } balance { total held available } }
  ... on HoldNotActive { message status }
  ... on InsufficientCredits { message available required }
  ... on ValidationError { message field }
  ... on Error { message } } }"""
RELEASE = """mutation($input: ReleaseHoldInput!) { releaseHold(input: $input) {
  __typename ... on ReleaseHoldSuccess { hold { id status } balance { total held available } }
  ... on HoldNotActive { message status } ... on Error { message } } }"""
GRANT = """mutation($input: GrantCreditsInput!) { grantCredits(input: $input) {
  __typename ... on GrantCreditsSuccess { lot { id amount } balance { total available } }
  ... on ValidationError { message field } ... on Error { message } } }"""
PAIRS = 20


async def place_holds(api: Api, user_id: int, service: str, count: int, credits: str = "1") -> list[str]:
    ids = []
    for n in range(count):
        placed = await api.data(
            HOLD,
            {
                "input": {
                    "userId": gid("User", user_id),
                    "agentId": "a",
                    "activity": "transcription",
                    "credits": credits,
                    "idempotencyKey": f"hold-{n}",
                }
            },
            service,
        )
        assert placed["holdCredits"]["__typename"] == "HoldCreditsSuccess", placed
        ids.append(placed["holdCredits"]["hold"]["id"])
    return ids


async def ledger_state(account_id: int) -> tuple[int, int, int, int, int]:
    account = await CreditAccount.get(id=account_id)
    return (
        account.balance,
        account.held,
        await LedgerEntry.filter(account_id=account_id).count(),
        await UsageEvent.filter(account_id=account_id).count(),
        await IdempotencyRecord.all().count(),
    )


async def test_concurrent_resends_of_capture_and_release_answer_what_the_first_answered(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=100)
    account = await CreditAccount.get(user_id=user_id)
    service = await api.service()
    holds = await place_holds(api, user_id, service, 2 * PAIRS)
    captures, releases = holds[:PAIRS], holds[PAIRS:]

    async def pair(query: str, hold_id: str, key: str, **extra: Any) -> list[Any]:
        request = {"input": {"holdId": hold_id, "idempotencyKey": key, **extra}}
        return list(await asyncio.gather(api.data(query, request, service), api.data(query, request, service)))

    captured = await asyncio.gather(*(pair(CAPTURE, h, f"capture-{n}", credits="0.5") for n, h in enumerate(captures)))
    released = await asyncio.gather(*(pair(RELEASE, h, f"release-{n}") for n, h in enumerate(releases)))

    for (first, resend), hold_id in zip(captured, captures, strict=True):
        assert first["captureHold"]["__typename"] == "CaptureHoldSuccess", first
        assert first["captureHold"]["hold"] == {"id": hold_id, "status": "CAPTURED", "captured": "0.5"}
        assert resend == first
    for (first, resend), hold_id in zip(released, releases, strict=True):
        assert first["releaseHold"]["__typename"] == "ReleaseHoldSuccess", first
        assert first["releaseHold"]["hold"] == {"id": hold_id, "status": "RELEASED"}
        assert resend == first
    # Each key moved credit once: 20 captures of 0.5, and nothing held any more.
    assert await ledger_state(account.id) == (90_000_000, 0, 1 + 2 * PAIRS + 2 * PAIRS, PAIRS, 4 * PAIRS)
    assert await Hold.filter(status="CAPTURED").count() == PAIRS
    assert await Hold.filter(status="RELEASED").count() == PAIRS


async def test_concurrent_resends_of_hold_and_grant_answer_what_the_first_answered(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=100)
    account = await CreditAccount.get(user_id=user_id)
    service, admin = await api.service(), await api.admin()

    def hold(n: int) -> dict[str, Any]:
        return {
            "input": {
                "userId": gid("User", user_id),
                "agentId": "a",
                "activity": "answer",
                "credits": "1",
                "idempotencyKey": f"hold-{n}",
            }
        }

    def grant(n: int) -> dict[str, Any]:
        target = gid("CreditAccount", account.id)
        return {"input": {"accountId": target, "credits": "2", "kind": "PAID", "idempotencyKey": f"grant-{n}"}}

    async def pair(query: str, request: dict[str, Any], token: str) -> list[Any]:
        return list(await asyncio.gather(api.data(query, request, token), api.data(query, request, token)))

    held = await asyncio.gather(*(pair(HOLD, hold(n), service) for n in range(PAIRS)))
    granted = await asyncio.gather(*(pair(GRANT, grant(n), admin) for n in range(PAIRS)))

    assert all(first["holdCredits"]["__typename"] == "HoldCreditsSuccess" and resend == first for first, resend in held)
    assert all(
        first["grantCredits"]["__typename"] == "GrantCreditsSuccess" and resend == first for first, resend in granted
    )
    assert len({first["holdCredits"]["hold"]["id"] for first, _ in held}) == PAIRS
    assert await Hold.all().count() == PAIRS
    # One hold of 1 and one grant of 2 per key.
    assert await ledger_state(account.id) == (140_000_000, 20_000_000, 1 + 2 * PAIRS, 0, 2 * PAIRS)


async def test_a_refused_capture_is_stored_and_replayed_as_such(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    account = await CreditAccount.get(user_id=user_id)
    service = await api.service()
    [hold_id] = await place_holds(api, user_id, service, 1, credits="2")
    over = {"input": {"holdId": hold_id, "idempotencyKey": "too-much", "credits": "3"}}
    release = {"input": {"holdId": hold_id, "idempotencyKey": "release"}}
    late = {"input": {"holdId": hold_id, "idempotencyKey": "late"}}

    refused = await api.data(CAPTURE, over, service)
    assert refused["captureHold"] == {
        "__typename": "ValidationError",
        "message": "credits is more than the hold set aside",
        "field": "credits",
    }
    assert (await api.data(RELEASE, release, service))["releaseHold"]["__typename"] == "ReleaseHoldSuccess"
    not_active = await api.data(CAPTURE, late, service)
    assert not_active["captureHold"] == {
        "__typename": "HoldNotActive",
        "message": "The hold is released, not active",
        "status": "RELEASED",
    }
    before = await ledger_state(account.id)

    # Replays answer the first answer, not what the hold's state would give now (HoldNotActive).
    assert await api.data(CAPTURE, over, service) == refused
    assert await api.data(CAPTURE, late, service) == not_active
    assert await ledger_state(account.id) == before


async def test_a_refused_spend_replayed_after_credit_was_added_stays_refused(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=1)
    account = await CreditAccount.get(user_id=user_id)
    service, admin = await api.service(), await api.admin()
    spend = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "5",
            "idempotencyKey": "big-spend",
        }
    }
    refused = await api.data(SPEND, spend, service)
    assert refused["spendCredits"] == {
        "__typename": "InsufficientCredits",
        "message": "Not enough credit available",
        "available": "1",
        "required": "5",
    }
    grant = {
        "input": {"accountId": gid("CreditAccount", account.id), "credits": "10", "kind": "PAID", "idempotencyKey": "g"}
    }
    assert (await api.data(GRANT, grant, admin))["grantCredits"]["__typename"] == "GrantCreditsSuccess"
    before = await ledger_state(account.id)

    assert await api.data(SPEND, spend, service) == refused
    assert await ledger_state(account.id) == before


async def test_a_refused_grant_is_replayed_as_refused_after_the_balance_fell(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=0)
    account = await CreditAccount.get(user_id=user_id)
    service, admin = await api.service(), await api.admin()
    target = gid("CreditAccount", account.id)

    def grant(credits: str, key: str) -> dict[str, Any]:
        return {"input": {"accountId": target, "credits": credits, "kind": "PAID", "idempotencyKey": key}}

    assert (await api.data(GRANT, grant("999999999999", "most"), admin))["grantCredits"]["__typename"] == (
        "GrantCreditsSuccess"
    )
    refused = await api.data(GRANT, grant("2", "over"), admin)
    assert refused["grantCredits"] == {
        "__typename": "ValidationError",
        "message": "This grant would take the balance over the maximum an account may hold",
        "field": "credits",
    }
    spend = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "5",
            "idempotencyKey": "s",
        }
    }
    assert (await api.data(SPEND, spend, service))["spendCredits"]["__typename"] == "SpendCreditsSuccess"
    before = await ledger_state(account.id)

    assert await api.data(GRANT, grant("2", "over"), admin) == refused  # it would fit now: still refused
    assert await ledger_state(account.id) == before


async def test_a_replay_after_a_restart_answers_the_same(api: Api) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    account = await CreditAccount.get(user_id=user_id)
    service = await api.service()
    [hold_id] = await place_holds(api, user_id, service, 1, credits="2")
    capture = {"input": {"holdId": hold_id, "idempotencyKey": "capture", "credits": "1.5"}}
    spend = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "a",
            "activity": "answer",
            "credits": "50",
            "idempotencyKey": "s",
        }
    }
    _, user = await api.user("bob@example.com", bonus=0)
    declined = top_up("20", "declined", paymentToken="tok_chargeDeclined")
    first_capture = await api.data(CAPTURE, capture, service)
    first_spend = await api.data(SPEND, spend, service)
    first_top_up = await api.data(TOP_UP, declined, user)
    assert first_capture["captureHold"]["__typename"] == "CaptureHoldSuccess"
    assert first_spend["spendCredits"]["__typename"] == "InsufficientCredits"
    assert first_top_up == DECLINED
    before = await ledger_state(account.id), await payment_counts()

    # A new application instance (a restarted server) on the same database.
    restarted = create_app(api.settings, clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=restarted), base_url="http://test") as client:
        again = Api(client, restarted, api.clock, api.settings)
        assert await again.data(CAPTURE, capture, service) == first_capture
        assert await again.data(SPEND, spend, service) == first_spend
        assert await again.data(TOP_UP, declined, user) == first_top_up
    assert (await ledger_state(account.id), await payment_counts()) == before


# ------------------------------------------------------------------------------ payments: topUp, subscribe


class GatedGateway(SandboxGateway):
    """The sandbox, except that a charge waits until the test opens the gate: a first call that is still
    charging when its resend arrives. Counts charges and saved cards."""

    def __init__(self) -> None:
        self.charging = asyncio.Event()
        self.gate = asyncio.Event()
        self.second_card = asyncio.Event()
        self.charges: list[str] = []
        self.cards_saved = 0

    async def save_card(self, token: str, *, customer: str | None = None) -> Card:
        self.cards_saved += 1
        if self.cards_saved == 2:
            self.second_card.set()
        return await super().save_card(token, customer=customer)

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        card: str,
        idempotency_key: str,
        description: str,
        customer: str | None = None,
        off_session: bool = False,
    ) -> Charge:
        self.charges.append(idempotency_key)
        self.charging.set()
        await asyncio.wait_for(self.gate.wait(), 10)
        return await super().charge(
            amount=amount, currency=currency, card=card, idempotency_key=idempotency_key, description=description
        )


async def payment_counts() -> tuple[int, int, int]:
    return await Transaction.all().count(), await CreditLot.filter(kind="PAID").count(), await Invoice.all().count()


DECLINED = {
    "topUp": {
        "__typename": "PaymentDeclined",
        "message": "The payment failed: Your card was declined.",
        "reason": "Your card was declined.",
        "transaction": {"status": "FAILED", "failureReason": "Your card was declined.", "invoice": None},
    }
}


async def test_a_resend_of_a_declined_top_up_waits_for_the_first_call_and_answers_declined(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    api.app.state.services.gateway = gateway = GatedGateway()
    request = top_up("20", "declined", paymentToken="tok_chargeDeclined")

    first = asyncio.create_task(api.data(TOP_UP, request, user))
    await asyncio.wait_for(gateway.charging.wait(), 5)  # the PENDING payment is written, its charge under way
    resend = asyncio.create_task(api.data(TOP_UP, request, user))
    await asyncio.wait_for(gateway.second_card.wait(), 5)  # the resend is past its checks: it finds the payment next
    await asyncio.sleep(0.2)
    assert not resend.done()  # it waits for the first call's outcome instead of answering PENDING
    gateway.gate.set()

    assert await first == DECLINED
    assert await resend == DECLINED
    assert gateway.charges == ["creditline-transaction-1"]
    assert await payment_counts() == (1, 0, 0)


async def test_concurrent_resends_of_declined_top_ups_all_answer_declined(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    requests = [top_up("20", f"declined-{n}", paymentToken="tok_chargeDeclined") for n in range(10)]

    pairs = await asyncio.gather(
        *(asyncio.gather(api.data(TOP_UP, r, user), api.data(TOP_UP, r, user)) for r in requests)
    )

    assert [list(pair) for pair in pairs] == [[DECLINED, DECLINED]] * 10
    assert await payment_counts() == (10, 0, 0)


async def test_a_resend_whose_first_call_is_still_charging_after_the_bound_is_told_to_send_again(
    api: Api,
) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    app = create_app(
        replace(api.settings, replay_wait_seconds=1), clock=api.clock, manage_database=False, run_jobs=False
    )
    app.state.services.gateway = gateway = GatedGateway()
    request = top_up("20", "slow", paymentToken="tok_chargeDeclined")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        slow = Api(client, app, api.clock, api.settings)
        first = asyncio.create_task(slow.data(TOP_UP, request, user))
        await asyncio.wait_for(gateway.charging.wait(), 5)

        waited = await asyncio.wait_for(slow.data(TOP_UP, request, user), 5)

        assert waited == {
            "topUp": {
                "__typename": "PaymentUnavailable",
                "message": "The first request with this idempotencyKey is still waiting for the payment's outcome:"
                " send the same request again to get its answer",
            }
        }
        assert not first.done()
        gateway.gate.set()
        assert await first == DECLINED
        assert await slow.data(TOP_UP, request, user) == DECLINED
    assert gateway.charges == ["creditline-transaction-1"]
    assert await payment_counts() == (1, 0, 0)


async def test_a_resend_of_a_payment_left_pending_long_ago_answers_pending_at_once(api: Api) -> None:
    user_id, user = await api.user("ada@example.com", bonus=0)
    account = await CreditAccount.get(user_id=user_id)
    request = top_up("20", "lost", paymentToken="tok_visa")
    # The first call wrote the payment and its charge went unanswered (or its process died): PENDING.
    await start_top_up(
        account.id,
        credits=20_000_000,
        price=Price("USD", 100),
        gateway="sandbox",
        payment_method_id=None,
        card_reference="card_sandbox_tok_visa",
        kind=TransactionType.TOP_UP,
        idem=IdempotencyKey.for_request(
            f"user:{user_id}",
            "lost",
            "topUp",
            {"account": account.id, "credits": 20_000_000, "method": None, "token": "tok_visa"},
        ),
        now=api.clock.now(),
    )
    api.clock.advance(timedelta(minutes=2))

    answer = await asyncio.wait_for(api.data(TOP_UP, request, user), 2)

    assert answer["topUp"]["__typename"] == "TopUpSuccess"
    assert answer["topUp"]["transaction"]["status"] == "PENDING"  # the reconcile job finishes it
    assert await payment_counts() == (1, 0, 0)


async def test_a_resend_of_a_declined_subscribe_waits_and_answers_declined(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": "tok_chargeDeclined"}, user)
    api.app.state.services.gateway = gateway = GatedGateway()
    request = subscribe_input(key="declined")

    first = asyncio.create_task(api.data(SUBSCRIBE, request, user))
    await asyncio.wait_for(gateway.charging.wait(), 5)
    resend = asyncio.create_task(api.data(SUBSCRIBE, request, user))
    await asyncio.sleep(0.3)
    assert not resend.done()
    gateway.gate.set()

    declined = {
        "subscribe": {
            "__typename": "PaymentDeclined",
            "message": "The payment failed: Your card was declined.",
            "reason": "Your card was declined.",
            "transaction": {"type": "SUBSCRIPTION", "status": "FAILED", "failureReason": "Your card was declined."},
        }
    }
    assert await first == declined
    assert await resend == declined
    assert len(gateway.charges) == 1
    assert [s.status for s in await Subscription.all()] == ["CANCELED"]


# ------------------------------------------------------------------- refusals kept in their own tables


async def test_a_refused_refund_is_replayed_as_refused_after_the_payment_changed(api: Api) -> None:
    _, _, txn = await paid_customer(api, credits="100")
    admin = await api.admin()
    too_much = refund(txn, "too-much", amount=150)

    refused = await api.data(REFUND, too_much, admin)
    assert refused["refundPayment"] == {
        "__typename": "ValidationError",
        "message": "At most 100 (minor units) of this payment can be refunded",
        "field": "amount",
    }
    assert (await api.data(REFUND, refund(txn, "all"), admin))["refundPayment"]["__typename"] == (
        "RefundPaymentSuccess"
    )
    before = (await Refund.all().count(), await LedgerEntry.all().count())

    # Evaluated now it would be "refunded in full"; the replay answers what the first call answered.
    assert await api.data(REFUND, too_much, admin) == refused
    assert (await Refund.all().count(), await LedgerEntry.all().count()) == before


async def test_already_subscribed_is_replayed_as_such_after_that_subscription_ended(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    await api.data(ADD_CARD, {"token": "tok_visa"}, user)
    first = await api.data(SUBSCRIBE, subscribe_input(key="s1"), user)
    assert first["subscribe"]["__typename"] == "SubscribeSuccess"
    second = subscribe_input(plan="starter-monthly", key="s2")

    refused = await api.data(SUBSCRIBE, second, user)
    assert refused["subscribe"] == {
        "__typename": "AlreadySubscribed",
        "message": "The account already has a subscription: change its plan instead",
        "subscription": {"id": first["subscribe"]["subscription"]["id"], "status": "ACTIVE"},
    }
    canceled = await api.data(CANCEL, {"input": {"atPeriodEnd": False}}, user)
    assert canceled["cancelSubscription"]["subscription"]["status"] == "CANCELED"
    before = await payment_counts()

    again = await api.data(SUBSCRIBE, second, user)  # not a new subscription: the first answer

    assert again["subscribe"] == {
        "__typename": "AlreadySubscribed",
        "message": "The account already has a subscription: change its plan instead",
        "subscription": {"id": first["subscribe"]["subscription"]["id"], "status": "CANCELED"},
    }
    assert await payment_counts() == before
    assert await Subscription.all().count() == 1
