"""Overdraft through the API (docs/rules.md, "Overdraft"): ``setOverdraft`` (admin), spends to a negative
``available`` shown as such, ``InsufficientCredits`` past the limit, ``CreditBalance.overdraft``/``owed``,
``owedCredits`` and ``owedDelta``, a top-up and an auto top-up paying back first, the live balance event, and
the mutation's bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from billing import auto_top_up as billing_auto_top_up
from creditline.clock import Clock
from creditline.events import decode, encode
from creditline.settings import Settings
from models.balance import Balance
from models.ledger import BalanceChange
from models.tables import User
from tests.support.backends import Backend
from tests.support.helpers import Api, gid
from tests.support.live import connect, receive, serve
from tests.support.payments import TOP_UP, top_up
from tests.support.snapshots import changed, snapshot

SET_OVERDRAFT = """
mutation($input: SetOverdraftInput!) {
  setOverdraft(input: $input) {
    __typename
    ... on SetOverdraftSuccess { account { id } balance { total held available overdraft owed } }
    ... on ValidationError { message field }
    ... on Error { message }
  }
}
"""
SPEND = """
mutation($input: SpendCreditsInput!) {
  spendCredits(input: $input) {
    __typename
    ... on SpendCreditsSuccess {
      usageEvent { credits freeCredits paidCredits owedCredits }
      balance { total free paid held available overdraft owed }
    }
    ... on InsufficientCredits { message available required }
    ... on Error { message }
  }
}
"""
CREDIT = """
{ me { credit {
  balance { total free paid held available overdraft owed }
  ledger(first: 20) { edges { node { type delta paidDelta freeDelta owedDelta balanceAfter } } }
  lots(first: 20) { edges { node { kind source amount remaining status } } }
  usage(first: 20) { edges { node { credits freeCredits paidCredits owedCredits } } }
} } }
"""
ADA = gid("User", 1)
ADA_ACCOUNT = gid("CreditAccount", 1)


def balance(total: str, available: str, owed: str, overdraft: str = "5", **parts: str) -> dict[str, str]:
    return {
        "total": total,
        "free": parts.get("free", "0"),
        "paid": parts.get("paid", "0"),
        "held": parts.get("held", "0"),
        "available": available,
        "overdraft": overdraft,
        "owed": owed,
    }


class Shop:
    """Ada (User 1, externalId "ada") with 3 free credits, an admin, and an agent runtime spending for her."""

    def __init__(self, api: Api, ada: str, admin: str, agent: str) -> None:
        self.api, self.ada, self.admin, self.agent = api, ada, admin, agent
        self.keys = 0

    async def set_overdraft(self, credits: object, token: str | None = None, **account: object) -> Any:
        named = account or {"accountId": ADA_ACCOUNT}
        data = await self.api.data(SET_OVERDRAFT, {"input": {**named, "overdraft": credits}}, token or self.admin)
        return data["setOverdraft"]

    async def spend(self, credits: str) -> Any:
        self.keys += 1
        spent = {"userId": ADA, "agentId": "agent-1", "activity": "answer", "credits": credits}
        data = await self.api.data(SPEND, {"input": {**spent, "idempotencyKey": f"spend-{self.keys}"}}, self.agent)
        await billing_auto_top_up.idle()
        return data["spendCredits"]

    async def credit(self) -> Any:
        return (await self.api.data(CREDIT, token=self.ada))["me"]["credit"]


async def make_shop(api: Api, bonus: int = 3) -> Shop:
    user_id, ada = await api.user("ada@example.com", bonus=bonus)
    assert gid("User", user_id) == ADA
    await User.filter(id=user_id).update(external_id="ada")
    return Shop(api, ada, await api.admin(), await api.service())


def nodes(connection: Any) -> list[Any]:
    """A connection's nodes, newest first (as lots, ledger and usage are listed)."""
    return [edge["node"] for edge in connection["edges"]]


# ------------------------------------------------------------------------------------------------ spends


