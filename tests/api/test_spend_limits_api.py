"""Managing and reading spend limits over the API (README, Spend limits; docs/rules.md, Managing spend limits):
setSpendLimit, removeSpendLimit, resumeAgent, and CreditAccount.spendLimits / limitTripped and
Membership.spendLimits with their usage.

Usage is made here by writing counters and holds directly (the usage contract of issue 12), so that what is
shown does not depend on how the spend path fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise import connections

from models import ledger, organizations
from models.credits import MICRO
from models.ids import decode_id
from models.sql import Sql
from models.tables import ApiToken, CreditAccount, CreditKind, LotSource, MemberRole, SpendLimit, TokenKind, User
from models.tokens import create_token, digest
from tests.support.backends import T0
from tests.support.helpers import Api, gid
from tests.support.snapshots import changed, snapshot
from tests.support.statements import StatementCounter
from tests.support.statements import counter as counter

LIMIT = (
    "id scope kind window windowLength timeZone amount action warnAtPercent maxCreditsPerRun cooldownSeconds"
    " agentId memberId tokenId accountId spent held remaining resetsAt windowStartsAt paused trippedAt pausedUntil"
)
ERROR = "... on Error { message } ... on ValidationError { field }"
SET = f"""mutation($input: SetSpendLimitInput!) {{ setSpendLimit(input: $input) {{ __typename
  ... on SetSpendLimitSuccess {{ created limit {{ {LIMIT} }} }} {ERROR} }} }}"""
REMOVE = f"""mutation($id: ID!) {{ removeSpendLimit(input: {{limitId: $id}}) {{ __typename
  ... on RemoveSpendLimitSuccess {{ limit {{ {LIMIT} }} }} ... on Error {{ message }} }} }}"""
RESUME = f"""mutation($input: ResumeAgentInput!) {{ resumeAgent(input: $input) {{ __typename
  ... on ResumeAgentSuccess {{ limits {{ {LIMIT} }} }} {ERROR} }} }}"""
MINE = f"{{ me {{ credit {{ spendLimits {{ {LIMIT} }} limitTripped {{ id }} }} }} }}"
ACCOUNT = f"""query($id: ID!) {{ node(id: $id) {{ ... on CreditAccount {{ spendLimits {{ {LIMIT} }}
  limitTripped {{ id }} }} }} }}"""


@dataclass
class World:
    api: Api
    ada: int
    bob: int
    carol: int
    tokens: dict[str, str]
    ada_account: int
    pool: int
    acme: int

    async def set(self, token: str, input: dict[str, Any]) -> Any:
        return (await self.api.data(SET, {"input": input}, self.tokens[token]))["setSpendLimit"]

    async def mine(self, token: str = "ada") -> Any:
        return (await self.api.data(MINE, token=self.tokens[token]))["me"]["credit"]


@pytest.fixture
async def world(api: Api) -> World:
    """Ada has her own account; she owns Acme, whose pool Bob (BILLING) may manage and Carol (MEMBER) spends from."""
    now = api.clock.now()
    ada, ada_token = await api.user("ada@example.com", bonus=50)
    bob, bob_token = await api.user("bob@example.com", bonus=0)
    carol, carol_token = await api.user("carol@example.com", bonus=0)
    acme = await organizations.create("Acme", ada, now)
    await organizations.add_member(acme.id, bob, [MemberRole.BILLING], now)
    await organizations.add_member(acme.id, carol, [MemberRole.MEMBER], now)
    pool = await organizations.enable_pool(acme.id, now)
    await ledger.grant(
        pool.id,
        credits=50 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=now,
    )
    tokens = {
        "ada": ada_token,
        "bob": bob_token,
        "carol": carol_token,
        "admin": await api.admin(),
        "platform": await api.service("platform", scopes=("limits:write",)),
        "runtime": await api.service("agent-runtime", scopes=("usage:write",)),
    }
    ada_account = (await CreditAccount.get(user_id=ada)).id
    return World(api, ada, bob, carol, tokens, ada_account, pool.id, acme.id)


def shown(
    world: World,
    pk: int,
    *,
    account: int | None = None,
    scope: str = "AGENT",
    kind: str = "CAP",
    window: str = "DAY",
    amount: str,
    starts: str | None,
    resets: str | None,
    **fields: Any,
) -> dict[str, Any]:
    """A SpendLimit as the API shows it: the defaults of an unused limit, with ``fields`` in camelCase over them."""
    limit = {
        "id": gid("SpendLimit", pk),
        "scope": scope,
        "kind": kind,
        "window": window,
        "windowLength": 1,
        "timeZone": "UTC",
        "amount": amount,
        "action": "BLOCK",
        "warnAtPercent": None,
        "maxCreditsPerRun": None,
        "cooldownSeconds": None,
        "agentId": None,
        "memberId": None,
        "tokenId": None,
        "accountId": gid("CreditAccount", world.ada_account if account is None else account),
        "spent": "0",
        "held": "0",
        "remaining": amount,
        "resetsAt": resets,
        "windowStartsAt": starts,
        "paused": False,
        "trippedAt": None,
        "pausedUntil": None,
    }
    assert set(fields) <= set(limit), fields
    return {**limit, **fields}


async def count(limit_id: int, period: int, spent: int, run_id: str = "") -> None:
    """A counter of the usage contract: ``spent`` micro-credits against the limit in the period starting at
    ``period`` (Unix seconds)."""
    await Sql(connections.get("default")).execute(
        "INSERT INTO spend_limit_usage (limit_id, run_id, period, spent) VALUES ($1, $2, $3, $4)",
        limit_id,
        run_id,
        period,
        spent,
    )


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def pk(global_id: str) -> int:
    found = decode_id(global_id, "SpendLimit")
    assert found is not None
    return found


# ---------------------------------------------------------------------------------------- the operator


async def test_the_operators_sentence_is_two_set_spend_limit_calls(world: World) -> None:
    """ "This agent may spend at most 20 credits a day, warn at 80%, and stop if it burns 5 credits in a minute.\""""
    account = gid("CreditAccount", world.ada_account)
    daily = await world.set(
        "ada",
        {"accountId": account, "scope": "AGENT", "agentId": "support-bot", "window": "DAY", "amount": "20",
         "warnAtPercent": 80},
    )  # fmt: skip
    breaker = await world.set(
        "ada",
        {"accountId": account, "scope": "AGENT", "agentId": "support-bot", "kind": "VELOCITY",
         "window": "ROLLING_MINUTES", "windowLength": 1, "amount": "5"},
    )  # fmt: skip

    assert daily == {
        "__typename": "SetSpendLimitSuccess",
        "created": True,
        "limit": shown(
            world,
            1,
            amount="20",
            agentId="support-bot",
            warnAtPercent=80,
            starts="2026-01-15T00:00:00+00:00",
            resets="2026-01-16T00:00:00+00:00",
        ),
    }
    assert breaker == {
        "__typename": "SetSpendLimitSuccess",
        "created": True,
        "limit": shown(
            world,
            2,
            kind="VELOCITY",
            window="ROLLING_MINUTES",
            amount="5",
            agentId="support-bot",
            # A minute of 60 one-second buckets: the current second and the 59 before it.
            starts="2026-01-15T11:59:01+00:00",
            resets="2026-01-15T12:00:01+00:00",
        ),
    }
    assert await world.mine() == {"spendLimits": [daily["limit"], breaker["limit"]], "limitTripped": []}
    assert (await CreditAccount.get(id=world.ada_account)).spend_limits == 2


