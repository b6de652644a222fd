"""Printable invoice pages at ``GET /invoices/{id}``, for the account's owner: with a bearer token, or
through a signed link (``?expires=<unix time>&signature=<HMAC>``) that works without one until it expires."""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from billing.invoices import SIGNATURE_LENGTH, valid_link
from creditline.services import Services
from models.ids import decode_id
from models.money import invoice_number
from models.tables import CreditAccount, Invoice, MemberRole, Membership
from resolvers import boundary
from resolvers.auth import Authenticator
from resolvers.permissions import can_read_account


def _money(amount: int, currency: str) -> str:
    return f"{currency} {amount // 100}.{amount % 100:02d}"


def render(invoice: Invoice) -> str:
    lines = "".join(
        f"<tr><td>{html.escape(line['description'])}</td><td>{html.escape(line['quantity'])}</td>"
        f"<td class=num>{_money(int(line['amount']), invoice.currency)}</td></tr>"
        for line in json.loads(invoice.lines)
    )
    number = invoice_number(invoice.number)
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>Invoice {number}</title>"
        "<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}table{width:100%;border-collapse:collapse}"
        "td,th{padding:.4em;border-bottom:1px solid #ccc;text-align:left}.num{text-align:right}"
        "@media print{a{display:none}}</style></head><body>"
        f"<h1>Invoice {number}</h1>"
        f"<p>Status: {html.escape(invoice.status)}<br>Issued: {invoice.issued_at:%Y-%m-%d %H:%M} UTC<br>"
        f"Paid: {invoice.paid_at:%Y-%m-%d %H:%M} UTC</p>"
        f"<table><tr><th>Description</th><th>Quantity</th><th class=num>Amount</th></tr>{lines}"
        f"<tr><th colspan=2>Total</th><th class=num>{_money(invoice.total, invoice.currency)}</th></tr></table>"
        "</body></html>"
    )


EXPIRES_DIGITS = 12
"""A unix time in seconds up to the year 9999 (253402300799) has 12 digits."""


def _signed(request: Request, key: bytes, invoice_id: int, now: float) -> bool | None:
    """Whether the request's link signature is valid and unexpired; ``None`` if it carries none. A link
    whose parts are not shaped like ours is ``InputError`` (a 400), before any arithmetic on them."""
    signature, expires = request.query_params.get("signature"), request.query_params.get("expires")
    if signature is None and expires is None:
        return None
    if signature is None or expires is None:
        return False
    expires_at = boundary.digits(expires, "expires", EXPIRES_DIGITS)
    given = boundary.hex_digest(signature, "signature", SIGNATURE_LENGTH)
    return valid_link(key, invoice_id, expires_at, given, now)


def invoice_page(auth: Authenticator, services: Services) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        pk = decode_id(request.path_params["invoice_id"], "Invoice")
        try:
            signed = None if pk is None else _signed(request, services.link_key, pk, services.clock.now().timestamp())
        except boundary.InputError as exc:
            return PlainTextResponse(f"This invoice link is malformed: {exc.message}", 400)
        if signed is not None:
            invoice = await Invoice.filter(id=pk).first() if signed else None
            if invoice is None:
                return PlainTextResponse("This invoice link is invalid or has expired", 404)
            return HTMLResponse(render(invoice))
        who = await auth.authenticate(request.headers.get("authorization"))
        if who is None:
            return PlainTextResponse("Send a valid token as 'Authorization: Bearer <token>'", 401)
        invoice = None if pk is None else await Invoice.filter(id=pk).first()
        account = None if invoice is None else await CreditAccount.get(id=invoice.account_id)
        allowed = account is not None and can_read_account(who, account.user_id, (), account_id=account.id)
        if account is not None and account.organization_id is not None and who.user_id is not None and not allowed:
            membership = await Membership.filter(organization_id=account.organization_id, user_id=who.user_id).first()
            allowed = membership is not None and bool(membership.role_set & {MemberRole.BILLING, MemberRole.OWNER})
        if invoice is None or not allowed:
            return PlainTextResponse("Invoice not found", 404)
        return HTMLResponse(render(invoice))

    return endpoint
