"""CSV export of usage events at ``GET /exports/usage.csv``, streamed in pages, bearer-authenticated.

Query parameters, exactly one of: ``account`` (a CreditAccount ID, or a User ID for their account or an
Organization ID for its credit pool), ``external_user_id`` (that user's account by the platform's id),
``organization`` or ``external_organization_id`` (all the organization's usage, whichever account paid); and the
filters of the GraphQL ``UsageFilter``: ``from``, ``to`` (ISO 8601 with a zone), ``agentId``, ``activity``,
``memberId`` or ``externalMemberId``, ``agentRunId``. Each row carries the user's and the organization's ids of
both kinds, and last the agent run (``agent_run_id``, empty for none).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models.credits import format_credits
from models.ids import decode_id, encode_id
from models.money import invoice_number
from models.tables import (
    CreditAccount,
    Invoice,
    MemberRole,
    Membership,
    Organization,
    Transaction,
    TransactionStatus,
    TransactionType,
    UsageEvent,
    User,
)
from models.tokens import BALANCE_READ, Principal
from resolvers import boundary
from resolvers.accounts import NO_POOL, NoPool, named_account, owners
from resolvers.auth import Authenticator
from resolvers.errors import ClientError
from resolvers.permissions import can_read_account
from resolvers.references import check_external_id, organization_pk
from resolvers.usage import UsageCriteria, filtered
from schema.errors import ValidationError

M = TypeVar("M", bound=Model)
PAGE = 1000
COLUMNS = (
    "id",
    "occurred_at",
    "account_id",
    "user_id",
    "organization_id",
    "agent_id",
    "activity",
    "credits",
    "free_credits",
    "paid_credits",
    "user_external_id",
    "organization_external_id",
    "agent_run_id",
)
"""Appended columns come last, so that a reader of the earlier columns by position keeps working."""
_FORMULA = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""What starts a formula (OWASP, CSV injection), and the full-width forms some spreadsheets read as the same."""

_LEADING_CONTROL = ("\t", "\r", "\n")


def _cell(text: str) -> str:
    """Agent ids, activities and external ids come from clients: never let a spreadsheet read one as a
    formula. A leading quote defuses a cell whose first character other than whitespace starts a formula
    (spreadsheets skip leading spaces: `` =1+1`` is a formula too), or that starts with a tab or line break."""
    if text.startswith(_LEADING_CONTROL) or text.lstrip().startswith(_FORMULA):
        return "'" + text
    return text


