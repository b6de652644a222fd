"""Input checks shared by the mutations. Each returns a typed ``ValidationError`` or ``None``; the rules
themselves are resolvers/boundary.py's, shared with the plain routes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from resolvers import boundary
from schema.errors import ValidationError

MAX_KEY = 255


def _checked(check: Callable[[], object]) -> ValidationError | None:
    try:
        check()
    except boundary.InputError as exc:
        return ValidationError(message=exc.message, field=exc.field)
    return None


def check_key(key: str) -> ValidationError | None:
    return _checked(lambda: boundary.key(key, "idempotencyKey", MAX_KEY))


def check_identifier(value: str, field: str, max_length: int) -> ValidationError | None:
    """A client's name for something (agentId, activity, planId, a gateway token): printable, no invisible
    or bidirectional formatting characters."""
    return _checked(lambda: boundary.identifier(value, field, max_length))


def check_text(value: str, field: str, max_length: int) -> ValidationError | None:
    """Free text that must say something (a name)."""
    return _checked(lambda: boundary.text(value, field, max_length))


def check_label(value: str, field: str, max_length: int) -> ValidationError | None:
    """A name shown in lists (a token's): free text without invisible or bidirectional formatting characters."""
    return _checked(lambda: boundary.label(value, field, max_length))


def check_optional_text(value: str | None, field: str, max_length: int) -> ValidationError | None:
    return _checked(lambda: boundary.optional_text(value, field, max_length))


def check_email(value: str, field: str = "email") -> ValidationError | None:
    return _checked(lambda: boundary.email(value, field))


def check_metadata(value: object, field: str = "metadata") -> ValidationError | None:
    """``None`` (no metadata) or a small flat JSON object (boundary.metadata)."""
    if value is None:
        return None
    return _checked(lambda: boundary.metadata(value, field))


def check_future(value: datetime | None, field: str, now: datetime) -> ValidationError | None:
    if value is None:
        return None
    if invalid := _checked(lambda: boundary.timestamp(value, field)):
        return invalid
    if value <= now:
        return ValidationError(message=f"{field} must be in the future", field=field)
    return None


def check_positive(value: int | None, field: str) -> ValidationError | None:
    if value is not None and value <= 0:
        return ValidationError(message=f"{field} must be positive", field=field)
    return None


def first_error(*checks: ValidationError | None) -> ValidationError | None:
    return next((check for check in checks if check is not None), None)
