"""JSON sent by clients, parsed so that every malformed text is a ``json.JSONDecodeError`` (a 400, or 4400 on a
websocket). Two texts raised something else, an unexpected error (500, or a websocket dropped without a close
frame) and a traceback in the log for every such request: brackets nested a thousand deep (2 KB), since the
parser recurses (``RecursionError``), and an integer of more than 4,300 digits, which Python refuses to
convert (``ValueError``, CVE-2020-10735's guard)."""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deeply", _text(data), 0) from None
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits(); text that is not UTF-8
        raise json.JSONDecodeError(f"JSON not readable: {exc}", _text(data), 0) from None


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else ""
