"""``creditline serve --workers N``: several worker processes on one port (PostgreSQL), each with its own pool and
Redis subscription; SIGTERM stops them all, a worker that dies is replaced, and SQLite is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from creditline import cli
from creditline.app import WORKER_HEADER
from creditline.cli import SQLITE_WORKERS_REFUSAL, USAGE_STATUS
from creditline.settings import Settings
from tests.support.backends import Backend
from tests.support.helpers import SPEND, Api, spend_variables
from tests.support.live import PROTOCOL, free_port, reachable_redis

WATCH = "subscription { balanceChanged { delta reason version balance { total } } }"


@contextlib.asynccontextmanager
async def workers(
    database_url: str, count: int, log: Path, port: str | None = None, **env: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """``creditline serve --workers COUNT`` on ``port`` (default: a free one), once /readyz answers; stopped (and
    waited for) after."""
    port = port or str(free_port())
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - the server under test, stopped below
            [sys.executable, "-m", "creditline", "serve", "--port", str(port), "--workers", str(count)],
            env={**os.environ, "CREDITLINE_DATABASE_URL": database_url, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz", timeout=1)).status_code == 200:
                        break
                assert proc.poll() is None, f"the server exited with {proc.returncode}"
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def pinned_clients(url: str, wanted: int) -> dict[int, httpx.AsyncClient]:
    """One keep-alive connection to each of ``wanted`` distinct workers, by the pid that answers on it (the
    ``x-creditline-worker`` header of /readyz). The kernel hands each new connection to whichever worker
    accepts first: connections are opened side by side, and kept open, until every worker has one."""
    found: dict[int, httpx.AsyncClient] = {}
    spare: list[httpx.AsyncClient] = []
    deadline = time.monotonic() + 120
    try:
        while len(found) < wanted:
            assert time.monotonic() < deadline, f"only workers {sorted(found)} answered"
            batch = [httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1)) for _ in range(8)]
            answers = await asyncio.gather(*(c.get("/readyz", timeout=10) for c in batch))
            for client, answer in zip(batch, answers, strict=True):
                assert answer.status_code == 200, answer.text
                pid = int(answer.headers[WORKER_HEADER])
                if pid not in found:
                    found[pid] = client
                else:
                    spare.append(client)  # kept open: it holds its worker's accept turn
    except BaseException:
        for client in found.values():
            await client.aclose()
        raise
    finally:
        for client in spare:
            await client.aclose()
    return found


async def worker_of(client: httpx.AsyncClient) -> int:
    return int((await client.get("/readyz", timeout=10)).headers[WORKER_HEADER])


async def worker_pids(url: str, wanted: int) -> list[int]:
    """The process ids of ``wanted`` distinct workers, in order (``pinned_clients``, its connections closed)."""
    clients = await pinned_clients(url, wanted)
    for client in clients.values():
        await client.aclose()
    return sorted(clients)


async def spend_on(client: httpx.AsyncClient, token: str, user_id: int, credits: str, key: str) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": SPEND, "variables": spend_variables(user_id, credits, key)},
        headers={"authorization": f"Bearer {token}"},
        timeout=20,
    )
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["spendCredits"]
    return result


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def postgres_only(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("several workers share a database only on PostgreSQL (refused on SQLite: tested below)")


async def test_two_workers_serve_requests_and_sigterm_stops_them_all(db: Backend, api: Api, tmp_path: Path) -> None:
    postgres_only(db)
    user_id, _ = await api.user("ada@example.com", bonus=10, bonus_days=3650)
    service = await api.service()
    log = tmp_path / "serve.log"
    async with workers(db.url, 2, log) as (proc, url):
        clients = await pinned_clients(url, 2)
        try:
            assert len(clients) == 2
            # Each worker serves GraphQL on its own connection: both spends land, one after the other.
            results = []
            for n, (pid, client) in enumerate(sorted(clients.items())):
                results.append(await spend_on(client, service, user_id, "1.5", f"worker-{n}"))
                assert await worker_of(client) == pid  # the spend went through that worker
            assert [r["__typename"] for r in results] == ["SpendCreditsSuccess", "SpendCreditsSuccess"]
            assert sorted(r["balance"]["total"] for r in results) == ["7", "8.5"]
            # A replay through the other worker moves nothing.
            (_, first), (_, second) = sorted(clients.items())
            replay = await spend_on(second, service, user_id, "1.5", "worker-0")
            assert replay["__typename"] == "SpendCreditsSuccess"
            assert replay["balance"]["total"] == results[0]["balance"]["total"]
        finally:
            for client in clients.values():
                await client.aclose()
        pids = sorted(clients)
        assert all(not gone(pid) for pid in pids)
        text = log.read_text()
        assert all(f"Started server process [{pid}]" in text for pid in pids)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    assert all(gone(pid) for pid in pids)
    text = log.read_text()
    assert "Received SIGTERM, exiting." in text
    for pid in pids:
        assert f"Finished server process [{pid}]" in text  # each finished its lifespan (pool, bus closed)


async def test_a_subscriber_on_one_worker_sees_spends_made_through_each(db: Backend, api: Api, tmp_path: Path) -> None:
    postgres_only(db)
    redis_url = await reachable_redis()
    user_id, user_token = await api.user("ada@example.com", bonus=10, bonus_days=3650)
    service = await api.service()
    async with workers(db.url, 2, tmp_path / "serve.log", CREDITLINE_REDIS_URL=redis_url) as (_, url):
        clients = await pinned_clients(url, 2)
        ws = await websockets.connect(url.replace("http", "ws") + "/graphql", subprotocols=PROTOCOL)
        try:
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {user_token}"}}
            await ws.send(json.dumps(init))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": WATCH}}))
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
            # The websocket is on one of the two workers: a spend through each, so one of them is made by the
            # other worker and reaches it only through Redis.
            for n, (_, client) in enumerate(sorted(clients.items())):
                assert (await spend_on(client, service, user_id, "1.5", f"fan-{n}"))["__typename"] == (
                    "SpendCreditsSuccess"
                )
            events = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
            assert [e["payload"]["data"]["balanceChanged"] for e in events] == [
                {"delta": "-1.5", "reason": "SPEND", "version": 2, "balance": {"total": "8.5"}},
                {"delta": "-1.5", "reason": "SPEND", "version": 3, "balance": {"total": "7"}},
            ]
        finally:
            await ws.close()
            for client in clients.values():
                await client.aclose()


async def test_a_worker_that_dies_is_replaced(db: Backend, api: Api, tmp_path: Path) -> None:
    postgres_only(db)
    log = tmp_path / "serve.log"
    async with workers(db.url, 2, log) as (proc, url):
        victim, survivor = await worker_pids(url, 2)
        os.kill(victim, signal.SIGKILL)
        # The supervisor checks its workers every half second: a new one takes the dead one's place.
        deadline = time.monotonic() + 120
        while f"Child process [{victim}] died" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
        replaced = await pinned_clients(url, 2)
        try:
            assert survivor in replaced
            assert victim not in replaced
            assert proc.poll() is None
        finally:
            for client in replaced.values():
                await client.aclose()


async def test_workers_whose_supervisor_is_killed_stop_and_free_the_port(db: Backend, api: Api, tmp_path: Path) -> None:
    postgres_only(db)
    log = tmp_path / "serve.log"
    async with workers(db.url, 2, log) as (proc, url):
        pids = await worker_pids(url, 2)
        proc.kill()  # SIGKILL: the supervisor cannot stop its workers itself
        await asyncio.to_thread(proc.wait, 10)

        # Each worker sees its parent gone within a second or so and shuts down gracefully.
        deadline = time.monotonic() + 60
        while not all(gone(pid) or zombie(pid) for pid in pids):
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
    text = log.read_text()
    for pid in pids:
        assert f"creditline: worker {pid}: the supervisor ({proc.pid}) is gone, stopping" in text
        assert f"Finished server process [{pid}]" in text  # its lifespan ended: pool and bus closed
    port = int(url.rsplit(":", 1)[1])
    async with workers(db.url, 1, tmp_path / "again.log", port=str(port)) as (_, again):
        assert again == url  # the port is free for the server started in its place


def zombie(pid: int) -> bool:
    """An exited process not yet reaped (by init, once it is reparented)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


