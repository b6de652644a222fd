"""Running one async step of the benchmark."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async step on uvloop when it is installed (the server runs on it too)."""
    try:
        import uvloop  # noqa: PLC0415  (optional: uvicorn[standard] installs it where it builds, not on Windows)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
