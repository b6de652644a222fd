"""Delegated agent tokens (README, Agent tokens; docs/rules.md, Delegated tokens): createAgentToken as each kind
of caller, a bound token's spends and holds on its account and its refusals everywhere else, what it may read,
its cap (a TOKEN-scope limit made in the same transaction), and listing and revoking by the right people.

Acme has an owner, a BILLING member and a plain MEMBER with a monthly budget, and a pool of 50 credits; the
outsider owns Globex, which has a pool of its own. Every refusal changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest

from models import ledger, organizations
from models import tokens as token_models
from models.credits import MICRO
from models.limit_rules import LimitSpec
from models.tables import (
    ApiToken,
    CreditAccount,
    CreditKind,
    Hold,
    LimitScope,
    LimitWindow,
    LotSource,
    MemberRole,
    SpendLimit,
    TokenKind,
    UsageEvent,
    User,
)
from models.tokens import create_token, digest
from resolvers.delegation import OWN_HOLDS_ONLY
from tests.support.helpers import Api, gid
from tests.support.snapshots import changed, snapshot

TOKEN_FIELDS = """id name kind scopes accountId agentId activities expiresAt lastUsedAt status user { email }
  spendLimits {
    scope kind window windowLength timeZone amount action warnAtPercent maxCreditsPerRun tokenId accountId
  }"""
MINT = f"""
mutation Mint($input: CreateAgentTokenInput!) {{
  createAgentToken(input: $input) {{
    __typename
    ... on CreateAgentTokenSuccess {{ secret apiToken {{ {TOKEN_FIELDS} }} }}
    ... on ValidationError {{ message field }}
    ... on Error {{ message }}
  }}
}}
"""
SPEND = """
mutation Spend($input: SpendCreditsInput!) {
  spendCredits(input: $input) {
    __typename
    ... on SpendCreditsSuccess { usageEvent { credits agentId activity } balance { total } }
    ... on Error { message }
  }
}
"""
HOLD = """
mutation Hold($input: HoldCreditsInput!) {
  holdCredits(input: $input) {
    __typename
    ... on HoldCreditsSuccess { hold { id status amount } balance { held } }
    ... on Error { message }
  }
}
"""
CAPTURE = """
mutation Capture($hold: ID!, $key: String!) {
  captureHold(input: {holdId: $hold, idempotencyKey: $key}) {
    __typename ... on CaptureHoldSuccess { hold { status captured } } ... on Error { message }
  }
}
"""
EXTEND = """
mutation Extend($hold: ID!, $key: String!) {
  extendHold(input: {holdId: $hold, timeoutSeconds: 600, idempotencyKey: $key}) {
    __typename ... on ExtendHoldSuccess { hold { status } } ... on Error { message }
  }
}
"""

INCREASE = """
mutation Increase($hold: ID!, $key: String!) {
  increaseHold(input: {holdId: $hold, credits: "1", idempotencyKey: $key}) {
    __typename ... on IncreaseHoldSuccess { hold { status amount } } ... on Error { message }
  }
}
"""

RELEASE = """
mutation Release($hold: ID!, $key: String!) {
  releaseHold(input: {holdId: $hold, idempotencyKey: $key}) {
    __typename ... on ReleaseHoldSuccess { hold { status } } ... on Error { message }
  }
}
"""
REVOKE = """
mutation Revoke($id: ID!) {
  revokeApiToken(input: {tokenId: $id}) {
    __typename ... on RevokeApiTokenSuccess { apiToken { id status } } ... on Error { message }
  }
}
"""
LIST = f"""
query List($account: ID!) {{
  node(id: $account) {{ ... on CreditAccount {{ agentTokens(first: 10) {{ edges {{ node {{ {TOKEN_FIELDS} }} }} }} }} }}
}}
"""
MINE = "{ me { apiTokens(first: 10) { edges { node { name kind agentId accountId } } } } }"

OWN_ACCOUNT_ONLY = "This agent token spends only from the account it is bound to"
SPENDS_AS = "This agent token spends only as the user who minted it: name that user"
MINTING_NEEDS_ROLE = (
    "Minting an agent token for this account needs its owner, the BILLING or OWNER role in its organization, or"
    " a monthly budget there"
)
MINTERS_ONLY = (
    "Minting agent tokens needs a user token (for its own account or an organization's pool), an admin token, or"
    " a service token with the 'usage:write' scope"
)
MEMBER_NEEDS_BUDGET = (
    "A MEMBER needs a monthly budget in this organization to hand an agent part of it (an OWNER or BILLING member"
    " sets one with setMemberBudget)"
)
CREATED = "2026-01-15T12:00:00+00:00"


@dataclass
class World:
    api: Api
    ids: dict[str, int]
    tokens: dict[str, str]

    def gid(self, name: str) -> str:
        type_name = {"org": "Organization", "globex": "Organization"}.get(name)
        if name in ("pool", "globex pool") or name.endswith(" account"):
            type_name = "CreditAccount"
        return gid(type_name or "User", self.ids[name])

    async def mint(self, caller: str, **input: Any) -> Any:
        token = self.tokens.get(caller, caller)
        body = await self.api.post(MINT, {"input": {"name": "bot key", **input}}, token)
        assert "errors" not in body, body
        return body["data"]["createAgentToken"]

    async def minted(self, caller: str, **input: Any) -> tuple[str, int]:
        made = await self.mint(caller, **input)
        assert made["__typename"] == "CreateAgentTokenSuccess", made
        return made["secret"], (await ApiToken.get(token_hash=digest(made["secret"]))).id

    async def spend(self, token: str, user: str, *, org: str | None = "org", **changes: Any) -> Any:
        input = {
            "userId": self.gid(user) if user in self.ids else user,
            "organizationId": None if org is None else self.gid(org),
            "agentId": "bot",
            "activity": "answer",
            "credits": "1",
            "idempotencyKey": f"k-{changes.pop('key', 'spend')}",
            **changes,
        }
        return await self.api.post(SPEND, {"input": input}, token)

    async def hold(self, token: str, user: str, *, org: str | None = "org", **changes: Any) -> Any:
        input = {
            "userId": self.gid(user) if user in self.ids else user,
            "organizationId": None if org is None else self.gid(org),
            "agentId": "bot",
            "activity": "answer",
            "credits": "2",
            "idempotencyKey": f"h-{changes.pop('key', 'hold')}",
            **changes,
        }
        return await self.api.post(HOLD, {"input": input}, token)


async def _grant(account_id: int, credits: int, now: Any) -> None:
    await ledger.grant(
        account_id,
        credits=credits * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=now,
    )


@pytest.fixture
async def world(api: Api) -> World:
    now = api.clock.now()
    ids: dict[str, int] = {}
    tokens: dict[str, str] = {}
    for name in ("owner", "billing", "member", "outsider"):
        ids[name], tokens[name] = await api.user(f"{name}@example.com", bonus=5)
        ids[f"{name} account"] = (await CreditAccount.get(user_id=ids[name])).id
    await User.filter(id=ids["outsider"]).update(external_id="platform-outsider")
    acme = await organizations.create("Acme", ids["owner"], now)
    await organizations.add_member(acme.id, ids["billing"], [MemberRole.BILLING], now)
    await organizations.add_member(acme.id, ids["member"], [MemberRole.MEMBER], now)
    pool = await organizations.enable_pool(acme.id, now)
    await organizations.set_budget(acme.id, ids["member"], 10 * MICRO, now)
    await _grant(pool.id, 50, now)
    globex = await organizations.create("Globex", ids["outsider"], now)
    globex_pool = await organizations.enable_pool(globex.id, now)
    await _grant(globex_pool.id, 50, now)
    ids |= {"org": acme.id, "pool": pool.id, "globex": globex.id, "globex pool": globex_pool.id}
    tokens["service"] = await api.service()
    tokens["reader"] = await api.service("reader", ("balance:read",))
    tokens["platform"] = await api.service("platform", ("usage:write", "balance:read"))
    tokens["admin"] = await api.admin()
    return World(api, ids, tokens)


def success(world: World, made: Any, **token: Any) -> dict[str, Any]:
    """What a CreateAgentTokenSuccess shows, with ``token``'s fields over the defaults."""
    return {
        "__typename": "CreateAgentTokenSuccess",
        "secret": made["secret"],
        "apiToken": {
            "id": ANY,
            "name": "bot key",
            "kind": "SERVICE",
            "scopes": ["balance:read", "usage:write"],
            "accountId": world.gid("pool"),
            "agentId": None,
            "activities": None,
            "expiresAt": None,
            "lastUsedAt": None,
            "status": "ACTIVE",
            "user": None,
            "spendLimits": [],
            **token,
        },
    }


