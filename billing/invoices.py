"""Signed invoice links: the path of an invoice page that opens without a token until it expires, and the
check of such a link's signature (the page itself is the shell's, ``creditline.invoices``)."""

from __future__ import annotations

import hashlib
import hmac

from models.ids import encode_id

SIGNATURE_LENGTH = hashlib.sha256().digest_size * 2
"""A link's signature is the hex digest of an HMAC-SHA256."""


def signed_link(key: bytes, invoice_id: int, expires: int) -> str:
    """The path of an invoice page that opens without a token until ``expires`` (a unix time)."""
    signature = _signature(key, invoice_id, expires)
    return f"/invoices/{encode_id('Invoice', invoice_id)}?expires={expires}&signature={signature}"


def valid_link(key: bytes, invoice_id: int, expires: int, signature: str, now: float) -> bool:
    """Whether ``signature`` is the one ``signed_link`` made for this invoice and time, and it has not expired."""
    return hmac.compare_digest(signature, _signature(key, invoice_id, expires)) and expires >= now


def _signature(key: bytes, invoice_id: int, expires: int) -> str:
    return hmac.new(key, f"invoice:{invoice_id}:{expires}".encode(), hashlib.sha256).hexdigest()
