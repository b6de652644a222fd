"""Global IDs, as the API reads and writes them (made in ``models.ids``, which billing's links use too)."""

from __future__ import annotations

from models.ids import MAX_ID_LENGTH as MAX_ID_LENGTH
from models.ids import decode_any as decode_any
from models.ids import decode_id as decode_id
from models.ids import encode_id as encode_id