# ------------------------------------------------------------------------------------------------ end to end


async def test_a_pool_owner_hands_an_agent_a_capped_budget_and_the_agent_spends_only_there(world: World) -> None:
    made = await world.mint(
        "owner",
        accountId=world.gid("org"),
        agentId="bot",
        activities=["answer", "search"],
        spendLimit={"amount": "2", "window": "DAY", "timeZone": "Europe/Paris", "warnAtPercent": 80},
    )
    row = await ApiToken.get(token_hash=digest(made["secret"]))
    limit = {
        "scope": "TOKEN",
        "kind": "CAP",
        "window": "DAY",
        "windowLength": 1,
        "timeZone": "Europe/Paris",
        "amount": "2",
        "action": "BLOCK",
        "warnAtPercent": 80,
        "maxCreditsPerRun": None,
        "tokenId": gid("ApiToken", row.id),
        "accountId": world.gid("pool"),
    }
    assert made == success(
        world,
        made,
        id=gid("ApiToken", row.id),
        agentId="bot",
        activities=["answer", "search"],
        user={"email": "owner@example.com"},
        spendLimits=[limit],
    )
    assert made["secret"].startswith("cls_")
    assert (row.kind, row.account_id, row.user_id, row.agent_id, row.activities) == (
        TokenKind.SERVICE,
        world.ids["pool"],
        world.ids["owner"],
        "bot",
        "answer search",
    )
    assert [
        (s.account_id, s.scope.value, s.subject, s.token_id, s.amount, s.window.value, s.action.value)
        for s in await SpendLimit.filter(scope="TOKEN")
    ] == [(world.ids["pool"], "TOKEN", f"token:{row.id}", row.id, 2 * MICRO, "DAY", "BLOCK")]
    # The token's cap, and the member's monthly budget (a limit on the pool too).
    assert (await CreditAccount.get(id=world.ids["pool"])).spend_limits == 2

    bot = made["secret"]
    spent = await world.spend(bot, "owner", credits="1.5")
    assert spent == {
        "data": {
            "spendCredits": {
                "__typename": "SpendCreditsSuccess",
                "usageEvent": {"credits": "1.5", "agentId": "bot", "activity": "answer"},
                "balance": {"total": "48.5"},
            }
        }
    }
    # The spend is recorded under the token, so that its TOKEN cap counts it once limits are enforced.
    assert [(e.account_id, e.token_id, e.agent_id) for e in await UsageEvent.all()] == [
        (world.ids["pool"], row.id, "bot")
    ]
    # It reads its pool's balance, and nothing else.
    read = await world.api.data(
        "query($a: ID!, $b: ID!) { a: node(id: $a) { ... on CreditAccount { balance { total } } }"
        " b: node(id: $b) { id } }",
        {"a": world.gid("pool"), "b": world.gid("globex pool")},
        bot,
    )
    assert read == {"a": {"balance": {"total": "48.5"}}, "b": None}


