"""When each token was last used, kept in memory and written in batches: a request costs no write.

The authenticator records every use here; every ``CREDITLINE_TOKEN_USAGE_FLUSH_SECONDS`` (and when the app
shuts down) one statement writes the tokens used since the last flush, only those, and never moves a
``last_used_at`` backwards (several processes flush the same tokens). Tokens with an idle timeout slide from
the latest use this process knows of: its own, not yet written, or the database's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime

from models.tokens import record_uses

log = logging.getLogger(__name__)


class TokenUsage:
    def __init__(self, keep_seconds: float = 0) -> None:
        self.keep_seconds = keep_seconds
        """How long uses already written stay known here: as long as an authentication cache may still hold
        a token read before they were written."""
        self._pending: dict[int, datetime] = {}
        self._written: deque[tuple[float, dict[int, datetime]]] = deque()
        self._lock = asyncio.Lock()

    def record(self, token_id: int, at: datetime) -> None:
        seen = self._pending.get(token_id)
        if seen is None or at > seen:
            self._pending[token_id] = at

    def last_use(self, token_id: int) -> datetime | None:
        """The latest use of the token this process knows of since it last read the token, if any."""
        seen = self._pending.get(token_id)
        if seen is not None:
            return seen
        for _, uses in reversed(self._written):
            if (written := uses.get(token_id)) is not None:
                return written
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write the uses recorded since the last flush (none: no statement); returns how many tokens.
        If the write fails they stay pending for the next flush."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                await record_uses(batch)
            except BaseException:
                for token_id, at in batch.items():
                    self.record(token_id, at)
                raise
            now = time.monotonic()
            while self._written and self._written[0][0] + self.keep_seconds < now:
                self._written.popleft()
            self._written.append((now, batch))
            return len(batch)

    async def run(self, every_seconds: float) -> None:
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self.flush()
            except Exception:  # a database hiccup must not stop the flushes: the next one writes these too
                log.exception("writing when tokens were last used failed")
