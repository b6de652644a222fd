"""A counter of the SQL statements a request sends (the ``counter`` fixture), for the tests that pin them.

Every statement goes through one of the Tortoise client's execution methods, whether the ORM or the raw
SQL of ``models.sql`` sends it. The counter wraps those methods on the default connection's class and on
its subclasses (the transaction wrappers), and counts a call made inside another counted call once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pytest
from tortoise import connections

from tests.support.backends import Backend

EXECUTION_METHODS = (
    "execute_query",
    "execute_query_dict",
    "execute_query_dict_with_affected",
    "execute_insert",
    "execute_many",
    "execute_script",
    "execute_in_thread",  # SQLite: several statements in one hop to its thread (creditline/db_backends.py)
)

_TABLE = re.compile(r'\bFROM\s+"?(\w+)"?', re.IGNORECASE)


def tables_read(statements: list[str]) -> list[str]:
    found = []
    for statement in statements:
        match = _TABLE.search(statement)
        found.append(match.group(1) if match else statement.split()[0].upper())
    return sorted(found)


@dataclass
class StatementCounter:
    statements: list[str] = field(default_factory=list)
    recording: bool = False

    async def during(self, run: Awaitable[Any]) -> Any:
        """Await ``run`` and keep the statements it sent (and only those)."""
        self.statements.clear()
        self.recording = True
        try:
            return await run
        finally:
            self.recording = False


_inside: ContextVar[bool] = ContextVar("inside_counted_statement", default=False)


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _counted(original: Callable[..., Awaitable[Any]], counter: StatementCounter) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def run(self: object, query: str, *args: Any, **kwargs: Any) -> Any:
        if _inside.get():  # e.g. a base execute_query_dict that calls execute_query: one statement
            return await original(self, query, *args, **kwargs)
        if counter.recording:
            counter.statements.append(query)
        token = _inside.set(True)
        try:
            return await original(self, query, *args, **kwargs)
        finally:
            _inside.reset(token)

    return run


@pytest.fixture
def counter(db: Backend, monkeypatch: pytest.MonkeyPatch) -> StatementCounter:
    counter = StatementCounter()
    # Tortoise's client class, of which ours (creditline/db_backends.py) and the transaction wrappers are
    # subclasses.
    client_class = next(c for c in type(connections.get("default")).__mro__ if c.__module__.startswith("tortoise."))
    for cls in (client_class, *_subclasses(client_class)):
        for name in EXECUTION_METHODS:
            if name in vars(cls) or (cls is client_class and hasattr(cls, name)):
                monkeypatch.setattr(cls, name, _counted(getattr(cls, name), counter))
    return counter