# ------------------------------------------------------------------------------------------------ minting


@pytest.mark.parametrize(
    ("caller", "account", "scopes", "spends_as"),
    [
        ("owner", "owner account", ["balance:read", "usage:write"], "owner"),
        ("member", None, ["balance:read", "usage:write"], "member"),  # by default, the user's own account
        ("owner", "org", ["balance:read", "usage:write"], "owner"),
        ("billing", "pool", ["balance:read", "usage:write"], "billing"),
        ("member", "org", ["usage:write"], "member"),  # a MEMBER does not read the pool: nor does their agent
        ("service", "org", ["usage:write"], None),  # the platform, by a service without balance:read
        ("platform", "org", ["balance:read", "usage:write"], None),
        ("admin", "pool", ["balance:read", "usage:write"], None),
        ("admin", "outsider account", ["balance:read", "usage:write"], None),
    ],
)
async def test_who_may_mint_for_which_account(
    world: World, caller: str, account: str | None, scopes: list[str], spends_as: str | None
) -> None:
    input = {} if account is None else {"accountId": world.gid(account)}
    made = await world.mint(caller, **input)
    bound = "member account" if account is None else "pool" if account == "org" else account
    assert made == success(
        world,
        made,
        scopes=scopes,
        accountId=world.gid(bound),
        user=None if spends_as is None else {"email": f"{spends_as}@example.com"},
    )
    row = await ApiToken.get(token_hash=digest(made["secret"]))
    assert (row.account_id, row.user_id) == (world.ids[bound], None if spends_as is None else world.ids[spends_as])


async def test_the_platform_mints_by_external_id(world: World) -> None:
    made = await world.mint("admin", externalUserId="platform-outsider")
    assert made == success(world, made, accountId=world.gid("outsider account"))


