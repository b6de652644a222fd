"""Keyset pagination for Relay connections: newest first, cursors are opaque row ids."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from strawberry import relay
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models.ids import decode_id, encode_id
from resolvers import boundary
from resolvers.errors import ClientError

M = TypeVar("M", bound=Model)
N = TypeVar("N", bound=relay.Node)

DEFAULT_PAGE = 20
MAX_PAGE = 100


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE
    try:
        return boundary.integer(first, "first", 1, MAX_PAGE)
    except boundary.InputError:
        raise ClientError(f"first must be between 1 and {MAX_PAGE}, got {first}", "BAD_PAGINATION") from None


def cursor_id(after: str | None) -> int | None:
    if after is None:
        return None
    pk = decode_id(after, "cursor")
    if pk is None:
        raise ClientError("after is not a cursor from this connection", "BAD_PAGINATION")
    return pk


async def keyset_page(
    query: QuerySet[M],
    first: int | None,
    after: str | None,
    make: Callable[[M], N],
    *,
    plain_rows: bool = True,
) -> relay.Connection[N]:
    """A page of ``query``'s rows, newest first. With ``plain_rows`` (for a ``make`` that reads only the
    model's fields, not its relations or properties) each row is read with ``values()`` and handed to
    ``make`` as an object with the model's field names: building a Tortoise model per row cost ~14 us, a
    fifth of a 100-row page's CPU. Reads only: ``values()`` would drop a ``FOR UPDATE``, but a page has none."""
    limit = page_size(first)
    start = cursor_id(after)
    if start is not None:
        query = query.filter(id__lt=start)
    page = query.order_by("-id").limit(limit + 1)
    if plain_rows:
        rows: list[Any] = [SimpleNamespace(**row) for row in await page.values()]
    else:
        rows = await page
    return connection_of(rows, limit, start is not None, make)


def connection_of(rows: list[Any], limit: int, has_previous: bool, make: Callable[[Any], N]) -> relay.Connection[N]:
    edges = [relay.Edge(cursor=encode_id("cursor", int(row.id)), node=make(row)) for row in rows[:limit]]
    return relay.Connection(
        edges=edges,
        page_info=relay.PageInfo(
            has_next_page=len(rows) > limit,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
