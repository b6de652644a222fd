"""Input checks shared by the mutations. Each returns a typed ``ValidationError`` or ``None``."""

from __future__ import annotations

from datetime import datetime

from schema.errors import ValidationError

MAX_KEY = 255


def _has_control(value: str) -> bool:
    # PostgreSQL refuses NUL in text and SQLite would store it: refuse control characters on both.
    return any(ord(char) < 32 or ord(char) == 127 for char in value)


def check_key(key: str) -> ValidationError | None:
    if not key or len(key) > MAX_KEY:
        return ValidationError(message=f"idempotencyKey must be 1 to {MAX_KEY} characters", field="idempotencyKey")
    if _has_control(key):
        return ValidationError(message="idempotencyKey must not contain control characters", field="idempotencyKey")
    return None


def check_text(value: str, field: str, max_length: int) -> ValidationError | None:
    if not value.strip() or len(value) > max_length:
        return ValidationError(message=f"{field} must be 1 to {max_length} characters", field=field)
    if _has_control(value):
        return ValidationError(message=f"{field} must not contain control characters", field=field)
    return None


def check_optional_text(value: str | None, field: str, max_length: int) -> ValidationError | None:
    if value is None:
        return None
    if len(value) > max_length:
        return ValidationError(message=f"{field} must be at most {max_length} characters", field=field)
    if _has_control(value):
        return ValidationError(message=f"{field} must not contain control characters", field=field)
    return None


def check_future(value: datetime | None, field: str, now: datetime) -> ValidationError | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return ValidationError(message=f"{field} must include a time zone, e.g. 2026-01-31T00:00:00Z", field=field)
    if value <= now:
        return ValidationError(message=f"{field} must be in the future", field=field)
    return None


def check_positive(value: int | None, field: str) -> ValidationError | None:
    if value is not None and value <= 0:
        return ValidationError(message=f"{field} must be positive", field=field)
    return None


def first_error(*checks: ValidationError | None) -> ValidationError | None:
    return next((check for check in checks if check is not None), None)