async def test_spends_take_available_down_to_minus_the_overdraft_and_no_further(api: Api) -> None:
    shop = await make_shop(api)

    set_ = await shop.set_overdraft("5", externalUserId="ada")
    spent = await shop.spend("8")
    refused_before = await snapshot()
    refused = await shop.spend("0.000001")

    assert set_ == {
        "__typename": "SetOverdraftSuccess",
        "account": {"id": ADA_ACCOUNT},
        "balance": {"total": "3", "held": "0", "available": "3", "overdraft": "5", "owed": "0"},
    }
    assert spent == {
        "__typename": "SpendCreditsSuccess",
        "usageEvent": {"credits": "8", "freeCredits": "3", "paidCredits": "0", "owedCredits": "5"},
        "balance": balance("0", "-5", "5"),
    }
    assert refused == {
        "__typename": "InsufficientCredits",
        "message": "Not enough credit available",
        "available": "-5",
        "required": "0.000001",
    }
    assert changed(refused_before, await snapshot()) == {"idempotency_records"}
    credit = await shop.credit()
    assert credit["balance"] == balance("0", "-5", "5")
    assert nodes(credit["ledger"]) == [  # newest first
        {"type": "SPEND", "delta": "-3", "paidDelta": "0", "freeDelta": "-3", "owedDelta": "5", "balanceAfter": "0"},
        {"type": "GRANT", "delta": "3", "paidDelta": "0", "freeDelta": "3", "owedDelta": "0", "balanceAfter": "3"},
    ]
    assert nodes(credit["usage"]) == [{"credits": "8", "freeCredits": "3", "paidCredits": "0", "owedCredits": "5"}]


async def test_without_an_overdraft_the_balance_shows_zeros_and_spends_are_refused_as_before(api: Api) -> None:
    shop = await make_shop(api)

    refused = await shop.spend("3.000001")

    assert refused["available"] == "3"
    assert (await shop.credit())["balance"] == balance("3", "3", "0", overdraft="0", free="3")


# -------------------------------------------------------------------------------------- paying it back


async def test_a_top_up_pays_back_what_is_owed_first(api: Api) -> None:
    shop = await make_shop(api)
    await shop.set_overdraft("5")
    await shop.spend("8")

    paid = await api.data(TOP_UP, top_up("10", "t1", paymentToken="tok_visa"), shop.ada)

    assert paid["topUp"]["transaction"]["status"] == "SUCCEEDED"
    assert paid["topUp"]["transaction"]["credits"] == "10"
    credit = await shop.credit()
    assert credit["balance"] == balance("5", "5", "0", paid="5")
    assert nodes(credit["lots"])[0] == {
        "kind": "PAID",
        "source": "TOP_UP",
        "amount": "10",
        "remaining": "5",
        "status": "ACTIVE",
    }
    assert nodes(credit["ledger"])[0] == {
        "type": "GRANT",
        "delta": "5",
        "paidDelta": "5",
        "freeDelta": "0",
        "owedDelta": "-5",
        "balanceAfter": "5",
    }


async def test_an_auto_top_up_to_a_target_buys_the_debt_too_and_lifts_available_to_the_target(api: Api) -> None:
    shop = await make_shop(api)
    await api.data('mutation { addPaymentMethod(input: {token: "tok_visa"}) { __typename } }', token=shop.ada)
    configured = await api.data(
        'mutation { configureAutoTopUp(input: {threshold: "1", target: "20", monthlyCap: "100"}) { __typename } }',
        token=shop.ada,
    )
    assert configured == {"configureAutoTopUp": {"__typename": "ConfigureAutoTopUpSuccess"}}
    await shop.set_overdraft("5")

    spent = await shop.spend("8")  # available -5, below the threshold: 25 credits lift it to 20

    assert spent["balance"]["available"] == "-5"
    credit = await shop.credit()
    assert credit["balance"] == balance("20", "20", "0", paid="20")
    assert nodes(credit["lots"])[0] == {
        "kind": "PAID",
        "source": "AUTO_TOP_UP",
        "amount": "25",
        "remaining": "20",
        "status": "ACTIVE",
    }


# -------------------------------------------------------------------------------------- the live event


