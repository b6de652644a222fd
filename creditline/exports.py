"""CSV export of usage events at ``GET /exports/usage.csv``, streamed in pages, bearer-authenticated.

Query parameters: ``account`` or ``organization`` (a global ID, exactly one), and the filters of the
GraphQL ``UsageFilter``: ``from``, ``to`` (ISO 8601 with a zone), ``agentId``, ``activity``, ``memberId``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models.credits import format_credits
from models.ids import decode_id, encode_id
from models.payments import invoice_number
from models.tables import (
    CreditAccount,
    Invoice,
    MemberRole,
    Membership,
    Transaction,
    TransactionStatus,
    TransactionType,
    UsageEvent,
)
from models.tokens import BALANCE_READ, Principal
from resolvers import boundary
from resolvers.auth import Authenticator
from resolvers.errors import ClientError
from resolvers.permissions import can_read_account
from resolvers.usage import UsageCriteria, filtered

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
)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    # Agent ids and activities come from clients: never let a spreadsheet read one as a formula.
    return "'" + text if text.startswith(_FORMULA) else text


def _line(values: tuple[object, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


def _row(event: UsageEvent) -> str:
    return _line(
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
        )
    )


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


def usage_export(auth: Authenticator) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        who = await auth.authenticate(request.headers.get("authorization"))
        if who is None:
            return PlainTextResponse("Send a valid token as 'Authorization: Bearer <token>'", 401)
        params = request.query_params
        account_param, org_param = params.get("account"), params.get("organization")
        if (account_param is None) == (org_param is None):
            return PlainTextResponse("Give exactly one of account or organization", 400)
        if account_param is not None:
            account_id = decode_id(account_param, "CreditAccount")
            account = None if account_id is None else await CreditAccount.filter(id=account_id).first()
            allowed = account is not None and can_read_account(
                who, account.user_id, (BALANCE_READ,), account_id=account.id
            )
            if account is not None and account.organization_id is not None and not allowed:
                allowed = await _billing_member(who, account.organization_id)
            if account is None or not allowed:
                return PlainTextResponse("You may not export this account's usage", 403)
            base = UsageEvent.filter(account_id=account.id)
        else:
            org_id = decode_id(org_param or "", "Organization")
            if org_id is None or not await _billing_member(who, org_id):
                return PlainTextResponse("Exporting organization usage needs the BILLING or OWNER role", 403)
            base = UsageEvent.filter(organization_id=org_id)
        try:
            query = filtered(
                base,
                UsageCriteria(
                    start=_time(params.get("from"), "from"),
                    end=_time(params.get("to"), "to"),
                    agent_id=params.get("agentId"),
                    activity=params.get("activity"),
                    member_id=params.get("memberId"),
                ),
            )
        except ClientError as exc:
            return PlainTextResponse(exc.message, 400)

        return await _csv(query, COLUMNS, _row, "usage.csv")

    return endpoint


async def _csv(query: QuerySet[M], columns: tuple[str, ...], row: Callable[[M], str], filename: str) -> Response:
    # The first page is read and written before the response starts: a failure there is a status of its own,
    # not a 200 whose body stops after the header line.
    first = await query.order_by("-id").limit(PAGE)
    head = _line(columns) + "".join(row(item) for item in first)

    async def lines() -> AsyncIterator[str]:
        yield head
        rows = first
        while len(rows) == PAGE:
            rows = await query.filter(id__lt=rows[-1].pk).order_by("-id").limit(PAGE)
            for item in rows:
                yield row(item)

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
    """``GET /exports/transactions.csv?account=<id>`` with optional ``status``, ``type``, ``from``, ``to``."""

    async def endpoint(request: Request) -> Response:
        who = await auth.authenticate(request.headers.get("authorization"))
        if who is None:
            return PlainTextResponse("Send a valid token as 'Authorization: Bearer <token>'", 401)
        params = request.query_params
        account_id = decode_id(params.get("account", ""), "CreditAccount")
        account = None if account_id is None else await CreditAccount.filter(id=account_id).first()
        allowed = account is not None and can_read_account(who, account.user_id, (), account_id=account.id)
        if account is not None and account.organization_id is not None and not allowed:
            allowed = await _billing_member(who, account.organization_id)
        if account is None or not allowed:
            return PlainTextResponse("You may not export this account's transactions", 403)
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

        return await _csv(query, TRANSACTION_COLUMNS, row, "transactions.csv")

    return endpoint
