"""billing.invoices: a signed invoice link opens its invoice until it expires, and a link whose invoice, expiry or
signature was changed, or that another key signed, does not."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import pytest

from billing.invoices import SIGNATURE_LENGTH, signed_link, valid_link
from models.ids import decode_id

KEY = b"k" * 32
INVOICE = 7
EXPIRES = 1_768_478_400  # 2026-01-15 12:00 UTC


def parts(link: str) -> tuple[int | None, int, str]:
    """The invoice id, the expiry and the signature a link carries, read as the invoice page reads them."""
    split = urlsplit(link)
    assert split.path.startswith("/invoices/")
    query = parse_qs(split.query, strict_parsing=True)
    assert set(query) == {"expires", "signature"}
    (expires,), (signature,) = query["expires"], query["signature"]
    return decode_id(split.path.removeprefix("/invoices/"), "Invoice"), int(expires), signature


def test_a_link_names_its_invoice_and_expiry_and_carries_a_hex_signature() -> None:
    invoice_id, expires, signature = parts(signed_link(KEY, INVOICE, EXPIRES))

    assert (invoice_id, expires) == (INVOICE, EXPIRES)
    assert len(signature) == SIGNATURE_LENGTH == 64
    assert int(signature, 16) >= 0  # hex digits only


def test_the_signature_is_an_hmac_of_the_invoice_and_expiry_so_links_given_out_keep_working() -> None:
    _, _, signature = parts(signed_link(KEY, INVOICE, EXPIRES))

    assert signature == hmac.new(KEY, f"invoice:{INVOICE}:{EXPIRES}".encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("now", "valid"),
    [(EXPIRES - 86_400, True), (EXPIRES - 0.5, True), (EXPIRES, True), (EXPIRES + 0.5, False), (EXPIRES + 1, False)],
)
def test_a_link_verifies_until_it_expires(now: float, valid: bool) -> None:
    invoice_id, expires, signature = parts(signed_link(KEY, INVOICE, EXPIRES))
    assert invoice_id is not None

    assert valid_link(KEY, invoice_id, expires, signature, now) is valid


def flipped(signature: str, at: int) -> str:
    """``signature`` with one hex digit changed."""
    return signature[:at] + ("0" if signature[at] != "0" else "1") + signature[at + 1 :]


SIGNATURE = hmac.new(KEY, f"invoice:{INVOICE}:{EXPIRES}".encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("key", "invoice_id", "expires", "signature"),
    [
        pytest.param(KEY, INVOICE + 1, EXPIRES, SIGNATURE, id="another invoice"),
        pytest.param(KEY, INVOICE, EXPIRES + 86_400, SIGNATURE, id="a later expiry"),
        pytest.param(KEY, INVOICE, EXPIRES - 1, SIGNATURE, id="an earlier expiry"),
        pytest.param(KEY, INVOICE, EXPIRES, flipped(SIGNATURE, 0), id="first digit changed"),
        pytest.param(KEY, INVOICE, EXPIRES, flipped(SIGNATURE, 63), id="last digit changed"),
        pytest.param(KEY, INVOICE, EXPIRES, SIGNATURE[:-1], id="a digit short"),
        pytest.param(KEY, INVOICE, EXPIRES, SIGNATURE.upper(), id="upper case"),
        pytest.param(KEY, INVOICE, EXPIRES, "", id="empty"),
        pytest.param(b"x" * 32, INVOICE, EXPIRES, SIGNATURE, id="another key"),
    ],
)
def test_a_tampered_link_does_not_verify(key: bytes, invoice_id: int, expires: int, signature: str) -> None:
    assert valid_link(KEY, INVOICE, EXPIRES, SIGNATURE, EXPIRES - 60)  # the untouched link does
    assert parts(signed_link(KEY, INVOICE, EXPIRES))[2] == SIGNATURE

    assert valid_link(key, invoice_id, expires, signature, EXPIRES - 60) is False


def test_links_to_two_invoices_or_two_expiries_differ() -> None:
    signatures = {
        parts(signed_link(KEY, invoice_id, expires))[2]
        for invoice_id, expires in [(INVOICE, EXPIRES), (INVOICE + 1, EXPIRES), (INVOICE, EXPIRES + 1)]
    }

    assert len(signatures) == 3