def test_a_balance_event_on_the_bus_carries_what_is_owed_and_an_old_one_reads_as_none_owed() -> None:
    at = datetime(2026, 1, 15, 12, tzinfo=UTC)
    owing = BalanceChange(1, 3, -2, "SPEND", Balance(0, 1, 0, owed=2, overdraft=5), at)
    plain = BalanceChange(1, 3, -2, "SPEND", Balance(0, 1, 0), at)

    assert decode(encode(owing)) == owing
    assert json.loads(encode(plain))[5:8] == [0, 1, 0]  # the message other processes read before overdrafts
    assert len(json.loads(encode(plain))) == 9
    assert decode(encode(plain)) == plain


WATCH = "subscription { balanceChanged { delta reason balance { total available overdraft owed } } }"


async def test_the_live_balance_shows_a_negative_available_and_what_is_owed(
    db: Backend, clock: Clock, settings: Settings
) -> None:
    async with serve(settings, clock) as live:
        shop = await make_shop(live.api)
        await shop.set_overdraft("5")
        ws = await connect(live, shop.ada)
        try:
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
            snapshot_event = (await receive(ws))["payload"]["data"]["balanceChanged"]
            await shop.spend("5")
            spend_event = (await receive(ws))["payload"]["data"]["balanceChanged"]
        finally:
            await ws.close()

    assert snapshot_event == {
        "delta": "0",
        "reason": "SNAPSHOT",
        "balance": {"total": "3", "available": "3", "overdraft": "5", "owed": "0"},
    }
    assert spend_event == {
        "delta": "-3",
        "reason": "SPEND",
        "balance": {"total": "0", "available": "-2", "overdraft": "5", "owed": "2"},
    }


# ----------------------------------------------------------------------------------------- bad input


def validation(message: str, field: str | None) -> dict[str, object]:
    return {"__typename": "ValidationError", "message": message, "field": field}


ONE_ACCOUNT = validation("Give exactly one of accountId, externalUserId, externalOrganizationId", "accountId")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"overdraft": "-1"}, validation("overdraft must not be negative", "overdraft"), id="negative"),
        pytest.param(
            {"overdraft": "-0.000001"}, validation("overdraft must not be negative", "overdraft"), id="negative-micro"
        ),
        pytest.param({"accountId": None}, ONE_ACCOUNT, id="no-account"),
        pytest.param({"externalUserId": "ada"}, ONE_ACCOUNT, id="two-forms"),
        pytest.param(
            {"accountId": gid("CreditAccount", 999)},
            {"__typename": "NotFound", "message": "Credit account not found"},
            id="unknown-account",
        ),
        pytest.param(
            {"accountId": None, "externalUserId": "nobody"},
            {"__typename": "NotFound", "message": "No user has externalId 'nobody'"},
            id="unknown-external-user",
        ),
        pytest.param(
            {"accountId": "not-an-id"},
            {"__typename": "NotFound", "message": "Credit account not found"},
            id="malformed-account",
        ),
    ],
)
async def test_bad_input_to_set_overdraft_is_refused_and_changes_nothing(
    api: Api, given: dict[str, object], expected: dict[str, object]
) -> None:
    shop = await make_shop(api)
    before = await snapshot()

    data = await api.data(SET_OVERDRAFT, {"input": {"accountId": ADA_ACCOUNT, "overdraft": "5", **given}}, shop.admin)

    assert data["setOverdraft"] == expected
    assert changed(before, await snapshot()) == set()


async def test_only_an_admin_may_set_an_overdraft(api: Api) -> None:
    shop = await make_shop(api)
    before = await snapshot()

    for token in (shop.ada, shop.agent):
        assert await shop.set_overdraft("5", token=token) == {
            "__typename": "Forbidden",
            "message": "This needs an admin token",
        }

    assert changed(before, await snapshot()) == set()


async def test_an_overdraft_that_does_not_parse_is_a_top_level_error(api: Api) -> None:
    shop = await make_shop(api)

    body = await api.post(SET_OVERDRAFT, {"input": {"accountId": ADA_ACCOUNT, "overdraft": 1.5}}, shop.admin)

    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
