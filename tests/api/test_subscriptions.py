"""Subscriptions on the sandbox gateway: subscribe, renew at period end, retry and cancel, change plans."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing.payments import subscription_billing
from billing.reconcile import renew_subscriptions
from creditline.app import create_app
from creditline.settings import Settings
from models import organizations, subscriptions
from models.plans import PlanCatalog
from models.tables import CreditLot, Invoice, MemberRole, Subscription, Transaction
from resolvers.mutations.payments import PAYING_NEEDS_ROLE
from tests.support.backends import T0
from tests.support.helpers import Api, ScriptedGateway, gid
from tests.support.subscriptions import (
    ADD_CARD,
    CANCEL,
    CHANGE_PLAN,
    CHANGE_RESULT,
    RESUME,
    SUBSCRIBE,
    subscribe_input,
)

ACCOUNT = """{ me { credit { balance { total paid }
  subscription { id status planId currentPeriodEnd cancelAtPeriodEnd statusReason nextAttemptAt }
  transactions(first: 20) { edges { node { type status credits amount { amount } failureReason } } }
  lots(first: 20) { edges { node { kind amount expiresAt } } } } } }"""

PRO_PERIOD_END = "2026-02-15T12:00:00+00:00"


async def customer(api: Api, token: str = "tok_visa", email: str = "ada@example.com") -> str:
    _, user = await api.user(email, bonus=0)
    await api.data(ADD_CARD, {"token": token}, user)
    return user


async def account(api: Api, token: str) -> Any:
    return (await api.data(ACCOUNT, token=token))["me"]["credit"]


async def counts() -> tuple[int, int, int, int]:
    return (
        await Subscription.all().count(),
        await Transaction.all().count(),
        await CreditLot.all().count(),
        await Invoice.all().count(),
    )


async def test_subscribing_charges_the_first_period_and_grants_its_credit(api: Api) -> None:
    user = await customer(api)

    data = await api.data(SUBSCRIBE, subscribe_input(), user)

    assert data["subscribe"] == {
        "__typename": "SubscribeSuccess",
        "subscription": {
            "id": gid("Subscription", 1),
            "status": "ACTIVE",
            "planId": "pro-monthly",
            "nextPlanId": None,
            "plan": {"id": "pro-monthly", "name": "Pro"},
            "nextPlan": None,
            "currentPeriodStart": "2026-01-15T12:00:00+00:00",
            "currentPeriodEnd": PRO_PERIOD_END,
            "cancelAtPeriodEnd": False,
            "canceledAt": None,
            "statusReason": None,
            "nextAttemptAt": None,
            "paymentMethod": {"last4": "4242"},
        },
        "transaction": {
            "type": "SUBSCRIPTION",
            "status": "SUCCEEDED",
            "credits": "6000",
            "amount": {"amount": 5000, "currency": "USD"},
            "invoice": {
                "number": "INV-000001",
                "lines": [{"description": "Pro plan, 2026-01-15 to 2026-02-15: 6000 credits"}],
            },
        },
    }
    credit = await account(api, user)
    assert credit["balance"] == {"total": "6000", "paid": "6000"}
    assert credit["lots"]["edges"] == [{"node": {"kind": "PAID", "amount": "6000", "expiresAt": None}}]
    assert await api.data(SUBSCRIBE, subscribe_input(), user) == data  # a replay changes nothing
    assert await counts() == (1, 1, 1, 1)
    conflict = await api.data(SUBSCRIBE, subscribe_input("starter-monthly"), user)
    assert conflict["subscribe"]["__typename"] == "IdempotencyConflict"
    again = await api.data(SUBSCRIBE, subscribe_input("starter-monthly", key="s2"), user)
    assert again["subscribe"] == {
        "__typename": "AlreadySubscribed",
        "message": "The account already has a subscription: change its plan instead",
        "subscription": {"id": gid("Subscription", 1), "status": "ACTIVE"},
    }
    assert await counts() == (1, 1, 1, 1)
    node = await api.data(
        f'{{ node(id: "{gid("Subscription", 1)}") {{ ... on Subscription {{ status }} }} }}', token=user
    )
    assert node == {"node": {"status": "ACTIVE"}}
    _, stranger = await api.user("mallory@example.com", bonus=0)
    hidden = await api.data(f'{{ node(id: "{gid("Subscription", 1)}") {{ id }} }}', token=stranger)
    assert hidden == {"node": None}


async def test_the_sweep_renews_at_period_end_once_and_grants_the_next_period(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)
    services = api.app.state.services

    api.clock.advance(timedelta(days=30, hours=23))  # Feb 14, 11:00: not yet due
    assert await renew_subscriptions(services) == 0
    api.clock.advance(timedelta(hours=1))  # Feb 15, 12:00: the period ends
    assert await renew_subscriptions(services) == 1
    assert await renew_subscriptions(services) == 0

    credit = await account(api, user)
    assert credit["balance"] == {"total": "12000", "paid": "12000"}
    assert credit["subscription"] == {
        "id": gid("Subscription", 1),
        "status": "ACTIVE",
        "planId": "pro-monthly",
        "currentPeriodEnd": "2026-03-15T12:00:00+00:00",
        "cancelAtPeriodEnd": False,
        "statusReason": None,
        "nextAttemptAt": None,
    }
    assert [e["node"]["status"] for e in credit["transactions"]["edges"]] == ["SUCCEEDED", "SUCCEEDED"]
    lines = [(i.number, i.lines) for i in await Invoice.all().order_by("number")]
    assert lines[1] == (
        2,
        '[{"description": "Pro plan, 2026-02-15 to 2026-03-15: 6000 credits", "quantity": "6000", "amount": 5000}]',
    )


async def test_concurrent_sweeps_charge_a_renewal_once(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)
    api.clock.advance(timedelta(days=31))
    services = api.app.state.services

    results = await asyncio.gather(*(renew_subscriptions(services) for _ in range(4)))

    assert sum(results) == 1
    assert (await account(api, user))["balance"]["total"] == "12000"
    assert await Transaction.filter(type="SUBSCRIPTION").count() == 2


async def test_yearly_plan_credit_expires_at_period_end(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input("pro-yearly"), user)
    await api.data(CANCEL, {"input": {}}, user)

    credit = await account(api, user)
    assert credit["lots"]["edges"] == [
        {"node": {"kind": "PAID", "amount": "75000", "expiresAt": "2027-01-15T12:00:00+00:00"}}
    ]
    api.clock.advance(timedelta(days=365))
    assert await renew_subscriptions(api.app.state.services) == 0
    credit = await account(api, user)
    assert credit["balance"] == {"total": "0", "paid": "0"}
    assert credit["subscription"]["status"] == "CANCELED"
    assert credit["subscription"]["statusReason"] == "Canceled at the end of the period"


async def test_cancel_at_period_end_can_be_resumed_and_otherwise_ends_the_subscription(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)

    canceled = await api.data(CANCEL, {"input": {}}, user)
    assert canceled["cancelSubscription"]["subscription"]["cancelAtPeriodEnd"] is True
    assert canceled["cancelSubscription"]["subscription"]["status"] == "ACTIVE"
    resumed = await api.data(RESUME, {"input": {}}, user)
    assert resumed["resumeSubscription"]["subscription"]["cancelAtPeriodEnd"] is False
    not_canceling = await api.data(RESUME, {"input": {}}, user)
    assert not_canceling["resumeSubscription"] == {
        "__typename": "SubscriptionNotChangeable",
        "message": "Only a subscription set to cancel at period end can be resumed",
        "subscription": {"status": "ACTIVE"},
    }
    await api.data(CANCEL, {"input": {"atPeriodEnd": True}}, user)

    api.clock.advance(timedelta(days=31))
    assert await renew_subscriptions(api.app.state.services) == 0

    credit = await account(api, user)
    assert credit["subscription"]["status"] == "CANCELED"
    assert credit["balance"]["total"] == "6000"  # the paid period's credit stays
    assert await Transaction.all().count() == 1
    gone = await api.data(RESUME, {"input": {}}, user)
    assert gone["resumeSubscription"] == {
        "__typename": "NotFound",
        "message": "The account has no active subscription",
    }


async def test_cancel_now_ends_it_at_once_and_a_new_subscription_may_start(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)

    data = await api.data(CANCEL, {"input": {"atPeriodEnd": False}}, user)

    subscription = data["cancelSubscription"]["subscription"]
    assert (subscription["status"], subscription["canceledAt"], subscription["statusReason"]) == (
        "CANCELED",
        "2026-01-15T12:00:00+00:00",
        "Canceled by the customer",
    )
    again = await api.data(CANCEL, {"input": {"atPeriodEnd": False}}, user)
    assert again["cancelSubscription"]["__typename"] == "NotFound"
    api.clock.advance(timedelta(days=40))
    assert await renew_subscriptions(api.app.state.services) == 0
    fresh = await api.data(SUBSCRIBE, subscribe_input("starter-monthly", key="s2"), user)
    assert fresh["subscribe"]["subscription"]["status"] == "ACTIVE"
    assert (await account(api, user))["balance"]["total"] == "7100"


async def test_a_failed_renewal_is_retried_after_1_3_5_days_then_canceled(api: Api) -> None:
    gateway = ScriptedGateway()
    api.app.state.services.gateway = gateway
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)
    services = api.app.state.services
    gateway.declines = ["Your card was declined."] * 4

    api.clock.advance(timedelta(days=31))  # Feb 15 12:00 -> renewal due
    assert await renew_subscriptions(services) == 1
    sub = (await account(api, user))["subscription"]
    assert (sub["status"], sub["nextAttemptAt"], sub["statusReason"]) == (
        "PAST_DUE",
        "2026-02-16T12:00:00+00:00",
        "The renewal payment failed: Your card was declined.",
    )
    assert await renew_subscriptions(services) == 0  # not before the retry date
    retries = []
    for day in (16, 18, 20):
        api.clock.freeze(T0.replace(month=2, day=day))
        assert await renew_subscriptions(services) == 1
        sub = (await account(api, user))["subscription"]
        retries.append((sub["status"], sub["nextAttemptAt"]))
    assert retries == [
        ("PAST_DUE", "2026-02-18T12:00:00+00:00"),
        ("PAST_DUE", "2026-02-20T12:00:00+00:00"),
        ("CANCELED", None),
    ]
    credit = await account(api, user)
    assert credit["subscription"]["statusReason"] == "Canceled after 4 failed payments: Your card was declined."
    assert credit["balance"]["total"] == "6000"
    assert [e["node"]["status"] for e in credit["transactions"]["edges"]] == ["FAILED"] * 4 + ["SUCCEEDED"]
    assert len(set(gateway.calls)) == 5  # each attempt its own idempotency key
    api.clock.advance(timedelta(days=30))
    assert await renew_subscriptions(services) == 0


async def test_a_retry_that_succeeds_makes_the_subscription_active_again(api: Api) -> None:
    gateway = ScriptedGateway()
    api.app.state.services.gateway = gateway
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)
    gateway.declines = ["Your card has insufficient funds."]
    services = api.app.state.services
    api.clock.advance(timedelta(days=31))
    await renew_subscriptions(services)

    api.clock.advance(timedelta(days=1))
    assert await renew_subscriptions(services) == 1

    credit = await account(api, user)
    assert credit["subscription"] == {
        "id": gid("Subscription", 1),
        "status": "ACTIVE",
        "planId": "pro-monthly",
        "currentPeriodEnd": "2026-03-15T12:00:00+00:00",
        "cancelAtPeriodEnd": False,
        "statusReason": None,
        "nextAttemptAt": None,
    }
    assert credit["balance"]["total"] == "12000"


async def test_a_declined_first_payment_leaves_no_subscription(api: Api) -> None:
    user = await customer(api, "tok_chargeDeclined")

    data = await api.data(SUBSCRIBE, subscribe_input(), user)

    assert data["subscribe"] == {
        "__typename": "PaymentDeclined",
        "message": "The payment failed: Your card was declined.",
        "reason": "Your card was declined.",
        "transaction": {"type": "SUBSCRIPTION", "status": "FAILED", "failureReason": "Your card was declined."},
    }
    credit = await account(api, user)
    assert (credit["subscription"], credit["balance"]["total"]) == (None, "0")
    assert await api.data(SUBSCRIBE, subscribe_input(), user) == data
    await api.data(ADD_CARD, {"token": "tok_visa"}, user)
    card = (await api.data("{ me { credit { paymentMethods { id last4 } } } }", token=user))["me"]["credit"]
    visa = next(m["id"] for m in card["paymentMethods"] if m["last4"] == "4242")
    retry = await api.data(SUBSCRIBE, subscribe_input(key="s2", paymentMethodId=visa), user)
    assert retry["subscribe"]["subscription"]["status"] == "ACTIVE"


async def test_change_plan_takes_effect_at_the_next_renewal(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)

    changed = await api.data(CHANGE_PLAN, {"input": {"planId": "starter-monthly"}}, user)
    sub = changed["changePlan"]["subscription"]
    assert (sub["planId"], sub["nextPlanId"], sub["nextPlan"]) == (
        "pro-monthly",
        "starter-monthly",
        {"id": "starter-monthly"},
    )
    undone = await api.data(CHANGE_PLAN, {"input": {"planId": "pro-monthly"}}, user)
    assert undone["changePlan"]["subscription"]["nextPlanId"] is None
    await api.data(CHANGE_PLAN, {"input": {"planId": "starter-monthly"}}, user)
    api.clock.advance(timedelta(days=31))
    assert await renew_subscriptions(api.app.state.services) == 1

    credit = await account(api, user)
    assert credit["subscription"]["planId"] == "starter-monthly"
    assert credit["balance"]["total"] == "7100"
    assert credit["transactions"]["edges"][0]["node"] == {
        "type": "SUBSCRIPTION",
        "status": "SUCCEEDED",
        "credits": "1100",
        "amount": {"amount": 1000},
        "failureReason": None,
    }


async def test_concurrent_subscribes_make_one_subscription(api: Api) -> None:
    user = await customer(api)

    results = await asyncio.gather(*(api.data(SUBSCRIBE, subscribe_input(key=f"race-{i}"), user) for i in range(5)))

    kinds = sorted(r["subscribe"]["__typename"] for r in results)
    assert kinds == ["AlreadySubscribed"] * 4 + ["SubscribeSuccess"]
    assert await counts() == (1, 1, 1, 1)


async def test_billing_members_subscribe_their_pool_and_plain_members_may_not(api: Api) -> None:
    owner_id, owner = await api.user("owner@acme.example", bonus=0)
    member_id, member = await api.user("member@acme.example", bonus=0)
    org = await organizations.create("Acme", owner_id, api.clock.now())
    await organizations.add_member(org.id, member_id, [MemberRole.MEMBER], api.clock.now())
    pool = (await organizations.enable_pool(org.id, api.clock.now())).id
    await api.data(
        'mutation($a: ID!) { addPaymentMethod(input: {accountId: $a, token: "tok_visa"}) { __typename } }',
        {"a": gid("CreditAccount", pool)},
        owner,
    )

    refused = await api.data(SUBSCRIBE, subscribe_input(accountId=gid("CreditAccount", pool)), member)
    assert refused["subscribe"] == {
        "__typename": "Forbidden",
        "message": PAYING_NEEDS_ROLE,
    }
    assert await Subscription.all().count() == 0
    done = await api.data(SUBSCRIBE, subscribe_input(accountId=gid("CreditAccount", pool)), owner)
    assert done["subscribe"]["subscription"]["status"] == "ACTIVE"


BAD_SUBSCRIBE = [
    ({"planId": "gold", "idempotencyKey": "k"}, "ValidationError", "planId"),
    ({"planId": "", "idempotencyKey": "k"}, "ValidationError", "planId"),
    ({"planId": "pro-monthly", "idempotencyKey": ""}, "ValidationError", "idempotencyKey"),
    ({"planId": "pro-monthly", "idempotencyKey": "k", "paymentMethodId": "bogus"}, "NotFound", None),
    ({"planId": "pro-monthly", "idempotencyKey": "k", "accountId": "bogus"}, "NotFound", None),
]


@pytest.mark.parametrize(("payload", "typename", "field_name"), BAD_SUBSCRIBE)
async def test_bad_subscribe_input_is_refused_and_changes_nothing(
    api: Api, payload: dict[str, Any], typename: str, field_name: str | None
) -> None:
    user = await customer(api)
    before = (await account(api, user), await counts())

    data = await api.data(SUBSCRIBE, {"input": payload}, user)

    assert data["subscribe"]["__typename"] == typename
    if field_name is not None:
        assert data["subscribe"]["field"] == field_name
    assert (await account(api, user), await counts()) == before


async def test_subscribe_refusals_name_the_problem(api: Api) -> None:
    _, no_card = await api.user("nocard@example.com", bonus=0)
    user = await customer(api)
    _, other = await api.user("bob@example.com", bonus=0)
    bobs_card = (await api.data(ADD_CARD, {"token": "tok_mastercard"}, other))["addPaymentMethod"]["paymentMethod"]
    before = await counts()

    unknown = await api.data(SUBSCRIBE, subscribe_input("gold"), user)
    without_card = await api.data(SUBSCRIBE, subscribe_input(), no_card)
    someone_elses = await api.data(SUBSCRIBE, subscribe_input(paymentMethodId=bobs_card["id"]), user)
    bobs_account = await api.data(SUBSCRIBE, subscribe_input(accountId=gid("CreditAccount", 3)), user)

    assert unknown["subscribe"] == {
        "__typename": "ValidationError",
        "message": "Unknown plan 'gold': choose one of starter-monthly, pro-monthly, pro-yearly",
        "field": "planId",
    }
    assert without_card["subscribe"] == {
        "__typename": "ValidationError",
        "message": "The account has no saved card: add one or give paymentMethodId",
        "field": "paymentMethodId",
    }
    assert someone_elses["subscribe"] == {
        "__typename": "NotFound",
        "message": "Payment method not found on this account",
    }
    assert bobs_account["subscribe"] == {
        "__typename": "Forbidden",
        "message": PAYING_NEEDS_ROLE,
    }
    assert await counts() == before


async def test_change_refusals_name_the_problem_and_change_nothing(api: Api) -> None:
    user = await customer(api)
    none_yet = await api.data(CHANGE_PLAN, {"input": {"planId": "starter-monthly"}}, user)
    assert none_yet["changePlan"] == {"__typename": "NotFound", "message": "The account has no active subscription"}
    await api.data(SUBSCRIBE, subscribe_input(), user)
    before = (await account(api, user), await counts())

    unknown = await api.data(CHANGE_PLAN, {"input": {"planId": "gold"}}, user)
    other_account = await api.data(CANCEL, {"input": {"accountId": gid("CreditAccount", 99)}}, user)

    assert unknown["changePlan"]["__typename"] == "ValidationError"
    assert unknown["changePlan"]["field"] == "planId"
    assert other_account["cancelSubscription"] == {"__typename": "NotFound", "message": "Credit account not found"}
    assert (await account(api, user), await counts()) == before


async def test_plans_come_from_the_configured_file(api: Api, tmp_path: Path, settings: Settings) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(
        '[team]\nname = "Team"\nprice = 9900\ninterval = "month"\ncredits = "12000.5"\n'
        "credits_expire_at_period_end = true\n"
    )
    app = create_app(replace(settings, plans=str(plans)), clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post(
            "/graphql",
            json={
                "query": "{ plans { id name price { amount currency } interval creditsPerPeriod "
                "creditsExpireAtPeriodEnd subscribable } }"
            },
        )
    assert response.json() == {
        "data": {
            "plans": [
                {
                    "id": "team",
                    "name": "Team",
                    "price": {"amount": 9900, "currency": "USD"},
                    "interval": "MONTH",
                    "creditsPerPeriod": "12000.5",
                    "creditsExpireAtPeriodEnd": True,
                    "subscribable": True,
                }
            ]
        }
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[a]\nprice = 100\ninterval = 'MONTH'\n", "[a] needs credits"),
        ("[a]\nprice = -1\ninterval = 'MONTH'\ncredits = '5'\n", "[a] price must be a positive whole number"),
        ("[a]\nprice = 100\ninterval = 'WEEK'\ncredits = '5'\n", "[a] interval must be MONTH or YEAR"),
        ("[a]\nprice = 100\ninterval = 'YEAR'\ncredits = '0'\n", "[a] credits must be positive"),
        ("", "no plans"),
    ],
)
def test_a_malformed_plan_file_names_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        PlanCatalog.from_file(path)


def test_periods_end_on_the_same_day_or_the_last_day_of_a_shorter_month() -> None:
    monthly = PlanCatalog().plans["pro-monthly"]
    yearly = PlanCatalog().plans["pro-yearly"]
    jan31 = T0.replace(day=31)
    assert monthly.period_end(jan31, jan31) == T0.replace(month=2, day=28)
    assert monthly.period_end(T0.replace(month=2, day=28), jan31) == T0.replace(month=3, day=31)
    assert monthly.period_end(T0.replace(month=3, day=31), jan31) == T0.replace(month=4, day=30)
    assert monthly.period_end(T0.replace(month=12), T0) == T0.replace(year=2027, month=1)
    assert yearly.period_end(
        T0.replace(year=2028, month=2, day=29), T0.replace(year=2028, month=2, day=29)
    ) == T0.replace(year=2029, month=2, day=28)


async def test_renewals_are_written_in_batches_until_none_is_due(api: Api) -> None:
    for n in range(3):
        user = await customer(api, email=f"user{n}@example.com")
        await api.data(SUBSCRIBE, subscribe_input(), user)
    api.clock.advance(timedelta(days=31))
    services = api.app.state.services

    written = await subscriptions.due_payments(
        services.plans, subscription_billing(services), services.gateway.name, api.clock.now(), limit=2
    )

    assert len(written) == 3
    assert await Transaction.filter(status="PENDING").count() == 3


SET_CARD = (
    "mutation($input: SetSubscriptionPaymentMethodInput!) "
    f"{{ setSubscriptionPaymentMethod(input: $input) {{ {CHANGE_RESULT} }} }}"
)


async def test_renewals_charge_the_card_the_subscription_was_moved_to(api: Api) -> None:
    gateway = ScriptedGateway()
    api.app.state.services.gateway = gateway
    user = await customer(api)
    _, other = await api.user("bob@example.com", bonus=0)
    bobs = (await api.data(ADD_CARD, {"token": "tok_visa"}, other))["addPaymentMethod"]["paymentMethod"]["id"]
    await api.data(SUBSCRIBE, subscribe_input(), user)
    mastercard = (await api.data(ADD_CARD, {"token": "tok_mastercard"}, user))["addPaymentMethod"]["paymentMethod"]

    refused = await api.data(SET_CARD, {"input": {"paymentMethodId": bobs}}, user)
    moved = await api.data(SET_CARD, {"input": {"paymentMethodId": mastercard["id"]}}, user)

    assert refused["setSubscriptionPaymentMethod"] == {
        "__typename": "NotFound",
        "message": "Payment method not found on this account",
    }
    assert moved["setSubscriptionPaymentMethod"]["subscription"]["paymentMethod"] == {"last4": "4444"}
    api.clock.advance(timedelta(days=31))
    assert await renew_subscriptions(api.app.state.services) == 1
    renewal = await Transaction.filter(type="SUBSCRIPTION").order_by("-id").first()
    assert renewal is not None
    assert (renewal.card_reference, renewal.payment_method_id) == ("card_sandbox_tok_mastercard", 3)


REMOVE_CARD = """mutation($id: ID!) { removePaymentMethod(input: {paymentMethodId: $id}) {
  __typename ... on PaymentMethodsSuccess { paymentMethods { last4 } } ... on Error { message } } }"""


async def test_the_card_a_subscription_renews_on_cannot_be_removed_until_it_moves(api: Api) -> None:
    user = await customer(api)
    await api.data(SUBSCRIBE, subscribe_input(), user)
    mastercard = (await api.data(ADD_CARD, {"token": "tok_mastercard"}, user))["addPaymentMethod"]["paymentMethod"]
    before = (await account(api, user), await counts())

    refused = await api.data(REMOVE_CARD, {"id": gid("PaymentMethod", 1)}, user)

    assert refused["removePaymentMethod"] == {
        "__typename": "PaymentMethodInUse",
        "message": "The subscription renews on this card: move it to another card (setSubscriptionPaymentMethod)"
        " or cancel it first",
    }
    assert (await account(api, user), await counts()) == before
    await api.data(SET_CARD, {"input": {"paymentMethodId": mastercard["id"]}}, user)
    moved = await api.data(REMOVE_CARD, {"id": gid("PaymentMethod", 1)}, user)
    assert moved["removePaymentMethod"] == {
        "__typename": "PaymentMethodsSuccess",
        "paymentMethods": [{"last4": "4444"}],
    }
    await api.data(CANCEL, {"input": {"atPeriodEnd": False}}, user)
    last = await api.data(REMOVE_CARD, {"id": mastercard["id"]}, user)
    assert last["removePaymentMethod"] == {"__typename": "PaymentMethodsSuccess", "paymentMethods": []}