# ----------------------------------------------------------------------------------- set, replace, remove


async def test_setting_a_limit_again_replaces_it_and_the_same_input_twice_leaves_one(world: World) -> None:
    pool = gid("CreditAccount", world.pool)
    base = {"accountId": pool, "scope": "ACCOUNT", "window": "MONTH", "amount": "30", "timeZone": "Europe/Paris"}
    first = await world.set("bob", base)
    again = await world.set("bob", base)
    replaced = await world.set("bob", {**base, "amount": "25", "timeZone": "Asia/Tokyo"})

    month = {"starts": "2025-12-31T23:00:00+00:00", "resets": "2026-01-31T23:00:00+00:00"}
    expected = shown(world, 1, account=world.pool, scope="ACCOUNT", window="MONTH", amount="30",
                     timeZone="Europe/Paris", **month)  # fmt: skip
    assert first == {"__typename": "SetSpendLimitSuccess", "created": True, "limit": expected}
    assert again == {"__typename": "SetSpendLimitSuccess", "created": False, "limit": expected}
    assert replaced == {
        "__typename": "SetSpendLimitSuccess",
        "created": False,
        "limit": shown(world, 1, account=world.pool, scope="ACCOUNT", window="MONTH", amount="25",
                       timeZone="Asia/Tokyo", starts="2025-12-31T15:00:00+00:00",
                       resets="2026-01-31T15:00:00+00:00"),
    }  # fmt: skip
    assert await SpendLimit.filter(account_id=world.pool).count() == 1
    assert (await CreditAccount.get(id=world.pool)).spend_limits == 1


