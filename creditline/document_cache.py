"""Caches of what a document's text gives (its parsed document, whether it is a subscription, its checks),
bounded in bytes of text as well as in entries.

An entry count alone bounds nothing: a text may be a megabyte of comment around ``{ __typename }`` (the lexer
skips comments, so the token limit never sees them), and 512 of them held 1.3 GB of one process (attack report
F1). So a text over ``CACHEABLE_TEXT_BYTES`` is never kept (it is parsed and checked again on each request, as
any uncached text is), and the texts a cache keeps add up to ``CACHE_TEXT_BYTES`` at most, least recently used
first out. A parsed document's nodes and tokens grow with its text, so they are bounded with it. A text that
does not parse is never kept either (the exception is not a value).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from graphql import DocumentNode

CACHEABLE_TEXT_BYTES = 16 * 1024
"""The longest text (UTF-8) a cache keeps: every document a client means to send again is far shorter."""
CACHE_TEXT_BYTES = 4 * 1024 * 1024
"""What the texts one cache keeps may add up to (UTF-8)."""

V = TypeVar("V")


def text_bytes(text: str) -> int | None:
    """The size a cache counts for ``text``, or ``None`` when it is too long to keep."""
    if len(text) > CACHEABLE_TEXT_BYTES:  # no text is shorter in UTF-8 than in characters
        return None
    size = len(text.encode())
    return size if size <= CACHEABLE_TEXT_BYTES else None


def document_bytes(document: DocumentNode) -> int | None:
    """The size of the text ``document`` was parsed from (its nodes keep that text alive), or ``None`` when
    it is too long to keep; a document without its source counts as long."""
    loc = document.loc
    return text_bytes(loc.source.body) if loc is not None else None


class TextCache(Generic[V]):
    """Least recently used first out, at ``max_entries`` or once the kept texts pass ``max_bytes``."""

    def __init__(self, max_entries: int, max_bytes: int = CACHE_TEXT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Hashable, tuple[int, V]] = OrderedDict()
        self.bytes = 0
        """What the kept texts add up to."""

    def get(self, key: Hashable, size: int | None, compute: Callable[[], V]) -> V:
        """The value kept for ``key``, or ``compute()``'s, kept when ``size`` (the bytes of the text or texts
        it keeps alive, ``None``: too long) allows."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry[1]
        value = compute()
        if size is not None and size <= self.max_bytes:
            self.entries[key] = (size, value)
            self.bytes += size
            while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
                _, (dropped, _) = self.entries.popitem(last=False)
                self.bytes -= dropped
        return value

    def discard(self, key: Hashable) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[0]

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