FORBIDDEN = {"__typename": "Forbidden", "message": MINTING_NEEDS_ROLE}
NO_SUCH_ACCOUNT = {"__typename": "NotFound", "message": "Credit account not found"}
NAME_ONE = {
    "__typename": "ValidationError",
    "message": "Give accountId: this token belongs to a service or an admin",
    "field": "accountId",
}


@pytest.mark.parametrize(
    ("caller", "input", "expected"),
    [
        ("outsider", {"accountId": "org"}, FORBIDDEN),
        ("outsider", {"accountId": "pool"}, FORBIDDEN),
        ("member", {"accountId": "owner account"}, FORBIDDEN),
        ("member", {"accountId": "owner"}, FORBIDDEN),
        ("owner", {"accountId": "globex"}, FORBIDDEN),
        # An unknown externalId is refused as another's account is: no oracle of which exist.
        ("member", {"externalUserId": "platform-outsider"}, FORBIDDEN),
        ("member", {"externalUserId": "nobody"}, FORBIDDEN),
        ("member", {"accountId": gid("CreditAccount", 999)}, NO_SUCH_ACCOUNT),
        ("admin", {}, NAME_ONE),
        ("service", {}, NAME_ONE),
        ("reader", {"accountId": "pool"}, {"__typename": "Forbidden", "message": MINTERS_ONLY}),
    ],
)  # fmt: skip
async def test_minting_for_an_account_one_may_not_hand_out_is_refused_and_changes_nothing(
    world: World, caller: str, input: dict[str, Any], expected: dict[str, Any]
) -> None:
    named = {k: world.gid(v) if v in world.ids else v for k, v in input.items()}
    before = await snapshot()
    assert await world.mint(caller, **named) == expected
    assert changed(before, await snapshot()) == set()


async def test_a_member_without_a_budget_may_not_mint_for_the_pool(world: World) -> None:
    await organizations.set_budget(world.ids["org"], world.ids["member"], None, world.api.clock.now())
    before = await snapshot()
    assert await world.mint("member", accountId=world.gid("org")) == {
        "__typename": "Forbidden",
        "message": MEMBER_NEEDS_BUDGET,
    }
    assert changed(before, await snapshot()) == set()


async def test_portal_sessions_and_agent_tokens_mint_nothing(world: World) -> None:
    portal = await create_token(
        TokenKind.PORTAL, name="portal", account_id=world.ids["pool"], now=world.api.clock.now()
    )
    agent, _ = await world.minted("owner", accountId=world.gid("org"))
    before = await snapshot()
    assert await world.mint(portal, accountId=world.gid("pool")) == {"__typename": "Forbidden", "message": MINTERS_ONLY}
    assert await world.mint(agent, accountId=world.gid("pool")) == {
        "__typename": "Forbidden",
        "message": "An agent token cannot mint tokens",
    }
    created = await world.api.data(
        'mutation { createApiToken(input: {kind: USER, name: "x"}) { __typename ... on Error { message } } }',
        token=agent,
    )
    assert created["createApiToken"]["__typename"] == "Forbidden"
    assert changed(before, await snapshot()) == set()


async def test_a_delegated_token_never_outlives_its_minter(world: World) -> None:
    now = world.api.clock.now()
    expiring = await create_token(
        TokenKind.USER, name="laptop", user_id=world.ids["owner"], now=now, expires_at=now + timedelta(days=1)
    )
    made = await world.mint(expiring, accountId=world.gid("org"))
    assert made["apiToken"]["expiresAt"] == (now + timedelta(days=1)).isoformat()
    before = await snapshot()
    assert await world.mint(expiring, accountId=world.gid("org"), expiresAt=(now + timedelta(days=2)).isoformat()) == {
        "__typename": "ValidationError",
        "message": "A token cannot outlive the token that makes it: expiresAt must be at or before"
        " 2026-01-16T12:00:00Z",
        "field": "expiresAt",
    }
    assert changed(before, await snapshot()) == set()
    shorter = (now + timedelta(hours=1)).isoformat()
    assert (await world.mint(expiring, accountId=world.gid("org"), expiresAt=shorter))["apiToken"][
        "expiresAt"
    ] == shorter


