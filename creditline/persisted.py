"""Persisted documents (README, Query limits): a client sends the id of a document instead of its text.

Two ways to name one, both read here:

- ``{"documentId": "sha256:<hex>"}`` (or a registered document's own name) at the top of the request, as the
  GraphQL-over-HTTP persisted documents proposal has it;
- ``{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "<hex>"}}}``, Apollo's automatic
  persisted queries (APQ): with ``allow``, an unknown hash sent without the text is answered
  ``PersistedQueryNotFound``, the client sends the text with the hash, and the server keeps it (in this
  process, the last ``LEARNED_MAX`` of them, ``LEARNED_BYTES`` of text at most) once the hash matches and the
  document has parsed and passed validation and the limits. A text over ``CACHEABLE_TEXT_BYTES`` is run but
  never kept.

``CREDITLINE_PERSISTED_DOCUMENTS`` is ``off`` (ids are ignored, as before), ``allow`` (ids or text) or ``only``
(a registered document, by id or by its exact text; anything else is refused with
``PERSISTED_DOCUMENT_REQUIRED`` before it is parsed). Registered documents come from
``CREDITLINE_DOCUMENTS_FILE``: a JSON object of id to text, an Apollo persisted query manifest, or a directory
of ``.graphql`` files; each document is also known by the sha256 of its text.

Strawberry (0.341) has no persisted documents of its own: ``GraphQLRequestData.query`` is optional "so that
an extension can add it", which is what ``PersistedDocumentsExtension`` does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphql import GraphQLError
from strawberry.extensions.base_extension import SchemaExtension

from creditline.document_cache import CACHE_TEXT_BYTES, TextCache, text_bytes

MODES = ("off", "allow", "only")
LEARNED_MAX = 1000
"""APQ documents kept per process (``allow``), least recently used first out."""
LEARNED_BYTES = CACHE_TEXT_BYTES
"""What the texts of the learned documents may add up to (UTF-8), least recently used first out."""
SHA256_PREFIX = "sha256:"

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
REQUIRED = "PERSISTED_DOCUMENT_REQUIRED"
UNKNOWN = "PERSISTED_DOCUMENT_NOT_FOUND"
MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
BAD_ID = "BAD_DOCUMENT_ID"


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def load_registry(path: str) -> dict[str, str]:
    """The registered documents, by id: each by the sha256 of its text, and by its own name where the file
    gives one that is not its hash. Raises ``SystemExit`` naming what is wrong (the server does not start)."""
    source = Path(path)
    documents: dict[str, str] = {}
    named: dict[str, str] = {}
    if source.is_dir():
        for file in sorted(source.glob("*.graphql")):
            text = file.read_text()
            documents[sha256_of(text)] = text
    elif source.is_file():
        try:
            loaded = json.loads(source.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SystemExit(f"CREDITLINE_DOCUMENTS_FILE {path}: not JSON ({exc})") from exc
        entries: list[tuple[str, Any]]
        if isinstance(loaded, dict) and isinstance(loaded.get("operations"), list):  # Apollo's manifest
            entries = [(str(op.get("id", "")), op.get("body")) for op in loaded["operations"] if isinstance(op, dict)]
        elif isinstance(loaded, dict):
            entries = list(loaded.items())
        else:
            raise SystemExit(f"CREDITLINE_DOCUMENTS_FILE {path}: expected an object of id to document text")
        for key, text in entries:
            if not isinstance(text, str) or not text.strip():
                raise SystemExit(f"CREDITLINE_DOCUMENTS_FILE {path}: the document {key!r} has no text")
            digest = sha256_of(text)
            bare = key.removeprefix(SHA256_PREFIX)
            if _is_sha256(bare) and bare != digest:
                raise SystemExit(
                    f"CREDITLINE_DOCUMENTS_FILE {path}: {key!r} is not the sha256 of its document ({digest})"
                )
            documents[digest] = text
            if key and not _is_sha256(bare):
                named[key] = text
    else:
        raise SystemExit(f"CREDITLINE_DOCUMENTS_FILE {path}: no such file or directory")
    if not documents:
        raise SystemExit(f"CREDITLINE_DOCUMENTS_FILE {path}: no documents in it")
    return {**documents, **named}


def _error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


@dataclass
class PersistedDocuments:
    mode: str = "off"
    registered: Mapping[str, str] = field(default_factory=dict)
    learned: TextCache[str] = field(default_factory=lambda: TextCache(LEARNED_MAX, LEARNED_BYTES))

    def _known(self, key: str) -> str | None:
        text = self.registered.get(key)
        if text is None and self.mode == "allow":
            entry = self.learned.entries.get(key)
            if entry is not None:
                self.learned.entries.move_to_end(key)
                text = entry[1]
        return text

    def learn(self, query: str | None, extensions: Mapping[str, Any] | None) -> None:
        """Keep an APQ text sent with its hash (``allow``), once it has passed parsing, validation and the
        limits: a text that is refused, or too long to keep, is never learned (a hash alone would run it)."""
        if self.mode != "allow" or query is None:
            return
        try:
            key, apq = self.requested_id(extensions)
        except GraphQLError:
            return
        size = text_bytes(query)
        if key is None or not apq or size is None or self._known(key) is not None or sha256_of(query) != key:
            return
        self.learned.get(key, size, lambda: query)

    def requested_id(self, extensions: Mapping[str, Any] | None) -> tuple[str | None, bool]:
        """The id the request names (without ``sha256:``) and whether it came as an APQ hash."""
        if not extensions:
            return None, False
        document_id = extensions.get("documentId")
        if document_id is not None:
            if not isinstance(document_id, str) or not document_id:
                raise _error("documentId must be a non-empty string", BAD_ID)
            return document_id.removeprefix(SHA256_PREFIX) if document_id.startswith(
                SHA256_PREFIX
            ) else document_id, False
        persisted = extensions.get("persistedQuery")
        if persisted is None:
            return None, False
        digest = persisted.get("sha256Hash") if isinstance(persisted, Mapping) else None
        if not isinstance(digest, str) or not _is_sha256(digest):
            raise _error("persistedQuery.sha256Hash must be a sha256 in lowercase hex (64 characters)", BAD_ID)
        return digest, True

    def resolve(self, query: str | None, extensions: Mapping[str, Any] | None) -> str | None:
        """The text to run: the query as sent, or the document its id names. Raises a ``GraphQLError`` with a
        code when the request must be refused; returns ``None`` for a request without a document (strawberry
        then says so)."""
        if self.mode == "off":
            return query
        key, apq = self.requested_id(extensions)
        if key is not None:
            text = self._known(key)
            if text is not None:
                if query is not None and query != text:
                    raise _error("The query sent is not the document its id names", MISMATCH)
                return text
            if query is None:
                if self.mode == "only":
                    raise _error(f"No registered document has the id {key!r}", UNKNOWN)
                raise _error("PersistedQueryNotFound", NOT_FOUND)  # the text Apollo's clients retry on
            if self.mode == "only":
                raise self.required()
            if not _is_sha256(key) or sha256_of(query) != key:
                raise _error("provided sha does not match query", MISMATCH)
            return query  # learned once it has passed validation (learn)
        if self.mode == "only" and query is not None:
            text = self.registered.get(sha256_of(query))
            if text is None:
                raise self.required()
            return text
        return query

    def peek(self, query: str | None, extensions: Mapping[str, Any] | None) -> str | None:
        """What ``resolve`` would run, or ``None`` where it would refuse (for checks made before it runs)."""
        try:
            return self.resolve(query, extensions)
        except GraphQLError:
            return None

    @staticmethod
    def required() -> GraphQLError:
        return _error(
            "This server runs registered documents only: send the documentId (sha256:<hash>) of a registered document",
            REQUIRED,
        )


def persisted_documents(mode: str, documents_file: str) -> PersistedDocuments:
    if mode not in MODES:
        raise SystemExit(f"CREDITLINE_PERSISTED_DOCUMENTS must be off, allow or only, got {mode!r}")
    if mode == "only" and not documents_file:
        raise SystemExit(
            "CREDITLINE_PERSISTED_DOCUMENTS=only needs CREDITLINE_DOCUMENTS_FILE (the registered documents)"
        )
    registered = load_registry(documents_file) if documents_file and mode != "off" else {}
    return PersistedDocuments(mode, registered)


class PersistedDocumentsExtension(SchemaExtension):
    """Puts the document a request names in place of its text, or refuses it, before anything is parsed: every
    operation goes through here (HTTP, its streaming transports and websockets)."""

    def __init__(self, documents: PersistedDocuments) -> None:
        super().__init__()
        self.documents = documents

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.query = self.documents.resolve(context.query, context.operation_extensions)
        yield

    def on_validate(self) -> Iterator[None]:
        yield
        # Last out of validation (first of the extensions): the limits' errors are in by now.
        context = self.execution_context
        if not context.pre_execution_errors and context.graphql_document is not None:
            self.documents.learn(context.query, context.operation_extensions)
