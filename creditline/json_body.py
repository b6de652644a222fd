"""JSON sent by clients, parsed so that every malformed text is a ``json.JSONDecodeError`` (a 400, or 4400 on a
websocket): the parser recurses, so brackets nested a thousand deep (2 KB) raise ``RecursionError`` instead,
which would be an unexpected error (500) and a traceback in the log for every such request."""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        text = data if isinstance(data, str) else ""
        raise json.JSONDecodeError("JSON nested too deeply", text, 0) from None