async def test_the_token_and_its_cap_are_made_in_one_transaction(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the limit could not be written")

    monkeypatch.setattr(token_models, "set_limit_in", failing)
    before = await snapshot()
    with pytest.raises(RuntimeError):
        await token_models.create_agent_token(
            name="bot",
            account_id=world.ids["pool"],
            now=world.api.clock.now(),
            scopes=("usage:write",),
            limit=LimitSpec(scope=LimitScope.TOKEN, amount=MICRO, window=LimitWindow.DAY, token_id=0),
        )
    assert changed(before, await snapshot()) == set()


# ------------------------------------------------------------------------------------------------ spending


@pytest.fixture
async def bot(world: World) -> str:
    """The owner's agent token for the pool: agent "bot", activity "answer" only."""
    secret, _ = await world.minted("owner", accountId=world.gid("org"), agentId="bot", activities=["answer"])
    return secret


@pytest.mark.parametrize(
    ("user", "changes", "message"),
    [
        ("outsider", {"org": None}, OWN_ACCOUNT_ONLY),  # another user's own account
        ("owner", {"org": None}, OWN_ACCOUNT_ONLY),  # its minter's own account
        ("outsider", {"org": "globex"}, OWN_ACCOUNT_ONLY),  # another organization's pool
        (gid("User", 999), {"org": None}, OWN_ACCOUNT_ONLY),  # no such user: the same answer
        ("outsider", {"org": "org"}, OWN_ACCOUNT_ONLY),  # not a member of Acme: the same answer
        ("member", {}, SPENDS_AS),  # the pool, but as another member than its minter
        ("owner", {"agentId": "other-bot"}, "This agent token spends only as agent 'bot'"),
        ("owner", {"activity": "search"}, "This agent token may not spend on activity 'search'"),
    ],
)
@pytest.mark.parametrize("operation", ["spend", "hold"])
async def test_a_bound_token_is_refused_outside_its_binding_and_nothing_changes(
    world: World, bot: str, operation: str, user: str, changes: dict[str, Any], message: str
) -> None:
    before = await snapshot()
    body = await getattr(world, operation)(bot, user, **changes)
    name = "spendCredits" if operation == "spend" else "holdCredits"
    assert body == {"data": {name: {"__typename": "Forbidden", "message": message}}}
    assert changed(before, await snapshot()) == set()


async def test_a_bound_token_is_refused_for_an_external_id_of_anyone(world: World, bot: str) -> None:
    before = await snapshot()
    for external in ("platform-outsider", "nobody"):
        body = await world.spend(bot, "x", org=None, userId=None, externalUserId=external)
        assert body == {"data": {"spendCredits": {"__typename": "Forbidden", "message": OWN_ACCOUNT_ONLY}}}
    assert changed(before, await snapshot()) == set()


async def test_a_platform_token_for_a_pool_spends_as_any_member(world: World) -> None:
    secret, _ = await world.minted("admin", accountId=world.gid("org"))
    spent = await world.spend(secret, "member", agentId="anyone")
    assert spent["data"]["spendCredits"]["__typename"] == "SpendCreditsSuccess", spent
    # Still only for members of the pool.
    before = await snapshot()
    refused = await world.spend(secret, "outsider", key="outsider")
    assert refused == {"data": {"spendCredits": {"__typename": "Forbidden", "message": OWN_ACCOUNT_ONLY}}}
    assert changed(before, await snapshot()) == set()


async def test_an_expired_or_revoked_token_spends_nothing(world: World, bot: str) -> None:
    now = world.api.clock.now()
    short, _ = await world.minted("owner", accountId=world.gid("org"), expiresAt=(now + timedelta(hours=1)).isoformat())
    revoked, revoked_id = await world.minted("owner", accountId=world.gid("org"))
    assert (await world.api.data(REVOKE, {"id": gid("ApiToken", revoked_id)}, world.tokens["owner"]))["revokeApiToken"][
        "__typename"
    ] == "RevokeApiTokenSuccess"
    world.api.clock.advance(timedelta(hours=2))
    before = await snapshot()
    for secret in (short, revoked):
        body = await world.spend(secret, "owner", agentId="bot")
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert changed(before, await snapshot()) == set()


async def test_a_bound_token_captures_and_releases_its_own_holds_only(world: World, bot: str) -> None:
    held = await world.hold(bot, "owner")
    assert held["data"]["holdCredits"]["__typename"] == "HoldCreditsSuccess", held
    own = held["data"]["holdCredits"]["hold"]["id"]
    captured = await world.api.data(CAPTURE, {"hold": own, "key": "c1"}, bot)
    assert captured["captureHold"] == {
        "__typename": "CaptureHoldSuccess",
        "hold": {"status": "CAPTURED", "captured": "2"},
    }
    # Holds on other accounts (placed by the plain service) and on its own by another agent.
    theirs = await world.hold(world.tokens["service"], "outsider", org="globex", key="theirs")
    other_agent = await world.hold(world.tokens["service"], "owner", agentId="other-bot", key="other")
    theirs_id = theirs["data"]["holdCredits"]["hold"]["id"]
    other_id = other_agent["data"]["holdCredits"]["hold"]["id"]
    before = await snapshot()
    for document, name in ((CAPTURE, "captureHold"), (RELEASE, "releaseHold")):
        answer = await world.api.data(document, {"hold": theirs_id, "key": f"{name}-1"}, bot)
        assert answer[name] == {"__typename": "NotFound", "message": "Hold not found"}
        answer = await world.api.data(document, {"hold": other_id, "key": f"{name}-2"}, bot)
        assert answer[name] == {"__typename": "Forbidden", "message": "This agent token spends only as agent 'bot'"}
    assert changed(before, await snapshot()) == set()
    second = (await world.hold(bot, "owner", key="second"))["data"]["holdCredits"]["hold"]["id"]
    released = await world.api.data(RELEASE, {"hold": second, "key": "r1"}, bot)
    assert released["releaseHold"] == {"__typename": "ReleaseHoldSuccess", "hold": {"status": "RELEASED"}}
    assert await Hold.filter(account_id=world.ids["globex pool"], status="ACTIVE").count() == 1


async def test_a_bound_token_reads_its_account_and_nothing_else(world: World, bot: str) -> None:
    member_only, _ = await world.minted("member", accountId=world.gid("org"))
    pool = world.gid("pool")
    own = await world.api.data(
        "query($a: ID!) { node(id: $a) { ... on CreditAccount { balance { total } } } }", {"a": pool}, bot
    )
    assert own == {"node": {"balance": {"total": "50"}}}
    # A MEMBER's agent does not read the pool (the MEMBER does not), nor does any agent read elsewhere.
    for secret, account in ((member_only, pool), (bot, world.gid("owner account")), (bot, world.gid("globex pool"))):
        body = await world.api.data("query($a: ID!) { node(id: $a) { id } }", {"a": account}, secret)
        assert body == {"node": None}
    for query in (
        "{ me { email } }",
        '{ user(externalId: "platform-outsider") { id } }',
        f'{{ node(id: "{pool}") {{ ... on CreditAccount {{ transactions(first: 1) {{ edges {{ cursor }} }} }} }} }}',
        f'{{ node(id: "{pool}") {{ ... on CreditAccount {{ agentTokens(first: 1) {{ edges {{ cursor }} }} }} }} }}',
    ):
        body = await world.api.post(query, token=bot)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], (query, body)


