"""Checks on what clients send, made once where it enters: GraphQL inputs, query parameters, webhook bodies.

Each check returns the value it accepted (converted where that is its job) or raises ``InputError``, which
names the field and says what is wrong, and never anything else, whatever it is given. What passes can be
stored on SQLite and PostgreSQL, compared, hashed and converted without failing further in.

Standard library only: the shell, the resolvers and the schema's scalars all use it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from datetime import UTC, datetime

from models.instants import iso_z

INVISIBLE = frozenset(
    [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF],
)
"""Zero-width and bidirectional formatting characters: a name with them reads as another name."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""The instants accepted (both included): inside what Python's datetime, SQLite's text timestamps and
PostgreSQL's timestamptz hold, with a year to spare at the top so that conversion to any time zone and the
arithmetic of periods and report buckets cannot overflow."""

MAX_TIMESTAMP_TEXT = 40
"""``2026-01-31T00:00:00.000000+05:30`` is 32 characters; longer is not a timestamp."""

MAX_EMAIL = 254
"""RFC 5321's limit on a forward path, less its angle brackets."""

MAX_EMAIL_LOCAL = 64

_EMAIL_DOMAIN = re.compile(r"(?:[^\s@.]+\.)+[^\s@.]+")


class InputError(ValueError):
    """Malformed input: ``field`` names it as the client wrote it, ``message`` says what is wrong."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


def _refuse_unstorable(value: str, field: str) -> None:
    """Lone surrogates cannot be encoded as UTF-8 and PostgreSQL cannot store NUL: refuse both anywhere."""
    if value.isprintable():
        return  # neither a surrogate nor a control character is printable
    for char in value:
        if _is_surrogate(char):
            raise InputError(field, f"{field} must be valid Unicode: it contains a lone surrogate ({_code(char)})")
        if _is_control(char):
            raise InputError(field, f"{field} must not contain control characters")


def storable(value: object, field: str) -> str:
    """Any text a database can store: no lone surrogates, no NUL (other controls are fine)."""
    string = _string(value, field)
    for char in string:
        if _is_surrogate(char):
            raise InputError(field, f"{field} must be valid Unicode: it contains a lone surrogate ({_code(char)})")
        if char == "\x00":
            raise InputError(field, f"{field} must not contain NUL characters")
    return string


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(field, f"{field} must be a string")
    return value


def identifier(value: object, field: str, max_length: int, *, blank_ok: bool = False) -> str:
    """An identifier chosen by a client (an agent id, an activity, a plan id; with ``blank_ok`` an
    idempotency key, where spaces alone are a key too): 1 to ``max_length`` printable characters, spaces
    allowed; no control, zero-width or bidirectional formatting characters, no lone surrogates."""
    string = _string(value, field)
    if not (string if blank_ok else string.strip()) or len(string) > max_length:
        raise InputError(field, f"{field} must be 1 to {max_length} characters")
    if string.isprintable():
        return string  # what follows refuses only characters that are not printable (a space is)
    _refuse_unstorable(string, field)
    for char in string:
        if char != " " and not char.isprintable():
            kind = "an invisible or bidirectional formatting" if ord(char) in INVISIBLE else "a non-printable"
            raise InputError(
                field, f"{field} must contain only printable characters: {_code(char)} is {kind} character"
            )
    return string


def key(value: object, field: str = "idempotencyKey", max_length: int = 255) -> str:
    """An idempotency key: 1 to 255 characters, as ``identifier``."""
    return identifier(value, field, max_length, blank_ok=True)


def text(value: object, field: str, max_length: int) -> str:
    """Free text that must say something (a name): 1 to ``max_length`` characters, not only spaces; no
    control characters or lone surrogates. Any script, and the formatting characters it needs, is fine."""
    string = _string(value, field)
    if not string.strip() or len(string) > max_length:
        raise InputError(field, f"{field} must be 1 to {max_length} characters")
    _refuse_unstorable(string, field)
    return string


def label(value: object, field: str, max_length: int) -> str:
    """A name shown in lists to tell things apart (a token's name): ``text``, and no zero-width or
    bidirectional formatting characters (``INVISIBLE``), with which one name reads as another."""
    string = text(value, field, max_length)
    for char in string:
        if ord(char) in INVISIBLE:
            raise InputError(
                field,
                f"{field} must contain only printable characters: {_code(char)} is an invisible or bidirectional"
                " formatting character",
            )
    return string


def optional_text(value: object, field: str, max_length: int) -> str | None:
    """Free text that may be left out (a reason): ``None``, or at most ``max_length`` characters."""
    if value is None:
        return None
    string = _string(value, field)
    if len(string) > max_length:
        raise InputError(field, f"{field} must be at most {max_length} characters")
    _refuse_unstorable(string, field)
    return string


def email(value: object, field: str = "email") -> str:
    """An email address, normalized (trimmed, lower case): at most 254 characters,
    ``local@domain`` with a local part of at most 64 and a dotted domain, printable, no spaces, and unchanged
    by Unicode compatibility normalization (NFKC)."""
    string = _string(value, field).strip()
    if not string or len(string) > MAX_EMAIL:
        raise InputError(field, f"{field} must be 1 to {MAX_EMAIL} characters")
    _refuse_unstorable(string, field)
    # A look-alike must never become another person's address: lower() maps the Kelvin sign to "k" (and
    # "İ" to "i" and a combining dot), NFKC maps fullwidth letters to ASCII; either would let a new sign-in
    # take over kate@... and her invitations. Such characters are refused, not folded.
    if unicodedata.normalize("NFKC", string) != string or any(
        not char.isascii() and any(lowered.isascii() for lowered in char.lower()) for char in string
    ):
        raise InputError(field, f"{field} must not contain characters that read as others (such as fullwidth letters)")
    local, at, domain = string.rpartition("@")
    if (
        not at
        or not local
        or len(local) > MAX_EMAIL_LOCAL
        or "@" in local
        or any(char.isspace() or not char.isprintable() for char in string)
        or not _EMAIL_DOMAIN.fullmatch(domain)
    ):
        raise InputError(field, f"{field} must be an email address such as ada@example.com")
    return string.lower()


METADATA_MAX_KEYS = 50
METADATA_MAX_KEY = 40
METADATA_MAX_STRING = 500
METADATA_MAX_BYTES = 8 * 1024
METADATA_MAX_INTEGER = 2**53 - 1
"""Metadata limits (README, Provisioning): a flat JSON object of at most 50 keys of 1 to 40 printable
characters; each value a string of at most 500 characters, a number (an integer within +-(2^53 - 1), which
JavaScript holds exactly, or a finite float), a boolean or null; at most 8 KiB as compact UTF-8 JSON."""


def metadata(value: object, field: str = "metadata") -> dict[str, object]:
    """A platform's small JSON object (see the limits above), returned as given."""
    if not isinstance(value, dict):
        raise InputError(field, f"{field} must be a JSON object of keys to values")
    if len(value) > METADATA_MAX_KEYS:
        raise InputError(field, f"{field} must have at most {METADATA_MAX_KEYS} keys, got {len(value)}")
    for name, item in value.items():
        try:
            identifier(name, field, METADATA_MAX_KEY)
        except InputError as exc:
            shown = name[:METADATA_MAX_KEY] + "..." if len(name) > METADATA_MAX_KEY else name
            raise InputError(field, f"{field} key {shown!r}: {exc.message.removeprefix(field + ' ')}") from None
        _metadata_value(item, name, field)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > METADATA_MAX_BYTES:
        raise InputError(field, f"{field} must be at most {METADATA_MAX_BYTES} bytes as JSON, got {size}")
    return value


def _metadata_value(item: object, name: str, field: str) -> None:
    where = f"{field} value of {name!r}"
    if item is None or isinstance(item, bool):
        return
    if isinstance(item, int):
        if abs(item) > METADATA_MAX_INTEGER:
            raise InputError(field, f"{where} must be an integer within +-{METADATA_MAX_INTEGER}")
        return
    if isinstance(item, float):
        if not math.isfinite(item):
            raise InputError(field, f"{where} must be a finite number")
        return
    if isinstance(item, str):
        if len(item) > METADATA_MAX_STRING:
            raise InputError(field, f"{where} must be at most {METADATA_MAX_STRING} characters")
        try:
            storable(item, field)
        except InputError as exc:
            raise InputError(field, f"{where}: {exc.message.removeprefix(field + ' ')}") from None
        return
    raise InputError(field, f"{where} must be a string, a number, a boolean or null (no objects or lists)")


def timestamp(value: object, field: str) -> datetime:
    """An instant with a time zone, between ``EARLIEST`` and ``LATEST``."""
    if not isinstance(value, datetime):
        raise InputError(field, f"{field} must be a date and time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(field, f"{field} must include a time zone, e.g. 2026-01-31T00:00:00Z")
    try:
        in_utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        in_utc = None  # year 1 ahead of UTC, or 9999 behind it: not an instant Python can hold
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise InputError(field, f"{field} must be between {iso_z(EARLIEST)} and {iso_z(LATEST)}")
    return value


def parse_timestamp(value: object, field: str) -> datetime:
    """An ISO 8601 date and time with a time zone, as text (a query parameter), within the range above."""
    string = _string(value, field)
    problem = f"{field} must be an ISO 8601 date and time, e.g. 2026-01-31T00:00:00Z"
    if len(string) > MAX_TIMESTAMP_TEXT or not string.isascii():
        raise InputError(field, problem)
    try:
        parsed = datetime.fromisoformat(string[:-1] + "+00:00" if string.endswith(("Z", "z")) else string)
    except ValueError:
        raise InputError(field, problem) from None
    return timestamp(parsed, field)


def integer(value: object, field: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``, both included."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, f"{field} must be an integer")
    if not low <= value <= high:
        raise InputError(field, f"{field} must be {low} to {high}")
    return value


def digits(value: object, field: str, max_digits: int) -> int:
    """A non-negative integer written in 1 to ``max_digits`` ASCII digits (a unix time in a link): other
    scripts' digits, signs, spaces and numbers longer than any real one are refused before ``int()``."""
    string = _string(value, field)
    if not 1 <= len(string) <= max_digits or not string.isascii() or not string.isdigit():
        raise InputError(field, f"{field} must be a whole number of at most {max_digits} digits")
    return int(string)


def hex_digest(value: object, field: str, length: int) -> str:
    """A hexadecimal digest of exactly ``length`` characters, lower case (an HMAC in a link)."""
    string = _string(value, field)
    if len(string) != length or any(char not in "0123456789abcdef" for char in string):
        raise InputError(field, f"{field} must be {length} lower-case hexadecimal characters")
    return string


def utf8(body: bytes, field: str = "body") -> str:
    """Bytes that must be UTF-8 text (a webhook body)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(field, f"{field} is not UTF-8 (invalid byte at offset {exc.start})") from None