def _line(values: tuple[object, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


async def _usage_rows(events: list[UsageEvent]) -> str:
    users = await _external_ids(User, {event.user_id for event in events})
    orgs = await _external_ids(Organization, {event.organization_id for event in events if event.organization_id})
    return "".join(
        _line(
            (
                encode_id("UsageEvent", event.id),
                event.occurred_at.isoformat(),
                encode_id("CreditAccount", event.account_id),
                encode_id("User", event.user_id),
                encode_id("Organization", event.organization_id) if event.organization_id else "",
                _cell(event.agent_id),
                _cell(event.activity),
                format_credits(event.credits),
                format_credits(event.free_credits),
                format_credits(event.paid_credits),
                _cell(users.get(event.user_id) or ""),
                _cell(orgs.get(event.organization_id) or "") if event.organization_id else "",
                _cell(event.run_id or ""),
            )
        )
        for event in events
    )


async def _external_ids(table: type[User] | type[Organization], ids: set[int]) -> dict[int, str | None]:
    """The platform's ids of a page's users or organizations, in one query."""
    if not ids:
        return {}
    rows = await table.filter(id__in=sorted(ids)).values_list("id", "external_id")
    return {int(pk): external for pk, external in rows}


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return boundary.parse_timestamp(value, name)
    except boundary.InputError as exc:
        raise ClientError(exc.message, "BAD_FILTER") from None


async def _billing_member(who: Principal, organization_id: int) -> bool:
    if who.is_admin:
        return True
    if who.user_id is None:
        return False
    membership = await Membership.filter(organization_id=organization_id, user_id=who.user_id).first()
    return membership is not None and bool(membership.role_set & {MemberRole.BILLING, MemberRole.OWNER})


USAGE_SELECTORS = ("account", "organization", "external_user_id", "external_organization_id")
TRANSACTION_SELECTORS = ("account", "external_user_id", "external_organization_id")


def _one_of(params: QueryParams, names: tuple[str, ...]) -> tuple[str, str] | Response:
    given = [(name, value) for name in names if (value := params.get(name)) is not None]
    if len(given) != 1:
        return PlainTextResponse(f"Give exactly one of {', '.join(names[:-1])} or {names[-1]}", 400)
    return given[0]


async def _account(
    who: Principal, name: str, value: str, denied: str, scopes: tuple[str, ...]
) -> CreditAccount | Response:
    """The account named by ``account`` (a CreditAccount, User or Organization ID) or by ``external_user_id`` /
    ``external_organization_id``, if ``who`` may export it. Unknown is refused as another's account is."""
    if name != "account" and (invalid := check_external_id(value, name)):
        return PlainTextResponse(invalid.message, 400)
    named = await named_account(
        value if name == "account" else None,
        value if name == "external_user_id" else None,
        value if name == "external_organization_id" else None,
    )
    if isinstance(named, ValidationError):
        return PlainTextResponse(named.message, 400)
    if not isinstance(named, CreditAccount | NoPool):
        return PlainTextResponse(denied, 403)
    user_id, organization_id = owners(named)
    account_id = named.id if isinstance(named, CreditAccount) else None
    allowed = can_read_account(who, user_id, scopes, account_id=account_id)
    if not allowed and organization_id is not None:
        allowed = await _billing_member(who, organization_id)
    if not allowed:
        return PlainTextResponse(denied, 403)
    return PlainTextResponse(NO_POOL, 404) if isinstance(named, NoPool) else named


async def _organization(name: str, value: str) -> int | Response | None:
    if name == "organization":
        return decode_id(value, "Organization")
    if invalid := check_external_id(value, name):
        return PlainTextResponse(invalid.message, 400)
    found = await organization_pk(None, value)
    return found if isinstance(found, int) else None


def usage_export(auth: Authenticator) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        who = await auth.authenticate(request.headers.get("authorization"))
        if who is None:
            return PlainTextResponse("Send a valid token as 'Authorization: Bearer <token>'", 401)
        params = request.query_params
        selector = _one_of(params, USAGE_SELECTORS)
        if isinstance(selector, Response):
            return selector
        name, value = selector
        if name in ("organization", "external_organization_id"):
            org_id = await _organization(name, value)
            if isinstance(org_id, Response):
                return org_id
            if org_id is None or not await _billing_member(who, org_id):
                return PlainTextResponse("Exporting organization usage needs the BILLING or OWNER role", 403)
            base = UsageEvent.filter(organization_id=org_id)
        else:
            account = await _account(who, name, value, "You may not export this account's usage", (BALANCE_READ,))
            if isinstance(account, Response):
                return account
            base = UsageEvent.filter(account_id=account.id)
        try:
            query = filtered(
                base,
                UsageCriteria(
                    start=_time(params.get("from"), "from"),
                    end=_time(params.get("to"), "to"),
                    agent_id=params.get("agentId"),
                    agent_run_id=params.get("agentRunId"),
                    activity=params.get("activity"),
                    member_id=params.get("memberId"),
                    external_member_id=params.get("externalMemberId"),
                ),
            )
        except ClientError as exc:
            return PlainTextResponse(exc.message, 400)

        return await _csv(query, COLUMNS, _usage_rows, "usage.csv")

    return endpoint


async def _csv(
    query: QuerySet[M], columns: tuple[str, ...], rows: Callable[[list[M]], Awaitable[str]], filename: str
) -> Response:
    # The first page is read and written before the response starts: a failure there is a status of its own,
    # not a 200 whose body stops after the header line.
    first = await query.order_by("-id").limit(PAGE)
    head = _line(columns) + await rows(first)

    async def lines() -> AsyncIterator[str]:
        yield head
        page = first
        while len(page) == PAGE:
            page = await query.filter(id__lt=page[-1].pk).order_by("-id").limit(PAGE)
            if page:
                yield await rows(page)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


TRANSACTION_COLUMNS = (
    "id",
    "created_at",
    "completed_at",
    "type",
    "status",
    "credits",
    "amount",
    "currency",
    "invoice",
    "failure_reason",
)


def transactions_export(auth: Authenticator) -> Callable[[Request], Awaitable[Response]]:
    """``GET /exports/transactions.csv?account=<id>`` (or ``external_user_id=``, ``external_organization_id=``:
    the user's account, the organization's pool) with optional ``status``, ``type``, ``from``, ``to``."""

    async def endpoint(request: Request) -> Response:
        who = await auth.authenticate(request.headers.get("authorization"))
        if who is None:
            return PlainTextResponse("Send a valid token as 'Authorization: Bearer <token>'", 401)
        params = request.query_params
        selector = _one_of(params, TRANSACTION_SELECTORS)
        if isinstance(selector, Response):
            return selector
        account = await _account(who, *selector, "You may not export this account's transactions", ())
        if isinstance(account, Response):
            return account
        query = Transaction.filter(account_id=account.id)
        try:
            for name, field, kinds in (("status", "status", TransactionStatus), ("type", "type", TransactionType)):
                if (value := params.get(name)) is not None:
                    if value not in kinds.__members__:
                        return PlainTextResponse(f"{name} must be one of {', '.join(kinds.__members__)}", 400)
                    query = query.filter(**{field: value})
            if (start := _time(params.get("from"), "from")) is not None:
                query = query.filter(created_at__gte=start)
            if (end := _time(params.get("to"), "to")) is not None:
                query = query.filter(created_at__lt=end)
        except ClientError as exc:
            return PlainTextResponse(exc.message, 400)
        numbers = {i.transaction_id: i.number for i in await Invoice.filter(account_id=account.id)}

        async def rows(page: list[Transaction]) -> str:
            return "".join(row(txn) for txn in page)

        def row(txn: Transaction) -> str:
            return _line(
                (
                    encode_id("Transaction", txn.id),
                    txn.created_at.isoformat(),
                    txn.completed_at.isoformat() if txn.completed_at else "",
                    txn.type,
                    txn.status,
                    format_credits(txn.credits),
                    f"{txn.amount // 100}.{txn.amount % 100:02d}",
                    txn.currency,
                    invoice_number(numbers[txn.id]) if txn.id in numbers else "",
                    _cell(txn.failure_reason or ""),
                )
            )

        return await _csv(query, TRANSACTION_COLUMNS, rows, "transactions.csv")

    return endpoint