async def test_a_notify_limit_beside_a_block_limit_of_the_same_window_is_another_limit(world: World) -> None:
    pool = gid("CreditAccount", world.pool)
    block = {"accountId": pool, "scope": "MEMBER", "memberId": gid("User", world.carol), "window": "DAY"}
    blocks = await world.set("bob", {**block, "amount": "20"})
    notifies = await world.set("bob", {**block, "amount": "15", "action": "NOTIFY"})
    notifies_again = await world.set("bob", {**block, "amount": "16", "action": "NOTIFY"})

    day = {"starts": "2026-01-15T00:00:00+00:00", "resets": "2026-01-16T00:00:00+00:00"}
    member: dict[str, Any] = {"account": world.pool, "scope": "MEMBER", "memberId": gid("User", world.carol), **day}
    assert blocks == {"__typename": "SetSpendLimitSuccess", "created": True,
                      "limit": shown(world, 1, amount="20", **member)}  # fmt: skip
    assert notifies == {"__typename": "SetSpendLimitSuccess", "created": True,
                        "limit": shown(world, 2, amount="15", action="NOTIFY", **member)}  # fmt: skip
    assert notifies_again == {"__typename": "SetSpendLimitSuccess", "created": False,
                              "limit": shown(world, 2, amount="16", action="NOTIFY", **member)}  # fmt: skip
    assert (await CreditAccount.get(id=world.pool)).spend_limits == 2
    # Carol may spend 16 with a warning; the BLOCK limit of 20 still refuses past it.
    spend = {"userId": gid("User", world.carol), "organizationId": gid("Organization", world.acme),
             "agentId": "bot", "activity": "answer"}  # fmt: skip
    warned = await world.api.data(LIMITED_SPEND, {"input": {**spend, "credits": "17", "idempotencyKey": "a"}},
                                  world.tokens["runtime"])  # fmt: skip
    notified = [{"limit": {"id": gid("SpendLimit", 2)}}]
    assert warned["spendCredits"] == {"__typename": "SpendCreditsSuccess", "limitWarnings": notified}
    refused = await world.api.data(LIMITED_SPEND, {"input": {**spend, "credits": "4", "idempotencyKey": "b"}},
                                   world.tokens["runtime"])  # fmt: skip
    assert refused["spendCredits"] == {"__typename": "SpendLimitExceeded", "limit": {"id": gid("SpendLimit", 1)}}


LIMITED_SPEND = """mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename
  ... on SpendCreditsSuccess { limitWarnings { limit { id } } } ... on SpendLimitExceeded { limit { id } } } }"""


async def test_a_limit_of_another_window_length_is_another_limit_and_removing_one_keeps_the_other(
    world: World,
) -> None:
    agent = {"scope": "AGENT", "agentId": "bot", "window": "ROLLING_HOURS", "amount": "3"}
    three = await world.set("ada", {**agent, "windowLength": 3})
    six = await world.set("ada", {**agent, "windowLength": 6})
    await count(1, epoch("2026-01-15T11:00:00+00:00"), 2 * MICRO)

    removed = await world.api.data(REMOVE, {"id": three["limit"]["id"]}, world.tokens["ada"])
    again = await world.api.data(REMOVE, {"id": three["limit"]["id"]}, world.tokens["ada"])

    assert removed == {
        "removeSpendLimit": {
            "__typename": "RemoveSpendLimitSuccess",
            # As it was; what was counted against it went with it.
            "limit": shown(world, 1, window="ROLLING_HOURS", windowLength=3, amount="3", agentId="bot",
                           starts="2026-01-15T09:03:00+00:00", resets="2026-01-15T12:03:00+00:00"),
        }
    }  # fmt: skip
    assert again == {"removeSpendLimit": {"__typename": "NotFound", "message": "Spend limit not found"}}
    assert (await world.mine())["spendLimits"] == [six["limit"]]
    assert six["limit"]["windowStartsAt"] == "2026-01-15T06:06:00+00:00"  # 60 buckets of 6 minutes
    assert (await CreditAccount.get(id=world.ada_account)).spend_limits == 1
    rows = await Sql(connections.get("default")).fetch("SELECT COUNT(*) AS n FROM spend_limit_usage")
    assert int(rows[0]["n"]) == 0


