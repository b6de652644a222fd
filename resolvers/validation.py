"""Input checks shared by the mutations. Each returns a typed ``ValidationError`` or ``None``."""

from __future__ import annotations

from schema.errors import ValidationError

MAX_KEY = 255


def check_key(key: str) -> ValidationError | None:
    if not key or len(key) > MAX_KEY:
        return ValidationError(message=f"idempotencyKey must be 1 to {MAX_KEY} characters", field="idempotencyKey")
    return None


def check_text(value: str, field: str, max_length: int) -> ValidationError | None:
    if not value.strip() or len(value) > max_length:
        return ValidationError(message=f"{field} must be 1 to {max_length} characters", field=field)
    return None


def check_positive(value: int | None, field: str) -> ValidationError | None:
    if value is not None and value <= 0:
        return ValidationError(message=f"{field} must be positive", field=field)
    return None


def first_error(*checks: ValidationError | None) -> ValidationError | None:
    return next((check for check in checks if check is not None), None)