async def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    database = tmp_path / "one.sqlite3"
    env = {**os.environ, "CREDITLINE_DATABASE_URL": f"sqlite://{database}"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "creditline", "serve", "--port", str(free_port()), "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == USAGE_STATUS == 2
    assert done.stderr.strip() == f"creditline: {SQLITE_WORKERS_REFUSAL}"
    assert "PostgreSQL" in done.stderr
    assert not database.exists()  # refused before anything was opened


@pytest.mark.parametrize("given", ["0", "-1", "two", "65"])
async def test_a_worker_count_out_of_range_is_refused(given: str, tmp_path: Path) -> None:
    env = {**os.environ, "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/x.sqlite3"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "creditline", "serve", "--workers", given],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "argument --workers:" in done.stderr


def test_the_supervisor_gives_a_starting_worker_the_health_check_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spawned worker answers the supervisor's ping only once it has imported the application: 9 s of
    wall time at a load of 8 on 2 cores, where uvicorn's 5 s default killed every worker still starting."""
    supervised: list[Any] = []
    monkeypatch.setattr(cli, "_supervise", supervised.append)
    env = {"CREDITLINE_DATABASE_URL": "postgresql://unused@127.0.0.1:1/none"}
    cli._serve(Settings.from_env(env), "127.0.0.1", 0, workers=2)
    assert [config.timeout_worker_healthcheck for config in supervised] == [60]
    env["CREDITLINE_WORKER_HEALTHCHECK_SECONDS"] = "90"
    cli._serve(Settings.from_env(env), "127.0.0.1", 0, workers=2)
    assert [config.timeout_worker_healthcheck for config in supervised] == [60, 90]