# ------------------------------------------------------------------------------------------------- usage


async def test_usage_counts_the_current_window_and_the_subjects_live_holds(world: World) -> None:
    now = world.api.clock.now()
    for agent, credits, minutes in (("support-bot", 4, 60), ("other-bot", 1, 60), ("support-bot", 2, 1)):
        held = await ledger.hold(
            ("user_id", world.ada),
            user_id=world.ada,
            organization_id=None,
            agent_id=agent,
            activity="answer",
            credits=credits * MICRO,
            expires_at=now + timedelta(minutes=minutes),
            idem=ledger.IdempotencyKey.for_request("test", f"{agent}-{credits}", "holdCredits", {}),
            now=now,
        )
        assert held.hold_id
    daily = await world.set("ada", {"scope": "AGENT", "agentId": "support-bot", "window": "DAY", "amount": "20"})
    whole = await world.set("ada", {"scope": "ACCOUNT", "window": "TOTAL", "amount": "10"})
    day = epoch("2026-01-15T00:00:00+00:00")
    await count(1, day, 3 * MICRO)  # today: counts
    await count(1, day - 86400, 5 * MICRO)  # yesterday: does not
    await count(1, 0, 2 * MICRO, run_id="run-7")  # a run's own counter: not the window's
    await count(2, 0, 9_500_000)
    world.api.clock.freeze(T0 + timedelta(minutes=2))  # the 2-credit hold has timed out (the sweep has not run)

    limits = (await world.mine())["spendLimits"]

    assert [{k: limit[k] for k in ("id", "spent", "held", "remaining")} for limit in limits] == [
        {"id": daily["limit"]["id"], "spent": "3", "held": "4", "remaining": "13"},
        {"id": whole["limit"]["id"], "spent": "9.5", "held": "5", "remaining": "0"},  # never below 0
    ]
    assert (limits[1]["resetsAt"], limits[1]["windowStartsAt"]) == (None, None)


@pytest.mark.parametrize(
    ("now", "window", "zone", "starts", "resets"),
    [
        pytest.param(T0, "DAY", "America/Los_Angeles", "2026-01-15T08:00:00+00:00", "2026-01-16T08:00:00+00:00",
                     id="day-in-los-angeles"),
        pytest.param(T0, "DAY", "Asia/Kolkata", "2026-01-14T18:30:00+00:00", "2026-01-15T18:30:00+00:00",
                     id="day-in-kolkata-half-hour-offset"),
        pytest.param(T0, "WEEK", "Asia/Tokyo", "2026-01-11T15:00:00+00:00", "2026-01-18T15:00:00+00:00",
                     id="week-from-monday-in-tokyo"),
        pytest.param(datetime(2026, 3, 29, 12, tzinfo=UTC), "DAY", "Europe/Paris", "2026-03-28T23:00:00+00:00",
                     "2026-03-29T22:00:00+00:00", id="23-hour-day-of-daylight-saving-in-paris"),
        pytest.param(datetime(2026, 1, 31, 23, 30, tzinfo=UTC), "MONTH", "Europe/Paris",
                     "2026-01-31T23:00:00+00:00", "2026-02-28T23:00:00+00:00", id="february-already-in-paris"),
        pytest.param(datetime(2026, 1, 31, 23, 30, tzinfo=UTC), "MONTH", "UTC", "2026-01-01T00:00:00+00:00",
                     "2026-02-01T00:00:00+00:00", id="still-january-in-utc"),
    ],
)  # fmt: skip
async def test_window_edges_are_shown_in_the_limits_time_zone(
    world: World, now: datetime, window: str, zone: str, starts: str, resets: str
) -> None:
    world.api.clock.freeze(now)
    made = await world.set("ada", {"scope": "ACCOUNT", "window": window, "amount": "7", "timeZone": zone})
    await count(1, epoch(starts), 2 * MICRO)  # this window: counts
    await count(1, epoch(starts) - 3600, MICRO)  # the hour before it: the previous window

    limit = (await world.mine())["spendLimits"][0]

    assert (made["limit"]["windowStartsAt"], made["limit"]["resetsAt"]) == (starts, resets)
    assert (limit["windowStartsAt"], limit["resetsAt"], limit["spent"], limit["remaining"]) == (
        starts,
        resets,
        "2",
        "5",
    )


