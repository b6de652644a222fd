"""Persisted documents (creditline/persisted.py): ``CREDITLINE_PERSISTED_DOCUMENTS=off|allow|only`` with a
registry of documents, over HTTP and websockets, on both databases."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from creditline import query_limits
from creditline.app import create_app
from creditline.clock import Clock
from creditline.document_cache import CACHEABLE_TEXT_BYTES
from creditline.persisted import LEARNED_BYTES, LEARNED_MAX, PersistedDocuments, load_registry, persisted_documents
from creditline.settings import Settings
from tests.support.backends import Backend
from tests.support.helpers import BALANCE, SPEND, Api, spend_variables
from tests.support.live import PROTOCOL, receive, serve

WATCH = "subscription { balanceChanged { delta reason version balance { total } } }"
UNREGISTERED_SPEND = SPEND.replace("__typename", "__typename ", 1)  # the same operation, other text
SPEND_ID = f"sha256:{hashlib.sha256(SPEND.encode()).hexdigest()}"
DEEP = "query { me { " + "credit { " * 40 + "}" * 41 + " }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def documents_file(tmp_path: Path) -> Path:
    path = tmp_path / "documents.json"
    path.write_text(json.dumps({f"sha256:{sha(SPEND)}": SPEND, "balance-v1": BALANCE, sha(WATCH): WATCH}))
    return path


@asynccontextmanager
async def persisted_api(api: Api, mode: str, documents_file: Path | None) -> AsyncIterator[Api]:
    settings = dataclasses.replace(
        api.settings, persisted_documents=mode, documents_file=str(documents_file) if documents_file else ""
    )
    app = create_app(settings, clock=api.clock, manage_database=False, run_jobs=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield Api(client, app, api.clock, settings)


async def send(api: Api, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await api.client.post("/graphql", json=body, headers=headers)


def spend_input(user_id: int, key: str, credits: str = "1.5") -> dict[str, Any]:
    return spend_variables(user_id, credits, key)


async def total(api: Api, user_token: str) -> str:
    data = await api.data(BALANCE, token=user_token)
    value: str = data["me"]["credit"]["balance"]["total"]
    return value


def only_error(response: httpx.Response, code: str, message: str) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}


REQUIRED_MESSAGE = (
    "This server runs registered documents only: send the documentId (sha256:<hash>) of a registered document"
)


async def test_off_ignores_ids_and_runs_text_as_before(db: Backend, api: Api, documents_file: Path) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    async with persisted_api(api, "off", documents_file) as off:
        refused = await send(off, {"documentId": SPEND_ID, "variables": spend_input(user_id, "k")}, service)
        assert refused.status_code == 400
        assert refused.text == "No GraphQL query found in the request"
        assert await total(off, user_token) == "10"
        ran = await send(off, {"query": UNREGISTERED_SPEND, "variables": spend_input(user_id, "k")}, service)
        assert ran.json()["data"]["spendCredits"]["balance"]["total"] == "8.5"


async def test_allow_runs_registered_documents_by_id_and_any_text(db: Backend, api: Api, documents_file: Path) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    async with persisted_api(api, "allow", documents_file) as allow:
        by_id = await send(allow, {"documentId": SPEND_ID, "variables": spend_input(user_id, "a")}, service)
        assert by_id.json()["data"]["spendCredits"]["balance"]["total"] == "8.5"
        apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(SPEND)}}
        by_hash = await send(allow, {"extensions": apq, "variables": spend_input(user_id, "b")}, service)
        assert by_hash.json()["data"]["spendCredits"]["balance"]["total"] == "7"
        named = await send(allow, {"documentId": "balance-v1"}, user_token)
        assert named.json() == {"data": {"me": {"credit": {"balance": await_balance(7)}}}}
        by_get = await allow.client.get(
            "/graphql", params={"documentId": "balance-v1"}, headers={"authorization": f"Bearer {user_token}"}
        )
        assert by_get.json() == {"data": {"me": {"credit": {"balance": await_balance(7)}}}}
        text = await send(allow, {"query": UNREGISTERED_SPEND, "variables": spend_input(user_id, "c")}, service)
        assert text.json()["data"]["spendCredits"]["balance"]["total"] == "5.5"
        # A replayed key through an id moves nothing, as through the text.
        replay = await send(allow, {"documentId": sha(SPEND), "variables": spend_input(user_id, "a")}, service)
        assert replay.json()["data"]["spendCredits"]["balance"]["total"] == "8.5"
        assert await total(allow, user_token) == "5.5"


def await_balance(credits: int) -> dict[str, str]:
    return {"total": str(credits), "free": str(credits), "paid": "0", "held": "0", "available": str(credits)}


async def test_allow_learns_an_apq_document_once_its_hash_matches(db: Backend, api: Api, documents_file: Path) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(UNREGISTERED_SPEND)}}
    async with persisted_api(api, "allow", documents_file) as allow:
        unknown = await send(allow, {"extensions": apq, "variables": spend_input(user_id, "a")}, service)
        only_error(unknown, "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
        assert await total(allow, user_token) == "10"
        wrong = {"persistedQuery": {"version": 1, "sha256Hash": sha("something else")}}
        mismatch = await send(
            allow, {"query": UNREGISTERED_SPEND, "extensions": wrong, "variables": spend_input(user_id, "a")}, service
        )
        only_error(mismatch, "PERSISTED_QUERY_HASH_MISMATCH", "provided sha does not match query")
        assert await total(allow, user_token) == "10"
        first = await send(
            allow, {"query": UNREGISTERED_SPEND, "extensions": apq, "variables": spend_input(user_id, "a")}, service
        )
        assert first.json()["data"]["spendCredits"]["balance"]["total"] == "8.5"
        again = await send(allow, {"extensions": apq, "variables": spend_input(user_id, "b")}, service)
        assert again.json()["data"]["spendCredits"]["balance"]["total"] == "7"


async def test_only_refuses_every_document_not_registered(db: Backend, api: Api, documents_file: Path) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    async with persisted_api(api, "only", documents_file) as only:
        text = await send(only, {"query": UNREGISTERED_SPEND, "variables": spend_input(user_id, "a")}, service)
        only_error(text, "PERSISTED_DOCUMENT_REQUIRED", REQUIRED_MESSAGE)
        # A hostile document is refused before it is parsed, whatever its shape.
        only_error(await send(only, {"query": DEEP}, user_token), "PERSISTED_DOCUMENT_REQUIRED", REQUIRED_MESSAGE)
        only_error(await send(only, {"query": "{ nope"}, user_token), "PERSISTED_DOCUMENT_REQUIRED", REQUIRED_MESSAGE)
        unknown = await send(only, {"documentId": "sha256:" + "0" * 64}, user_token)
        only_error(unknown, "PERSISTED_DOCUMENT_NOT_FOUND", f"No registered document has the id {'0' * 64!r}")
        apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(UNREGISTERED_SPEND)}}
        learned = await send(
            only, {"query": UNREGISTERED_SPEND, "extensions": apq, "variables": spend_input(user_id, "a")}, service
        )
        only_error(learned, "PERSISTED_DOCUMENT_REQUIRED", REQUIRED_MESSAGE)  # no learning in this mode
        assert await total(only, user_token) == "10"

        by_id = await send(only, {"documentId": SPEND_ID, "variables": spend_input(user_id, "b")}, service)
        assert by_id.json()["data"]["spendCredits"]["balance"]["total"] == "8.5"
        # The exact text of a registered document is that document.
        by_text = await send(only, {"query": SPEND, "variables": spend_input(user_id, "c")}, service)
        assert by_text.json()["data"]["spendCredits"]["balance"]["total"] == "7"
        assert await total(only, user_token) == "7"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"documentId": 5}, "documentId must be a non-empty string"),
        ({"documentId": ""}, "documentId must be a non-empty string"),
        (
            {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "XYZ"}}},
            "persistedQuery.sha256Hash must be a sha256 in lowercase hex (64 characters)",
        ),
        (
            {"extensions": {"persistedQuery": "abc"}},
            "persistedQuery.sha256Hash must be a sha256 in lowercase hex (64 characters)",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["allow", "only"])
async def test_a_malformed_id_is_a_typed_error(
    db: Backend, api: Api, documents_file: Path, mode: str, body: dict[str, Any], message: str
) -> None:
    _, user_token = await api.user("ada@example.com", bonus=10)
    async with persisted_api(api, mode, documents_file) as persisted:
        only_error(await send(persisted, body, user_token), "BAD_DOCUMENT_ID", message)


async def test_a_registered_subscription_sent_over_http_is_still_refused_plainly(
    db: Backend, api: Api, documents_file: Path
) -> None:
    _, user_token = await api.user("ada@example.com", bonus=10)
    async with persisted_api(api, "only", documents_file) as only:
        response = await send(only, {"documentId": sha(WATCH)}, user_token)
        assert response.status_code == 400
        assert response.text == "Subscriptions need a websocket: connect with the graphql-transport-ws protocol"


async def test_registered_documents_are_checked_once(
    db: Backend, api: Api, documents_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, _ = await api.user("ada@example.com", bonus=10)
    service = await api.service()
    calls: list[str] = []
    original_size, original_analysis = query_limits.check_document_size, query_limits.analyze_operation

    def size(*args: Any) -> Any:
        calls.append("size")
        return original_size(*args)

    def analysis(*args: Any) -> Any:
        calls.append("analysis")
        return original_analysis(*args)

    monkeypatch.setattr(query_limits, "check_document_size", size)
    monkeypatch.setattr(query_limits, "analyze_operation", analysis)
    async with persisted_api(api, "only", documents_file) as only:
        for n in range(3):
            body = {"documentId": SPEND_ID, "variables": spend_input(user_id, f"k{n}", "0.5")}
            assert (await send(only, body, service)).json()["data"]["spendCredits"]["__typename"] == (
                "SpendCreditsSuccess"
            )
    assert calls.count("size") <= 1
    assert calls.count("analysis") <= 1


def test_a_page_size_from_a_variable_keeps_the_analysis_per_request() -> None:
    from graphql import parse  # noqa: PLC0415 - only this test needs the parser

    assert query_limits.measure_reads_variables(parse("query($n: Int) { me { tokens(first: $n) { id } } }"))
    assert query_limits.measure_reads_variables(parse("query($i: UsageReportInput!) { usageReport(input: $i) { x } }"))
    assert not query_limits.measure_reads_variables(parse(SPEND))
    assert not query_limits.measure_reads_variables(parse("{ me { tokens(first: 5) { id } } }"))


# ------------------------------------------------------------------------------------------------ websockets


async def ws_subscribe(live_ws: str, token: str, payload: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    ws = await websockets.connect(live_ws, subprotocols=PROTOCOL)
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws, await receive(ws)


@pytest.mark.parametrize("mode", ["allow", "only"])
async def test_websocket_subscribes_by_id_and_only_refuses_other_text(
    db: Backend, clock: Clock, settings: Settings, api: Api, documents_file: Path, mode: str
) -> None:
    _, user_token = await api.user("ada@example.com", bonus=10)
    persisted = dataclasses.replace(settings, persisted_documents=mode, documents_file=str(documents_file))
    async with serve(persisted, clock) as live:
        ws, first = await ws_subscribe(live.ws, user_token, {"documentId": f"sha256:{sha(WATCH)}"})
        try:
            assert first["payload"]["data"]["balanceChanged"] == {
                "delta": "0",
                "reason": "SNAPSHOT",
                "version": 1,
                "balance": {"total": "10"},
            }
        finally:
            await ws.close()
        other = WATCH.replace("delta ", "delta  ")
        ws, answer = await ws_subscribe(live.ws, user_token, {"query": other})
        try:
            if mode == "only":
                assert answer == {
                    "id": "1",
                    "type": "error",
                    "payload": [{"message": REQUIRED_MESSAGE, "extensions": {"code": "PERSISTED_DOCUMENT_REQUIRED"}}],
                }
                # The connection stays open: a registered document by its id is served on it.
                await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"documentId": sha(WATCH)}}))
                assert (await receive(ws))["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
            else:
                assert answer["payload"]["data"]["balanceChanged"]["reason"] == "SNAPSHOT"
        finally:
            await ws.close()
        apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(other)}}
        ws, answer = await ws_subscribe(live.ws, user_token, {"extensions": apq})
        await ws.close()
        code, message = (
            ("PERSISTED_DOCUMENT_NOT_FOUND", f"No registered document has the id {sha(other)!r}")
            if mode == "only"
            else ("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
        )
        assert answer == {"id": "1", "type": "error", "payload": [{"message": message, "extensions": {"code": code}}]}


# -------------------------------------------------------------------------------------------------- registry


def test_the_registry_reads_a_directory_and_an_apollo_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "spend.graphql").write_text(SPEND)
    (folder / "notes.txt").write_text("not a document")
    assert load_registry(str(folder)) == {sha(SPEND): SPEND}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": sha(BALANCE), "name": "Balance", "type": "query", "body": BALANCE}],
            }
        )
    )
    assert load_registry(str(manifest)) == {sha(BALANCE): BALANCE}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected an object of id to document text"),
        ("{}", "no documents in it"),
        (json.dumps({"a": ""}), "the document 'a' has no text"),
        (json.dumps({"sha256:" + "0" * 64: SPEND}), f"is not the sha256 of its document ({sha(SPEND)})"),
    ],
)
def test_a_bad_registry_stops_the_server_saying_why(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "documents.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        load_registry(str(path))
    assert str(stopped.value).startswith(f"CREDITLINE_DOCUMENTS_FILE {path}: ")
    assert message in str(stopped.value)


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="CREDITLINE_PERSISTED_DOCUMENTS must be off, allow or only, got 'some'"):
        persisted_documents("some", "")
    with pytest.raises(SystemExit, match="needs CREDITLINE_DOCUMENTS_FILE"):
        persisted_documents("only", "")
    with pytest.raises(SystemExit, match="no such file or directory"):
        persisted_documents("allow", str(tmp_path / "missing.json"))
    assert Settings.from_env({"CREDITLINE_PERSISTED_DOCUMENTS": " Only "}).persisted_documents == "only"
    assert Settings.from_env({}).persisted_documents == "off"


def apq(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(text)}}


def test_learned_documents_are_bounded() -> None:
    documents = PersistedDocuments("allow")
    texts = [f"{{ me {{ id }} }} # {n}" for n in range(LEARNED_MAX + 5)]
    for text in texts:
        assert documents.resolve(text, apq(text)) == text
        documents.learn(text, apq(text))
    assert len(documents.learned.entries) == LEARNED_MAX
    assert sha(texts[0]) not in documents.learned.entries
    assert sha(texts[-1]) in documents.learned.entries


def test_learned_documents_are_bounded_in_bytes_and_long_texts_are_not_learned() -> None:
    documents = PersistedDocuments("allow")
    long = "{ __typename } #" + "a" * CACHEABLE_TEXT_BYTES
    documents.learn(long, apq(long))
    assert documents.learned.entries == {}
    texts = [f"{{ __typename }} # {n} " + "b" * (CACHEABLE_TEXT_BYTES - 40) for n in range(LEARNED_BYTES // 4000)]
    for text in texts:
        documents.learn(text, apq(text))
    assert 0 < documents.learned.bytes <= LEARNED_BYTES
    assert len(documents.learned.entries) < len(texts)
    assert sha(texts[-1]) in documents.learned.entries
    assert sha(texts[0]) not in documents.learned.entries


async def test_allow_learns_no_text_before_it_parses_and_validates(db: Backend, api: Api) -> None:
    broken, invalid, long = "{ __typename", "{ nosuchfield }", "{ __typename } #" + "c" * CACHEABLE_TEXT_BYTES
    async with persisted_api(api, "allow", None) as allow:
        syntax = await send(allow, {"query": broken, "extensions": apq(broken)})
        assert syntax.json()["errors"][0]["message"] == "Syntax Error: Expected Name, found <EOF>."
        refused = await send(allow, {"query": invalid, "extensions": apq(invalid)})
        assert refused.json()["errors"][0]["message"] == "Cannot query field 'nosuchfield' on type 'Query'."
        answered = await send(allow, {"query": long, "extensions": apq(long)})
        assert answered.json() == {"data": {"__typename": "Query"}}
        for text in (broken, invalid, long):  # none was learned: the hash alone is not found
            only_error(
                await send(allow, {"extensions": apq(text)}), "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound"
            )
        short = "{ __typename }"
        await send(allow, {"query": short, "extensions": apq(short)})
        assert (await send(allow, {"extensions": apq(short)})).json() == {"data": {"__typename": "Query"}}