async def test_a_capped_token_cannot_spend_past_its_cap_through_a_hold_another_token_placed(world: World) -> None:
    capped, _ = await world.minted(
        "owner", accountId=world.gid("org"), agentId="bot", spendLimit={"amount": "2", "window": "TOTAL"}
    )
    # The platform reserves a little for the bot's task, under its own token (not the bot's cap).
    placed = await world.hold(world.tokens["platform"], "owner", credits="1", key="platform")
    hold_id = placed["data"]["holdCredits"]["hold"]["id"]
    over = await world.hold(capped, "owner", credits="3", key="own")
    assert over["data"]["holdCredits"]["__typename"] == "SpendLimitExceeded"
    before = await snapshot()
    refused = {"__typename": "Forbidden", "message": OWN_HOLDS_ONLY}
    increased = await world.api.data(INCREASE, {"hold": hold_id, "key": "grow"}, capped)
    assert increased["increaseHold"] == refused
    for document, name in ((CAPTURE, "captureHold"), (EXTEND, "extendHold"), (RELEASE, "releaseHold")):
        assert (await world.api.data(document, {"hold": hold_id, "key": name}, capped))[name] == refused
    assert changed(before, await snapshot()) == set()


async def test_a_bound_token_extends_and_increases_its_own_holds_only(world: World, bot: str) -> None:
    own = (await world.hold(bot, "owner"))["data"]["holdCredits"]["hold"]["id"]
    theirs = await world.hold(world.tokens["service"], "outsider", org="globex", key="theirs")
    other_agent = await world.hold(world.tokens["service"], "owner", agentId="other-bot", key="other")
    theirs_id = theirs["data"]["holdCredits"]["hold"]["id"]
    other_id = other_agent["data"]["holdCredits"]["hold"]["id"]
    before = await snapshot()
    for document, name in ((EXTEND, "extendHold"), (INCREASE, "increaseHold")):
        answer = await world.api.data(document, {"hold": theirs_id, "key": f"{name}-1"}, bot)
        assert answer[name] == {"__typename": "NotFound", "message": "Hold not found"}
        answer = await world.api.data(document, {"hold": other_id, "key": f"{name}-2"}, bot)
        assert answer[name] == {"__typename": "Forbidden", "message": "This agent token spends only as agent 'bot'"}
    assert changed(before, await snapshot()) == set()
    extended = await world.api.data(EXTEND, {"hold": own, "key": "e1"}, bot)
    assert extended["extendHold"] == {"__typename": "ExtendHoldSuccess", "hold": {"status": "ACTIVE"}}
    increased = await world.api.data(INCREASE, {"hold": own, "key": "i1"}, bot)
    assert increased["increaseHold"] == {
        "__typename": "IncreaseHoldSuccess",
        "hold": {"status": "ACTIVE", "amount": "3"},
    }