async def test_the_same_limit_read_later_shows_the_next_window(world: World) -> None:
    await world.set("ada", {"scope": "AGENT", "agentId": "bot", "window": "ROLLING_HOURS", "windowLength": 2,
                            "amount": "4"})  # fmt: skip
    await count(1, epoch("2026-01-15T11:00:00+00:00"), MICRO)
    await count(1, epoch("2026-01-15T12:00:00+00:00"), 2 * MICRO)

    seen = []
    for at in (T0, T0 + timedelta(minutes=59, seconds=59), T0 + timedelta(hours=1), T0 + timedelta(hours=2)):
        world.api.clock.freeze(at)
        limit = (await world.mine())["spendLimits"][0]
        seen.append((limit["windowStartsAt"][11:16], limit["resetsAt"][11:16], limit["spent"]))

    # Two hours are 60 buckets of 2 minutes: what was spent at 11:00 counts until 13:00, by the bucket.
    assert seen == [("10:02", "12:02", "3"), ("11:00", "13:00", "3"), ("11:02", "13:02", "2"), ("12:02", "14:02", "0")]


# -------------------------------------------------------------------------------- members and tokens


async def test_a_member_limit_on_the_pool_shows_on_the_membership_to_billing_and_owner_only(world: World) -> None:
    made = await world.set(
        "bob",
        {"externalOrganizationId": None, "accountId": gid("Organization", world.acme), "scope": "MEMBER",
         "memberId": gid("User", world.carol), "window": "WEEK", "amount": "12", "maxCreditsPerRun": "2.5"},
    )  # fmt: skip
    await count(1, epoch("2026-01-12T00:00:00+00:00"), 1_250_000)
    members = """query($org: ID!) { node(id: $org) { ... on Organization { members { email
      spendLimits { id memberId spent remaining maxCreditsPerRun } } } } }"""

    as_owner = await world.api.data(members, {"org": gid("Organization", world.acme)}, world.tokens["ada"])
    as_member = await world.api.post(members, {"org": gid("Organization", world.acme)}, world.tokens["carol"])

    assert made["limit"]["memberId"] == gid("User", world.carol)
    carol_limit = {
        "id": made["limit"]["id"],
        "memberId": gid("User", world.carol),
        "spent": "1.25",
        "remaining": "10.75",
        "maxCreditsPerRun": "2.5",
    }
    assert as_owner["node"]["members"] == [
        {"email": "ada@example.com", "spendLimits": []},
        {"email": "bob@example.com", "spendLimits": []},
        {"email": "carol@example.com", "spendLimits": [carol_limit]},
    ]
    assert [error["message"] for error in as_member["errors"]] == ["This needs the BILLING or OWNER role"]
    assert as_member["data"] == {"node": None}


async def test_a_token_limit_names_a_token_that_may_spend_from_the_account(world: World) -> None:
    now = world.api.clock.now()
    await create_token(TokenKind.SERVICE, name="bound", scopes=("usage:write",), account_id=world.ada_account, now=now)
    bound = gid("ApiToken", (await ApiToken.get(name="bound")).id)
    runtime = gid("ApiToken", (await ApiToken.get(token_hash=digest(world.tokens["runtime"]))).id)
    reader_secret = await world.api.service("reader", scopes=("balance:read",))
    reader = gid("ApiToken", (await ApiToken.get(token_hash=digest(reader_secret))).id)
    ada_user_token = gid("ApiToken", (await ApiToken.get(token_hash=digest(world.tokens["ada"]))).id)
    token_limit = {"accountId": gid("User", world.ada), "scope": "TOKEN", "window": "DAY", "amount": "1"}
    before = await snapshot()

    refused = {
        "runtime by ada": await world.set("ada", {**token_limit, "tokenId": runtime}),
        "reader by admin": await world.set("admin", {**token_limit, "tokenId": reader}),
        "user token by admin": await world.set("admin", {**token_limit, "tokenId": ada_user_token}),
        "unknown": await world.set("ada", {**token_limit, "tokenId": gid("ApiToken", 999)}),
    }

    assert refused == {
        "runtime by ada": {"__typename": "NotFound", "message": "Token not found"},
        "reader by admin": {"__typename": "ValidationError", "message": "That token cannot spend: it has no"
                            " 'usage:write' scope", "field": "tokenId"},
        "user token by admin": {"__typename": "ValidationError", "message": "USER tokens never spend: a TOKEN"
                                " limit is for one that does", "field": "tokenId"},
        "unknown": {"__typename": "NotFound", "message": "Token not found"},
    }  # fmt: skip
    assert changed(before, await snapshot()) == set()
    mine = await world.set("ada", {**token_limit, "tokenId": bound})
    platform = await world.set("platform", {**token_limit, "tokenId": runtime})
    assert (mine["created"], mine["limit"]["tokenId"], mine["limit"]["scope"]) == (True, bound, "TOKEN")
    assert (platform["created"], platform["limit"]["tokenId"]) == (True, runtime)


