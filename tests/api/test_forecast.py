"""CreditAccount.forecast over GraphQL: exact answers after real spends at frozen instants, for a user's
account and an organization's pool, null without usage, and the balance:read scope (docs/rules.md,
"Run-out forecast")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from models.tables import CreditAccount, Organization
from tests.support.backends import Backend
from tests.support.helpers import SPEND, Api, gid
from tests.support.organizations import GRANT, POOL, setup_org, spend_input

FORECAST = "forecast { burnPerDay runsOutAt basis { from to hours spent available held } }"
MY_FORECAST = f"query {{ me {{ credit {{ {FORECAST} }} }} }}"
POOL_FORECAST = f"query($org: ID!) {{ node(id: $org) {{ ... on Organization {{ creditPool {{ {FORECAST} }} }} }} }}"


async def spend(api: Api, service: str, user_id: int, credits: str, key: str) -> None:
    variables = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "bot",
            "activity": "answer",
            "credits": credits,
            "idempotencyKey": key,
        }
    }
    result = (await api.data(SPEND, variables, service))["spendCredits"]
    assert result["__typename"] == "SpendCreditsSuccess", result


async def my_forecast(api: Api, token: str) -> Any:
    return (await api.data(MY_FORECAST, token=token))["me"]["credit"]["forecast"]


async def test_a_users_forecast_after_spends_at_the_rate_since_the_first(api: Api, db: Backend) -> None:
    user_id, token = await api.user("ada@example.com", bonus=100)
    service = await api.service()
    assert await my_forecast(api, token) is None  # no usage yet
    await spend(api, service, user_id, "12", "s1")  # at T0 = 12:00 UTC
    api.clock.advance(timedelta(hours=30))
    await spend(api, service, user_id, "6", "s2")
    api.clock.advance(timedelta(hours=6))
    # 18 credits over 36 hours: 12 a day; 82 left: 6 days 20 hours from now.
    assert await my_forecast(api, token) == {
        "burnPerDay": "12",
        "runsOutAt": "2026-01-23T20:00:00+00:00",
        "basis": {
            "from": "2026-01-15T12:00:00+00:00",
            "to": "2026-01-17T00:00:00+00:00",
            "hours": 36,
            "spent": "18",
            "available": "82",
            "held": "0",
        },
    }
    api.clock.advance(timedelta(days=8))  # the spends have left the window
    assert await my_forecast(api, token) is None


async def test_a_pools_forecast_counts_its_members_spends_and_not_their_own_accounts(api: Api, db: Backend) -> None:
    s = await setup_org(api)
    assert (await api.data(POOL, {"org": s["org"]}, s["owner"]))["enableCreditPool"]["__typename"] == (
        "EnableCreditPoolSuccess"
    )
    org_id = (await Organization.get(name="Acme")).id
    pool = await CreditAccount.get(organization_id=org_id)
    admin = await api.admin()
    assert (await api.data(GRANT, {"account": gid("CreditAccount", pool.id), "key": "g"}, admin))["grantCredits"] == {
        "__typename": "GrantCreditsSuccess"
    }
    service = await api.service()
    for n in range(3):
        spent = (await api.data(SPEND, spend_input(s, "0.5", f"p{n}"), service))["spendCredits"]
        assert spent["__typename"] == "SpendCreditsSuccess", spent
        api.clock.advance(timedelta(hours=2))
    # 1.5 credits over 6 hours: 6 a day; 8.5 left: 34 hours.
    assert (await api.data(POOL_FORECAST, {"org": s["org"]}, s["billing"]))["node"]["creditPool"]["forecast"] == {
        "burnPerDay": "6",
        "runsOutAt": "2026-01-17T04:00:00+00:00",
        "basis": {
            "from": "2026-01-15T12:00:00+00:00",
            "to": "2026-01-15T18:00:00+00:00",
            "hours": 6,
            "spent": "1.5",
            "available": "8.5",
            "held": "0",
        },
    }
    assert await my_forecast(api, s["member"]) is None  # the member's own account spent nothing


async def test_a_service_needs_balance_read_for_the_forecast(api: Api, db: Backend) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=100)
    writer = await api.service()
    await spend(api, writer, user_id, "1", "s1")
    account = gid("CreditAccount", (await CreditAccount.get(user_id=user_id)).id)
    query = "query($id: ID!) { node(id: $id) { ... on CreditAccount { forecast { burnPerDay } } } }"
    reader = await api.service("reader", ("balance:read",))
    # One credit in its first hour counts as an hour: 24 a day.
    assert (await api.data(query, {"id": account}, reader))["node"] == {"forecast": {"burnPerDay": "24"}}
    # A service with usage:write only does not see the account at all (the matrix checks every caller).
    assert await api.post(query, {"id": account}, writer) == {"data": {"node": None}}