# ------------------------------------------------------------------------------------------------ list, revoke


async def test_the_account_owner_the_pool_roles_and_the_platform_list_its_agent_tokens(world: World) -> None:
    _, by_owner = await world.minted(
        "owner", accountId=world.gid("org"), agentId="bot", spendLimit={"amount": "3", "window": "TOTAL"}
    )
    _, by_member = await world.minted("member", accountId=world.gid("org"), activities=["answer"])
    await world.minted("owner")  # the owner's own account: not the pool's
    for caller in ("owner", "billing", "admin", "platform"):
        listed = await world.api.data(LIST, {"account": world.gid("pool")}, world.tokens[caller])
        nodes = [edge["node"] for edge in listed["node"]["agentTokens"]["edges"]]
        assert [(n["id"], n["agentId"], n["activities"], n["user"]) for n in nodes] == [
            (gid("ApiToken", by_member), None, ["answer"], {"email": "member@example.com"}),
            (gid("ApiToken", by_owner), "bot", None, {"email": "owner@example.com"}),
        ], caller
        assert [limit["amount"] for limit in nodes[1]["spendLimits"]] == ["3"]
        assert nodes[1]["lastUsedAt"] is None
    # A MEMBER sees the one they minted among their own tokens, not the pool's list.
    mine = await world.api.data(MINE, token=world.tokens["member"])
    assert [n["node"] for n in mine["me"]["apiTokens"]["edges"]] == [
        {"name": "bot key", "kind": "SERVICE", "agentId": None, "accountId": world.gid("pool")},
        {"name": "member@example.com", "kind": "USER", "agentId": None, "accountId": None},
    ]
    assert await world.api.data(LIST, {"account": world.gid("pool")}, world.tokens["member"]) == {"node": None}


@pytest.mark.parametrize(
    ("minter", "account", "revoker", "allowed"),
    [
        ("owner", "org", "billing", True),  # a pool's BILLING member ends the pool's tokens
        ("member", "org", "owner", True),
        ("member", "org", "member", True),  # its minter
        ("owner", "org", "member", False),  # a MEMBER ends only their own
        ("owner", "org", "outsider", False),
        ("admin", "owner account", "owner", True),  # the account's user ends the platform's token on it
        ("admin", "owner account", "billing", False),
        ("owner", "org", "service", True),  # the platform
        ("owner", "org", "reader", False),
    ],
)
async def test_who_may_revoke_an_agent_token(
    world: World, minter: str, account: str, revoker: str, allowed: bool
) -> None:
    secret, token_id = await world.minted(minter, accountId=world.gid(account))
    before = await snapshot()
    answer = (await world.api.data(REVOKE, {"id": gid("ApiToken", token_id)}, world.tokens[revoker]))["revokeApiToken"]
    if allowed:
        assert answer == {
            "__typename": "RevokeApiTokenSuccess",
            "apiToken": {"id": gid("ApiToken", token_id), "status": "REVOKED"},
        }
        body = await world.api.post("{ rateCard { activity } }", token=secret)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    else:
        assert answer in (
            {"__typename": "NotFound", "message": "Token not found"},
            {
                "__typename": "Forbidden",
                "message": "Managing tokens needs an admin token, or a user token for its own tokens",
            },
        )
        assert changed(before, await snapshot()) == set()