# ----------------------------------------------------------------------------------------- the breaker


async def _trip(limit_id: int, tripped_at: datetime, until: datetime | None) -> None:
    """Trip a velocity limit as the spend path does: paused from ``tripped_at`` until ``until`` (None: resumed)."""
    await Sql(connections.get("default")).execute(
        "UPDATE spend_limits SET paused = $1, tripped_at = $2, paused_until = $3 WHERE id = $4",
        True,
        tripped_at,
        until,
        limit_id,
    )


async def test_a_tripped_breaker_shows_until_resume_agent_ends_the_pause(world: World) -> None:
    velocity = {"scope": "AGENT", "agentId": "support-bot", "kind": "VELOCITY", "window": "ROLLING_MINUTES",
                "windowLength": 5, "amount": "5"}  # fmt: skip
    first = await world.set("ada", velocity)
    cooled = await world.set("ada", {**velocity, "windowLength": 10, "cooldownSeconds": 60})
    cap = await world.set("ada", {"scope": "AGENT", "agentId": "support-bot", "window": "DAY", "amount": "20"})
    tripped = T0 - timedelta(minutes=1)
    await _trip(1, tripped, None)
    await _trip(2, tripped, T0 - timedelta(seconds=1))  # its cool-down is over
    await count(1, epoch("2026-01-15T11:59:00+00:00"), 4_900_000)

    before = await world.mine()
    by_limit = await world.api.data(RESUME, {"input": {"limitId": cap["limit"]["id"]}}, world.tokens["ada"])
    resumed = await world.api.data(RESUME, {"input": {"agentId": "support-bot"}}, world.tokens["ada"])
    after = await world.mine()
    await count(1, epoch("2026-01-15T12:00:00+00:00"), MICRO)  # spent after the resume
    unchanged = await snapshot()
    replay = await world.api.data(RESUME, {"input": {"limitId": first["limit"]["id"]}}, world.tokens["ada"])

    assert before["limitTripped"] == [{"id": first["limit"]["id"]}]
    assert [(x["paused"], x["trippedAt"], x["pausedUntil"], x["spent"]) for x in before["spendLimits"][:2]] == [
        (True, "2026-01-15T11:59:00+00:00", None, "4.9"),
        (False, "2026-01-15T11:59:00+00:00", None, "0"),
    ]
    assert by_limit == {
        "resumeAgent": {
            "__typename": "ValidationError",
            "message": "Only a VELOCITY limit pauses: this one is a CAP",
            "field": "limitId",
        }
    }
    # Not paused, counting afresh (the 4.9 credits of the burst went), the last trip kept.
    after_first = shown(world, 1, kind="VELOCITY", window="ROLLING_MINUTES", windowLength=5, amount="5",
                        agentId="support-bot", trippedAt="2026-01-15T11:59:00+00:00",
                        starts="2026-01-15T11:55:05+00:00", resets="2026-01-15T12:00:05+00:00")  # fmt: skip
    after_cooled = shown(world, 2, kind="VELOCITY", window="ROLLING_MINUTES", windowLength=10, amount="5",
                         agentId="support-bot", cooldownSeconds=60, trippedAt="2026-01-15T11:59:00+00:00",
                         starts="2026-01-15T11:50:10+00:00", resets="2026-01-15T12:00:10+00:00")  # fmt: skip
    assert resumed == {"resumeAgent": {"__typename": "ResumeAgentSuccess", "limits": [after_first, after_cooled]}}
    assert after["limitTripped"] == []
    assert after["spendLimits"] == [after_first, after_cooled, cap["limit"]]
    # Resuming what is not paused changes nothing: what was spent since still counts.
    assert replay == {
        "resumeAgent": {"__typename": "ResumeAgentSuccess", "limits": [{**after_first, "spent": "1", "remaining": "4"}]}
    }
    assert changed(unchanged, await snapshot()) == set()
    assert cooled["limit"]["cooldownSeconds"] == 60


