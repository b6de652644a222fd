"""Global IDs: base64 of ``Type:id``, as Relay expects, the public name of a row (in the API, and in the links
billing sends to the processor). Inputs take them as plain ``ID`` strings so that a malformed one is a typed
``NotFound``/``ValidationError`` rather than a parse failure."""

from __future__ import annotations

import base64
import binascii

MAX_ID_LENGTH = 128
"""The longest global ID of ours is under 50 characters: a longer string is not decoded at all."""


def _decoded(value: str) -> str | None:
    if len(value) > MAX_ID_LENGTH:
        return None
    try:
        return base64.b64decode(value.encode(), validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        return None  # not base64, not UTF-8 inside, or a lone surrogate that cannot be encoded


def _is_key(text: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    return text.isascii() and text.isdigit() and len(text) <= 18


def encode_id(type_name: str, pk: int) -> str:
    return base64.b64encode(f"{type_name}:{pk}".encode()).decode()


def decode_id(value: str, type_name: str) -> int | None:
    """The primary key inside ``value`` if it is a global ID of ``type_name``, else ``None``."""
    decoded = _decoded(value)
    if decoded is None:
        return None
    kind, sep, pk = decoded.partition(":")
    if sep != ":" or kind != type_name or not _is_key(pk):
        return None
    return int(pk)


def decode_any(value: str) -> tuple[str, int] | None:
    decoded = _decoded(value)
    if decoded is None:
        return None
    kind, sep, pk = decoded.partition(":")
    if sep != ":" or not _is_key(pk):
        return None
    return kind, int(pk)
