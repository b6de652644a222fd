"""Top-ups on the sandbox gateway: transactions, PAID lots, invoices, saved cards, and billingConfig."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from billing.reconcile import reconcile_pending
from creditline.app import create_app
from creditline.settings import Settings
from models.ledger import BalanceChange, IdempotencyKey
from models.money import Price
from models.organizations import enable_pool
from models.payments import start_top_up
from models.tables import CreditAccount, CreditLot, Invoice, Membership, Organization, Transaction, TransactionType
from resolvers.mutations.payments import PAYING_NEEDS_ROLE
from tests.support.helpers import BALANCE, Api, gid
from tests.support.payments import ADD_CARD, CARDS, CHANGE, CONFIG, TOP_UP, top_up


async def snapshot(api: Api, token: str) -> tuple[Any, int, int, int]:
    balance = (await api.data(BALANCE, token=token))["me"]["credit"]["balance"]
    return (
        balance,
        await Transaction.all().count(),
        await CreditLot.filter(kind="PAID").count(),
        await Invoice.all().count(),
    )


async def test_a_top_up_with_a_card_token_grants_paid_credit_and_an_invoice(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=0)

    data = await api.data(TOP_UP, top_up("250", "t1", paymentToken="tok_visa"), token)

    assert data["topUp"] == {
        "__typename": "TopUpSuccess",
        "checkoutUrl": None,
        "transaction": {
            "id": gid("Transaction", 1),
            "type": "TOP_UP",
            "status": "SUCCEEDED",
            "credits": "250",
            "amount": {"amount": 250, "currency": "USD"},
            "failureReason": None,
            "invoice": {
                "number": "INV-000001",
                "status": "PAID",
                "total": {"amount": 250, "currency": "USD"},
                "lines": [{"description": "250 credits", "quantity": "250", "amount": {"amount": 250}}],
                "url": f"/invoices/{gid('Invoice', 1)}",
            },
        },
    }
    me = await api.data(BALANCE, token=token)
    assert me["me"]["credit"]["balance"] == {
        "total": "250",
        "free": "0",
        "paid": "250",
        "held": "0",
        "available": "250",
    }
    replay = await api.data(TOP_UP, top_up("250", "t1", paymentToken="tok_visa"), token)
    assert replay == data
    assert await CreditLot.filter(kind="PAID").count() == 1
    other = await api.data(TOP_UP, top_up("300", "t1", paymentToken="tok_visa"), token)
    assert other["topUp"]["__typename"] == "IdempotencyConflict"

    second = await api.data(TOP_UP, top_up("10", "t2", paymentToken="tok_mastercard"), token)
    assert second["topUp"]["transaction"]["invoice"]["number"] == "INV-000002"
    page = await api.client.get(f"/invoices/{gid('Invoice', 1)}", headers={"authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert "<h1>Invoice INV-000001</h1>" in page.text
    assert "<th class=num>USD 2.50</th>" in page.text
    _, stranger = await api.user("mallory@example.com", bonus=0)
    hidden = await api.client.get(f"/invoices/{gid('Invoice', 1)}", headers={"authorization": f"Bearer {stranger}"})
    assert (hidden.status_code, hidden.text) == (404, "Invoice not found")


async def test_a_signed_invoice_link_opens_without_a_token_until_it_expires(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("250", "t1", paymentToken="tok_visa"), token)
    await api.data(TOP_UP, top_up("20", "t2", paymentToken="tok_visa"), token)
    links = await api.data(
        "{ me { credit { invoices(first: 2) { edges { node { number signedUrl } } } } } }", token=token
    )
    [second, first] = [edge["node"] for edge in links["me"]["credit"]["invoices"]["edges"]]
    expires = int((api.clock.now() + timedelta(days=7)).timestamp())
    assert first["signedUrl"].startswith(f"/invoices/{gid('Invoice', 1)}?expires={expires}&signature=")

    page = await api.client.get(first["signedUrl"])
    assert page.status_code == 200
    assert "<h1>Invoice INV-000001</h1>" in page.text
    signature = first["signedUrl"].split("?")[1]
    other_invoice = await api.client.get(f"/invoices/{gid('Invoice', 2)}?{signature}")
    tampered = await api.client.get(first["signedUrl"].replace(f"expires={expires}", f"expires={expires + 1}"))
    unsigned = await api.client.get(first["signedUrl"].split("&")[0])
    refused = (404, "This invoice link is invalid or has expired")
    assert (other_invoice.status_code, other_invoice.text) == refused
    assert (tampered.status_code, tampered.text) == refused
    assert (unsigned.status_code, unsigned.text) == refused
    api.clock.advance(timedelta(days=7, seconds=1))
    expired = await api.client.get(first["signedUrl"])
    assert (expired.status_code, expired.text) == refused
    assert second["number"] == "INV-000002"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("tok_chargeDeclined", "Your card was declined."),
        ("tok_chargeDeclinedInsufficientFunds", "Your card has insufficient funds."),
        ("tok_expiredCard", "Your card has expired."),
    ],
)
async def test_a_declined_payment_leaves_a_failed_transaction_and_no_credit(api: Api, token: str, reason: str) -> None:
    _, user = await api.user("ada@example.com", bonus=0)

    data = await api.data(TOP_UP, top_up("50", "d1", paymentToken=token), user)

    assert data["topUp"] == {
        "__typename": "PaymentDeclined",
        "message": f"The payment failed: {reason}",
        "reason": reason,
        "transaction": {"status": "FAILED", "failureReason": reason, "invoice": None},
    }
    balance, transactions, paid_lots, invoices = await snapshot(api, user)
    assert (balance["total"], transactions, paid_lots, invoices) == ("0", 1, 0, 0)
    assert await api.data(TOP_UP, top_up("50", "d1", paymentToken=token), user) == data


async def test_saved_cards_pay_and_belong_to_their_account(api: Api) -> None:
    _, ada = await api.user("ada@example.com", bonus=0)
    _, bob = await api.user("bob@example.com", bonus=0)
    first = await api.data(ADD_CARD, {"token": "tok_mastercard"}, ada)
    assert first["addPaymentMethod"] == {
        "__typename": "AddPaymentMethodSuccess",
        "paymentMethod": {
            "id": gid("PaymentMethod", 1),
            "brand": "mastercard",
            "last4": "4444",
            "expMonth": 12,
            "expYear": 2034,
            "isDefault": True,
        },
    }
    second = await api.data(ADD_CARD, {"token": "tok_visa"}, ada)
    assert second["addPaymentMethod"]["paymentMethod"]["isDefault"] is False
    listed = await api.data("{ me { credit { paymentMethods { last4 isDefault } } } }", token=ada)
    assert listed["me"]["credit"]["paymentMethods"] == [
        {"last4": "4444", "isDefault": True},
        {"last4": "4242", "isDefault": False},
    ]

    paid = await api.data(TOP_UP, top_up("20", "s1", paymentMethodId=gid("PaymentMethod", 1)), ada)
    assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
    before = await snapshot(api, bob)
    stolen = await api.data(TOP_UP, top_up("20", "s2", paymentMethodId=gid("PaymentMethod", 1)), bob)
    assert stolen["topUp"] == {"__typename": "NotFound", "message": "Payment method not found on this account"}
    assert await snapshot(api, bob) == before
    unknown = await api.data(ADD_CARD, {"token": "4242424242424242"}, ada)
    assert unknown["addPaymentMethod"]["__typename"] == "ValidationError"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (top_up("9", "b", paymentToken="tok_visa"), ("credits must be between 10 and 100000", "credits")),
        (top_up("100001", "b", paymentToken="tok_visa"), ("credits must be between 10 and 100000", "credits")),
        (top_up("10.5", "b", paymentToken="tok_visa"), ("credits must be a whole number of credits", "credits")),
        (top_up("10", "b"), ("Give exactly one of paymentMethodId or paymentToken", None)),
        (
            top_up("10", "b", paymentToken="tok_visa", paymentMethodId=gid("PaymentMethod", 1)),
            ("Give exactly one of paymentMethodId or paymentToken", None),
        ),
        (
            top_up("10", "b", paymentToken="tok_nope"),
            (
                "Unknown sandbox token 'tok_nope': use one of tok_chargeDeclined, tok_chargeDeclinedInsufficientFunds,"
                " tok_expiredCard, tok_mastercard, tok_visa",
                "paymentToken",
            ),
        ),
        (top_up("10", "", paymentToken="tok_visa"), ("idempotencyKey must be 1 to 255 characters", "idempotencyKey")),
    ],
)
async def test_bad_top_up_input_is_refused_and_changes_nothing(
    api: Api, variables: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    before = await snapshot(api, user)

    data = await api.data(TOP_UP, variables, user)

    assert data["topUp"] == {"__typename": "ValidationError", "message": expected[0], "field": expected[1]}
    assert await snapshot(api, user) == before


async def test_billing_config_shows_the_payment_method_tab_only_on_card_on_file_gateways(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    assert await api.data(CONFIG, token=user) == {
        "billingConfig": {
            "gateway": "sandbox",
            "legacyGateway": True,
            "dashboardTabs": ["OVERVIEW", "TRANSACTION", "BILLING", "PAYMENT_METHOD"],
            "creditPrice": {"amount": 100, "currency": "USD"},
            "topUpMin": "10",
            "topUpMax": "100000",
        }
    }
    for gateway, legacy, tabs in (
        ("stripe", False, ["OVERVIEW", "TRANSACTION", "BILLING"]),
        ("legacy", True, ["OVERVIEW", "TRANSACTION", "BILLING", "PAYMENT_METHOD"]),
    ):
        app = create_app(replace(api.settings, gateway=gateway), clock=api.clock, manage_database=False, run_jobs=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post(
                "/graphql", json={"query": CONFIG}, headers={"authorization": f"Bearer {user}"}
            )
        config = response.json()["data"]["billingConfig"]
        assert (config["gateway"], config["legacyGateway"], config["dashboardTabs"]) == (gateway, legacy, tabs)


async def test_billing_config_gives_the_publishable_key_on_the_legacy_gateway_only(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    query = "{ billingConfig { gateway stripePublishableKey } }"
    assert await api.data(query, token=user) == {"billingConfig": {"gateway": "sandbox", "stripePublishableKey": None}}
    for gateway, key, shown in (
        ("legacy", "pk_test_page", "pk_test_page"),
        ("legacy", "", None),
        ("stripe", "pk_test_page", None),  # Checkout takes the card on Stripe's page: no Stripe.js here
        ("sandbox", "pk_test_page", None),
    ):
        settings = replace(api.settings, gateway=gateway, stripe_publishable_key=key)
        app = create_app(settings, clock=api.clock, manage_database=False, run_jobs=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post("/graphql", json={"query": query}, headers={"authorization": f"Bearer {user}"})
        assert response.json() == {"data": {"billingConfig": {"gateway": gateway, "stripePublishableKey": shown}}}


async def test_plans_are_listed(api: Api) -> None:
    _, user = await api.user("ada@example.com", bonus=0)
    data = await api.data("{ plans { id name price { amount currency } interval creditsPerPeriod } }", token=user)
    assert data["plans"][0] == {
        "id": "starter-monthly",
        "name": "Starter",
        "price": {"amount": 1000, "currency": "USD"},
        "interval": "MONTH",
        "creditsPerPeriod": "1100",
    }


def test_settings_default_price_is_usd_one_for_100_credits() -> None:
    settings = Settings()
    assert (settings.currency, settings.price_per_100_credits) == ("USD", 100)


async def test_default_card_and_removal(api: Api) -> None:
    _, ada = await api.user("ada@example.com", bonus=0)
    _, bob = await api.user("bob@example.com", bonus=0)
    for token in ("tok_visa", "tok_mastercard"):
        await api.data(ADD_CARD, {"token": token}, ada)

    made_default = await api.data(CHANGE % "setDefaultPaymentMethod", {"id": gid("PaymentMethod", 2)}, ada)
    assert made_default["setDefaultPaymentMethod"] == {
        "__typename": "PaymentMethodsSuccess",
        "paymentMethods": [{"last4": "4242", "isDefault": False}, {"last4": "4444", "isDefault": True}],
    }
    removed = await api.data(CHANGE % "removePaymentMethod", {"id": gid("PaymentMethod", 2)}, ada)
    assert removed["removePaymentMethod"]["paymentMethods"] == [{"last4": "4242", "isDefault": True}]
    again = await api.data(CHANGE % "removePaymentMethod", {"id": gid("PaymentMethod", 2)}, ada)
    assert again["removePaymentMethod"] == {
        "__typename": "NotFound",
        "message": "Payment method not found on this account",
    }
    theirs = await api.data(CHANGE % "setDefaultPaymentMethod", {"id": gid("PaymentMethod", 1)}, bob)
    assert theirs["setDefaultPaymentMethod"]["__typename"] == "NotFound"
    assert (await api.data(CARDS, token=ada))["me"]["credit"]["paymentMethods"] == [
        {"id": gid("PaymentMethod", 1), "last4": "4242", "isDefault": True}
    ]
    paid = await api.data(TOP_UP, top_up("10", "after", paymentMethodId=gid("PaymentMethod", 2)), ada)
    assert paid["topUp"] == {"__typename": "NotFound", "message": "Payment method not found on this account"}


async def test_billing_members_top_up_the_organization_pool_plain_members_cannot(api: Api) -> None:
    billing_id, billing = await api.user("billing@example.com", bonus=0)
    member_id, member = await api.user("member@example.com", bonus=0)
    org = await Organization.create(name="Acme", created_at=api.clock.now())
    await Membership.create(organization_id=org.id, user_id=billing_id, roles="BILLING", created_at=api.clock.now())
    await Membership.create(organization_id=org.id, user_id=member_id, roles="MEMBER", created_at=api.clock.now())
    pool = await enable_pool(org.id, api.clock.now())
    bus = api.app.state.services.bus
    watcher = bus.subscribe(frozenset({pool.id}))
    try:
        refused = await api.data(
            TOP_UP, top_up("100", "p0", paymentToken="tok_visa", accountId=gid("CreditAccount", pool.id)), member
        )
        assert refused["topUp"] == {
            "__typename": "Forbidden",
            "message": PAYING_NEEDS_ROLE,
        }
        paid = await api.data(
            TOP_UP, top_up("100", "p1", paymentToken="tok_visa", accountId=gid("CreditAccount", pool.id)), billing
        )
        assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
        change = watcher.queue.get_nowait()
        assert isinstance(change, BalanceChange)
        assert (change.reason, change.delta) == ("TOP_UP", 100_000_000)
    finally:
        watcher.close()
    await pool.refresh_from_db()
    assert pool.balance == 100_000_000


async def left_pending(account_id: int, key: str, now: datetime) -> Transaction:
    """A sandbox top-up of 40 credits by tok_visa as a process that died while charging it leaves it: written,
    PENDING, never charged."""
    txn, new = await start_top_up(
        account_id,
        credits=40_000_000,
        price=Price("USD", 100),
        gateway="sandbox",
        payment_method_id=None,
        card_reference="card_sandbox_tok_visa",
        kind=TransactionType.TOP_UP,
        idem=IdempotencyKey.for_request("user:1", key, "topUp", {}),
        now=now,
    )
    assert new
    return txn


async def test_a_top_up_left_pending_by_a_crash_is_reconciled_exactly_once(api: Api) -> None:
    user_id, token = await api.user("ada@example.com", bonus=0)
    account = await CreditAccount.get(user_id=user_id)
    # The process wrote the PENDING transaction and died before (or after) charging.
    txn = await left_pending(account.id, "crashed", api.clock.now())
    services = api.app.state.services
    assert await reconcile_pending(services) == 0  # too recent: the request may still be running
    api.clock.advance(timedelta(minutes=2))

    assert await reconcile_pending(services) == 1
    assert await reconcile_pending(services) == 0
    await txn.refresh_from_db()
    assert (txn.status, txn.gateway_reference is not None) == ("SUCCEEDED", True)
    assert await CreditLot.filter(kind="PAID").count() == 1
    assert await Invoice.all().count() == 1
    me = await api.data(BALANCE, token=token)
    assert me["me"]["credit"]["balance"]["paid"] == "40"


async def test_transactions_filter_by_status_and_type(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    await api.data(TOP_UP, top_up("10", "ok", paymentToken="tok_visa"), token)
    await api.data(TOP_UP, top_up("20", "no", paymentToken="tok_chargeDeclined"), token)
    query = """query($filter: TransactionFilter) { me { credit { transactions(filter: $filter) {
      edges { node { credits status type } } } } } }"""

    async def listed(filter: dict[str, str] | None) -> list[tuple[str, str]]:
        data = await api.data(query, {"filter": filter}, token)
        return [(e["node"]["credits"], e["node"]["status"]) for e in data["me"]["credit"]["transactions"]["edges"]]

    assert await listed(None) == [("20", "FAILED"), ("10", "SUCCEEDED")]
    assert await listed({"status": "SUCCEEDED"}) == [("10", "SUCCEEDED")]
    assert await listed({"type": "AUTO_TOP_UP"}) == []
    assert await listed({"from": "2026-01-15T12:00:00Z", "to": "2026-01-15T12:00:01Z"}) == [
        ("20", "FAILED"),
        ("10", "SUCCEEDED"),
    ]
    assert await listed({"to": "2026-01-15T12:00:00Z"}) == []


async def test_transactions_export_as_csv(api: Api) -> None:
    _, token = await api.user("ada@example.com", bonus=0)
    _, stranger = await api.user("mallory@example.com", bonus=0)
    await api.data(TOP_UP, top_up("10", "ok", paymentToken="tok_visa"), token)
    await api.data(TOP_UP, top_up("20", "no", paymentToken="tok_chargeDeclined"), token)
    account = gid("CreditAccount", 1)

    response = await api.client.get(
        "/exports/transactions.csv", params={"account": account}, headers={"authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200
    assert response.text.split("\r\n") == [
        "id,created_at,completed_at,type,status,credits,amount,currency,invoice,failure_reason",
        f"{gid('Transaction', 2)},2026-01-15T12:00:00+00:00,2026-01-15T12:00:00+00:00,TOP_UP,FAILED,20,0.20,USD,,"
        "Your card was declined.",
        f"{gid('Transaction', 1)},2026-01-15T12:00:00+00:00,2026-01-15T12:00:00+00:00,TOP_UP,SUCCEEDED,10,0.10,USD,"
        "INV-000001,",
        "",
    ]
    failed_only = await api.client.get(
        "/exports/transactions.csv",
        params={"account": account, "status": "FAILED"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert len(failed_only.text.split("\r\n")) == 3
    bad = await api.client.get(
        "/exports/transactions.csv",
        params={"account": account, "status": "LOST"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert (bad.status_code, bad.text) == (400, "status must be one of PENDING, SUCCEEDED, FAILED")
    hidden = await api.client.get(
        "/exports/transactions.csv", params={"account": account}, headers={"authorization": f"Bearer {stranger}"}
    )
    assert (hidden.status_code, hidden.text) == (403, "You may not export this account's transactions")


async def test_cancel_checkout_on_a_card_on_file_gateway_is_a_validation_error_and_changes_nothing(api: Api) -> None:
    # The sandbox charges a card in the request: there is no Checkout page to drop, PENDING (being charged) or not.
    user_id, token = await api.user("ada@example.com", bonus=0)
    account = await CreditAccount.get(user_id=user_id)
    pending = await left_pending(account.id, "charging", api.clock.now())
    paid = await api.data(TOP_UP, top_up("50", "t1", paymentToken="tok_visa"), token)
    before = await snapshot(api, token), await Transaction.all().values_list("id", "status", "failure_reason")
    document = """mutation($id: ID!) { cancelCheckout(input: {transactionId: $id}) {
      __typename ... on ValidationError { message field } ... on Error { message } } }"""

    answers = [
        (await api.data(document, {"id": transaction}, token))["cancelCheckout"]
        for transaction in (gid("Transaction", pending.id), paid["topUp"]["transaction"]["id"])
    ]

    refused = {
        "__typename": "ValidationError",
        "message": "Only a top-up paid on a Checkout page (the stripe gateway) can be canceled",
        "field": "transactionId",
    }
    assert answers == [refused, refused]
    assert (await snapshot(api, token), await Transaction.all().values_list("id", "status", "failure_reason")) == before