async def test_a_service_revokes_agent_tokens_only(world: World) -> None:
    user_token = await ApiToken.get(token_hash=digest(world.tokens["owner"]))
    before = await snapshot()
    answer = await world.api.data(REVOKE, {"id": gid("ApiToken", user_token.id)}, world.tokens["service"])
    assert answer["revokeApiToken"] == {
        "__typename": "Forbidden",
        "message": "Managing tokens needs an admin token, or a user token for its own tokens",
    }
    assert changed(before, await snapshot()) == set()


async def test_an_agent_token_named_like_a_service_does_not_share_its_idempotency_keys(world: World) -> None:
    # The service "agent-runtime" spends for the owner on the pool with key k-shared; an agent token that its
    # minter named "agent-runtime" sending the same request must spend anew, not replay the service's answer.
    first = await world.spend(world.tokens["service"], "owner", key="shared")
    assert first["data"]["spendCredits"]["balance"] == {"total": "49"}, first
    secret, _ = await world.minted("owner", accountId=world.gid("org"), name="agent-runtime")
    second = await world.spend(secret, "owner", key="shared")
    assert second["data"]["spendCredits"]["balance"] == {"total": "48"}, second
    assert await UsageEvent.filter(account_id=world.ids["pool"]).count() == 2


BATCH = """mutation($input: SpendCreditsBatchInput!) { spendCreditsBatch(input: $input) { __typename
  ... on SpendCreditsBatchSuccess { results { __typename ... on SpendCreditsSuccess { balance { total } }
    ... on BudgetExceeded { monthlyBudget spentThisMonth required } ... on Error { message } } } } }"""


def _event(world: World, user: str, key: str, org: str | None = "org", **changes: Any) -> dict[str, Any]:
    return {
        "userId": world.gid(user),
        "organizationId": None if org is None else world.gid(org),
        "agentId": "bot",
        "activity": "answer",
        "credits": "1",
        "idempotencyKey": key,
        **changes,
    }


async def test_a_bound_token_spends_in_a_batch_only_within_its_binding_event_by_event(world: World, bot: str) -> None:
    body = await world.api.data(
        BATCH,
        {
            "input": {
                "events": [
                    _event(world, "owner", "b1"),
                    _event(world, "owner", "b2", agentId="other-bot"),
                    _event(world, "member", "b3"),
                    _event(world, "outsider", "b4", org=None),
                    _event(world, "owner", "b5", activity="search"),
                    _event(world, "owner", "b6", credits="2"),
                ]
            }
        },
        bot,
    )

    assert body["spendCreditsBatch"]["results"] == [
        {"__typename": "SpendCreditsSuccess", "balance": {"total": "49"}},
        {"__typename": "Forbidden", "message": "This agent token spends only as agent 'bot'"},
        {"__typename": "Forbidden", "message": SPENDS_AS},
        {"__typename": "Forbidden", "message": OWN_ACCOUNT_ONLY},
        {"__typename": "Forbidden", "message": "This agent token may not spend on activity 'search'"},
        {"__typename": "SpendCreditsSuccess", "balance": {"total": "47"}},
    ]
    assert (await CreditAccount.get(user_id=world.ids["outsider"])).balance == 5 * MICRO


async def test_a_members_budget_refuses_the_events_of_a_batch_that_would_pass_it(world: World) -> None:
    events = [
        _event(world, "member", "m1", credits="6"),
        _event(world, "member", "m2", credits="6"),
        _event(world, "member", "m3", credits="4"),
        _event(world, "member", "m4", credits="0.000001"),
        _event(world, "member", "m5", org=None, credits="1"),  # their own account: no budget there
    ]

    body = await world.api.data(BATCH, {"input": {"events": events}}, world.tokens["service"])

    over = "This spend would exceed the member's monthly budget in this organization"
    assert body["spendCreditsBatch"]["results"] == [
        {"__typename": "SpendCreditsSuccess", "balance": {"total": "44"}},
        {
            "__typename": "BudgetExceeded",
            "message": over,
            "monthlyBudget": "10",
            "spentThisMonth": "6",
            "required": "6",
        },
        {"__typename": "SpendCreditsSuccess", "balance": {"total": "40"}},
        {
            "__typename": "BudgetExceeded",
            "message": over,
            "monthlyBudget": "10",
            "spentThisMonth": "10",
            "required": "0.000001",
        },
        {"__typename": "SpendCreditsSuccess", "balance": {"total": "4"}},
    ]