async def test_resume_agent_of_an_agent_without_a_breaker_is_not_found_and_changes_nothing(world: World) -> None:
    await world.set("ada", {"scope": "AGENT", "agentId": "support-bot", "window": "DAY", "amount": "20"})
    before = await snapshot()

    none = await world.api.data(RESUME, {"input": {"agentId": "support-bot"}}, world.tokens["ada"])

    assert none == {
        "resumeAgent": {
            "__typename": "NotFound",
            "message": "Agent 'support-bot' has no velocity limit on this account",
        }
    }
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------------ access


async def test_the_platform_manages_any_account_by_its_ids_and_only_it_learns_which_exist(world: World) -> None:
    await User.filter(id=world.ada).update(external_id="cus_ada")
    limit = {"scope": "ACCOUNT", "window": "DAY", "amount": "9"}
    before = await snapshot()

    as_bob = await world.set("bob", {**limit, "externalUserId": "cus_nobody"})
    as_platform_unknown = await world.set("platform", {**limit, "externalUserId": "cus_nobody"})
    as_runtime = await world.set("runtime", {**limit, "externalUserId": "cus_ada"})
    as_platform_without_account = await world.set("platform", limit)

    assert as_bob == {
        "__typename": "Forbidden",
        "message": "Managing this account's spend limits needs its owner, the BILLING or OWNER role in its"
        " organization, an admin token or a service token with the 'limits:write' scope",
    }
    assert as_platform_unknown == {"__typename": "NotFound", "message": "No user has externalId 'cus_nobody'"}
    assert as_runtime == {
        "__typename": "Forbidden",
        "message": "This needs a service token with the 'limits:write' scope",
    }
    assert as_platform_without_account == {
        "__typename": "ValidationError",
        "message": "Give accountId, externalUserId or externalOrganizationId: this token has no account",
        "field": "accountId",
    }
    assert changed(before, await snapshot()) == set()
    made = await world.set("platform", {**limit, "externalUserId": "cus_ada"})
    assert (made["created"], made["limit"]["accountId"]) == (True, gid("CreditAccount", world.ada_account))
    # The platform's token reads no balances: limits:write is not balance:read.
    body = await world.api.post(ACCOUNT, {"id": gid("CreditAccount", world.ada_account)}, world.tokens["platform"])
    assert body["data"] == {"node": None}


async def test_a_member_of_the_pool_may_not_set_or_remove_its_limits(world: World) -> None:
    pool = gid("CreditAccount", world.pool)
    made = await world.set("ada", {"accountId": pool, "scope": "ACCOUNT", "window": "DAY", "amount": "9"})
    before = await snapshot()

    denied = [
        await world.set("carol", {"accountId": pool, "scope": "ACCOUNT", "window": "DAY", "amount": "90"}),
        (await world.api.data(REMOVE, {"id": made["limit"]["id"]}, world.tokens["carol"]))["removeSpendLimit"],
        (await world.api.data(RESUME, {"input": {"accountId": pool, "agentId": "a"}}, world.tokens["carol"]))[
            "resumeAgent"
        ],
    ]

    assert [answer["__typename"] for answer in denied] == ["Forbidden"] * 3
    assert all(" need" in answer["message"] for answer in denied)
    assert changed(before, await snapshot()) == set()


# -------------------------------------------------------------------------------------- statement counts

POOL_PAGE = """query($org: ID!) { node(id: $org) { ... on Organization { members { email
  spendLimits { id spent held remaining resetsAt paused trippedAt } } } } }"""


