"""Exact credit amounts: integer micro-credits (1 credit = 1 000 000 micro-credits)."""

from __future__ import annotations

import re

MICRO = 1_000_000
MAX_MICRO = 10**18
"""Largest amount accepted, in micro-credits: well inside a signed 64-bit column."""

_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]{1,6})?")


def parse_credits(value: object) -> int:
    """Parse a decimal string or an integer into micro-credits.

    Floats, exponents, NaN, empty strings and more than 6 decimal places are refused, because each of
    them would either lose precision or hide a client bug.
    """
    if isinstance(value, bool):
        raise ValueError("Credits must be a decimal string or an integer, not a boolean")
    if isinstance(value, int):
        micro = value * MICRO
    elif isinstance(value, str):
        text = value.strip()
        if text == "":
            raise ValueError("Credits must not be empty")
        if not _DECIMAL.fullmatch(text):
            if re.fullmatch(r"-?[0-9]*\.[0-9]{7,}", text):
                raise ValueError(f"Credits have at most 6 decimal places, got {value!r}")
            raise ValueError(f'Credits must be a plain decimal such as "12.5", got {value!r}')
        negative = text.startswith("-")
        whole, _, fraction = text.lstrip("-").partition(".")
        micro = int(whole) * MICRO + int(fraction.ljust(6, "0") or "0")
        if negative:
            micro = -micro
    else:
        raise ValueError(f"Credits must be a decimal string or an integer, got {type(value).__name__}")
    if abs(micro) > MAX_MICRO:
        raise ValueError("Credits amount is too large")
    return micro


def format_credits(micro: int) -> str:
    """Render micro-credits as a decimal string without trailing zeros: 12500000 -> "12.5"."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")
