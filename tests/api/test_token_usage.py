"""``lastUsedAt`` costs no write per request (resolvers/token_usage.py): uses are kept in memory and written by
one statement per flush, only for the tokens used since, never backwards, and at shutdown."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from models import tokens as token_rows
from models.tables import ApiToken
from models.tokens import digest
from resolvers.token_usage import TokenUsage
from tests.support.backends import T0, Backend
from tests.support.helpers import Api, gid
from tests.support.statements import StatementCounter
from tests.support.statements import counter as counter

ME = "{ me { email } }"
LAST_USED = "{ me { apiTokens { edges { node { name lastUsedAt } } } } }"


def writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().split()[0].upper() in ("UPDATE", "INSERT", "DELETE")]


async def last_used(secret: str) -> datetime | None:
    return (await ApiToken.get(token_hash=digest(secret))).last_used_at


def usage_of(api: Api) -> TokenUsage:
    usage: TokenUsage = api.app.state.token_usage
    return usage


async def requests(api: Api, secrets: list[str], rounds: int) -> None:
    for _ in range(rounds):
        for secret in secrets:
            api.clock.advance(timedelta(seconds=1))
            assert await api.data(ME, token=secret) == {"me": {"email": ANY_EMAIL}}


class _AnyEmail:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.endswith("@example.com")


ANY_EMAIL: Any = _AnyEmail()


async def test_requests_write_nothing_until_a_flush_writes_every_token_used_in_one_statement(
    api: Api, db: Backend, counter: StatementCounter
) -> None:
    secrets = [(await api.user(f"user{n}@example.com"))[1] for n in range(3)]
    idle = (await api.user("idle@example.com"))[1]

    await counter.during(requests(api, secrets, rounds=4))

    assert len(counter.statements) > 0
    assert writes(counter.statements) == []
    assert [await last_used(secret) for secret in (*secrets, idle)] == [None] * 4

    flushed = await counter.during(usage_of(api).flush())

    assert flushed == 3
    one, two = ("$1", "$2") if db.name == "postgres" else ("?", "?")
    assert counter.statements == [
        f"UPDATE api_tokens SET last_used_at = {one} WHERE id = {two}"
        f" AND (last_used_at IS NULL OR last_used_at < {one})"
    ]
    # Each token's last use: the fourth round ended at T0 + 12 s with the third user.
    assert [await last_used(secret) for secret in (*secrets, idle)] == [
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=11),
        T0 + timedelta(seconds=12),
        None,
    ]
    assert (await api.data(LAST_USED, token=secrets[0]))["me"]["apiTokens"]["edges"] == [
        {"node": {"name": "user0@example.com", "lastUsedAt": "2026-01-15T12:00:10+00:00"}}
    ]

    # Nothing used since (the query above was a use: flush it first): no statement at all.
    await usage_of(api).flush()
    assert await counter.during(usage_of(api).flush()) == 0
    assert counter.statements == []


async def test_a_flush_never_moves_a_last_use_backwards(api: Api) -> None:
    _, secret = await api.user("ada@example.com")
    later = T0 + timedelta(hours=1)
    # Another process wrote a later use already.
    await ApiToken.filter(token_hash=digest(secret)).update(last_used_at=later)
    await requests(api, [secret], rounds=1)

    assert await usage_of(api).flush() == 1

    assert await last_used(secret) == later


async def test_two_processes_flushing_the_same_tokens_keep_the_latest_use(api: Api) -> None:
    _, secret = await api.user("ada@example.com")
    row = await ApiToken.get(token_hash=digest(secret))
    one, other = TokenUsage(), TokenUsage()
    one.record(row.id, T0 + timedelta(seconds=30))
    other.record(row.id, T0 + timedelta(seconds=20))

    assert (await one.flush(), await other.flush()) == (1, 1)

    assert await last_used(secret) == T0 + timedelta(seconds=30)


async def test_uses_a_failed_flush_could_not_write_are_written_by_the_next(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = await api.user("ada@example.com")
    await requests(api, [secret], rounds=2)
    usage = usage_of(api)
    real = token_rows.record_uses

    async def failing(uses: Any) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr("resolvers.token_usage.record_uses", failing)
    with pytest.raises(ConnectionError):
        await usage.flush()
    assert (usage.pending, await last_used(secret)) == (1, None)

    monkeypatch.setattr("resolvers.token_usage.record_uses", real)
    assert await usage.flush() == 1
    assert await last_used(secret) == T0 + timedelta(seconds=2)


async def test_shutting_down_writes_the_uses_not_written_yet(api: Api) -> None:
    _, secret = await api.user("ada@example.com")
    async with api.app.router.lifespan_context(api.app):
        await requests(api, [secret], rounds=3)
        assert await last_used(secret) is None  # the periodic flush is a minute away

    assert await last_used(secret) == T0 + timedelta(seconds=3)
    assert usage_of(api).pending == 0


async def test_an_idle_timeout_slides_from_uses_not_written_yet_and_from_written_ones(api: Api) -> None:
    admin = await api.admin()
    user_id, _ = await api.user("ada@example.com")
    made = await api.data(
        """mutation($u: ID!) { createApiToken(input: {kind: USER, name: "idle", userId: $u, idleTimeoutSeconds: 600})
             { ... on CreateApiTokenSuccess { secret } } }""",
        {"u": gid("User", user_id)},
        admin,
    )
    secret = made["createApiToken"]["secret"]
    auth = api.app.state.auth
    auth.cache_seconds = 3600  # the token is read once: later uses are known from memory only
    usage = usage_of(api)
    usage.keep_seconds = 3600
    api.clock.advance(timedelta(minutes=9))
    assert await api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    await usage.flush()  # written, and still known here while the cached read predates it
    api.clock.advance(timedelta(minutes=9))
    assert await api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    api.clock.advance(timedelta(minutes=9))
    assert await api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    # A fresh read (another process, or after the cache) sees the written use and this process's own.
    auth._cache.clear()
    api.clock.advance(timedelta(minutes=9))
    assert await api.data(ME, token=secret) == {"me": {"email": "ada@example.com"}}
    api.clock.advance(timedelta(minutes=10))
    assert (await api.post(ME, token=secret))["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