@pytest.mark.parametrize("members", [3, 30])
async def test_member_limits_cost_the_same_statements_for_3_members_as_for_30(
    world: World, counter: StatementCounter, members: int
) -> None:
    now = world.api.clock.now()
    for n in range(members):
        user = await ledger.create_user(f"m{n}@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=now)
        await organizations.add_member(world.acme, user, [MemberRole.MEMBER], now)
        made = await world.set(
            "ada",
            {"accountId": gid("Organization", world.acme), "scope": "MEMBER", "memberId": gid("User", user),
             "window": "DAY", "amount": "2"},
        )  # fmt: skip
        await count(pk(made["limit"]["id"]), epoch("2026-01-15T00:00:00+00:00"), MICRO)

    body = await counter.during(
        world.api.post(POOL_PAGE, {"org": gid("Organization", world.acme)}, world.tokens["ada"])
    )

    assert "errors" not in body, body
    limited = [member for member in body["data"]["node"]["members"] if member["spendLimits"]]
    assert len(limited) == members
    assert {(m["spendLimits"][0]["spent"], m["spendLimits"][0]["remaining"]) for m in limited} == {("1", "1")}
    # token, organization, roles, members, users, pool, limits, counters, holds, whatever the number of members
    assert len(counter.statements) == 9, counter.statements


# ---------------------------------------------------------------------------------- a limit's time zone


ZONED_SPEND = """mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { __typename
  ... on SpendLimitExceeded { spent required } } }"""


async def test_a_day_limit_moved_east_keeps_what_it_counted_and_keeps_blocking(world: World) -> None:
    daily = {"scope": "AGENT", "agentId": "bot", "window": "DAY", "amount": "10"}
    assert (await world.set("ada", daily))["created"] is True
    spend = {"userId": gid("User", world.ada), "agentId": "bot", "activity": "answer", "credits": "4"}
    first = await world.api.data(ZONED_SPEND, {"input": {**spend, "idempotencyKey": "s0"}}, world.tokens["runtime"])
    assert first["spendCredits"] == {"__typename": "SpendCreditsSuccess"}
    # At 12:00 UTC Tokyo's day began at 15:00 UTC the day before, before the counter of the UTC day.
    moved = await world.set("ada", {**daily, "timeZone": "Asia/Tokyo"})
    assert (moved["created"], moved["limit"]["spent"], moved["limit"]["timeZone"]) == (False, "4", "Asia/Tokyo")

    outcomes = [
        (await world.api.data(ZONED_SPEND, {"input": {**spend, "idempotencyKey": f"s{n}"}}, world.tokens["runtime"]))[
            "spendCredits"
        ]
        for n in range(1, 4)
    ]
    refused = {"__typename": "SpendLimitExceeded", "spent": "8", "required": "4"}
    assert outcomes == [{"__typename": "SpendCreditsSuccess"}, refused, refused]
    assert (await world.mine())["spendLimits"][0]["spent"] == "8"


async def test_a_member_budget_moved_to_tokyo_time_still_caps_the_month(world: World) -> None:
    await organizations.set_budget(world.acme, world.carol, 10 * MICRO, world.api.clock.now())
    spend = {"userId": gid("User", world.carol), "organizationId": gid("Organization", world.acme),
             "agentId": "bot", "activity": "answer", "credits": "8"}  # fmt: skip
    runtime = world.tokens["runtime"]
    first = await world.api.data(ZONED_SPEND, {"input": {**spend, "idempotencyKey": "s0"}}, runtime)
    assert first["spendCredits"] == {"__typename": "SpendCreditsSuccess"}
    member = {"accountId": gid("CreditAccount", world.pool), "scope": "MEMBER", "memberId": gid("User", world.carol)}
    moved = await world.set("ada", {**member, "window": "MONTH", "amount": "10", "timeZone": "Asia/Tokyo"})
    assert (moved["created"], moved["limit"]["spent"]) == (False, "8")
    again = await world.api.data(ZONED_SPEND, {"input": {**spend, "idempotencyKey": "s1"}}, runtime)
    assert again["spendCredits"] == {"__typename": "SpendLimitExceeded", "spent": "8", "required": "8"}


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory", "posix/Europe/Paris", "right/UTC"])
async def test_a_zone_name_that_is_not_an_iana_zone_is_refused_and_changes_nothing(world: World, name: str) -> None:
    before = await snapshot()
    answer = await world.set("ada", {"scope": "ACCOUNT", "window": "DAY", "amount": "10", "timeZone": name})
    assert answer["__typename"] == "ValidationError"
    assert answer["field"] == "timeZone"
    assert changed(before, await snapshot()) == set()
