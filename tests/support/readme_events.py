"""The README's example payloads ("Events and webhooks", "Example payloads"), to hold what is emitted to them.

Each example is the ```json block after a paragraph that names its types in backticks; the first block is a
whole delivered body (its ``data`` is taken, less ``sequence``, which delivery adds). ``undocumented`` says
what of an emitted ``data`` the README does not show: a field (at any depth) that is neither in the example of
its type nor named in backticks in the example's paragraph (where variants are described, "``reason``
instead of ``nextAttemptAt``"), or a value of another JSON kind than the example's (null matches anything).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from models.outbox import EventType

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class Example:
    data: dict[str, Any]
    named: frozenset[str]
    """Every name in backticks in the example's paragraph."""


@cache
def examples() -> dict[str, Example]:
    text = README.read_text()
    start = text.index("\n### Example payloads\n")
    section = text[start : text.index("\n## ", start + 1)]
    types = {t.value for t in EventType}
    found: dict[str, Example] = {}
    for prose, block in re.findall(r"\n\n((?:(?!```)[^\n]+\n)+)\n```json\n(.*?)\n```", section, re.DOTALL):
        named = frozenset(re.findall(r"`([^`]+)`", prose))
        data = json.loads(block)
        if set(data) == {"type", "timestamp", "data"}:  # a whole body
            kinds: frozenset[str] = frozenset({data["type"]})
            data = {k: v for k, v in data["data"].items() if k != "sequence"}
        else:
            kinds = named & types
        for kind in kinds:
            found.setdefault(kind, Example(data, named))
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def undocumented(event_type: str, data: dict[str, Any]) -> list[str]:
    """What of ``data`` (an emitted event's) the README's example of ``event_type`` does not document."""
    example = examples().get(event_type)
    if example is None:
        return [f"{event_type}: no example payload"]
    problems: list[str] = []

    def walk(emitted: dict[str, Any], shown: dict[str, Any] | None, path: str) -> None:
        for key, value in emitted.items():
            where = f"{path}{key}"
            documented = shown is not None and key in shown
            if not documented and key not in example.named:
                problems.append(f"{event_type}: {where} is emitted and not documented")
                continue
            other = shown.get(key) if shown is not None else None
            if value is not None and other is not None and _kind(value) != _kind(other):
                problems.append(f"{event_type}: {where} is a {_kind(value)}, the README shows a {_kind(other)}")
            if isinstance(value, dict):
                walk(value, other if isinstance(other, dict) else None, where + ".")

    walk(data, example.data, "")
    return problems
